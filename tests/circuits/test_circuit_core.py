"""Circuit core on tiny random models: split inputs change nothing, evaluation and patching are exact,
EAP is the exact directional derivative, node-level EAP equals attribution patching, DLA sums up."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import float64_rms_norms, tiny_model  # noqa: E402

from interp.causal.attribution import attribution_patching  # noqa: E402
from interp.circuits import (  # noqa: E402
    CircuitGraph,
    edge_attribution,
    evaluate_circuits,
    induction_task,
    patch_edges,
    prune,
    split_inputs,
    top_n_mask,
)
from interp.circuits.dla import direct_logit_attribution, logit_lens  # noqa: E402
from interp.hooks import HookedModel  # noqa: E402


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def model(request):
    return HookedModel(float64_rms_norms(tiny_model(request.param).double()))


@pytest.fixture(scope="module")
def pairs(model):
    return induction_task(6, model=model, seed=0, block=6, repeat=3)


def test_graph_counts_gqa_inputs():
    graph = CircuitGraph(n_layers=2, n_heads=4, n_kv_heads=2)
    assert graph.slots == 8 and graph.n_up == 11 and graph.n_down == 19
    names = [(name, kind) for name, kind, _ in graph.down_info]
    assert ("a1.kv1", "k") in names and ("a1.h3", "q") in names and ("a1.kv2", "k") not in names
    # attention of layer 1 reads embed + layer 0 (4 heads + MLP); its MLP also reads layer 1's heads
    assert graph.visible_attn(1) == 6 and graph.visible_mlp(1) == 10
    assert graph.edge_index("a0.h2", "a1.kv0", "v") == (3, 9 + 4 + 2)


def test_split_inputs_with_zero_deltas_leave_logits_unchanged(model, pairs):
    graph = CircuitGraph.of(model)
    batch = pairs.encode(model)[0]
    reference = model(batch.clean)

    def zero(group, layer, x):
        shape = (*x.shape[:2], graph.slots, x.shape[-1]) if group == "attn" else x.shape
        return torch.zeros(shape, dtype=x.dtype)

    with split_inputs(model, zero):
        split = model(batch.clean)
    assert torch.allclose(split, reference, atol=1e-8)


def test_full_circuit_is_clean_and_empty_circuit_is_corrupted(model, pairs):
    graph = CircuitGraph.of(model)
    result = evaluate_circuits(model, pairs, [graph.edge_mask, torch.zeros_like(graph.edge_mask)])
    assert result["metrics"][0] == pytest.approx(result["clean"], abs=1e-7)
    assert result["metrics"][1] == pytest.approx(result["corrupted"], abs=1e-7)
    assert result["faithfulness"] == pytest.approx([1.0, 0.0], abs=1e-7)


def test_single_edge_patch_equals_circuit_without_that_edge(model, pairs):
    graph = CircuitGraph.of(model)
    edges = [graph.edge_index("embed", "a1.kv0", "k"), graph.edge_index("a0.h1", "a1.h2", "q"),
             graph.edge_index("m0", "logits", "logits"), graph.edge_index("a1.h3", "m1", "mlp")]
    exact = patch_edges(model, pairs, edges)
    masks = []
    for u, v in edges:
        mask = graph.edge_mask.clone()
        mask[u, v] = False
        masks.append(mask)
    result = evaluate_circuits(model, pairs, masks)
    assert np.allclose(exact, np.array(result["metrics"]) - result["clean"], atol=1e-8)


def test_eap_is_the_exact_directional_derivative_of_edge_patching(model, pairs):
    """Patching +-eps of each edge's difference (central difference) gives the EAP score."""
    scores = edge_attribution(model, pairs, method="eap")
    graph = scores.graph
    rng = np.random.default_rng(0)
    up, down = torch.nonzero(graph.edge_mask, as_tuple=True)
    chosen = rng.choice(len(up), size=12, replace=False)
    edges = [(int(up[i]), int(down[i])) for i in chosen]
    eps = 1e-4
    derivative = (patch_edges(model, pairs, edges, scale=eps) - patch_edges(model, pairs, edges, scale=-eps)) / (2 * eps)
    expected = np.array([float(scores.scores[u, v]) for u, v in edges])
    assert np.abs(expected).max() > 1e-4
    assert np.allclose(derivative, expected, rtol=1e-5, atol=1e-9)


def test_eap_ig_with_one_step_is_eap(model, pairs):
    eap = edge_attribution(model, pairs, method="eap")
    ig = edge_attribution(model, pairs, method="eap-ig", steps=1)
    assert torch.allclose(eap.scores, ig.scores, atol=1e-9)


def test_node_level_eap_equals_attribution_patching(model, pairs):
    batch = pairs.encode(model)[0]
    scores = edge_attribution(model, [batch], method="eap")
    frame = attribution_patching(model, batch.clean, batch.corrupted, answers=torch.stack(
        [batch.answers[:, 0], batch.wrong[:, 0]], dim=1), sites="head_out", direction="noise")
    graph = scores.graph
    nodes = scores.node_scores()
    for row in frame.itertuples():
        assert float(nodes[graph.head_index(row.layer, row.head)]) == pytest.approx(row.delta, abs=1e-8)


