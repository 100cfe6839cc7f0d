"""The same scan command gives the same table, to the last bit (issue #23).

Two processes run the same ``interp scan`` on a tiny model; their ``heads.csv`` files must be equal
byte for byte. The thread count is fixed for the run (``interp.threads.run_threads``) and recorded
in ``scan.json``.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from interp.errors import InterpError
from interp.threads import faster_thread_count, run_threads, thread_setting

ANALYSES = "sink,entropy,max_attention,previous_token,induction,head_ablation"


def _scan(folder: str, out, extra_env: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("INTERP_THREADS", "INTERP_ADAPT_THREADS")}
    env.update(extra_env)
    command = [sys.executable, "-m", "interp.cli", "scan", folder, "--out", str(out), "--analyses", ANALYSES,
               "--context-length", "48", "--batch", "1", "--no-report", "--device", "cpu"]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def test_two_identical_scans_give_bit_identical_tables(tiny_folder, tmp_path):
    # The CLI's default is auto (a probe that may pick another count under load): fix the count, as
    # repeating a recorded run does.
    count = str(torch.get_num_threads())
    runs = [_scan(tiny_folder, tmp_path / f"run{i}", {"INTERP_THREADS": count}) for i in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    # Not a terminal: one plain line per finished analysis, with its time (a log can read it).
    finished = [line.split(":")[0] for line in runs[0].stderr.splitlines() if line.startswith("analysis ")]
    names = ANALYSES.split(",")
    assert finished == [f"analysis {i}/{len(names)} {name}" for i, name in enumerate(names, 1)], runs[0].stderr[-2000:]
    assert "it/s]" not in runs[0].stderr, "a tqdm bar leaked into the log (hidden unless --debug)"
    first, second = ((tmp_path / f"run{i}" / "heads.csv").read_bytes() for i in range(2))
    assert first == second
    meta = json.loads((tmp_path / "run0" / "scan.json").read_text())
    assert meta["threads"] == torch.get_num_threads()


@pytest.mark.parametrize("env", [{"INTERP_THREADS": "auto"}, {}], ids=["auto", "cli-default"])
def test_auto_threads_are_probed_once_and_recorded(tiny_folder, tmp_path, env):
    run = _scan(tiny_folder, tmp_path / "auto", env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads((tmp_path / "auto" / "scan.json").read_text())["threads"] in (1, torch.get_num_threads())


def test_the_cli_scan_defaults_to_auto_threads(monkeypatch, tmp_path):
    """Without --threads or INTERP_THREADS the CLI passes threads='auto' to interp.scan."""
    from typer.testing import CliRunner

    import interp.cli.scan as cli_scan
    from interp.cli.app import app

    seen = {}

    def fake_run(model, out, chosen, settings, max_bytes, device, dtype, overwrite, resume, report, threads):
        seen["threads"] = threads
        raise KeyboardInterrupt

    monkeypatch.delenv("INTERP_THREADS", raising=False)
    monkeypatch.delenv("INTERP_ADAPT_THREADS", raising=False)
    monkeypatch.setattr(cli_scan, "_run_scan", fake_run)
    CliRunner().invoke(app, ["scan", "tiny", "--out", str(tmp_path / "out")])
    assert seen == {"threads": "auto"}
    CliRunner().invoke(app, ["scan", "tiny", "--out", str(tmp_path / "out2"), "--threads", "2"])
    assert seen == {"threads": 2}


def test_inside_a_run_the_count_never_adapts(monkeypatch):
    monkeypatch.setenv("INTERP_THREADS", "auto")
    before = torch.get_num_threads()
    with run_threads(1) as chosen:
        assert chosen == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr("interp.threads.probe_thread_count", lambda default=None: pytest.fail("probed inside a run"))
        assert faster_thread_count(3) == 3
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_a_bad_thread_count_is_one_line(monkeypatch, value):
    monkeypatch.setenv("INTERP_THREADS", value)
    with pytest.raises(InterpError, match="not a thread count"):
        thread_setting()
