"""SmolLM2-135M on IOI: EAP-IG agrees with exact single-edge patching; node-level EAP equals attribution patching.

Kept CPU-cheap for `make test`: 4 prompt pairs of one template (one batch), the top 30 EAP-IG edges
patched one at a time (the benchmark, benchmarks/circuit.py, does 32 prompts and the top 100).
"""

from __future__ import annotations

import pytest
import torch

from interp.causal.attribution import attribution_patching
from interp.circuits import IOI_TEMPLATES, edge_attribution, ioi_task, patch_edges


@pytest.fixture(scope="module")
def ioi(smollm):
    pairs = ioi_task(4, model=smollm, seed=0, templates=IOI_TEMPLATES[:1])
    batches = pairs.encode(smollm)
    assert len(batches) == 1
    return batches


def test_eap_ig_ranks_edges_like_exact_patching(smollm, ioi):
    scores = edge_attribution(smollm, ioi, method="eap-ig", steps=5)
    assert scores.clean_metric > 1 and scores.clean_metric > scores.corrupted_metric + 1  # the model does IOI
    top = scores.frame().head(30)
    exact = patch_edges(smollm, ioi, list(zip(top["up_index"], top["down_index"])))
    spearman = top["score"].rank().corr(top.assign(exact=exact)["exact"].rank())
    signs = ((top["score"].to_numpy() > 0) == (exact > 0)).mean()
    print(f"SmolLM2 IOI, top 30 EAP-IG edges vs exact patching: Spearman {spearman:.3f}, sign agreement {signs:.2f}")
    assert spearman >= 0.8
    assert signs >= 0.9


def test_node_level_eap_equals_attribution_patching(smollm, ioi):
    batch = ioi[0]
    scores = edge_attribution(smollm, ioi, method="eap")
    answers = torch.stack([batch.answers[:, 0], batch.wrong[:, 0]], dim=1)
    frame = attribution_patching(smollm, batch.clean, batch.corrupted, answers=answers, sites="head_out",
                                 direction="noise", layers=[0, 10, 20, 29])
    nodes = scores.node_scores()
    got = torch.tensor([float(nodes[scores.graph.head_index(r.layer, r.head)]) for r in frame.itertuples()], dtype=torch.float64)
    assert torch.allclose(got, torch.tensor(frame["delta"].to_numpy()), atol=1e-4, rtol=1e-3)
