"""Ungrouped GQA k/v inputs (``ungroup_kv``, ``interp circuit --ungroup-kv``): one k and one v input per query head,
MIB's graph, on float64 tiny GQA models (4 query heads, 2 KV heads).

References are computed here: the plain model's logits and metrics, a central difference of single-edge patching,
a hand-written attention for one query head whose keys come from a patched stream (plain torch hooks on the HF
modules), and the grouped graph's scores, which the ungrouped copies of a KV input must add up to.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli_apps import circuit_cli  # noqa: E402
from test_circuit_architectures import _batch, _logit_diff, _plain, float64_everywhere  # noqa: E402,F401
from tiny_models import float64_rms_norms, tiny_config, tiny_model  # noqa: E402

import interp  # noqa: E402
from interp.catalog import METHODS  # noqa: E402
from interp.circuits import CircuitGraph, edge_attribution, evaluate_circuits, induction_task, patch_edges, split_inputs  # noqa: E402
from interp.circuits import graph as graph_module  # noqa: E402
from interp.circuits.graph import circuit_layout, kv_projections_widen  # noqa: E402
from interp.circuits.mib import check_mib_scores, mib_edges, read_mib_scores, to_mib_dict, write_mib_scores  # noqa: E402
from interp.errors import InterpError  # noqa: E402
from interp.hooks import HookedModel  # noqa: E402

runner = CliRunner()


def mib_edge_count(n_layers: int, n_heads: int) -> int:
    """MIB's ungrouped edge count: per layer l, n_heads x 3 (q, k, v) x (1 + (n_heads + 1) l) attention edges and
    (n_heads + 1)(l + 1) MLP edges; 1 + (n_heads + 1) n_layers edges into the logits."""
    per = n_heads + 1
    total = sum(n_heads * 3 * (1 + per * layer) + per * (layer + 1) for layer in range(n_layers))
    return total + 1 + per * n_layers


@pytest.fixture(scope="module", params=["llama", "qwen3", "llama-generic"])
def model(request):
    """Tiny float64 GQA models: Llama and Qwen3 (fast q/k/v projection path), and Llama on the generic probe path."""
    hooked = HookedModel(float64_rms_norms(tiny_model(request.param.split("-")[0]).double()))
    if request.param.endswith("generic"):
        graph_module._CACHE[hooked] = replace(circuit_layout(hooked), fast_qkv=False)
    return hooked


@pytest.fixture(scope="module")
def pairs(model):
    return induction_task(5, model=model, seed=0, block=6, repeat=3)


def _ungrouped_kv_edges(graph: CircuitGraph) -> list[tuple[int, int]]:
    """Edges into the ungrouped k and v inputs of query heads of both KV groups, from several upstream nodes."""
    assert graph.ungroup_kv
    return [graph.edge_index("embed", "a1.h3", "k"), graph.edge_index("a0.h1", "a1.h2", "k"),
            graph.edge_index("m0", "a1.h0", "v"), graph.edge_index("embed", "a0.h1", "v"),
            graph.edge_index("a0.h3", "a1.h1", "v"), graph.edge_index("embed", "a0.h2", "k")]


# ------------------------------------------------------------------------------------------ the graph
def test_ungrouped_graph_has_mibs_edge_count_and_names():
    config = tiny_config("llama")
    tiny = CircuitGraph(config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads, ungroup_kv=True)
    assert tiny.n_edges == mib_edge_count(2, 4) == 110 and tiny.slots == 12
    assert CircuitGraph(2, 4, 2).n_edges == 82  # grouped: k/v per KV head
    # SmolLM2-135M's config: 30 layers, 9 query heads, 3 KV heads
    smollm = CircuitGraph(30, 9, 3, ungroup_kv=True)
    assert smollm.n_edges == mib_edge_count(30, 9) == 123_211
    assert CircuitGraph(30, 9, 3).n_edges == 70_651
    names = [name for name, *_ in mib_edges(smollm)]
    assert len(names) == len(set(names)) == 123_211  # one MIB edge per graph edge
    assert names[0] == "input->a0.h0<q>" and "a0.h0->a1.h2<k>" in names and "a28.h8->a29.h7<v>" in names
    assert all(size == 1 for *_, size in mib_edges(smollm))
    assert ("a1.h2", "k") in [(n, k) for n, k, _ in smollm.down_info] and not any(".kv" in n for n, *_ in smollm.down_info)
    # k input of query head 5 feeds head 5 alone; grouped, KV head 1's k input feeds heads 3, 4, 5
    assert smollm.feeds(smollm.edge_index("embed", "a1.h5", "k")[1]) == [smollm.head_index(1, 5)]
    grouped = CircuitGraph(30, 9, 3)
    assert grouped.feeds(grouped.edge_index("embed", "a1.kv1", "k")[1]) == [grouped.head_index(1, h) for h in (3, 4, 5)]


def test_without_gqa_ungrouping_changes_nothing():
    assert CircuitGraph(2, 4, 4, ungroup_kv=True) == CircuitGraph(2, 4, 4)
    assert not CircuitGraph(2, 4, 4, ungroup_kv=True).ungroup_kv
    gpt2 = interp.load(tiny_model("gpt2"))
    assert CircuitGraph.of(gpt2, ungroup_kv=True) == CircuitGraph.of(gpt2)


# ------------------------------------------------------------------------------------------ exactness
def test_zero_deltas_leave_the_logits_unchanged(model, pairs):
    graph = CircuitGraph.of(model, ungroup_kv=True)
    batch = pairs.encode(model)[0]
    reference = model(batch.clean)

    def zero(group, layer, x):
        shape = (*x.shape[:2], graph.slots, x.shape[-1]) if group == "attn" else x.shape
        return torch.zeros(shape, dtype=x.dtype)

    # Llama and Qwen3 widen their k_proj/v_proj outputs (fast path); the generic fixture takes the probe path
    assert kv_projections_widen(model) == circuit_layout(model).fast_qkv
    with split_inputs(model, zero, ungroup_kv=True):
        split = model(batch.clean)
    torch.testing.assert_close(split, reference, atol=1e-10, rtol=0)


def test_full_circuit_is_clean_and_empty_circuit_is_corrupted(model, pairs):
    graph = CircuitGraph.of(model, ungroup_kv=True)
    batch = pairs.encode(model)[0]
    with torch.no_grad():
        clean = model.model(batch.clean).logits[:, -1]
        corrupted = model.model(batch.corrupted).logits[:, -1]
    rows = torch.arange(batch.size)

    def diff(last):
        return float((last[rows, batch.answers[:, 0]] - last[rows, batch.wrong[:, 0]]).mean())

    result = evaluate_circuits(model, [batch], [graph.edge_mask, torch.zeros_like(graph.edge_mask)], ungroup_kv=True)
    assert result["metrics"][0] == pytest.approx(diff(clean), abs=1e-8)
    assert result["metrics"][1] == pytest.approx(diff(corrupted), abs=1e-8)
    assert diff(clean) != pytest.approx(diff(corrupted), abs=1e-4)  # the check compares something


def test_eap_on_ungrouped_kv_edges_is_the_central_difference_of_patching(model, pairs):
    scores = edge_attribution(model, pairs, method="eap", ungroup_kv=True)
    graph = scores.graph
    assert graph.ungroup_kv and scores.scores.shape == graph.edge_mask.shape
    edges = _ungrouped_kv_edges(graph)
    eps = 1e-4
    derivative = (patch_edges(model, pairs, edges, scale=eps, ungroup_kv=True)
                  - patch_edges(model, pairs, edges, scale=-eps, ungroup_kv=True)) / (2 * eps)
    expected = np.array([float(scores.scores[u, v]) for u, v in edges])
    assert np.abs(expected).min() > 1e-7
    np.testing.assert_allclose(derivative, expected, rtol=1e-5, atol=1e-10)


def test_copies_of_one_kv_input_differ_and_patching_one_is_not_patching_the_group(model, pairs):
    """Two query heads of one group get different k scores and effects; the grouped edge's effect is neither."""
    ungrouped = CircuitGraph.of(model, ungroup_kv=True)
    grouped = CircuitGraph.of(model)
    copies = [ungrouped.edge_index("a0.h1", f"a1.h{h}", "k") for h in (2, 3)]
    shared = grouped.edge_index("a0.h1", "a1.kv1", "k")
    one = patch_edges(model, pairs, copies, ungroup_kv=True)
    both = patch_edges(model, pairs, [shared])
    assert abs(one[0] - one[1]) > 1e-6
    assert all(abs(e - both[0]) > 1e-8 for e in one)


