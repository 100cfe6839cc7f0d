"""Data parallel under torchrun (interp.distributed): 2 CPU processes (gloo) give the one-process results.

- Every sharded function on a tiny float64 model, on both ranks, equals one process within 1e-5,
  and each rank did only its share of the rows (cells for the patching grids); inside
  ``distributed.alone()`` one rank alone runs every row.
- ``torchrun -m interp.cli circuit`` writes the same edges.csv as one process, from rank 0 alone.
- A rank that dies stops the other with one error line, and no output folder is left.
"""

from __future__ import annotations

import json
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
    assert "Loading weights" not in run.stderr  # transformers' own bar: only with --debug, and then on rank 0 only
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


# A test-only analysis that does not split (every registered one does), and a count of the rows (heads,
# layers, prompt groups) each rank's analyses took: run under torchrun as a wrapper of `interp scan`.
SCANNING = """
import atexit, json, os, sys
import torch
from interp.catalog import CATALOG
CATALOG["alone_check"] = {"description": "test only", "columns": {"alone_check_ranks": "processes it saw"}}
import interp.analyses.context as context
from interp.analyses.head_stats import head_frame
from interp.analyses.registry import register
from interp.distributed import world

@register("alone_check", splits=False)
def _alone_check(ctx):
    cfg = ctx.model.cfg
    return head_frame(ctx.model, {"alone_check_ranks": torch.full((cfg.n_layers, cfg.n_heads), float(world().size))})

import interp.analyses.head_ablation as head_ablation, interp.analyses.retrieval as retrieval
import interp.analyses.streaming as streaming, interp.analyses.token_roles as token_roles, interp.analyses.value_norm as value_norm
shares = {}

def count(module, name, size):
    inner = getattr(module, name)
    setattr(module, name, lambda *args, **kwargs: shares.setdefault(name, []).append(size(args, kwargs)) or inner(*args, **kwargs))

for module, name in ((context, "head_stat_means"), (token_roles, "_role_parts"), (value_norm, "_value_norms")):
    count(module, name, lambda args, kwargs: len(args[1]))  # probe rows
count(head_ablation, "head_ablation", lambda args, kwargs: len(kwargs["heads"]))
count(streaming, "streaming_scores", lambda args, kwargs: len(kwargs["layers"]))
count(retrieval, "_decode_groups", lambda args, kwargs: len(args[2]))  # groups of needle prompts
atexit.register(lambda: open(os.path.join(os.environ["ROWS_DIR"], f"shares{os.environ['RANK']}.json"), "w").write(json.dumps(shares)))
from interp.cli.app import main
sys.argv = ["interp", *sys.argv[1:]]
main()
"""
SCAN = ["--context-length", "128", "--batch", "2", "--needle-samples", "2", "--threads", "1", "--device", "cpu"]


def test_cli_scan_under_torchrun_splits_the_analyses_and_writes_what_one_process_writes(tiny_folder, tmp_path, monkeypatch):
    from interp.analyses.head_stats import head_frame
    from interp.analyses.registry import ANALYSES, Analysis
    from interp.catalog import CATALOG
    from interp.cli.app import app as main_app

    names = ",".join([*ANALYSES, "alone_check"])
    script = tmp_path / "scanning.py"
    script.write_text(SCANNING)
    two = tmp_path / "two"
    monkeypatch.setenv("ROWS_DIR", str(tmp_path))
    run = torchrun(str(script), "scan", tiny_folder, *SCAN, "--analyses", names, "--out", str(two))
    assert run.returncode == 0, run.stderr[-3000:]

    # One process, with the same test analysis (registered here for this test only).
    monkeypatch.setitem(CATALOG, "alone_check", {"description": "test only", "columns": {"alone_check_ranks": "processes"}})
    monkeypatch.setitem(ANALYSES, "alone_check", Analysis(
        "alone_check", lambda ctx: head_frame(ctx.model, {"alone_check_ranks": torch.ones(ctx.model.cfg.n_layers, ctx.model.cfg.n_heads)}),
        CATALOG["alone_check"]["columns"], "test only", splits=False))
    one = tmp_path / "one"
    result = CliRunner().invoke(main_app, ["scan", tiny_folder, *SCAN, "--analyses", names, "--out", str(one), "--no-report"])
    assert result.exit_code == 0, result.output

    # Rank 0 alone wrote the folder (report included) and printed; the note names the analysis that ran on rank 0 only.
    assert run.stdout.splitlines().count(str(two)) == 1 and run.stderr.count("scanned 8 heads") == 1
    notes = [line for line in run.stderr.splitlines() if line.startswith("note:")]
    assert notes == ["note: 2 processes share the scan; on rank 0 only (they do not split): alone_check"], run.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["one", "two"]  # nothing staged left behind
    assert (two / "report.html").exists()
    # Each rank did its share: one row of each batch-2 probe (the shared statistics passes, the role
    # scores on two probes each, value norms), 4 of the 8 heads to ablate, 1 of the 2 layers of streaming's
    # causal score, 1 of the 2 groups of needle prompts (lengths 64 and 128).
    share = {"head_stat_means": [1, 1, 1], "_role_parts": [1] * 4, "_value_norms": [1], "head_ablation": [4],
             "streaming_scores": [1], "_decode_groups": [1]}
    assert [json.loads((tmp_path / f"shares{rank}.json").read_text()) for rank in (0, 1)] == [share] * 2

    # The tables equal one process's within float32 rounding (the statistics kernel runs in float32, so
    # the scan has no float64 mode; a row computed in a batch of 1 instead of 2 differs by ~1e-7).
    a, b = (pd.read_csv(folder / "heads.csv") for folder in (one, two))
    assert list(b.columns[:len(a.columns)]) == list(a.columns)  # then the report's derived columns (roles, ...)
    b = b[a.columns]
    assert (b["alone_check_ranks"] == 1.0).all()  # it ran on rank 0 alone, outside the group
    numbers = [c for c in a.columns if pd.api.types.is_float_dtype(a[c])]
    assert len(numbers) > 25
    np.testing.assert_allclose(b[numbers].to_numpy(), a[numbers].to_numpy(), rtol=1e-5, atol=1e-5)
    assert a.drop(columns=numbers).equals(b.drop(columns=numbers))
    for table in ("streaming_kv_heads", "secondary_sinks"):
        x, y = (pd.read_csv(folder / f"{table}.csv") for folder in (one, two))
        pd.testing.assert_frame_equal(x, y, rtol=1e-5, atol=1e-5)
    meta = {folder.name: json.loads((folder / "scan.json").read_text()) for folder in (one, two)}
    assert meta["two"]["summary"] == meta["one"]["summary"]
    assert meta["two"]["ranks"] == {"world_size": 2, "rank_0_only": ["alone_check"]} and "ranks" not in meta["one"]


def test_scan_under_a_launcher_refuses_device_map_before_loading(tmp_path, monkeypatch):
    from interp.cli.app import app as main_app

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    out = tmp_path / "scan"
    result = CliRunner().invoke(main_app, ["scan", "smollm2-135m", "--device", "map", "--out", str(out)])
    assert result.exit_code == 1 and "under torchrun use --device auto" in result.output and not out.exists()
