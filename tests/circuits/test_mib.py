"""MIB's yardstick: CPR / CMD on MIB's edge-fraction grid, MIB's edge-score JSON both ways, `interp circuit --evaluate`."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from cli_apps import circuit_cli  # tests/ is on sys.path (tests/circuits/conftest.py)

from interp.circuits.evaluation import MIB_FRACTIONS, area_under_curve, mib_sizes
from interp.circuits.graph import CircuitGraph
from interp.circuits.mib import check_mib_scores, mib_edges, read_mib_scores, to_mib_dict, write_mib_scores
from interp.errors import InterpError

runner = CliRunner()


def test_area_under_curve_matches_hand_computed_trapezoids():
    # x = 0.1, 0.5, 1.0; f = 0.2, 0.6, 1.2
    # CPR = 0.4 * (0.2 + 0.6) / 2 + 0.5 * (0.6 + 1.2) / 2 = 0.16 + 0.45 = 0.61
    # |1 - f| = 0.8, 0.4, 0.2: CMD = 0.4 * (0.8 + 0.4) / 2 + 0.5 * (0.4 + 0.2) / 2 = 0.24 + 0.15 = 0.39
    cpr, cmd = area_under_curve([0.1, 0.5, 1.0], [0.2, 0.6, 1.2])
    assert cpr == pytest.approx(0.61, abs=1e-12)
    assert cmd == pytest.approx(0.39, abs=1e-12)
    # |1 - f| is taken per point, not of the line: f = 0 then 2 gives CMD 1 * (1 + 1) / 2 = 1 (the line crosses 1).
    assert area_under_curve([0.0, 1.0], [0.0, 2.0]) == pytest.approx((1.0, 1.0))
    # A perfect circuit at every MIB grid point: the grid spans 0.001..1 with no point at 0.
    cpr, cmd = area_under_curve(MIB_FRACTIONS, [1.0] * len(MIB_FRACTIONS))
    assert cpr == pytest.approx(0.999, abs=1e-12) and cmd == 0.0
    with pytest.raises(InterpError, match="at least two"):
        area_under_curve([0.1, 0.2], [1.0])
    with pytest.raises(InterpError, match="must increase"):
        area_under_curve([0.2, 0.1], [1.0, 1.0])


def test_mib_grid_and_edge_names_match_mibs_gpt2_file():
    # MIB-circuit-track's circuits/ioi-eap-ig.json (GPT-2 small: 12 layers x 12 heads) holds 32491 edges and
    # 158 nodes; its first edges are these, and MIB's first grid size is int(0.001 * 32491) = 32.
    graph = CircuitGraph(12, 12, 12)
    edges = mib_edges(graph)
    assert len(edges) == graph.n_edges == 32491
    assert [e[0] for e in edges[:5]] == ["input->a0.h0<q>", "input->a0.h0<k>", "input->a0.h0<v>", "input->a0.h1<q>",
                                          "input->a0.h1<k>"]
    names = {e[0] for e in edges}
    assert {"input->m0", "a0.h11->m0", "a0.h0->a1.h2<q>", "m11->logits", "input->logits"} <= names
    assert "a1.h0->m0" not in names and "a0.h0->a0.h1<q>" not in names
    data = to_mib_dict(graph, torch.zeros(graph.n_up, graph.n_down), d_model=768)
    assert len(data["nodes"]) == 158 and list(data["nodes"])[:2] == ["input", "a0.h0"] and list(data["nodes"])[-1] == "logits"
    assert data["cfg"] == {"n_layers": 12, "n_heads": 12, "parallel_attn_mlp": False, "d_model": 768}
    assert mib_sizes(32491) == [32, 64, 162, 324, 649, 1624, 3249, 6498, 16245, 32491]


def _gqa_scores(graph: CircuitGraph, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(graph.n_up, graph.n_down, generator=gen, dtype=torch.float64) * graph.edge_mask
    circuit = (torch.rand(graph.n_up, graph.n_down, generator=gen) < 0.2) & graph.edge_mask
    return scores, circuit


def test_gqa_export_splits_kv_scores_per_query_head_and_import_sums_them(tmp_path):
    graph = CircuitGraph(2, 4, 2)  # 2 query heads per KV head
    scores, circuit = _gqa_scores(graph)
    path = write_mib_scores(tmp_path / "mib_scores.json", graph, scores, circuit, d_model=8)
    data = json.loads(path.read_text())
    assert len(data["edges"]) == 1 * 4 * 3 + 6 * 4 * 3 + 5 + 10 + 11  # q/k/v per query head from 1 then 6 nodes, MLPs, logits
    # a0.kv1's k input: query heads 2 and 3 of layer 1 each carry half the KV input's score
    u, v = graph.edge_index("a0.h1", "a1.kv1", "k")
    halves = [data["edges"][f"a0.h1->a1.h{h}<k>"] for h in (2, 3)]
    assert [e["score"] for e in halves] == [float(scores[u, v]) / 2] * 2
    assert all(e["in_graph"] == bool(circuit[u, v]) for e in halves)
    u, v = graph.edge_index("embed", "a1.h3", "q")
    assert data["edges"]["input->a1.h3<q>"]["score"] == float(scores[u, v])
    back, in_graph = read_mib_scores(path, graph)
    assert torch.equal(back, scores) and torch.equal(in_graph, circuit)
    # import: any copy in the graph puts the shared input in; the scores add
    data["edges"]["a0.h1->a1.h2<k>"] = {"score": 1.0, "in_graph": True}
    data["edges"]["a0.h1->a1.h3<k>"] = {"score": 0.25, "in_graph": False}
    (tmp_path / "edited.json").write_text(json.dumps(data))
    back, in_graph = read_mib_scores(tmp_path / "edited.json", graph)
    u, v = graph.edge_index("a0.h1", "a1.kv1", "k")
    assert float(back[u, v]) == 1.25 and bool(in_graph[u, v])


def test_mib_files_for_another_graph_or_malformed_are_refused_in_one_line(tmp_path):
    graph = CircuitGraph(2, 4, 2)
    write_mib_scores(tmp_path / "other.json", CircuitGraph(2, 2, 2), *_gqa_scores(CircuitGraph(2, 2, 2)))
    assert check_mib_scores(tmp_path / "other.json") == (2, 2)
    with pytest.raises(InterpError, match=r"do not match .* 2-layer, 4-head graph") as info:
        read_mib_scores(tmp_path / "other.json", graph)
    assert "\n" not in str(info.value)
    data = json.loads((tmp_path / "other.json").read_text())
    del data["edges"]["input->m0"]
    (tmp_path / "short.json").write_text(json.dumps(data))
    with pytest.raises(InterpError, match="1 missing, 0 unknown, e.g. missing 'input->m0'"):
        check_mib_scores(tmp_path / "short.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InterpError, match="not readable JSON"):
        check_mib_scores(tmp_path / "bad.json")
    with pytest.raises(InterpError, match="does not exist"):
        check_mib_scores(tmp_path / "nowhere.json")


@pytest.fixture(scope="module")
def app():
    return circuit_cli()


def test_circuit_writes_cpr_cmd_and_mib_scores_and_evaluate_reproduces_them(app, tiny_folder, tmp_path):
    out = tmp_path / "circuit"
    common = ["--task", "ioi", "--n", "4", "--steps", "2", "--verify", "0", "--device", "cpu"]
    result = runner.invoke(app, ["circuit", tiny_folder, *common, "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "circuit.json").read_text())
    rows = pd.read_csv(out / "faithfulness.csv")
    sizes, grid = rows[rows["fraction"].isna()], rows[rows["fraction"].notna()]
    assert len(sizes) == len(summary["faithfulness_curve"])
    assert grid["fraction"].tolist() == pytest.approx(list(MIB_FRACTIONS))
    n_total = summary["n_graph_edges"]
    assert grid["n"].tolist() == [int(f * n_total) for f in MIB_FRACTIONS]
    assert grid["faithfulness"].iloc[-1] == pytest.approx(1.0, abs=1e-5)  # every edge: the clean run (float32 model)
    # CPR / CMD recomputed here from the grid rows with the trapezoid rule
    f, x = grid["faithfulness"].tolist(), grid["fraction"].tolist()
    cpr = sum((x[i + 1] - x[i]) * (f[i] + f[i + 1]) / 2 for i in range(len(x) - 1))
    cmd = sum((x[i + 1] - x[i]) * (abs(1 - f[i]) + abs(1 - f[i + 1])) / 2 for i in range(len(x) - 1))
    assert summary["cpr"] == pytest.approx(cpr, abs=1e-12) and summary["cmd"] == pytest.approx(cmd, abs=1e-12)
    assert "mib-scores" in (out / "circuit.html").read_text()
    edges = pd.read_csv(out / "edges.csv")
    mib = json.loads((out / "mib_scores.json").read_text())
    assert sum(e["in_graph"] for e in mib["edges"].values()) >= int(edges["in_circuit"].sum())
    # evaluating the exported file gives the same curve (same scores, same exact evaluation)
    again = tmp_path / "again"
    result = runner.invoke(app, ["circuit", tiny_folder, *common, "--out", str(again), "--evaluate", str(out / "mib_scores.json")])
    assert result.exit_code == 0, result.output
    other = json.loads((again / "circuit.json").read_text())
    assert other["settings"]["method"] == "file:mib_scores.json"
    assert other["cpr"] == pytest.approx(summary["cpr"], abs=1e-9) and other["cmd"] == pytest.approx(summary["cmd"], abs=1e-9)
    assert other["clean_metric"] == pytest.approx(summary["clean_metric"]) and not math.isnan(other["corrupted_metric"])


def test_evaluate_refuses_a_file_for_another_graph_before_loading(app, tmp_path):
    write_mib_scores(tmp_path / "gpt2ish.json", CircuitGraph(3, 2, 2), torch.zeros(1 + 3 * 3, 3 * 7 + 1))
    data = json.loads((tmp_path / "gpt2ish.json").read_text())
    data["edges"]["a9.h9->logits"] = {"score": 0.0, "in_graph": False}
    (tmp_path / "extra.json").write_text(json.dumps(data))
    out = tmp_path / "out"
    # "no-such-model" would fail to load: the file's refusal must come first
    result = runner.invoke(app, ["circuit", "no-such-model", "--task", "ioi", "--out", str(out), "--evaluate",
                                 str(tmp_path / "extra.json")])
    assert result.exit_code != 0
    assert "0 missing, 1 unknown, e.g. unknown 'a9.h9->logits'" in result.output, result.output
    assert not out.exists()


def test_ioi_s2_io_flip_replaces_only_the_second_subject_mention_by_the_io():
    from interp.circuits import ioi_task

    abc = ioi_task(12, seed=5)
    flip = ioi_task(12, seed=5, counterfactual="s2_io_flip")
    assert flip.frame["clean"].equals(abc.frame["clean"])  # same draws: only the corruption differs
    assert flip.meta == {"counterfactual": "s2_io_flip"} and abc.meta == {"counterfactual": "abc"}
    for row in flip.frame.itertuples(index=False):
        io, s = " " + row.io, " " + row.s
        assert row.clean.count(s) == 2 and row.clean.count(io) == 1
        head, tail = row.clean.rsplit(s, 1)  # S2: the subject's last mention
        assert row.corrupted == head + io + tail
        assert row.corrupted.count(io) == 2 and row.corrupted.count(s) == 1
        assert (row.answer, row.wrong) == (io, s)  # MIB scores the clean labels on both prompts
    with pytest.raises(InterpError, match="unknown IOI counterfactual 'io_s2'"):
        ioi_task(4, counterfactual="io_s2")


@pytest.mark.parametrize("args, message", [
    (["--task", "ioi", "--counterfactual", "io_s2"], "unknown --counterfactual 'io_s2'"),
    (["--task", "induction", "--counterfactual", "s2_io_flip"], "applies to --task ioi, mcqa"),
])
def test_counterfactual_flag_is_checked_before_loading(app, tmp_path, args, message):
    out = tmp_path / "out"
    result = runner.invoke(app, ["circuit", "no-such-model", *args, "--out", str(out)])
    assert result.exit_code != 0 and message in result.output, result.output
    assert not out.exists()


def test_evaluate_refuses_a_file_for_another_model_after_loading(app, tiny_folder, tmp_path):
    write_mib_scores(tmp_path / "big.json", CircuitGraph(7, 3, 3), torch.zeros(1 + 7 * 4, 7 * 10 + 1))
    out = tmp_path / "out"
    result = runner.invoke(app, ["circuit", tiny_folder, "--task", "ioi", "--n", "2", "--device", "cpu", "--out", str(out),
                                 "--evaluate", str(tmp_path / "big.json")])
    assert result.exit_code != 0
    assert "is for 7 layers x 3 heads but" in result.output and "score the same model" in result.output, result.output
    assert not out.exists()