def test_every_method_sums_ungrouped_copies_to_the_grouped_score(pairs, model):
    """Gradient methods are linear in the input's gradient: a KV input's gradient is the sum of its query heads'
    copies'. q, MLP and logits inputs are the same inputs in both graphs. ``exact`` is single-edge patching."""
    grouped, ungrouped = CircuitGraph.of(model), CircuitGraph.of(model, ungroup_kv=True)
    per = grouped.n_heads // grouped.n_kv_heads
    for method in METHODS:
        if method == "exact":
            continue
        a = edge_attribution(model, pairs, method=method, steps=2)
        b = edge_attribution(model, pairs, method=method, steps=2, ungroup_kv=True)
        assert b.graph == ungrouped
        assert b.clean_metric == pytest.approx(a.clean_metric, abs=1e-12)
        for layer in range(grouped.n_layers):
            ga, gb = grouped.attn_down(layer).start, ungrouped.attn_down(layer).start
            H, KV = grouped.n_heads, grouped.n_kv_heads
            torch.testing.assert_close(b.scores[:, gb:gb + H], a.scores[:, ga:ga + H], atol=1e-10, rtol=1e-8)  # q
            for offset_a, offset_b in ((H, H), (H + KV, 2 * H)):  # k, v
                summed = b.scores[:, gb + offset_b:gb + offset_b + H].reshape(-1, KV, per).sum(-1)
                torch.testing.assert_close(summed, a.scores[:, ga + offset_a:ga + offset_a + KV], atol=1e-10, rtol=1e-8)
            torch.testing.assert_close(b.scores[:, ungrouped.mlp_down(layer)], a.scores[:, grouped.mlp_down(layer)],
                                       atol=1e-10, rtol=1e-8)
        torch.testing.assert_close(b.scores[:, -1], a.scores[:, -1], atol=1e-10, rtol=1e-8)
        k_copies = b.scores[:, ungrouped.attn_down(1).start + 4:ungrouped.attn_down(1).start + 8]
        assert float((k_copies[:, 0] - k_copies[:, 1]).abs().max()) > 1e-8, method  # copies are not equal shares
    small = induction_task(2, model=model, seed=1, block=4, repeat=2)
    exact = edge_attribution(model, small, method="exact", ungroup_kv=True, batch_size=2)
    edges = _ungrouped_kv_edges(ungrouped)
    np.testing.assert_allclose([float(exact.scores[u, v]) for u, v in edges],
                               patch_edges(model, small, edges, ungroup_kv=True, reuse="none"), atol=1e-12)


