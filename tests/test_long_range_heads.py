"""Retrieval and streaming heads: hand-checked pieces, batched-vs-one-at-a-time equality, and the
real model (whose retrieval heads must matter more for needle recall than random heads)."""

import pandas as pd
import pytest
import torch
from tiny_models import tiny_model

from interp.analyses import mass_outside, retrieval_ablation_check, retrieval_scores, streaming_head_mask, streaming_scores
from interp.analyses.retrieval import answer_recall, copy_paste_score, greedy_decode_with_argmax
from interp.analyses.streaming import kv_head_table, lambda_blocked
from interp.hooks import HookedModel
from interp.analyses.needles import NeedleSample, needle_grid, needle_sample


def test_lambda_mask_by_hand():
    blocked = lambda_blocked(7, n_sink=1, window=2)
    expected = torch.tensor(
        [  # key:   0  1  2  3  4  5  6
            [0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0],
            [0, 1, 0, 0, 0, 0, 0],
            [0, 1, 1, 0, 0, 0, 0],
            [0, 1, 1, 1, 0, 0, 0],
            [0, 1, 1, 1, 1, 0, 0],
        ],
        dtype=torch.bool,
    )
    # Future keys are not "dropped" by Lambda attention (causality removes them anyway).
    assert torch.equal(blocked.tril(), expected)


def test_copy_paste_score_by_hand():
    prompt = torch.tensor([10, 11, 12, 13, 14, 15])
    answer_span = (2, 5)  # tokens 12 13 14
    generated = [12, 13, 99]
    argmax = torch.tensor([  # [step, layer=1, head=3]
        [[2, 3, 2]],  # head 0 copies 12 from key 2; head 1 looks at key 3 (token 13 != 12); head 2 copies
        [[3, 3, 0]],  # heads 0, 1 copy 13 from key 3; head 2 looks outside the span
        [[4, 4, 4]],  # 99 is not at key 4: nobody copies
    ])
    score = copy_paste_score(generated, argmax, prompt, answer_span)
    assert score[0].tolist() == pytest.approx([2 / 3, 1 / 3, 1 / 3])
    assert answer_recall(generated, [12, 13, 14]) == pytest.approx(2 / 3)


@pytest.mark.parametrize("architecture", ["llama", "mistral", "gemma3_text"])
@torch.no_grad()
def test_decoding_trace_matches_generate_and_the_eager_argmax(architecture):
    """Mistral and Gemma 3 have a 6-key sliding window: their cache drops keys, argmax stays absolute."""
    model = HookedModel(tiny_model(architecture))
    prompt = torch.randint(0, 97, (1, 9), generator=torch.Generator().manual_seed(3))
    generated, argmax = greedy_decode_with_argmax(model, prompt, 4)
    expected = model.model.generate(prompt, max_new_tokens=4, do_sample=False, pad_token_id=0)[0, 9:].tolist()
    assert generated == expected
    # Step t's argmax is the last query's argmax in a full forward over prompt + generated[:t].
    full = torch.cat([prompt[0], torch.tensor(generated[:-1])])[None]
    _, cache = model.run_with_cache(full, names=lambda n: n.endswith("hook_pattern"))
    for step in range(4):
        query = 8 + step
        for layer in range(2):
            assert torch.equal(argmax[step, layer], cache[f"blocks.{layer}.attn.hook_pattern"][0, :, query].argmax(-1))


@torch.no_grad()
def test_streaming_proxy_closed_form_under_uniform_attention():
    model = HookedModel(tiny_model("llama"))
    zero_queries = [(f"blocks.{layer}.attn.hook_q", lambda q, hook: torch.zeros_like(q)) for layer in range(2)]
    with model.hooks(zero_queries):
        outside = mass_outside(model, torch.randint(0, 97, (1, 30)), n_sink=2, window=5)
    expected = sum((p + 1 - 7) / (p + 1) for p in range(7, 30)) / 23  # uniform: (keys outside) / (visible keys)
    torch.testing.assert_close(outside, torch.full((2, 4), expected), atol=1e-6, rtol=1e-6)


def _answer_losses(model: HookedModel, sample: NeedleSample, rows: int) -> torch.Tensor:
    """Answer cross-entropy of one full forward over prompt + answer (whatever hooks are active)."""
    answer = torch.tensor(sample.answer_ids)
    logits = model(torch.cat([sample.tokens[0], answer])[None])[0, -len(answer) - 1 : -1]
    return torch.nn.functional.cross_entropy(logits, answer).repeat(rows)


