"""Hook points on tiny random-init models of every supported architecture and on the shipped model.

References are independent of interp's hooks: the unwrapped HF model, HF's own eager attention
weights (``output_attentions=True``), and linear algebra done by hand on captured tensors.
"""

import copy

import pytest
import torch
from tiny_models import ARCHITECTURE_NAMES, VOCAB, tiny_model

from interp.hooks import HookedModel
from interp.hooks.points import CORE_SITES
from interp.models.architectures import supported_architectures


def _tokens(batch=2, pos=12, seed=1):
    return torch.randint(0, VOCAB, (batch, pos), generator=torch.Generator().manual_seed(seed))


def _eager_reference(architecture):
    """The same random-init weights as tiny_model(architecture), run by HF's eager attention."""
    model = tiny_model(architecture)
    model.set_attn_implementation("eager")
    return model


def test_every_family_here_is_in_the_coverage_matrix_and_every_override_has_a_tiny_model():
    from interp.models.coverage import OVERRIDE_TESTED, TESTED

    assert set(ARCHITECTURE_NAMES) <= set(TESTED) | set(OVERRIDE_TESTED)
    assert set(supported_architectures()) <= set(ARCHITECTURE_NAMES)


@pytest.mark.parametrize("architecture", ARCHITECTURE_NAMES)
@torch.no_grad()
def test_hooked_logits_are_identical_to_the_plain_model(architecture):
    plain = tiny_model(architecture)
    hooked = HookedModel(copy.deepcopy(plain))
    tokens = _tokens()
    assert torch.equal(hooked(tokens), plain(input_ids=tokens).logits)
    # Capturing activations (other than the materialized scores and pattern) must not change numerics either.
    logits, cache = hooked.run_with_cache(tokens, names=lambda name: not name.endswith(("hook_pattern", "hook_attn_scores")))
    assert torch.equal(logits, plain(input_ids=tokens).logits)
    core = [name for name in cache if name.split(".", 2)[-1] in CORE_SITES or name == "hook_embed"]
    assert len(core) == 1 + 9 * hooked.cfg.n_layers
    assert len(cache) == len(hooked.hook_names()) - 2 * hooked.cfg.n_layers