# ------------------------------------------------------------------------------------------ hand-written reference
def test_one_ungrouped_k_edge_equals_a_hand_written_attention():
    """a0.h1 -> a1.h3<k>: query head 3 of layer 1 attends with keys computed from the clean stream with a0.h1's
    output replaced by its corrupted one; every other head (head 2 shares the KV head) is untouched."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    model = HookedModel(float64_rms_norms(tiny_model("llama").double()))
    hf = model.model
    pairs = induction_task(4, model=model, seed=0, block=6, repeat=3)
    batch = pairs.encode(model)[0]
    cfg = hf.config
    H, KV, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    up_head, layer, head = 1, 1, 3
    group = head // (H // KV)
    block0, block = hf.model.layers[0], hf.model.layers[layer]
    attn = block.self_attn

    def head_output(tokens):  # a0.h1's output: its z slice through its W_O columns
        seen = {}
        handle = block0.self_attn.o_proj.register_forward_pre_hook(lambda m, a: seen.update(z=a[0].detach()))
        with torch.no_grad():
            hf(tokens)
        handle.remove()
        z = seen["z"][..., up_head * D:(up_head + 1) * D]
        return z @ block0.self_attn.o_proj.weight[:, up_head * D:(up_head + 1) * D].T

    patch = head_output(batch.corrupted) - head_output(batch.clean)
    stream = {}

    def keep_stream(module, args):
        stream["x"] = args[0].detach()

    def one_head(x_q, x_k, cos, sin):
        b, p, _ = x_q.shape
        q = attn.q_proj(block.input_layernorm(x_q)).view(b, p, H, D)[:, :, head].unsqueeze(1)
        k = attn.k_proj(block.input_layernorm(x_k)).view(b, p, KV, D)[:, :, group].unsqueeze(1)
        v = attn.v_proj(block.input_layernorm(x_q)).view(b, p, KV, D)[:, :, group].unsqueeze(1)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        scores = (q @ k.transpose(-1, -2)) * D ** -0.5
        causal = torch.ones(p, p, dtype=torch.bool).tril()
        pattern = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        return (pattern @ v)[:, 0]  # [batch, pos, d_head]

    def replace_keys(module, args, kwargs, output):
        x = stream["x"]
        cos, sin = kwargs["position_embeddings"]
        changed = one_head(x, x + patch, cos, sin) - one_head(x, x, cos, sin)
        w_o = module.o_proj.weight[:, head * D:(head + 1) * D]
        return (output[0] + changed @ w_o.T, *output[1:])

    handles = [block.input_layernorm.register_forward_pre_hook(keep_stream),
               attn.register_forward_hook(replace_keys, with_kwargs=True)]
    try:
        with torch.no_grad():
            last = hf(batch.clean).logits[:, -1]
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        clean = hf(batch.clean).logits[:, -1]
    rows = torch.arange(batch.size)

    def diff(logits):
        return float((logits[rows, batch.answers[:, 0]] - logits[rows, batch.wrong[:, 0]]).mean())

    reference = diff(last) - diff(clean)
    graph = CircuitGraph.of(model, ungroup_kv=True)
    edge = graph.edge_index(f"a0.h{up_head}", f"a{layer}.h{head}", "k")
    for reuse in ("auto", "none"):
        got = patch_edges(model, [batch], [edge], ungroup_kv=True, reuse=reuse)
        assert got[0] == pytest.approx(reference, abs=1e-12)
    assert abs(reference) > 1e-6
    # the grouped k edge (both query heads of the group read the patched keys) is a different quantity
    grouped = patch_edges(model, [batch], [CircuitGraph.of(model).edge_index(f"a0.h{up_head}", f"a{layer}.kv{group}", "k")])
    assert abs(grouped[0] - reference) > 1e-8


# ------------------------------------------------------------------------------------------ other layouts
@pytest.mark.usefixtures("float64_everywhere")
@pytest.mark.parametrize("model_type", ["phi3", "gemma2", "olmo2", "stablelm"])
def test_other_architectures(model_type):
    """phi3: fused qkv_proj (generic probe path, head nodes); gemma2: sandwich norms, one attention node per layer
    (fast path); olmo2: one attention node per layer on the generic path; stablelm: separate projections, but its
    attention views keys with its KV head count, so ungrouped inputs fall back to the generic path. Full / empty
    circuits against the plain forward, EAP against a central difference on ungrouped k/v edges, copies summing to
    the grouped score."""
    plain = _plain(model_type)
    batch = _batch(plain.config.vocab_size)
    clean, corrupted = _logit_diff(plain, batch.clean, batch), _logit_diff(plain, batch.corrupted, batch)
    model = interp.load(plain)
    assert model.cfg.n_kv_heads < model.cfg.n_heads
    graph = CircuitGraph.of(model, ungroup_kv=True)
    assert kv_projections_widen(model) == (model_type == "gemma2")
    assert graph.n_edges > CircuitGraph.of(model).n_edges
    result = evaluate_circuits(model, [batch], [graph.edge_mask, torch.zeros_like(graph.edge_mask)], ungroup_kv=True)
    assert abs(result["metrics"][0] - clean) < 1e-8 and abs(result["metrics"][1] - corrupted) < 1e-8
    up = "a0" if not graph.head_nodes else "a0.h1"
    edges = [graph.edge_index("embed", "a1.h3", "k"), graph.edge_index(up, "a1.h2", "v"),
             graph.edge_index("m0", "a1.h0", "k")]
    scores = edge_attribution(model, [batch], method="eap", ungroup_kv=True)
    eap = np.array([float(scores.scores[u, v]) for u, v in edges])
    eps = 1e-3
    central = (patch_edges(model, [batch], edges, scale=eps, reuse="none", ungroup_kv=True)
               - patch_edges(model, [batch], edges, scale=-eps, reuse="none", ungroup_kv=True)) / (2 * eps)
    assert np.abs(eap).max() > 1e-6
    np.testing.assert_allclose(eap, central, atol=1e-5 * max(1.0, np.abs(eap).max()), rtol=0)
    grouped = edge_attribution(model, [batch], method="eap")
    g = CircuitGraph.of(model)
    k_sum = sum(float(scores.scores[0, graph.edge_index("embed", f"a1.h{h}", "k")[1]]) for h in (2, 3))
    assert k_sum == pytest.approx(float(grouped.scores[g.edge_index("embed", "a1.kv1", "k")]), abs=1e-10)


# ------------------------------------------------------------------------------------------ MIB files
def test_mib_export_import_round_trip_with_ungrouped_names(tmp_path):
    graph = CircuitGraph(2, 4, 2, ungroup_kv=True)
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(graph.n_up, graph.n_down, generator=g, dtype=torch.float64) * graph.edge_mask
    circuit = torch.zeros_like(graph.edge_mask)
    u, v = graph.edge_index("a0.h0", "a1.h2", "k")
    circuit[u, v] = True
    data = to_mib_dict(graph, scores, circuit)
    assert len(data["edges"]) == graph.n_edges == 110
    assert data["edges"]["a0.h0->a1.h2<k>"] == {"score": float(scores[u, v]), "in_graph": True}  # not divided
    assert not data["edges"]["a0.h0->a1.h3<k>"]["in_graph"]  # the other query head of the group is its own edge
    assert "kv_inputs" not in data["cfg"] and data["cfg"]["n_key_value_heads"] == 2
    path = write_mib_scores(tmp_path / "ungrouped.json", graph, scores, circuit)
    back, in_graph = read_mib_scores(path, graph)
    assert torch.equal(back, scores) and torch.equal(in_graph, circuit)
    assert check_mib_scores(path, ungroup_kv=True) == (2, 4)
    # the same file read into the grouped graph sums the copies, in_graph if any copy is
    grouped = CircuitGraph(2, 4, 2)
    summed, any_copy = read_mib_scores(path, grouped)
    gu, gv = grouped.edge_index("a0.h0", "a1.kv1", "k")
    assert float(summed[gu, gv]) == pytest.approx(float(scores[u, v] + scores[graph.edge_index("a0.h0", "a1.h3", "k")]))
    assert bool(any_copy[gu, gv]) and int(any_copy.sum()) == 1
    # a grouped export (equal shares, marked kv_inputs: grouped) is refused for ungrouped evaluation
    grouped_path = write_mib_scores(tmp_path / "grouped.json", grouped, summed)
    assert json.loads(grouped_path.read_text())["cfg"]["kv_inputs"] == "grouped"
    assert check_mib_scores(grouped_path) == (2, 4)
    with pytest.raises(InterpError, match="grouped k/v scores") as error:
        check_mib_scores(grouped_path, ungroup_kv=True)
    assert "\n" not in str(error.value)


def test_a_mask_of_the_other_graph_is_refused_in_one_line(model, pairs):
    grouped = CircuitGraph.of(model)
    with pytest.raises(InterpError, match="ungroup_kv=True") as error:
        evaluate_circuits(model, pairs, [grouped.edge_mask], ungroup_kv=True)
    assert "\n" not in str(error.value)


# ------------------------------------------------------------------------------------------ pipeline and CLI
def test_cli_ungroup_kv_writes_mibs_graph_and_evaluates_it_back(tiny_folder, tmp_path):
    app = circuit_cli()
    out = tmp_path / "ungrouped"
    args = ["circuit", tiny_folder, "--task", "ioi", "--n", "4", "--method", "eap", "--verify", "3", "--device", "cpu",
            "--ungroup-kv"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "circuit.json").read_text())
    assert summary["graph"]["ungroup_kv"] is True and summary["n_graph_edges"] == mib_edge_count(2, 4)
    mib = json.loads((out / "mib_scores.json").read_text())
    assert len(mib["edges"]) == mib_edge_count(2, 4) and "kv_inputs" not in mib["cfg"]
    import pandas as pd

    edges = pd.read_csv(out / "edges.csv")
    assert len(edges) == mib_edge_count(2, 4) and not edges["downstream"].str.contains(".kv", regex=False).any()
    verification = pd.read_csv(out / "verification.csv")
    assert len(verification) == 3
    again = tmp_path / "evaluated"
    result = runner.invoke(app, [*args, "--evaluate", str(out / "mib_scores.json"), "--out", str(again)])
    assert result.exit_code == 0, result.output
    evaluated = json.loads((again / "circuit.json").read_text())
    assert evaluated["cpr"] == pytest.approx(summary["cpr"], abs=1e-6)
    assert evaluated["cmd"] == pytest.approx(summary["cmd"], abs=1e-6)


def test_cli_refuses_grouped_scores_for_ungrouped_evaluation_before_loading(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad argument was refused")

    monkeypatch.setattr(interp, "load", boom)
    monkeypatch.setattr("interp.models.loading.load", boom)
    graph = CircuitGraph(2, 4, 2)
    path = write_mib_scores(tmp_path / "grouped.json", graph, torch.zeros(graph.n_up, graph.n_down))
    out = tmp_path / "out"
    run = runner.invoke(circuit_cli(), ["circuit", "smollm2-135m", "--task", "ioi", "--evaluate", str(path),
                                        "--ungroup-kv", "--out", str(out)])
    assert run.exit_code == 1, run.output
    errors = [line for line in run.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--ungroup-kv" in errors[0], run.output
    assert not out.exists()
    run = runner.invoke(circuit_cli(), ["circuit", "smollm2-135m", "--task", "ioi", "--steps", "0", "--ungroup-kv",
                                        "--out", str(out)])
    assert run.exit_code == 1 and "--steps must be at least 1" in run.output, run.output


def test_cli_help_names_the_flag():
    run = runner.invoke(circuit_cli(), ["circuit", "--help"], env={"COLUMNS": "200"})
    assert run.exit_code == 0 and "--ungroup-kv" in run.output and "123,211" in run.output
