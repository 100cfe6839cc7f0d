"""`interp circuit`: the files it writes, the offline HTML, datasets, and one-line errors that write nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import plotly.offline
import pytest
import torch
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cli_apps import circuit_cli  # noqa: E402

from interp.circuits import ioi_task, read_pairs  # noqa: E402
from interp.report.circuit_report import report_section  # noqa: E402
from interp.errors import InterpError  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def app():
    return circuit_cli()


def test_circuit_writes_every_file_and_an_offline_html(app, tiny_folder, tmp_path):
    out = tmp_path / "circuit"
    result = runner.invoke(app, ["circuit", tiny_folder, "--task", "ioi", "--n", "6", "--out", str(out),
                                 "--method", "eap-ig", "--steps", "2", "--verify", "5", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for name in ("edges.csv", "edges.parquet", "nodes.csv", "circuit.json", "circuit.html", "logit_lens.csv",
                 "faithfulness.csv", "verification.csv"):
        assert (out / name).is_file(), name
    edges = pd.read_csv(out / "edges.csv")
    assert {"upstream", "downstream", "kind", "score", "in_circuit"} <= set(edges.columns)
    assert set(edges["kind"]) == {"q", "k", "v", "mlp", "logits"}
    assert len(edges) == json.loads((out / "circuit.json").read_text())["n_graph_edges"]
    nodes = pd.read_csv(out / "nodes.csv")
    assert {"node", "kind", "layer", "head", "dla", "eap", "in_circuit"} <= set(nodes.columns)
    summary = json.loads((out / "circuit.json").read_text())
    assert summary["circuit"]["n_edges"] == int(edges["in_circuit"].sum())
    assert len(pd.read_csv(out / "verification.csv")) == 5
    page = (out / "circuit.html").read_text()
    assert "circuit-graph" in page and "faithfulness-curve" in page and "Plotly" in page
    bundle = plotly.offline.get_plotlyjs().replace("</script", "<\\/script")
    assert bundle in page
    assert "<script src=" not in page and "http" not in page.replace(bundle, "")
    # `interp report` embeds it when the scan folder holds a circuit/ folder
    assert 'id="edge-circuit"' in report_section(tmp_path)
    assert report_section(tmp_path / "nowhere") == ""


@pytest.mark.parametrize("make_args, message", [
    (lambda d: ["--task", "nope"], "unknown task"),
    (lambda d: ["--task", "ioi", "--data", str(d / "ok.jsonl")], "exactly one of"),
    (lambda d: ["--data", str(d / "missing_column.csv")], "lacks column(s) wrong"),
    (lambda d: ["--data", str(d / "multi_token.jsonl")], "row 1: answer"),
    (lambda d: ["--data", str(d / "lengths.jsonl")], "row 0: clean prompt is"),
    (lambda d: ["--task", "ioi", "--metric", "loss"], "unknown --metric"),
    (lambda d: ["--task", "ioi", "--selection", "best"], "unknown --selection"),
])
def test_bad_input_is_one_error_line_and_writes_nothing(app, tiny_folder, tmp_path, make_args, message):
    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame({"clean": ["When Mary and John went out, John gave it to"], "corrupted": ["When Anna and Paul went out, John gave it to"],
                  "answer": [" Mary"]}).to_csv(data / "missing_column.csv", index=False)
    pd.DataFrame({"clean": ["When Mary and John went out, John gave it to"] * 2,
                  "corrupted": ["When Anna and Paul went out, John gave it to"] * 2,
                  "answer": [" Mary", " Maryellen Johnsonville"], "wrong": [" John", " John"]}).to_json(
        data / "multi_token.jsonl", orient="records", lines=True)
    pd.DataFrame({"clean": ["When Mary and John went out, John gave it to"],
                  "corrupted": ["When Mary and John went out to the big shop, John gave it to"],
                  "answer": [" Mary"], "wrong": [" John"]}).to_json(data / "lengths.jsonl", orient="records", lines=True)
    (data / "ok.jsonl").write_text("")
    out = tmp_path / "out"
    result = runner.invoke(app, ["circuit", tiny_folder, *make_args(data), "--n", "4", "--out", str(out), "--device", "cpu"])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert any(line.startswith("error:") for line in lines), result.output
    assert message in result.output, result.output
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_datasets_read_jsonl_csv_parquet_alike(smollm, tmp_path):
    pairs = ioi_task(4, model=smollm, seed=1)
    pairs.frame.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    pairs.frame.to_csv(tmp_path / "d.csv", index=False)
    pairs.frame.to_parquet(tmp_path / "d.parquet")
    encoded = [read_pairs(tmp_path / f"d.{ext}").encode(smollm) for ext in ("jsonl", "csv", "parquet")]
    for batches in encoded[1:]:
        assert all(torch.equal(a.clean, b.clean) and torch.equal(a.answers, b.answers) for a, b in zip(encoded[0], batches))
    (tmp_path / "d.txt").write_text("clean,corrupted\n")
    with pytest.raises(InterpError, match="unknown format"):
        read_pairs(tmp_path / "d.txt")


def test_generators_give_equal_length_pairs_with_single_token_answers(smollm):
    from interp.circuits import factual_task, greater_than_task, induction_task

    for pairs in (ioi_task(16, model=smollm), greater_than_task(8, model=smollm), induction_task(4, model=smollm),
                  factual_task(8, model=smollm)):
        batches = pairs.encode(smollm)  # raises on any bad row
        assert sum(b.size for b in batches) == len(pairs)
    assert ioi_task(8, model=smollm, seed=3).frame.equals(ioi_task(8, model=smollm, seed=3).frame)