@torch.no_grad()
def test_streaming_scores_equal_one_head_at_a_time():
    model = HookedModel(tiny_model("qwen2"))
    tokens = torch.randint(0, 97, (1, 20), generator=torch.Generator().manual_seed(0))
    sample = NeedleSample(tokens=tokens, answer_ids=[5, 6], answer_span=(3, 5), context_length=20, depth=0.2, answer="")
    per_head, per_group = streaming_scores(model, [sample], n_sink=1, window=4)
    drop = lambda_blocked(22, n_sink=1, window=4)
    baseline = _answer_losses(model, sample, 1)[0]
    for layer in range(2):
        for head in range(4):
            with model.knockout(drop, layers=[layer], heads=[head]):
                expected = _answer_losses(model, sample, 1)[0] - baseline
            assert per_head[layer, head].item() == pytest.approx(expected.item(), abs=1e-5)
        group = [0, 1]  # kv head 0 serves query heads 0 and 1
        with model.knockout(drop, layers=[layer], heads=group):
            expected = _answer_losses(model, sample, 1)[0] - baseline
        assert per_group[layer, 0].item() == pytest.approx(expected.item(), abs=1e-5)
    # Nothing dropped: window covers everything.
    zero_head, zero_group = streaming_scores(model, [sample], n_sink=1, window=64)
    assert zero_head.abs().max() < 1e-6 and zero_group.abs().max() < 1e-6


@pytest.mark.parametrize("architecture", ["gpt2", "gpt_neo", "gpt_neox", "llama", "gemma2"])
@torch.no_grad()
def test_streaming_scores_reusing_the_prefix_cache_equal_full_forwards(architecture):
    model = HookedModel(tiny_model(architecture))
    tokens = torch.randint(0, 97, (1, 20), generator=torch.Generator().manual_seed(1))
    sample = NeedleSample(tokens=tokens, answer_ids=[7, 8], answer_span=(2, 4), context_length=20, depth=0.1, answer="")
    reused = streaming_scores(model, [sample], n_sink=1, window=4, reuse_prefix=True)
    full = streaming_scores(model, [sample], n_sink=1, window=4, reuse_prefix=False)
    for a, b in zip(reused, full):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert full[1].abs().max() > 1e-3  # the restriction does change the loss, so equality means something


@torch.no_grad()
def test_streaming_scores_under_a_positional_hook_do_not_reuse_the_prefix():
    """A hook that edits position 2 must act on position 2: suffix-only forwards would shift it."""
    model = HookedModel(tiny_model("llama"))
    tokens = torch.randint(0, 97, (1, 20), generator=torch.Generator().manual_seed(2))
    sample = NeedleSample(tokens=tokens, answer_ids=[7, 8], answer_span=(2, 4), context_length=20, depth=0.1, answer="")

    def zero_position_2(resid, hook):
        resid = resid.clone()
        resid[:, 2] = 0
        return resid

    with model.hooks([("blocks.1.hook_resid_pre", zero_position_2)]):
        hooked = streaming_scores(model, [sample], n_sink=1, window=4, reuse_prefix=True)
        full = streaming_scores(model, [sample], n_sink=1, window=4, reuse_prefix=False)
    for a, b in zip(hooked, full):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_streaming_head_mask_streams_the_lowest_scores():
    frame = pd.DataFrame({
        "layer": [0, 0, 0, 0, 1, 1, 1, 1], "head": [0, 1, 2, 3] * 2, "kv_head": [0, 0, 1, 1] * 2,
        "streaming_score_kv": [0.5, 0.5, 0.01, 0.01, 0.02, 0.02, 3.0, 3.0],
        "streaming_mass_outside": [0.1] * 8,
    })
    table = kv_head_table(frame, sparsity=0.5)
    assert table.streaming_full_attention.tolist() == [True, False, False, True]
    assert streaming_head_mask(table, sparsity=0.25).tolist() == [[1, 0], [1, 1]]


@torch.no_grad()
def test_real_model_retrieval_heads_are_few_and_causal(smollm):
    samples = needle_grid(smollm, context_lengths=[256], n_samples=4, seed=0)
    assert all(s.tokens[0, s.answer_span[0] : s.answer_span[1]].tolist() == s.answer_ids for s in samples)
    scores = retrieval_scores(smollm, samples)
    summary = scores.attrs["summary"]
    assert summary["needle_samples_retrieved"] >= 2
    assert scores.retrieval_score.max() >= 0.5 and scores.retrieval_head.mean() < 0.15
    check = retrieval_ablation_check(smollm, samples, scores, k=5, n_random=2)
    assert check["recall_top_k_ablated"] < check["recall_random_k_ablated"]
    assert check["recall_top_k_ablated"] < check["recall_clean"]


def test_needle_prompt_places_the_answer_where_it_says(smollm):
    sample = needle_sample(smollm, 200, 0.5, seed=4)
    text = smollm.tokenizer.decode(sample.tokens[0, sample.answer_span[0] : sample.answer_span[1]])
    assert text == sample.answer and abs(sample.context_length - 200) <= 2


def test_kv_head_table_on_a_subset_of_layers_keeps_real_layer_numbers():
    frame = pd.DataFrame({
        "layer": [0, 0, 3, 3, 7, 7], "head": [0, 1] * 3, "kv_head": [0, 1] * 3,
        "streaming_score_kv": [float("nan"), float("nan"), 0.9, 0.01, 0.02, 2.0],
        "streaming_mass_outside": [0.1] * 6,
    })
    table = kv_head_table(frame, sparsity=0.5)
    assert table.layer.tolist() == [3, 3, 7, 7]
    assert table.streaming_full_attention.tolist() == [True, False, False, True]
