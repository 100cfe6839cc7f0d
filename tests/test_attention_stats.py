"""Statistics collected during a model's forward pass, against statistics read off HF's eager pattern.

The reference is independent of interp's kernels: Hugging Face's own eager attention weights
(``output_attentions=True``) of the same weights, from which each statistic is computed directly.
"""

import copy

import pytest
import torch
from tiny_models import ARCHITECTURE_NAMES, VOCAB, tiny_model

from interp.hooks import HookedModel
from interp.hooks.stats import StatsCollector
from interp.kernels import StatsConfig

N_SINK, WINDOW = 2, 3
CONFIG = StatsConfig(n_sink=N_SINK, window=WINDOW, received=True)
COMPARED = ("entropy", "max_prob", "diag_mass", "prev_mass", "sink_mass", "window_mass")


def pattern_stats(pattern: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each statistic straight from a ``[batch, head, query, key]`` pattern (query i at position i)."""
    n = pattern.shape[-1]
    query, key = torch.arange(n)[:, None], torch.arange(n)[None, :]
    recent = (key <= query) & (key > query - WINDOW)
    return {
        "entropy": -torch.special.xlogy(pattern, pattern).sum(-1),
        "max_prob": pattern.amax(-1),
        "diag_mass": pattern.diagonal(0, -2, -1),
        "prev_mass": torch.nn.functional.pad(pattern.diagonal(-1, -2, -1), (1, 0)),
        "sink_mass": pattern[..., :N_SINK].sum(-1),
        "window_mass": (pattern * recent).sum(-1),
        "received": pattern.sum(-2),
    }


def eager_patterns(architecture: str, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None):
    model = tiny_model(architecture)
    model.set_attn_implementation("eager")
    with torch.no_grad():
        return model(input_ids=tokens, attention_mask=attention_mask, output_attentions=True).attentions


def assert_matches_pattern(stats, pattern: torch.Tensor, rows: torch.Tensor) -> None:
    """``rows``: ``[batch, query]`` True for the queries to compare (not padding)."""
    pattern = pattern.float() * rows[:, None, :, None]  # padding queries attend nowhere
    expected = pattern_stats(pattern)
    for name in COMPARED:
        actual = getattr(stats, name)
        torch.testing.assert_close(
            actual.transpose(1, 2)[rows], expected[name].transpose(1, 2)[rows], atol=2e-5, rtol=1e-4, msg=name
        )
    torch.testing.assert_close(stats.received, expected["received"], atol=5e-5, rtol=1e-4)
    # argmax may differ only on ties: the pattern value at our argmax must be the row maximum.
    at_argmax = pattern.gather(-1, stats.argmax.clamp(min=0)[..., None])[..., 0]
    torch.testing.assert_close(at_argmax.transpose(1, 2)[rows], expected["max_prob"].transpose(1, 2)[rows])


@pytest.mark.parametrize("architecture", ARCHITECTURE_NAMES)
@torch.no_grad()
def test_forward_statistics_match_the_eager_pattern_and_keep_logits(architecture):
    plain = tiny_model(architecture)
    hooked = HookedModel(copy.deepcopy(plain))
    tokens = torch.randint(0, VOCAB, (2, 14), generator=torch.Generator().manual_seed(3))
    with hooked.collect_attention_stats(CONFIG) as stats:
        logits = hooked(tokens)
    torch.testing.assert_close(logits, plain(input_ids=tokens).logits, atol=1e-5, rtol=1e-4)
    patterns = eager_patterns(architecture, tokens)
    for layer in range(hooked.cfg.n_layers):
        assert_matches_pattern(stats[layer], patterns[layer], torch.ones(2, 14, dtype=torch.bool))


@pytest.mark.parametrize("architecture", ["llama", "mistral", "gemma2", "gemma3_text"])
@torch.no_grad()
def test_left_padding_is_masked_like_the_model_masks_it(architecture):
    """Row 0 has 3 padding tokens in front; mistral and gemma2 also have a sliding window of 6 keys."""
    hooked = HookedModel(tiny_model(architecture))
    tokens = torch.randint(0, VOCAB, (2, 14), generator=torch.Generator().manual_seed(4))
    attention_mask = torch.ones(2, 14, dtype=torch.long)
    attention_mask[0, :3] = 0
    with hooked.collect_attention_stats(CONFIG) as stats:
        logits = hooked(tokens, attention_mask=attention_mask)
    plain = tiny_model(architecture)
    expected_logits = plain(input_ids=tokens, attention_mask=attention_mask).logits
    real = attention_mask.bool()
    torch.testing.assert_close(logits[real], expected_logits[real], atol=1e-5, rtol=1e-4)
    patterns = eager_patterns(architecture, tokens, attention_mask)
    for layer in range(hooked.cfg.n_layers):
        assert_matches_pattern(stats[layer], patterns[layer], real)
        assert (stats[layer].argmax[0, :, :3] == -1).all()  # padding queries see no key


@pytest.mark.parametrize("architecture", ["mistral", "gemma2", "gemma3_text"])
@torch.no_grad()
def test_statistics_forward_builds_no_square_mask(architecture, monkeypatch):
    """Sliding-window models would get a [batch, 1, N, N] mask from transformers; the kernel needs padding only."""
    seen = []
    compute = StatsCollector.compute

    def spy(self, layer, query, key, value, attention_mask, **kwargs):
        seen.append(None if attention_mask is None else attention_mask.dim())
        return compute(self, layer, query, key, value, attention_mask, **kwargs)

    monkeypatch.setattr(StatsCollector, "compute", spy)
    hooked = HookedModel(tiny_model(architecture))
    tokens = torch.randint(0, VOCAB, (2, 14))
    with hooked.collect_attention_stats(CONFIG):
        hooked(tokens)
    padded = torch.ones(2, 14, dtype=torch.long)
    padded[0, 0] = 0
    with hooked.collect_attention_stats(CONFIG):
        hooked(tokens, attention_mask=padded)
    assert seen == [None] * hooked.cfg.n_layers + [2] * hooked.cfg.n_layers
    # Outside the block (and for a subset of layers) the model builds its usual mask again.
    with hooked.collect_attention_stats(CONFIG, layers=[0]):
        hooked(tokens)
    assert seen[-1] == 4


@torch.no_grad()
def test_shipped_model_statistics_match_its_eager_pattern(smollm, smollm_folder):
    from transformers import AutoModelForCausalLM

    tokens = smollm.to_tokens("When Mary and John went to the store, John gave a drink to Mary. " * 3)
    with smollm.collect_attention_stats(CONFIG) as stats:
        logits = smollm(tokens)
    plain = AutoModelForCausalLM.from_pretrained(smollm_folder, dtype=torch.float32).eval()
    torch.testing.assert_close(logits, plain(input_ids=tokens).logits, atol=1e-4, rtol=1e-4)
    plain.set_attn_implementation("eager")
    patterns = plain(input_ids=tokens, output_attentions=True).attentions
    rows = torch.ones(tokens.shape, dtype=torch.bool)
    for layer in (0, 15, 29):
        assert_matches_pattern(stats[layer], patterns[layer], rows)
