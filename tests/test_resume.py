"""Resumable scans: a scan killed midway continues with --resume to the same table as an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "interp.cli", *args]


# One thread in both scan processes: inside the full suite two identical 2-thread runs differed by up to
# 1e-4 in sink_mass (reproducibly, the same numbers each time; alone they agree). The cause is open; this
# test is about what --resume reuses, so it removes the threading variable.
_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def test_killed_scan_resumes_to_the_uninterrupted_table(tmp_path):
    analyses = "sink,entropy,max_attention,previous_token,induction"
    common = ["scan", "smollm2-135m", "--context-length", "48", "--batch", "1", "--analyses", analyses]
    reference = tmp_path / "reference"
    subprocess.run(_cli(*common, "--out", str(reference)), check=True, capture_output=True, env=_ENV)

    out = tmp_path / "resumed"
    process = subprocess.Popen(
        _cli(*common, "--out", str(out)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_ENV
    )
    deadline = time.time() + 300
    while not (out / "analyses" / "entropy.json").exists():
        assert process.poll() is None, "scan finished before it could be killed; make it longer"
        assert time.time() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "heads.csv").exists() and not (out / "scan.json").exists()
    assert not [p for p in os.listdir(out / "analyses") if p.endswith(".partial")]

    done = subprocess.run(_cli(*common, "--out", str(out), "--resume"), capture_output=True, text=True, env=_ENV)
    assert done.returncode == 0, done.stderr
    meta = json.loads((out / "scan.json").read_text())
    assert {"sink", "entropy"} <= set(meta["resumed"]) and "induction" not in meta["resumed"]
    # Compared with a tolerance: the reference half of this check may come from another code path (resumed
    # vs fresh analyses). Same-command repeatability is checked to the bit in tests/test_determinism.py.
    pd.testing.assert_frame_equal(
        pd.read_csv(out / "heads.csv"), pd.read_csv(reference / "heads.csv"), check_exact=False, rtol=1e-4, atol=1e-5
    )


def test_resume_recomputes_when_settings_change(tmp_path, smollm):
    import interp

    out = tmp_path / "ckpt"
    first = interp.scan(smollm, analyses="sink", settings=interp.ScanSettings(context_length=32, batch=1),
                        checkpoint_dir=out)
    same = interp.scan(smollm, analyses="sink", settings=interp.ScanSettings(context_length=32, batch=1),
                       checkpoint_dir=out, resume=True)
    other = interp.scan(smollm, analyses="sink", settings=interp.ScanSettings(context_length=40, batch=1),
                        checkpoint_dir=out, resume=True)
    assert same.metadata["resumed"] == ["sink"] and other.metadata["resumed"] == []
    pd.testing.assert_frame_equal(same.heads, first.heads)
    assert not other.heads["sink_mass"].equals(first.heads["sink_mass"])


def test_resume_says_what_it_reuses_and_why_it_recomputes(tmp_path, smollm):
    import interp
    from interp.cli.scan import _print_resume
    from interp.cli.common import console

    out = tmp_path / "ckpt"
    interp.scan(smollm, analyses="sink", settings=interp.ScanSettings(context_length=32, batch=1), checkpoint_dir=out)
    plans = []
    result = interp.scan(smollm, analyses="sink,entropy", settings=interp.ScanSettings(context_length=32, batch=1, seed=1),
                         checkpoint_dir=out, resume=True, on_resume=plans.append)
    assert plans == [{"sink": "settings changed: seed 0 -> 1", "entropy": "no finished checkpoint"}]
    assert result.metadata["resume"] == plans[0]
    same = interp.scan(smollm, analyses="sink", settings=interp.ScanSettings(context_length=32, batch=1, seed=1),
                       checkpoint_dir=out, resume=True, on_resume=plans.append)
    assert plans[-1] == {"sink": "reused"} and same.metadata["resumed"] == ["sink"]
    with console.capture() as captured:
        _print_resume(plans[0])
    text = captured.get()
    assert "reusing nothing (no checkpoint matches these settings)" in text
    assert "recomputing sink: settings changed: seed 0 -> 1" in text and "recomputing entropy: no finished checkpoint" in text


def test_cli_hides_transformers_loading_bars(tmp_path):
    run = subprocess.run(_cli("hooks", "smollm2-135m"), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "blocks.0.attn.hook_z" in run.stdout and "Loading weights" not in run.stderr