def test_pruning_keeps_the_exact_metric(model, pairs):
    scores = edge_attribution(model, pairs, method="eap")
    graph = scores.graph
    raw = top_n_mask(graph, scores.scores, 25, pruned=False)
    pruned = prune(graph, raw)
    assert pruned.sum() <= raw.sum()
    result = evaluate_circuits(model, pairs, [raw, pruned])
    assert result["metrics"][0] == pytest.approx(result["metrics"][1], abs=1e-7)


def test_dla_sums_to_the_logit_difference(model, pairs):
    frame = direct_logit_attribution(model, pairs)
    assert frame["dla"].sum() == pytest.approx(frame.attrs["logit_diff"], abs=1e-8)
    assert set(frame["kind"]) == {"embed", "head", "mlp", "bias"}
    lens = logit_lens(model, pairs)
    assert list(lens["layer"]) == [-1, 0, 1]
    assert lens["logit_diff"].iloc[-1] == pytest.approx(frame.attrs["logit_diff"], abs=1e-8)


def test_right_padded_batches_equal_batches_of_one_length(model):
    """Rows of different lengths share a right-padded batch; every result equals grouping by length."""
    import pandas as pd

    from interp.circuits import PromptPairs
    from interp.circuits.dla import direct_logit_attribution

    short, long = induction_task(3, model=model, seed=1, block=5, repeat=3), induction_task(3, model=model, seed=2, block=7, repeat=4)
    mixed = PromptPairs(pd.concat([long.frame, short.frame], ignore_index=True), name="mixed")
    padded = mixed.encode(model, batch_size=8, pad=True)
    assert len(padded) == 1 and padded[0].lengths is not None and padded[0].clean.shape[1] == 11
    grouped = mixed.encode(model)
    assert len(grouped) == 2
    for method in ("eap", "eap-ig"):
        a, b = edge_attribution(model, padded, method=method, steps=2), edge_attribution(model, grouped, method=method, steps=2)
        assert float(a.scores.abs().max()) > 1e-3
        assert torch.allclose(a.scores, b.scores, atol=1e-9)
        assert a.clean_metric == pytest.approx(b.clean_metric, abs=1e-9)
    graph = CircuitGraph.of(model)
    mask = top_n_mask(graph, a.scores, 12)
    ra, rb = evaluate_circuits(model, padded, [mask]), evaluate_circuits(model, grouped, [mask])
    assert ra["metrics"] == pytest.approx(rb["metrics"], abs=1e-9) and ra["corrupted"] == pytest.approx(rb["corrupted"], abs=1e-9)
    edges = [graph.edge_index("embed", "a1.kv0", "k"), graph.edge_index("a0.h1", "logits", "logits")]
    replayed = patch_edges(model, padded, edges)
    assert np.abs(replayed).max() > 1e-4
    assert np.allclose(replayed, patch_edges(model, grouped, edges), atol=1e-9)
    assert np.allclose(replayed, patch_edges(model, padded, edges, reuse="none"), atol=1e-9)
    da, db = direct_logit_attribution(model, padded), direct_logit_attribution(model, grouped)
    assert np.allclose(da["dla"], db["dla"], atol=1e-9)
    assert np.allclose(logit_lens(model, padded)["logit_diff"], logit_lens(model, grouped)["logit_diff"], atol=1e-9)


def test_closed_form_rmsnorm_vjp_equals_autograd():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from interp.circuits.eap import norm_vjp

    class OtherNorm(LlamaRMSNorm):  # same maths, a class the closed form does not know: autograd path
        pass

    # (HF's RMSNorm computes in float32 whatever the input, so compare in float32)
    torch.manual_seed(0)
    known, other = LlamaRMSNorm(16, eps=1e-5), OtherNorm(16, eps=1e-5)
    with torch.no_grad():
        known.weight.normal_()
        other.weight.copy_(known.weight)
    x = torch.randn(2, 3, 16)
    for cotangent in (torch.randn(2, 3, 16), torch.randn(2, 3, 5, 16)):
        closed, generic = norm_vjp(known, x, cotangent), norm_vjp(other, x, cotangent)
        assert closed.shape == cotangent.shape
        assert torch.allclose(closed, generic, rtol=1e-5, atol=1e-6)


def test_greedy_selection_grows_from_the_logits_where_top_n_wastes_edges():
    from interp.circuits import greedy_mask, select_edges

    graph = CircuitGraph(n_layers=2, n_heads=2, n_kv_heads=2)
    scores = torch.zeros(graph.n_up, graph.n_down, dtype=torch.float64)
    dangling = graph.edge_index("embed", "a0.h0", "q")  # a0.h0 feeds nothing: no path to the logits
    out = graph.edge_index("a1.h1", "logits", "logits")
    into = graph.edge_index("embed", "a1.h1", "q")
    scores[dangling], scores[out], scores[into] = 10.0, 5.0, -3.0
    # top-2 picks the dangling edge and a1.h1 -> logits, and pruning leaves nothing (a1.h1 reads no kept edge)
    assert int(top_n_mask(graph, scores, 2).sum()) == 0
    greedy = greedy_mask(graph, scores, 2)
    assert {tuple(e) for e in torch.nonzero(greedy).tolist()} == {out, into}
    assert torch.equal(select_edges(graph, scores, 2, "greedy"), greedy)
    with pytest.raises(Exception, match="unknown edge selection"):
        select_edges(graph, scores, 2, "best")
