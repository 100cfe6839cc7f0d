"""Ground truth: on the suite's trained 2-layer induction model, EAP-IG finds the induction circuit.

The model (tests/trained_models.py) solves induction with all four layer-0 heads acting as
previous-token heads and all four layer-1 heads as induction heads, so the circuit is spread over
4 x 4 K-compositions: the smallest faithful circuit is ~35 of the graph's 110 edges (measured with
EAP-IG, 32 prompts: faithfulness 1.00 at 35 edges, 0.72 at 30, 0.45 at 17; the top 10 edges hold no
complete embed -> logits path), not the <= 10 edges a circuit of one head per layer would need.

The issue's numbers (faithfulness >= 0.8 with <= 10 edges) are asserted on the second recipe, one
head per layer (``small_induction_model``): its graph has 23 edges, and EAP-IG's top edges, measured
on 32 prompts, give faithfulness 0.66 at 4 edges, 0.63 at 5, 0.93 at 6, 0.96 at 7, 0.98 at 8-9, 1.00
at 10 (top 3: no complete path, pruned to nothing). The same search on the 4-head model finds no
circuit of <= 10 edges reaching 0.8, which that model's test checks, so the small-model test is
not one every model passes.
"""

from __future__ import annotations

import pytest
import torch

from interp.analyses import role_scores
from interp.circuits import circuit_nodes, edge_attribution, evaluate_circuits, induction_task, top_n_mask

MAX_EDGES = 10  # issue #13: the induction circuit in no more than 10 edges, faithfulness >= 0.8


def _probe() -> torch.Tensor:
    first = torch.randint(0, 128, (8, 16), generator=torch.Generator().manual_seed(1))
    return torch.cat([first, first, first[:, :8]], dim=1)


def _smallest_faithful(model, pairs, scores, max_edges: int = MAX_EDGES, target: float = 0.8):
    """``(circuit, faithfulness)`` of the smallest top-n circuit (n <= ``max_edges``) reaching ``target``, or None."""
    graph = scores.graph
    masks = [top_n_mask(graph, scores.scores, n) for n in range(1, max_edges + 1)]
    result = evaluate_circuits(model, pairs, masks)
    curve = zip(range(1, max_edges + 1), masks, result["faithfulness"])
    print("top n: edges, faithfulness:", [f"{n}: {int(m.sum())}, {f:.3f}" for n, m, f in curve])
    for mask, value in zip(masks, result["faithfulness"]):
        if value >= target:
            return mask, value
    return None


def _edges(graph, circuit) -> set[tuple[str, str, str]]:
    up, down = torch.nonzero(circuit, as_tuple=True)
    info = graph.down_info
    return {(graph.up_names[u], info[v][0], info[v][1]) for u, v in zip(up.tolist(), down.tolist())}


@pytest.fixture(scope="module")
def found(induction_model):
    pairs = induction_task(32, model=induction_model, seed=0)
    scores = edge_attribution(induction_model, pairs, method="eap-ig", steps=5)
    return pairs, scores


def test_induction_circuit_holds_the_k_composition_and_is_faithful(induction_model, found):
    pairs, scores = found
    probe = _probe()
    previous, _ = role_scores(induction_model, probe, "previous_token")
    induction, _ = role_scores(induction_model, probe, "induction")
    prev_heads = {f"a0.h{h}" for h in range(4) if previous[0, h] > 0.3}
    ind_heads = {f"a1.h{h}" for h in range(4) if induction[1, h] > 0.5}
    assert prev_heads and ind_heads

    graph = scores.graph
    circuit = top_n_mask(graph, scores.scores, 35)
    n_edges = int(circuit.sum())
    result = evaluate_circuits(induction_model, pairs, [circuit])
    print(f"toy induction: {n_edges} of {graph.n_edges} edges, faithfulness {result['faithfulness'][0]:.3f}")
    assert n_edges <= 35
    assert result["faithfulness"][0] >= 0.8

    edges = _edges(graph, circuit)
    k_edges = {(a, b) for a, b, kind in edges if kind == "k" and a in prev_heads and b.replace("kv", "h") in ind_heads}
    assert k_edges, "no previous-token head -> induction head key edge"
    assert any(a in ind_heads and kind == "logits" for a, _, kind in edges)
    nodes = set(circuit_nodes(graph, circuit))
    assert ind_heads & nodes and prev_heads & nodes
    # the strongest edges are the induction heads writing the answer
    top = scores.frame().head(6)
    assert (top["kind"] == "logits").sum() >= 2
    # and the bound is out of reach here: the small-model test below can fail
    assert _smallest_faithful(induction_model, pairs, scores) is None


def test_one_head_per_layer_induction_circuit_is_small_and_faithful(small_induction_model):
    model = small_induction_model
    probe = _probe()
    with torch.no_grad():
        predicted = model(probe)[:, 16:-1].argmax(-1)
    assert (predicted == probe[:, 17:]).float().mean().item() > 0.75  # it learned induction
    # the heads' roles, from attention patterns alone (independent of the circuit search)
    previous, _ = role_scores(model, probe, "previous_token")
    induction, _ = role_scores(model, probe, "induction")
    assert previous[0, 0] > 0.3 and previous[0, 0] > 3 * previous[1, 0]
    assert induction[1, 0] > 0.3 and induction[1, 0] > 3 * induction[0, 0]
    prev_head, ind_head = "a0.h0", "a1.h0"

    pairs = induction_task(32, model=model, seed=0)
    scores = edge_attribution(model, pairs, method="eap-ig", steps=5)
    graph = scores.graph
    found = _smallest_faithful(model, pairs, scores)
    assert found is not None, f"no circuit of <= {MAX_EDGES} edges reaches faithfulness 0.8"
    circuit, value = found
    n_edges = int(circuit.sum())
    print(f"one head per layer: {n_edges} of {graph.n_edges} edges, faithfulness {value:.3f}")
    assert 0 < n_edges <= MAX_EDGES and value >= 0.8

    edges = _edges(graph, circuit)
    assert (prev_head, "a1.kv0", "k") in edges, "no previous-token head -> induction head key edge"
    assert (ind_head, "logits", "logits") in edges, "no induction head -> logits edge"
    # every head the circuit uses is one the role scores named, in the role's layer
    assert set(circuit_nodes(graph, circuit)) == {"embed", prev_head, ind_head, "logits"}
    for up, down, kind in edges:
        if up == prev_head and kind != "logits":
            assert down.startswith("a1."), (up, down, kind)
