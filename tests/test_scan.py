"""interp.scan and the `interp scan` CLI on the shipped model and on tiny models."""

import json
import os
from pathlib import Path
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

import interp
from interp.analyses import ANALYSES
from interp.cli import app
from interp.analyses.probes import default_probes
from interp.scanning import load_scan, write_scan

DOCUMENTED_COLUMNS = [
    "layer", "head", "kv_head",
    "sink_mass", "sink_mass_first_k", "sink_alpha0", "sink_has_sink",
    "entropy_mean", "entropy_normalized",
    "max_attention_mean", "max_attention_repeated",
    *[f"{role}_score{suffix}" for role in ("previous_token", "duplicate_token", "induction") for suffix in ("", "_tl", "_natural")],
    "dormant_sink_natural", "dormant_sink_code", "dormant_sink_repeated", "dormant_sink_range", "dormant_switching",
    "value_norm_first", "value_norm_ratio",
    "retrieval_score", "retrieval_head",
    "streaming_mass_outside", "streaming_score", "streaming_score_kv",
    "head_ablation_loss_delta",
]


@pytest.fixture(scope="module")
def smollm_scan(smollm):
    settings = interp.ScanSettings(
        context_length=96, batch=2, seed=3, needle_samples=2, retrieval_check_k=0, streaming_window=32,
        ablation_tokens=16,
    )
    return interp.scan(smollm, settings=settings), settings


def test_scan_has_one_row_per_head_and_the_documented_columns(smollm_scan):
    result, _ = smollm_scan
    assert list(result.heads.columns) == DOCUMENTED_COLUMNS
    assert len(result.heads) == 30 * 9
    assert result.heads[["layer", "head"]].drop_duplicates().shape[0] == 270
    assert (result.heads["kv_head"] == result.heads["head"] // 3).all()
    assert result.metadata["settings"]["seed"] == 3
    assert result.metadata["native_kernels"] is True  # this machine has a C compiler: the fast CPU path ran


def test_readme_documents_every_column():
    readme = open(Path(__file__).resolve().parent.parent / "README.md").read()
    for analysis in ANALYSES.values():
        for column in analysis.columns:
            assert f"`{column}`" in readme, column


@torch.no_grad()
def test_scan_scores_agree_with_the_eager_attention_pattern(smollm, smollm_scan):
    """Sink mass, entropy and max attention recomputed by hand from the materialized pattern."""
    result, settings = smollm_scan
    probes = default_probes(smollm, context_length=settings.context_length, batch=settings.batch, seed=settings.seed)
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(30)]
    _, natural = smollm.run_with_cache(probes["natural"].tokens, names=names)
    _, repeated = smollm.run_with_cache(probes["repeated"].tokens, names=names)
    pattern = torch.stack([natural[n] for n in names])[:, :, :, 1:]  # [layer, batch, head, query>=1, key]
    visible = torch.arange(2, settings.context_length + 1, dtype=torch.float32)
    entropy = -(pattern * pattern.clamp_min(1e-30).log()).sum(-1)
    expected = {
        "sink_mass": pattern[..., 0].mean(dim=(1, 3)),
        "sink_mass_first_k": pattern[..., :4].sum(-1).mean(dim=(1, 3)),
        "entropy_mean": entropy.mean(dim=(1, 3)),
        "entropy_normalized": (entropy / visible.log()).mean(dim=(1, 3)),
        "max_attention_mean": pattern.max(-1).values.mean(dim=(1, 3)),
        "max_attention_repeated": torch.stack([repeated[n] for n in names])[:, :, :, 1:].max(-1).values.mean(dim=(1, 3)),
    }
    for column, values in expected.items():
        got = torch.tensor(result.heads[column].to_numpy(), dtype=torch.float32).reshape(30, 9)
        torch.testing.assert_close(got, values, atol=2e-5, rtol=1e-4, msg=column)
    # The real model has attention sinks: some heads put most of their attention on token 0.
    assert result.heads["sink_mass"].max() > 0.5


def test_same_seed_gives_identical_tables(smollm, smollm_scan):
    result, settings = smollm_scan
    again = interp.scan(smollm, settings=settings, analyses="sink")
    assert again.heads["sink_mass"].equals(result.heads["sink_mass"])


