"""Ground truth: on the suite's trained 2-layer induction model, EAP-IG finds the induction circuit.

The model (tests/trained_models.py) solves induction with all four layer-0 heads acting as
previous-token heads and all four layer-1 heads as induction heads, so the circuit is spread over
4 x 4 K-compositions: the smallest faithful circuit is ~35 of the graph's 110 edges (measured with
EAP-IG, 32 prompts: faithfulness 1.00 at 35 edges, 0.72 at 30, 0.45 at 17; the top 10 edges hold no
complete embed -> logits path), not the <= 10 edges a circuit of one head per layer would need.
"""

from __future__ import annotations

import pytest
import torch

from interp.analyses import role_scores
from interp.circuits import circuit_nodes, edge_attribution, evaluate_circuits, induction_task, top_n_mask


@pytest.fixture(scope="module")
def found(induction_model):
    pairs = induction_task(32, model=induction_model, seed=0)
    scores = edge_attribution(induction_model, pairs, method="eap-ig", steps=5)
    return pairs, scores


def test_induction_circuit_holds_the_k_composition_and_is_faithful(induction_model, found):
    pairs, scores = found
    first = torch.randint(0, 128, (8, 16), generator=torch.Generator().manual_seed(1))
    probe = torch.cat([first, first, first[:, :8]], dim=1)
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

    up, down = torch.nonzero(circuit, as_tuple=True)
    edges = {(graph.up_names[u], graph.down_info[v][0], graph.down_info[v][1]) for u, v in zip(up.tolist(), down.tolist())}
    k_edges = {(a, b) for a, b, kind in edges if kind == "k" and a in prev_heads and b.replace("kv", "h") in ind_heads}
    assert k_edges, "no previous-token head -> induction head key edge"
    assert any(a in ind_heads and kind == "logits" for a, _, kind in edges)
    nodes = set(circuit_nodes(graph, circuit))
    assert ind_heads & nodes and prev_heads & nodes
    # the strongest edges are the induction heads writing the answer
    top = scores.frame().head(6)
    assert (top["kind"] == "logits").sum() >= 2