@pytest.mark.parametrize("architecture", ARCHITECTURE_NAMES)
@torch.no_grad()
def test_pattern_matches_hf_eager_attention_weights(architecture):
    hooked = HookedModel(tiny_model(architecture))
    tokens = _tokens()
    _, cache = hooked.run_with_cache(tokens, names=lambda name: name.endswith("hook_pattern"))
    eager = _eager_reference(architecture)(input_ids=tokens, output_attentions=True).attentions
    for layer in range(hooked.cfg.n_layers):
        torch.testing.assert_close(cache[f"blocks.{layer}.attn.hook_pattern"], eager[layer].float(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("architecture", ARCHITECTURE_NAMES)
@torch.no_grad()
def test_z_through_out_projection_reproduces_attention_output(architecture):
    hooked = HookedModel(tiny_model(architecture))
    _, cache = hooked.run_with_cache(_tokens(), names=lambda n: n.endswith(("hook_z", "hook_attn_out", "hook_result")))
    for layer in range(hooked.cfg.n_layers):
        z = cache[f"blocks.{layer}.attn.hook_z"]
        w_o = hooked.out_proj(layer).weight
        # By hand: concatenate heads and apply the projection matrix as the HF module stores it.
        flat = z.reshape(*z.shape[:2], -1)
        manual = flat @ (w_o if type(hooked.out_proj(layer)).__name__ == "Conv1D" else w_o.T)
        bias = hooked.out_proj(layer).bias
        manual = manual + (bias if bias is not None else 0)
        torch.testing.assert_close(manual, cache[f"blocks.{layer}.hook_attn_out"], atol=1e-5, rtol=1e-5)
        result_sum = cache[f"blocks.{layer}.attn.hook_result"].sum(dim=2) + (bias if bias is not None else 0)
        torch.testing.assert_close(result_sum, cache[f"blocks.{layer}.hook_attn_out"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("architecture", ["gpt2", "llama", "gpt_neo"])
@torch.no_grad()
def test_zero_ablating_a_head_matches_hand_computed_reference(architecture):
    hooked = HookedModel(tiny_model(architecture))
    tokens = _tokens()
    layer, head = 1, 2
    _, clean = hooked.run_with_cache(tokens, names=[f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.hook_attn_out"])
    z_head = clean[f"blocks.{layer}.attn.hook_z"][:, :, head]
    # Reference: the layer's attention output minus that head's own contribution z_h @ W_O[h],
    # written in through a different hook point (the attention module output).
    w_o = hooked.out_proj(layer).weight
    w_o_head = (w_o if type(hooked.out_proj(layer)).__name__ == "Conv1D" else w_o.T)[head * 8 : (head + 1) * 8]
    expected_attn_out = clean[f"blocks.{layer}.hook_attn_out"] - z_head @ w_o_head
    expected_logits = hooked.run_with_hooks(
        tokens, fwd_hooks=[(f"blocks.{layer}.hook_attn_out", lambda act, hook: expected_attn_out)]
    )
    with hooked.ablate_heads([(layer, head)]):
        logits, ablated = hooked.run_with_cache(tokens, names=[f"blocks.{layer}.hook_attn_out"])
    torch.testing.assert_close(ablated[f"blocks.{layer}.hook_attn_out"], expected_attn_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, expected_logits, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(logits, hooked(tokens), atol=1e-4)


@torch.no_grad()
def test_intervention_at_positions_only_touches_those_positions():
    hooked = HookedModel(tiny_model("llama"))
    tokens = _tokens(pos=10)
    name = "blocks.0.hook_resid_post"
    _, clean = hooked.run_with_cache(tokens, names=[name, "blocks.1.hook_resid_post"])
    with hooked.intervene(name, scale=0.0, positions=[7]):
        _, patched = hooked.run_with_cache(tokens, names=[name, "blocks.1.hook_resid_post"])
    assert torch.equal(patched[name][:, 7], torch.zeros_like(patched[name][:, 7]))
    assert torch.equal(patched[name][:, :7], clean[name][:, :7])
    # Causality: later layers at earlier positions cannot see position 7.
    torch.testing.assert_close(patched["blocks.1.hook_resid_post"][:, :7], clean["blocks.1.hook_resid_post"][:, :7])
    assert not torch.allclose(patched["blocks.1.hook_resid_post"][:, 8:], clean["blocks.1.hook_resid_post"][:, 8:])


@torch.no_grad()
def test_hooks_are_removed_after_an_exception():
    hooked = HookedModel(tiny_model("gpt2"))
    tokens = _tokens()
    before = hooked(tokens)

    def broken(activation, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        hooked.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_z", broken)])
    with pytest.raises(RuntimeError, match="boom"):
        with hooked.intervene("blocks.1.hook_mlp_out", scale=0.0):
            hooked.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_q", broken)])
    assert not hooked.hooks_registry._fns
    assert torch.equal(hooked(tokens), before)


@torch.no_grad()
def test_knockout_blocks_exactly_the_chosen_edges():
    hooked = HookedModel(tiny_model("qwen2"))
    tokens = _tokens(batch=1, pos=8)
    edges = torch.zeros(8, 8, dtype=torch.bool)
    edges[5, 0] = edges[5, 3] = True
    _, clean = hooked.run_with_cache(tokens, names=["blocks.0.attn.hook_pattern"])
    with hooked.knockout(edges, layers=[0], heads=[1]):
        _, knocked = hooked.run_with_cache(tokens, names=["blocks.0.attn.hook_pattern"])
    pattern, before = knocked["blocks.0.attn.hook_pattern"][0], clean["blocks.0.attn.hook_pattern"][0]
    assert pattern[1, 5, 0] == 0 and pattern[1, 5, 3] == 0
    # The remaining edges of row 5 are renormalized by hand: p / (1 - p_blocked).
    kept = before[1, 5].clone()
    kept[[0, 3]] = 0
    torch.testing.assert_close(pattern[1, 5], kept / kept.sum())
    torch.testing.assert_close(pattern[0], before[0])  # other heads untouched
    torch.testing.assert_close(pattern[1, :5], before[1, :5])  # other rows untouched
    assert not hooked.has_knockout(0)


def test_unknown_hook_name_is_a_clear_error():
    hooked = HookedModel(tiny_model("gpt2"))
    with pytest.raises(ValueError, match="unknown hook point 'blocks.9.attn.hook_z'"):
        hooked.run_with_cache(_tokens(), names=["blocks.9.attn.hook_z"])


def test_unhook_restores_the_plain_model():
    plain = tiny_model("gpt_neo")
    tokens = _tokens()
    with torch.no_grad():
        expected = plain(input_ids=tokens).logits
        hooked = HookedModel(plain)
        restored = hooked.unhook()
        assert restored.config._attn_implementation == "eager"
        assert not restored._forward_hooks and not hooked.layers[0]._forward_pre_hooks
        assert torch.equal(restored(input_ids=tokens).logits, expected)
        HookedModel(restored)  # can be wrapped again


@torch.no_grad()
def test_real_model_hooked_logits_identical_and_pattern_matches_eager(smollm, smollm_folder):
    from transformers import AutoModelForCausalLM

    tokens = smollm.to_tokens("The capital of Germany is Berlin, and the capital of France is")
    plain = AutoModelForCausalLM.from_pretrained(smollm_folder, dtype=torch.float32).eval()
    assert torch.equal(smollm(tokens), plain(input_ids=tokens).logits)
    assert smollm.tokenizer.decode(smollm(tokens)[0, -1].argmax()) == " Paris"
    plain.set_attn_implementation("eager")
    eager = plain(input_ids=tokens, output_attentions=True).attentions
    _, cache = smollm.run_with_cache(tokens, names=["blocks.0.attn.hook_pattern", "blocks.17.attn.hook_pattern"])
    torch.testing.assert_close(cache["blocks.17.attn.hook_pattern"], eager[17], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(cache["blocks.0.attn.hook_pattern"], eager[0], atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_per_row_and_per_head_knockout_matches_one_row_at_a_time():
    hooked = HookedModel(tiny_model("llama"))
    tokens = _tokens(batch=1, pos=8).repeat(3, 1)
    edges = torch.zeros(3, 4, 8, 8, dtype=torch.bool)
    edges[0, 1, 6, :3] = True  # row 0: head 1 loses keys 0-2 at query 6
    edges[2, 3, 7, 5] = True  # row 2: head 3 loses key 5 at query 7
    with hooked.knockout(edges, layers=[1]):
        batched = hooked(tokens)
    for row in range(3):
        single = edges[row, :, :, :]
        with hooked.knockout(single[None], layers=[1]):
            expected = hooked(tokens[row : row + 1])
        torch.testing.assert_close(batched[row : row + 1], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched[1], hooked(tokens[1:2])[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(batched[0], batched[1], atol=1e-4)


@torch.no_grad()
def test_nested_knockouts_are_removed_independently():
    hooked = HookedModel(tiny_model("gpt2"))
    first, second = torch.zeros(5, 5, dtype=torch.bool), torch.ones(5, 5, dtype=torch.bool).tril(-1)
    with hooked.knockout(first, layers=[0]):
        with hooked.knockout(second, layers=[0]):
            assert len(hooked._knockouts[0]) == 2
        assert len(hooked._knockouts[0]) == 1 and hooked._knockouts[0][0][0] is first
    assert not hooked.has_knockout(0)