def test_write_and_load_round_trip_and_refuse_to_overwrite(smollm_scan, tmp_path):
    result, _ = smollm_scan
    out = write_scan(result, tmp_path / "scan")
    loaded = load_scan(out)
    assert loaded.heads.shape == result.heads.shape
    assert (loaded.heads[DOCUMENTED_COLUMNS[:3]] == result.heads[DOCUMENTED_COLUMNS[:3]]).all().all()
    torch.testing.assert_close(
        torch.tensor(loaded.heads["entropy_mean"].to_numpy()), torch.tensor(result.heads["entropy_mean"].to_numpy())
    )
    assert json.loads((out / "scan.json").read_text())["schema_version"] == 1
    with pytest.raises(interp.InterpError, match="already holds a scan; pass --overwrite"):
        write_scan(result, out)
    write_scan(result, out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan"]  # no staging folder left behind


def test_statistics_forwards_report_each_layer_and_the_plan_is_recorded(smollm):
    steps = []
    result = interp.scan(
        smollm, analyses="entropy", settings=interp.ScanSettings(context_length=32, batch=1),
        on_step=lambda name, done, total: steps.append((name, done, total)),
    )
    assert steps == [("entropy", layer, 30) for layer in range(1, 31)]
    plan = result.metadata["memory_plan"]
    assert 0 < plan["estimated_peak_bytes"] <= plan["limit_bytes"] and plan["chunk_bytes"] > 0


def test_cli_scan_writes_the_folder(tmp_path):
    out = tmp_path / "out"
    run = CliRunner().invoke(app, ["scan", "smollm2-135m", "--out", str(out), "--context-length", "32",
                                   "--batch", "1", "--analyses", "sink,entropy"])
    assert run.exit_code == 0, run.output
    heads = load_scan(out).heads
    assert len(heads) == 270 and "sink_mass" in heads and "max_attention_mean" not in heads


@pytest.mark.parametrize(
    "args, message",
    [
        (["does-not-exist"], "neither a local path nor reachable"),
        (["smollm2-135m", "--analyses", "sink,bogus"], "unknown analysis bogus; choose from: sink"),
        (["smollm2-135m", "--context-length", "100000"], "exceeds the model's context window of 8192"),
        (["smollm2-135m", "--context-length", "100000", "--beyond-context", "--max-memory", "1GB"],
         "the scan needs about"),
        (["smollm2-135m", "--backend", "cuda"], "unknown --backend 'cuda'"),
        (["smollm2-135m", "--analyses", ","], "--analyses is empty; choose from"),
        (["smollm2-135m", "--batch", "0"], "--batch must be at least 1"),
        (["smollm2-135m", "--context-length", "4"], "--context-length must be at least 8"),
        (["smollm2-135m", "--overwrite", "--resume"], "--overwrite and --resume contradict"),
        (["smollm2-135m", "--dtype", "float8"], "unknown dtype 'float8'"),
        (["/nonexistent/folder/model.gguf"], "does not exist; check the path"),
    ],
)
def test_cli_bad_input_is_one_line_and_leaves_no_output(tmp_path, args, message):
    out = tmp_path / "out"
    run = CliRunner().invoke(app, ["scan", *args, "--out", str(out)])
    assert run.exit_code == 1
    assert message in run.output
    assert "Traceback" not in run.output
    assert not out.exists()


def test_beyond_context_probes_run_past_the_trained_window(smollm):
    from interp.analyses.probes import default_probes

    length = smollm.cfg.n_ctx + 8
    with pytest.raises(interp.InterpError, match="pass --beyond-context"):
        default_probes(smollm, context_length=length, batch=1)
    probes = default_probes(smollm, context_length=length, batch=1, beyond_context=True)
    assert {name: tuple(p.tokens.shape) for name, p in probes.items()} == {name: (1, length) for name in probes}


def test_cli_subprocess_exit_code_for_unknown_model(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "interp.cli", "scan", "does-not-exist", "--out", str(tmp_path / "o")],
        capture_output=True, text=True,
    )
    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "does-not-exist" in errors[0]
    assert "Traceback" not in run.stderr and not (tmp_path / "o").exists()


def test_cli_bad_local_inputs_and_unwritable_output(tmp_path):
    folder = tmp_path / "weights-missing"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text("{oops")
    (corrupt / "model.safetensors").write_bytes(b"")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    cases = [
        ([str(folder), "--out", str(tmp_path / "o1")], "has config.json but no weights"),
        ([str(corrupt), "--out", str(tmp_path / "o2")], "config.json could not be read"),
        ([str(a_file), "--out", str(tmp_path / "o3")], "is a file but not a .gguf model"),
        (["smollm2-135m", "--out", str(a_file)], "is a file; choose a folder path"),
    ]
    if os.geteuid() != 0:  # root can write anywhere; the permission check only bites for other users
        cases.append((["smollm2-135m", "--out", str(locked / "out")], "cannot write to"))
    for args, message in cases:
        run = CliRunner().invoke(app, ["scan", *args])
        assert run.exit_code == 1 and message in run.output and "Traceback" not in run.output, (args, run.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt", "file.txt", "locked", "weights-missing"]
    locked.chmod(0o700)
