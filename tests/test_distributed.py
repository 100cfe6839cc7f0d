"""Data parallel under torchrun (interp.distributed): 2 CPU processes (gloo) give the one-process results.

- Every sharded function on a tiny float64 model, on both ranks, equals one process within 1e-5,
  and each rank did only its share of the rows (cells for the patching grids); inside
  ``distributed.alone()`` one rank alone runs every row.
- ``torchrun -m interp.cli circuit`` writes the same edges.csv as one process, from rank 0 alone.
- A rank that dies stops the other with one error line, and no output folder is left.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from cli_apps import circuit_cli  # noqa: E402

from interp.distributed import World, shard_batches, shard_range  # noqa: E402


def torchrun(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node 2 ARGS`` (a free port), one CPU thread per process."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", INTERP_DIST_TIMEOUT="120")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=TESTS.parent)


def _flat(value) -> np.ndarray:
    if isinstance(value, (tuple, list)):
        return np.concatenate([_flat(v) for v in value])
    if isinstance(value, torch.Tensor):
        value = value.numpy()
    return np.asarray(value, dtype=np.float64).reshape(-1)


def test_shares_are_contiguous_and_cover_every_row_once():
    assert [list(shard_range(7, World(r, 2))) for r in range(2)] == [[0, 1, 2], [3, 4, 5, 6]]
    assert sum(len(shard_range(5, World(r, 3))) for r in range(3)) == 5
    assert shard_batches([1, 2]) == [1, 2]  # one process: everything, untouched


def test_two_processes_equal_one(tmp_path):
    from distributed_worker import results

    threads = torch.get_num_threads()
    try:
        single = results(count=False)
    finally:
        torch.set_num_threads(threads)
    run = torchrun(str(TESTS / "distributed_worker.py"), str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for name, value in single.items():
        if name == "shares":
            continue
        for rank, got in enumerate(ranks):
            np.testing.assert_allclose(_flat(got[name]), _flat(value), rtol=1e-5, atol=1e-8, err_msg=f"{name} on rank {rank}")
    # each rank did its share only: 3 and 4 of the 7 rows; the patching grids' cells split between the ranks
    for name in ("eap", "eap-ig", "evaluate", "patch_edges"):
        assert [r["shares"][name] for r in ranks] == [3, 4], name
    np.testing.assert_allclose(ranks[0]["alone"].numpy(), single["eap"][0].numpy(), rtol=1e-5, atol=1e-8)
    assert ranks[0]["shares"]["alone"] == 7 and "alone" not in ranks[1]
    n_cells = {"patching": len(single["patching"][0]), "trace": len(single["trace"][0])}
    for name, total in n_cells.items():
        shares = [r["shares"][name] for r in ranks]
        assert 0 < min(shares) and sum(shares) <= total, (name, shares)
    assert sum(r["shares"]["trace"] for r in ranks) == n_cells["trace"]


@pytest.fixture(scope="module")
def app():
    return circuit_cli()


CIRCUIT = ["--task", "ioi", "-n", "6", "--batch", "2", "--method", "eap-ig", "--steps", "2", "--verify", "4", "--device", "cpu"]


def test_cli_circuit_under_torchrun_writes_what_one_process_writes(app, tiny_folder, tmp_path):
    one = tmp_path / "one"
    result = CliRunner().invoke(app, ["circuit", tiny_folder, *CIRCUIT, "--out", str(one)])
    assert result.exit_code == 0, result.output
    two = tmp_path / "two"
    run = torchrun("-m", "interp.cli", "circuit", tiny_folder, *CIRCUIT, "--out", str(two))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.splitlines().count(str(two)) == 1  # rank 0 alone finished as the writer
    assert run.stderr.count("MIB CPR") == 1  # one summary line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # no staging folder left behind
    a, b = (pd.read_csv(folder / "edges.csv").set_index(["upstream", "downstream", "kind"]).sort_index() for folder in (one, two))
    np.testing.assert_allclose(b["score"], a["score"], rtol=1e-4, atol=1e-6)
    assert (a["in_circuit"] == b["in_circuit"]).all()
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())


DYING = """
import os, sys
if os.environ["RANK"] == "1":  # rank 1 dies in the middle of the edge scores
    import interp.circuits.eap as eap
    eap.accumulate_scores = lambda *args: os._exit(3)
from interp.cli.app import main
sys.argv = ["interp", *sys.argv[1:]]
main()
"""


def test_a_rank_that_dies_stops_the_other_with_one_line_and_writes_nothing(tiny_folder, tmp_path):
    script = tmp_path / "dying.py"
    script.write_text(DYING)
    out = tmp_path / "runs" / "circuit"
    run = torchrun(str(script), "circuit", tiny_folder, *CIRCUIT, "--out", str(out))
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.match(r"error: rank 0\b.*nothing was written", errors[0]), run.stderr[-3000:]
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))


def test_scan_under_a_launcher_runs_on_rank_0_alone(tmp_path, monkeypatch):
    import interp.cli.scan as scan_cli
    from interp.cli.app import app as main_app

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    out = tmp_path / "scan"
    result = CliRunner().invoke(main_app, ["scan", "smollm2-135m", "--out", str(out)])
    assert result.exit_code == 0 and result.output == "" and not out.exists()  # rank 1: nothing to do, nothing written

    def stop(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(scan_cli, "_run_scan", stop)  # rank 0 would scan: stop it right there
    monkeypatch.setenv("RANK", "0")
    result = CliRunner().invoke(main_app, ["scan", "smollm2-135m", "--out", str(out)])
    assert "does not split its analyses" in result.output and "rank 0 runs every analysis" in result.output
