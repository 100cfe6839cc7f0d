"""Head scores on hand-built attention patterns whose right answer is known exactly.

A tiny Llama (head_dim 32) gets its layer-0 queries and keys *replaced* through hooks (after rotary):
keys are one-hot by position, ``k_j = e_j``, and each query is ``c * e_t`` for the key ``t`` it
should attend to (``q = 0`` gives uniform attention). With ``c = 60 sqrt(d_head)`` the softmax puts ``1 - O(e^-60)``
on the target, so every score of layer 0 is known in closed form.
"""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from interp.analyses import (
    entropy_scores,
    max_attention_scores,
    role_scores,
    secondary_sinks,
    sink_scores,
    value_norm_scores,
)
from interp.analyses.dormant import dormant_frame
from interp.hooks import HookedModel

N, D_HEAD = 24, 32
SHARP = 60.0 * math.sqrt(D_HEAD)  # scores are scaled by d_head ** -0.5


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=D_HEAD, intermediate_size=64, max_position_embeddings=64)
    return HookedModel(AutoModelForCausalLM.from_config(config).eval())


def _force_layer0(model, targets):
    """Hooks making every layer-0 head attend from query p to key targets[p] (None: uniform)."""

    def keys(k, hook):
        one_hot = torch.eye(D_HEAD)[: k.shape[1]]  # [pos, d_head]
        return one_hot[None, :, None, :].expand_as(k).clone()

    def queries(q, hook):
        out = torch.zeros_like(q)
        for p, t in enumerate(targets):
            if t is not None:
                out[:, p, :, t] = SHARP
        return out

    return model.hooks([("blocks.0.attn.hook_k", keys), ("blocks.0.attn.hook_q", queries)])


def test_uniform_attention_gives_closed_form_sink_entropy_and_max(model):
    tokens = torch.randint(0, 97, (2, N))
    with _force_layer0(model, [None] * N):
        sinks = sink_scores(model, tokens, n_sink=2)
        entropy = entropy_scores(model, tokens)
        peak = max_attention_scores(model, tokens)
    layer0 = lambda frame, column: torch.tensor(frame[frame.layer == 0][column].to_numpy())  # noqa: E731
    mean_inverse = sum(1 / (p + 1) for p in range(1, N)) / (N - 1)  # mean over p>=1 of 1/(p+1)
    assert layer0(sinks, "sink_mass") == pytest.approx([mean_inverse] * 2, abs=1e-6)
    assert layer0(sinks, "sink_mass_first_k") == pytest.approx([2 * mean_inverse] * 2, abs=1e-6)
    harmonic = sum(1 / (q + 1) for q in range(N))
    assert layer0(sinks, "sink_alpha0") == pytest.approx([harmonic / N] * 2, abs=1e-6)
    mean_log = sum(math.log(p + 1) for p in range(1, N)) / (N - 1)
    assert layer0(entropy, "entropy_mean") == pytest.approx([mean_log] * 2, abs=1e-5)
    assert layer0(entropy, "entropy_normalized") == pytest.approx([1.0] * 2, abs=1e-6)
    assert layer0(peak, "max_attention_mean") == pytest.approx([mean_inverse] * 2, abs=1e-6)


def test_previous_token_head_scores_one(model):
    tokens = torch.randint(0, 97, (1, N))
    with _force_layer0(model, [None] + list(range(N - 1))):
        score, tl = role_scores(model, tokens, "previous_token")
    assert score[0].tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    assert tl[0].tolist() == pytest.approx([(N - 1) / N] * 2, abs=1e-6)  # query 0 has no previous token


def test_induction_head_scores_one_and_half_in_transformer_lens_units(model):
    first = torch.randperm(97)[: N // 2]
    tokens = torch.cat([first, first])[None]
    half = N // 2
    with _force_layer0(model, [None] * half + [p - half + 1 for p in range(half, N)]):
        induction, induction_tl = role_scores(model, tokens, "induction")
        duplicate, _ = role_scores(model, tokens, "duplicate_token")
    assert induction[0].tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    assert induction_tl[0].tolist() == pytest.approx([0.5, 0.5], abs=1e-6)
    assert duplicate[0].max() < 1e-6


def test_a_hand_built_secondary_sink_is_found_at_its_position(model):
    tokens = torch.randint(0, 97, (1, 60))

    def keys(k, hook):  # key 5 is e_1, every other key e_0
        out = torch.zeros_like(k)
        out[:, :, :, 0] = 1.0
        out[:, 5, :, 0], out[:, 5, :, 1] = 0.0, 1.0
        return out

    def queries(q, hook):  # queries 5..31 look for e_1 (key 5); others score every key equally
        out = torch.zeros_like(q)
        out[:, 5:32, :, 1] = SHARP
        return out

    with model.hooks([("blocks.0.attn.hook_k", keys), ("blocks.0.attn.hook_q", queries)]):
        table = secondary_sinks(model, tokens, threshold=0.5, min_queries=8)
    row = table[table.position == 5]
    assert len(row) == 1 and int(row.first_layer.iloc[0]) == 0
    # key 5 receives all attention from queries 5..31 and ~1/(p+1) from 32..59: alpha = mean over queries 5..59
    expected = (27 + sum(1 / (p + 1) for p in range(32, 60))) / 55
    assert row.max_alpha.iloc[0] == pytest.approx(expected, abs=1e-5)


def test_value_norm_ratio_of_hand_set_values(model):
    def values(v, hook):
        out = torch.ones_like(v)
        out[:, 0] = 2.0
        return out

    with model.hooks([("blocks.1.attn.hook_v", values)]):
        table = value_norm_scores(model, torch.randint(0, 97, (2, 10)))
    layer1 = table[table.layer == 1]
    assert layer1.value_norm_ratio.tolist() == pytest.approx([2.0, 2.0])
    assert layer1.value_norm_first.tolist() == pytest.approx([2.0 * math.sqrt(D_HEAD)] * 2)


def test_dormant_switching_needs_dormant_somewhere_and_active_elsewhere(model):
    sink = {
        "natural": torch.tensor([[0.95, 0.95], [0.2, 0.6]]),
        "code": torch.tensor([[0.3, 0.92], [0.2, 0.95]]),
        "repeated": torch.tensor([[0.95, 0.6], [0.2, 0.7]]),
    }
    table = dormant_frame(model, sink)
    assert table.dormant_switching.tolist() == [True, False, False, False]
    assert table.dormant_sink_range.tolist() == pytest.approx([0.65, 0.35, 0.0, 0.35])
