"""Issue #14: every bad input gives one `error:` line (CLI) or one InterpError (Python) before any work.

Most tests here load no real model: CLI cases replace `interp.load` with a function that fails the
test, so they prove the check runs before the model loads; API cases use random-init tiny models.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from tiny_models import tiny_model
from typer.testing import CliRunner

import interp
from interp.cli import app
from interp.errors import InterpError
from interp.hooks import HookedModel

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.fixture
def no_model_load(monkeypatch):
    """Make any model load fail the test: the check under test must come first."""

    def boom(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad argument was refused")

    monkeypatch.setattr(interp, "load", boom)
    monkeypatch.setattr("interp.models.loading.load", boom)


@pytest.fixture(scope="module")
def tiny() -> HookedModel:
    return HookedModel(tiny_model("llama"))


# ------------------------------------------------------------------------------------------ fast start
def test_importing_the_cli_does_not_import_torch_transformers_or_pandas():
    code = "import sys, interp.cli; print(sorted(m for m in ('torch', 'transformers', 'pandas') if m in sys.modules))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, check=True)
    assert run.stdout.strip() == "[]"


@pytest.mark.parametrize("args", [
    ["--help"], ["analyses"], ["scan", "--batch", "0"], ["trace", "--help"], ["circuit", "--task", "nope"],
    ["circuit", "--task", "ioi", "--edges", "-5"], ["circuit", "--task", "ioi", "--metric", "loss"],
    ["patch", "smollm2-135m", "--task", "ioi", "--n", "-1", "--out", "unused-out"],
])
def test_help_analyses_and_argument_errors_start_fast(args):
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "interp.cli", *args], capture_output=True, text=True, env=ENV)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert run.returncode in (0, 1), run.stderr
    # CPU time, not wall time, so a busy machine does not make it flaky: ~0.25 s now, 7-12 s before
    # (importing torch and transformers alone costs ~3 s of CPU). Wall time gets a loose bound.
    assert cpu < 1.5, f"interp {' '.join(args)} used {cpu:.2f}s of CPU"
    assert seconds < 20, f"interp {' '.join(args)} took {seconds:.1f}s"


def test_lazy_package_keeps_the_public_api():
    import interp.scanning.run  # noqa: F401  (a submodule import must not shadow the function interp.scan)

    assert callable(interp.scan) and interp.scan is interp.scanning.run.scan
    assert interp.ScanSettings is interp.analyses.context.ScanSettings
    assert {"load", "scan", "HookedModel", "StatsConfig"} <= set(dir(interp))
    code = "import interp; print(interp.analyses.causal_trace.__name__, interp.report.load_heads.__name__, callable(interp.scan))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert run.stdout.split() == ["causal_trace", "load_heads", "True"], run.stderr


def test_every_declared_analysis_is_registered_in_catalog_order():
    from interp.analyses import ANALYSES
    from interp.catalog import CATALOG
    from interp.kernels import BACKENDS
    from interp.settings import BACKENDS as SETTINGS_BACKENDS

    assert list(ANALYSES) == list(CATALOG)
    assert all(ANALYSES[name].columns == CATALOG[name]["columns"] for name in CATALOG)
    assert SETTINGS_BACKENDS == BACKENDS


def test_help_shows_defaults_and_readable_types():
    env = {**ENV, "COLUMNS": "80"}
    text = subprocess.run([sys.executable, "-m", "interp.cli", "scan", "--help"], capture_output=True, text=True,
                          env=env, check=True).stdout
    assert "interp-out/<model>" in text and "[default: (all)]" in text and "[default: 256]" in text
    assert "<bool>" not in text and "--no-overwrite" not in text
    assert "--out DIR" in text and "--max-memory SIZE" in text
    line = next(l for l in text.splitlines() if l.strip().startswith("--beyond-context"))
    assert len(line.split("  ")[-1].strip()) > 30, "descriptions wrap far too early"


# ------------------------------------------------------------------------------------------ CLI: checked before loading
@pytest.mark.parametrize(
    "args, message",
    [
        (["scan", "smollm2-135m", "-c", "0"], "--context-length must be at least 8"),
        (["scan", "smollm2-135m", "--batch", "0"], "--batch must be at least 1"),
        (["scan", "smollm2-135m", "--needle-samples", "0"], "--needle-samples must be at least 1"),
        (["scan", "smollm2-135m", "--max-memory", "0MB"], "must be more than zero bytes"),
        (["scan", "smollm2-135m", "--max-memory", "lots"], "cannot read memory size"),
        (["scan", "smollm2-135m", "--backend", "triton", "--device", "cpu"], "--backend triton needs a CUDA GPU"),
        (["scan", "smollm2-135m", "--analyses", "sink,bogus"], "unknown analysis bogus"),
        (["trace", "smollm2-135m", "--prompt", "a b", "--subject", "a", "--window", "0"], "window (--window) must be at least 1"),
        (["trace", "smollm2-135m", "--prompt", "a b", "--subject", "a", "--noise", "nan"], "must be a finite number above 0"),
        (["trace", "smollm2-135m", "--prompt", "a b", "--subject", "a", "--samples", "0"], "samples (--samples) must be at least 1"),
        (["patch", "smollm2-135m", "--clean", "a b", "--corrupt", "b a", "--answers", " Mary, Mary"], "are the same answer"),
        (["patch", "smollm2-135m", "--clean", "a b", "--corrupt", "a b", "--answers", " Mary, John"], "equals its --clean prompt"),
        (["patch", "smollm2-135m", "--clean", "a b", "--corrupt", "b a", "--answers", " Mary, John", "--batch-size", "0"],
         "must be a positive integer"),
        (["patch", "smollm2-135m", "--task", "ioi", "--clean", "a b"], "give exactly one of"),
        (["trace", "smollm2-135m", "--task", "factual", "--prompt", "a b", "--subject", "a"], "give exactly one of"),
        (["patch", "smollm2-135m", "--task", "nope"], "unknown task 'nope'"),
        (["trace", "smollm2-135m", "--task", "ioi"], "has no subject to corrupt"),
        (["patch", "smollm2-135m", "--data", "/nonexistent/pairs.jsonl"], "does not exist"),
        (["trace", "smollm2-135m", "--task", "factual", "--n", "0"], "--n must be at least 1"),
        (["patch", "smollm2-135m", "--task", "ioi", "--n", "-1"], "--n must be at least 1"),
        (["circuit", "smollm2-135m", "--task", "nope"], "unknown task 'nope'"),
        (["circuit", "smollm2-135m", "--task", "ioi", "--n", "0"], "--n must be at least 1"),
        (["circuit", "smollm2-135m", "--task", "ioi", "--steps", "0"], "--steps must be at least 1"),
        (["circuit", "smollm2-135m", "--task", "ioi", "--edges", "-5"], "--edges must be at least 1"),
        (["circuit", "smollm2-135m", "--task", "ioi", "--verify", "-1"], "--verify must be 0"),
        (["circuit", "smollm2-135m", "--task", "ioi", "--method", "acdc"], "unknown --method"),
        (["circuit", "smollm2-135m", "--task", "ioi", "--metric", "loss"], "unknown --metric"),
        (["circuit", "smollm2-135m", "--data", "/nonexistent/pairs.jsonl"], "does not exist"),
    ],
)
def test_cli_refuses_bad_arguments_before_loading_the_model(tmp_path, no_model_load, monkeypatch, args, message):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    out = tmp_path / "out"
    run = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert run.exit_code == 1, run.output
    errors = [line for line in run.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in run.output, run.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_an_unwritable_out_fails_up_front(no_model_load, tmp_path):
    run = CliRunner().invoke(app, ["scan", "smollm2-135m", "--out", "/proc/x"])
    assert run.exit_code == 1 and "cannot write to /proc" in run.output, run.output
    run = CliRunner().invoke(app, ["trace", "smollm2-135m", "--prompt", "a", "--subject", "a", "--out", "/proc/x"])
    assert run.exit_code == 1 and "cannot write to /proc" in run.output, run.output


# ------------------------------------------------------------------------------------------ the lock
def test_a_second_scan_or_report_into_a_locked_folder_stops_at_start(tmp_path, no_model_load):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = tmp_path / "out"
        out.mkdir()
        (out / ".interp.lock").write_text(f"{holder.pid} scan\n")
        run = CliRunner().invoke(app, ["scan", "smollm2-135m", "--out", str(out)])
        assert run.exit_code == 1 and f"in use by another interp process (pid {holder.pid})" in run.output, run.output
        (out / "heads.csv").write_text("layer,head\n0,0\n")
        (out / "scan.json").write_text("{}")
        run = CliRunner().invoke(app, ["report", str(out)])
        assert run.exit_code == 1 and f"pid {holder.pid}" in run.output, run.output
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_is_released_and_a_dead_holder_is_taken_over(tmp_path):
    from interp.output import LOCK_FILE, folder_lock, lock_holder

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    folder = tmp_path / "new" / "out"
    folder.mkdir(parents=True)
    (folder / LOCK_FILE).write_text(f"{int(dead.stdout)} scan\n")
    with folder_lock(folder) as lock:
        assert lock.read_text().split()[0] == str(os.getpid())
    assert not (folder / LOCK_FILE).exists() and lock_holder(folder) is None
    with folder_lock(tmp_path / "fresh" / "deeper"):
        pass
    assert not (tmp_path / "fresh").exists()  # folders the lock created are removed when still empty


# ------------------------------------------------------------------------------------------ Python API
def test_scan_settings_validate_themselves():
    for bad, message in [
        (dict(batch=0), "--batch must be at least 1"),
        (dict(context_length=0), "--context-length must be at least 8"),
        (dict(context_length=32.5), "must be an integer"),
        (dict(backend="cuda"), "unknown --backend 'cuda'"),
        (dict(streaming_window=0), "ScanSettings.streaming_window must be at least 1"),
        (dict(beyond_context="yes"), "must be True or False"),
    ]:
        with pytest.raises(InterpError, match="^" + bad_re(message)):
            interp.ScanSettings(**bad)


def bad_re(message: str) -> str:
    import re

    return ".*" + re.escape(message)


def test_scan_checks_before_building_any_probe(tiny, tmp_path, monkeypatch):
    def no_probes(*args, **kwargs):
        raise AssertionError("probes were built (tokenized) before the checks")

    monkeypatch.setattr("interp.scanning.run.default_probes", no_probes)
    huge = interp.ScanSettings(context_length=10**9, beyond_context=True)
    with pytest.raises(InterpError, match="the scan needs about"):
        interp.scan(tiny, analyses="sink", settings=huge)
    with pytest.raises(InterpError, match="exceeds the model's context window of 256"):
        interp.scan(tiny, analyses="sink", settings=interp.ScanSettings(context_length=300))
    with pytest.raises(InterpError, match="the scan needs about"):
        interp.scan(tiny, analyses="sink", settings=interp.ScanSettings(context_length=64), max_memory="1KB")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(InterpError, match="is a file"):
        interp.scan(tiny, analyses="sink", settings=interp.ScanSettings(context_length=16), checkpoint_dir=a_file)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(InterpError, match="triton needs a CUDA GPU"):
        interp.scan(tiny, analyses="sink", settings=interp.ScanSettings(context_length=16, backend="triton"))


def test_plain_forward_beyond_the_trained_window_warns(tiny):
    from interp.errors import BeyondContextWarning

    with pytest.warns(BeyondContextWarning, match="exceed .* context window of 256"):
        tiny(torch.zeros(1, 260, dtype=torch.long))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", BeyondContextWarning)
        tiny(torch.zeros(1, 256, dtype=torch.long))


def test_knockout_refuses_out_of_range_layers_heads_and_edges(tiny):
    tokens = torch.arange(5)[None]
    edges = torch.zeros(5, 5, dtype=torch.bool)
    edges[4, 0] = True
    for kwargs, message in [
        (dict(layers=[99]), "layers \\[99\\] are out of range: the model has layers 0..1"),
        (dict(layers=[]), "out of range"),
        (dict(heads=[20]), "heads \\[20\\] are out of range: the model has query heads 0..3"),
    ]:
        with pytest.raises(InterpError, match=message):
            with tiny.knockout(edges, **kwargs):
                pass
    big = torch.zeros(100, 100, dtype=torch.bool)
    big[4, 0] = True
    with pytest.raises(InterpError, match="cover 100 x 100 .* the input has 5 tokens"):
        with tiny.knockout(big):
            tiny(tokens)
    with pytest.raises(InterpError, match="must be square"):
        with tiny.knockout(torch.zeros(5, 4, dtype=torch.bool)):
            pass
    with pytest.raises(InterpError, match="have 3 batch rows but the input has 2"):
        with tiny.knockout(torch.zeros(3, 5, 5, dtype=torch.bool)):
            tiny(tokens.repeat(2, 1))
    with pytest.raises(InterpError, match="have 2 heads but the model has 4"):
        with tiny.knockout(torch.zeros(1, 2, 5, 5, dtype=torch.bool)):
            pass
    with tiny.knockout(edges, layers=[1], heads=[0, 3]):  # in range: runs
        assert tiny(tokens).shape == (1, 5, tiny.cfg.d_vocab)


def test_degenerate_causal_requests_are_refused(tiny):
    from interp.analyses import activation_patching, attribution_patching, causal_trace

    prompt = torch.arange(1, 7)
    for kwargs, message in [(dict(window=0), "window"), (dict(noise=math.nan), "finite"), (dict(noise=0.0), "finite"),
                            (dict(samples=0), "samples")]:
        with pytest.raises(InterpError, match=message):
            causal_trace(tiny, prompt, (0, 2), 3, **kwargs)
    clean, corrupted = torch.arange(1, 7)[None], torch.arange(2, 8)[None]
    for patching in (activation_patching, attribution_patching):
        with pytest.raises(InterpError, match="clean and corrupted prompts are identical"):
            patching(tiny, clean, clean, answers=(3, 4))
        with pytest.raises(InterpError, match="same token"):
            patching(tiny, clean, corrupted, answers=(3, 3))
    frame = activation_patching(tiny, clean, corrupted, answers=(3, 4), layers=[0])
    assert frame["normalized"].notna().all()


def test_trace_and_patch_report_progress_per_cell_batch(tiny):
    from interp.analyses import activation_patching, causal_trace

    seen = []
    causal_trace(tiny, torch.arange(1, 7), (0, 2), 3, samples=2, kinds=["resid"], batch_size=4,
                 progress=lambda done, total: seen.append((done, total)))
    assert seen == [(2, 12), (4, 12), (6, 12), (8, 12), (10, 12), (12, 12)]
    seen.clear()
    activation_patching(tiny, torch.arange(1, 7)[None], torch.arange(2, 8)[None], answers=(3, 4), batch_size=5,
                        progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (12, 12) and len(seen) == 3


# ------------------------------------------------------------------------------------------ stale files, run ids
def _result(value: float, run_id: str):
    from interp.scanning import ScanResult

    heads = pd.DataFrame({"layer": [0, 0], "head": [0, 1], "kv_head": [0, 0], "sink_mass": [value, value / 2]})
    metadata = {"schema_version": 1, "run_id": run_id, "fingerprint": run_id, "columns": {"sink_mass": "m"},
                "tables": ["secondary_sinks"]}
    return ScanResult(heads=heads, metadata=metadata, tables={"secondary_sinks": pd.DataFrame({"row": [0]})})


def test_overwrite_removes_every_file_of_the_previous_scan(tmp_path):
    from interp.report import load_heads, write_exports
    from interp.scanning import write_scan

    out = tmp_path / "out"
    first = _result(0.9, "run-one")
    write_scan(first, out)
    write_exports(first, out, overwrite=True)
    (out / "report.html").write_text("old report")
    (out / "analyses").mkdir()
    (out / "analyses" / "sink.json").write_text(json.dumps({"fingerprint": "run-one"}))
    (out / "analyses" / "sink.csv").write_text("layer,head\n")
    second = _result(0.2, "run-two")
    second.tables = {}
    second.metadata["tables"] = []
    write_scan(second, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["analyses", "heads.csv", "scan.json"]
    assert list((out / "analyses").iterdir()) == []
    assert load_heads(out)["sink_mass"].tolist() == [0.2, 0.1]


def test_load_heads_never_mixes_runs(tmp_path):
    from interp.report import load_heads, write_exports
    from interp.scanning.files import export_run_id
    from interp.scanning import write_scan

    stale, fresh = tmp_path / "stale", tmp_path / "fresh"
    write_exports(_result(0.9, "run-one"), stale)
    write_scan(_result(0.2, "run-two"), fresh)
    for name in ("heads.parquet", "heads.json"):
        (fresh / name).write_bytes((stale / name).read_bytes())  # an export left behind by another run
    assert export_run_id(fresh / "heads.parquet") == "run-one"
    assert load_heads(fresh)["sink_mass"].tolist() == [0.2, 0.1]
    (fresh / "heads.csv").unlink()
    with pytest.raises(InterpError, match="come from another run than scan.json"):
        load_heads(fresh)
    write_exports(_result(0.2, "run-two"), fresh, overwrite=True)
    assert export_run_id(fresh / "heads.json") == "run-two"
    assert load_heads(fresh)["sink_mass"].tolist() == [0.2, 0.1]


def test_a_truncated_heads_csv_is_one_error(tmp_path, no_model_load):
    from interp.report import load_heads
    from interp.scanning import write_scan

    out = tmp_path / "scan"
    write_scan(_result(0.5, "r"), out)
    text = (out / "heads.csv").read_text()
    (out / "heads.csv").write_text(text[: text.rindex("\n", 0, len(text) - 1) + 3])  # cut inside the last row
    with pytest.raises(InterpError, match="truncated or damaged"):
        load_heads(out / "heads.csv")
    run = CliRunner().invoke(app, ["report", str(out)])
    assert run.exit_code == 1 and "truncated or damaged" in run.output and "Traceback" not in run.output, run.output
    assert not (out / "report.html").exists()


def test_output_folders_get_the_users_umask(tmp_path):
    from interp.cli.causal import write_atomically

    old = os.umask(0o022)
    try:
        write_atomically(tmp_path / "trace", lambda folder: (folder / "a.txt").write_text("x"), overwrite=False)
    finally:
        os.umask(old)
    assert (tmp_path / "trace").stat().st_mode & 0o777 == 0o755
