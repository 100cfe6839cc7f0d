"""Composition scores against a dense hand computation on tiny random models."""

import pytest
import torch

from interp.analyses.composition import composition_baseline, composition_scores, head_weights
from interp.hooks import HookedModel
from tiny_models import tiny_model


def _frob(x):
    return torch.linalg.matrix_norm(x.double())


def _hand_weights_llama(model, layer):
    """Per query head W_Q, W_K, W_V [d_model, d_head] and W_O [d_head, d_model] straight from the Linear weights."""
    attn = model.model.layers[layer].self_attn
    d_head, groups = 8, 2  # tiny llama: 4 query heads, 2 kv heads
    out = []
    for h in range(4):
        kv = h // groups
        q = attn.q_proj.weight[h * d_head:(h + 1) * d_head].T
        k = attn.k_proj.weight[kv * d_head:(kv + 1) * d_head].T
        v = attn.v_proj.weight[kv * d_head:(kv + 1) * d_head].T
        o = attn.o_proj.weight[:, h * d_head:(h + 1) * d_head].T
        out.append((q, k, v, o))
    return out


def _hand_weights_gpt2(model, layer):
    attn = model.transformer.h[layer].attn
    d, d_head = 32, 8
    w = attn.c_attn.weight  # Conv1D: [in, 3 * d]
    out = []
    for h in range(4):
        cols = slice(h * d_head, (h + 1) * d_head)
        q, k, v = w[:, cols], w[:, d:][:, cols], w[:, 2 * d:][:, cols]
        o = attn.c_proj.weight[cols]  # Conv1D: [in = heads * d_head, out = d]
        out.append((q, k, v, o))
    return out


def _hand_score(kind, source, target):
    _, _, v1, o1 = source
    q2, k2, v2, o2 = target
    ov1, qk2, ov2 = v1 @ o1, q2 @ k2.T, v2 @ o2
    right = {"q": qk2, "k": qk2.T, "v": ov2}[kind]
    return float(_frob(ov1 @ right) / (_frob(ov1) * _frob(right)))


@pytest.mark.parametrize("architecture,hand", [("llama", _hand_weights_llama), ("gpt2", _hand_weights_gpt2)])
@torch.no_grad()
def test_scores_match_the_dense_hand_computation(architecture, hand):
    raw = tiny_model(architecture, seed=1)
    model = HookedModel(raw)
    frame = composition_scores(model, baseline_samples=20)
    assert len(frame) == 3 * 4 * 4  # one layer pair, 4 x 4 heads, three kinds
    assert set(frame["kind"]) == {"q", "k", "v"} and (frame["layer_from"] < frame["layer_to"]).all()
    source, target = hand(raw, 0), hand(raw, 1)
    for row in frame.itertuples():
        expected = _hand_score(row.kind, source[row.head_from], target[row.head_to])
        assert row.score == pytest.approx(expected, rel=1e-4), row
        assert row.ratio == pytest.approx(row.score / frame.attrs["baseline"][row.kind], rel=1e-6)


@torch.no_grad()
def test_gpt2_weights_reproduce_the_models_own_queries():
    """W_Q from the fused c_attn must give what hook_q sees (GPT-2 has no rotary): q = ln_1(x) W_Q + b_Q."""
    raw = tiny_model("gpt2", seed=2)
    model = HookedModel(raw)
    tokens = torch.randint(0, 97, (1, 6))
    _, cache = model.run_with_cache(tokens, names=["blocks.1.hook_resid_pre", "blocks.1.attn.hook_q"])
    x = raw.transformer.h[1].ln_1(cache["blocks.1.hook_resid_pre"])
    bias = raw.transformer.h[1].attn.c_attn.bias[:32].reshape(4, 8)
    expected = torch.einsum("bpd,hde->bphe", x, head_weights(model, 1).W_Q) + bias
    torch.testing.assert_close(cache["blocks.1.attn.hook_q"], expected, atol=1e-5, rtol=1e-5)


def test_sources_and_targets_restrict_the_pairs():
    model = HookedModel(tiny_model("llama", seed=1))
    frame = composition_scores(model, kinds=["k", "v"], sources=[(0, 1)], targets=[(1, 2), (1, 3)], baseline_samples=20)
    keys = ["layer_from", "head_from", "layer_to", "head_to", "kind"]
    assert frame[keys[:4]].drop_duplicates().values.tolist() == [[0, 1, 1, 2], [0, 1, 1, 3]]
    full = composition_scores(model, baseline_samples=20).set_index(keys)["score"]
    for row in frame.itertuples():
        assert row.score == pytest.approx(full[(row.layer_from, row.head_from, row.layer_to, row.head_to, row.kind)], rel=1e-6)


def test_baseline_matches_random_matrices_computed_densely():
    torch.manual_seed(0)
    d, r, n = 40, 5, 300
    dense = []
    for _ in range(n):
        v1, o1, q2, k2 = torch.randn(d, r), torch.randn(r, d), torch.randn(d, r), torch.randn(d, r)
        dense.append(float(_frob(v1 @ o1 @ q2 @ k2.T) / (_frob(v1 @ o1) * _frob(q2 @ k2.T))))
    expected = sum(dense) / n
    baseline = composition_baseline(d, r, samples=n)
    assert baseline["q"] == pytest.approx(expected, rel=0.05)
    assert baseline["k"] == pytest.approx(expected, rel=0.05)
