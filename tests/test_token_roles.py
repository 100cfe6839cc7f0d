"""Previous-token, duplicate-token and induction scores, checked against TransformerLens' own
detection patterns and scoring function applied to the eager attention pattern."""

import pytest
import torch
from transformer_lens import head_detector

from interp.analyses import role_scores, role_targets
from interp.analyses.probes import natural_text_tokens, repeated_random_tokens

TL_PATTERNS = {
    "previous_token": head_detector.get_previous_token_head_detection_pattern,
    "duplicate_token": head_detector.get_duplicate_token_head_detection_pattern,
    "induction": head_detector.get_induction_head_detection_pattern,
}


def test_targets_by_hand():
    tokens = torch.tensor([[5, 7, 5, 9, 7, 5]])
    dup, has_dup = role_targets(tokens, "duplicate_token")
    ind, has_ind = role_targets(tokens, "induction")
    as_sets = lambda t: [sorted(x for x in row if x >= 0) for row in t[0].tolist()]  # noqa: E731
    assert as_sets(dup) == [[], [], [0], [], [1], [0, 2]]
    assert as_sets(ind) == [[], [], [1], [], [2], [1, 3]]
    assert has_dup[0].tolist() == [False, False, True, False, True, True]
    _, has_prev = role_targets(tokens, "previous_token")
    assert has_prev[0].tolist() == [False, True, True, True, True, True]


@pytest.mark.parametrize("role", list(TL_PATTERNS))
def test_targets_match_transformer_lens_detection_patterns(role):
    tokens = torch.randint(0, 6, (1, 40), generator=torch.Generator().manual_seed(2))
    expected = TL_PATTERNS[role](tokens.cpu())
    targets, _ = role_targets(tokens, role)
    ours = torch.zeros(40, 40)
    if targets is None:
        ours[torch.arange(1, 40), torch.arange(0, 39)] = 1
    else:
        for q, row in enumerate(targets[0].tolist()):
            ours[q, [k for k in row if k >= 0]] = 1
    assert torch.equal(ours, expected)


@torch.no_grad()
@pytest.mark.parametrize("role", list(TL_PATTERNS))
def test_scores_match_transformer_lens_mul_score_on_the_real_model(smollm, role):
    tokens = repeated_random_tokens(smollm, 24, seed=5) if role != "duplicate_token" else natural_text_tokens(smollm, 48)
    _, tl_scores = role_scores(smollm, tokens, role, backend="chunked")
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(smollm.cfg.n_layers)]
    _, cache = smollm.run_with_cache(tokens, names=names)
    detection = TL_PATTERNS[role](tokens[0].cpu())
    for layer in (0, 11, 17, 29):
        for head in range(smollm.cfg.n_heads):
            expected = head_detector.compute_head_attention_similarity_score(
                cache[names[layer]][0, head], detection, exclude_bos=False, exclude_current_token=False, error_measure="mul"
            )
            assert tl_scores[layer, head].item() == pytest.approx(expected, abs=1e-5), (layer, head)


@torch.no_grad()
def test_real_model_has_induction_heads_far_above_the_median(smollm):
    tokens = repeated_random_tokens(smollm, 64, batch=2, seed=1)
    score, _ = role_scores(smollm, tokens, "induction")
    flat = score.flatten()
    top = flat.topk(3).values
    assert top.min() > 0.5 and top.min() > 20 * flat.median()
    # The known induction heads of SmolLM2-135M sit in the middle-late layers (17-18 here).
    assert {int(i) // 9 for i in flat.topk(3).indices} <= {16, 17, 18, 19}


@torch.no_grad()
def test_induction_ranking_equals_transformer_lens_detect_head(smollm, smollm_folder):
    """End to end against TransformerLens v4: detect_head on a TransformerBridge of the same weights."""
    import random

    from transformers import AutoModelForCausalLM
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(
        smollm_folder, hf_model=AutoModelForCausalLM.from_pretrained(smollm_folder), device="cpu"
    )
    words = "apple river stone cloud music paper garden window candle silver forest bridge yellow motor".split()
    rng = random.Random(0)
    prompts = [" ".join(seq + seq) for seq in (rng.sample(words, 12) for _ in range(2))]
    expected = head_detector.detect_head(bridge, prompts, "induction_head")  # [layer, head], mean over prompts
    ours = torch.stack([role_scores(smollm, bridge.to_tokens(p), "induction")[1] for p in prompts]).mean(0)
    torch.testing.assert_close(ours, expected.float(), atol=1e-5, rtol=1e-4)
