"""Memory: no O(N^2) buffer on the scan path, and scans that cannot fit fail before they start."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import interp
from interp.cli import app
from interp.memory import estimate_scan_bytes, parse_size

# Peak from VmHWM, not getrusage: Linux carries ru_maxrss across exec, so a child started from a big
# pytest process would report the parent's memory.
CHILD = r"""
import json, sys, torch
import interp

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

model = interp.load("smollm2-135m", device="cpu")
with torch.no_grad():
    model(model.to_tokens("warm up"))
loaded = status("VmRSS:")
interp.scan(model, analyses="sink,entropy", settings=interp.ScanSettings(context_length=int(sys.argv[1]), batch=1))
print(json.dumps({"loaded": loaded, "peak": status("VmHWM:")}))
"""


def _scan_peak_above_model(n: int) -> int:
    run = subprocess.run([sys.executable, "-c", CHILD, str(n)], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    measured = json.loads(run.stdout.strip().splitlines()[-1])
    return measured["peak"] - measured["loaded"]


def test_scan_memory_grows_linearly_not_with_the_pattern():
    """A layer's float32 [head, query, key] pattern is 9 x N^2 x 4 B: 151 MB at 2,048 tokens, 604 MB at
    4,096 (all 30 layers: 4.5 GB and 18 GB). Doubling the context must add far less than the pattern
    grows, and the whole peak above the loaded model must stay far below all layers' patterns."""
    small, large = _scan_peak_above_model(2048), _scan_peak_above_model(4096)
    pattern = lambda n: 9 * n * n * 4  # noqa: E731
    assert large - small < (pattern(4096) - pattern(2048)) / 2, (small, large)
    assert large < 30 * pattern(4096) / 20, (small, large)  # issue target: >= 20x below all patterns


def test_parse_size():
    assert parse_size("12GB") == 12 * 2**30 and parse_size("512m") == 512 * 2**20 and parse_size("1.5G") == int(1.5 * 2**30)
    with pytest.raises(interp.InterpError, match="cannot read memory size"):
        parse_size("lots")


def test_estimate_grows_linearly_with_context(smollm):
    small = estimate_scan_bytes(smollm, interp.ScanSettings(context_length=4096, batch=1))["forward"]
    large = estimate_scan_bytes(smollm, interp.ScanSettings(context_length=8192, batch=1))["forward"]
    fixed = estimate_scan_bytes(smollm, interp.ScanSettings(context_length=0, batch=1, streaming_window=0))["forward"]
    assert large - fixed == pytest.approx(2 * (small - fixed))


def test_scan_that_cannot_fit_fails_early_with_one_line(tmp_path):
    out = tmp_path / "out"
    run = CliRunner().invoke(app, ["scan", "smollm2-135m", "--context-length", "8192", "--max-memory", "100MB",
                                   "--out", str(out)])
    assert run.exit_code == 1
    assert "the scan needs about" in run.output and "lower --context-length (8192)" in run.output
    assert not out.exists()
