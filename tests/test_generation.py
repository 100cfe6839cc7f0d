"""Hooks during generation, steering, steering vectors, patchscopes and the prompt logit lens.

References are independent of interp's hooks: HF ``generate`` on an unwrapped copy of the same
weights, hand-written torch forward hooks on the HF modules, full forwards over the generated
sequence, and HF's ``output_hidden_states``.
"""

import pytest
import torch
from tiny_models import ARCHITECTURE_NAMES, VOCAB, generic_tiny_model, tiny_model

import interp
from interp.errors import InterpError
from interp.hooks import HookedModel
from interp.models.coverage import TESTED

N_NEW = 6


def _tokens(batch=2, pos=7, seed=1):
    return torch.randint(3, VOCAB, (batch, pos), generator=torch.Generator().manual_seed(seed))


def _pair(architecture="llama", dtype=torch.float64):
    """A hooked model and an unwrapped copy with the same weights."""
    return HookedModel(tiny_model(architecture).to(dtype)), tiny_model(architecture).to(dtype)


def _hf_generate(model, tokens, **kwargs):
    return model.generate(
        tokens, attention_mask=torch.ones_like(tokens), max_new_tokens=N_NEW, do_sample=False, pad_token_id=0,
        return_dict_in_generate=True, output_logits=True, **kwargs,
    )


@pytest.mark.parametrize("architecture", ARCHITECTURE_NAMES)
def test_generate_without_hooks_is_hf_generate_bit_for_bit(architecture):
    hooked, plain = _pair(architecture, torch.float32)
    tokens = _tokens()
    ours = hooked.generate(tokens, max_new_tokens=N_NEW, do_sample=False, pad_token_id=0,
                           return_dict_in_generate=True, output_logits=True)
    ref = _hf_generate(plain, tokens)
    assert torch.equal(ours.sequences, ref.sequences)
    assert len(ours.logits) == len(ref.logits) >= 1
    assert all(torch.equal(a, b) for a, b in zip(ours.logits, ref.logits))
    plain_ids = hooked.generate(tokens, max_new_tokens=N_NEW, do_sample=False, pad_token_id=0)
    assert torch.equal(plain_ids, ref.sequences)  # the default return: token ids [batch, prompt + new]


def test_left_padded_generation_without_hooks_is_hf_generate():
    hooked, plain = _pair("llama", torch.float32)
    tokens = _tokens()
    mask = torch.ones_like(tokens)
    mask[0, :3] = 0
    tokens[0, :3] = 0
    ours = hooked.generate(tokens, attention_mask=mask, max_new_tokens=N_NEW, do_sample=False, pad_token_id=0,
                           return_dict_in_generate=True, output_logits=True)
    ref = plain.generate(tokens, attention_mask=mask, max_new_tokens=N_NEW, do_sample=False, pad_token_id=0,
                         return_dict_in_generate=True, output_logits=True)
    assert torch.equal(ours.sequences, ref.sequences)
    assert all(torch.equal(a, b) for a, b in zip(ours.logits, ref.logits))


@pytest.mark.parametrize("architecture", ["llama", "gpt2", "gemma2", "gpt_neo"])
def test_generation_cache_is_run_with_cache_over_the_generated_sequence(architecture):
    hooked, _ = _pair(architecture)
    tokens = _tokens()
    sequences, cache = hooked.generate(tokens, max_new_tokens=N_NEW, do_sample=False, pad_token_id=0, cache_names=True)
    assert sequences.shape == (2, tokens.shape[1] + N_NEW)
    _, full = hooked.run_with_cache(sequences, names=list(cache))
    assert isinstance(cache, interp.ActivationCache) and set(cache) == set(full) and any(name.endswith("attn.hook_z") for name in cache)
    for name in cache:
        assert cache[name].shape == full[name].shape, name
        torch.testing.assert_close(cache[name], full[name], atol=1e-6, rtol=0)


def test_hook_sees_step_and_absolute_positions():
    hooked, _ = _pair()
    tokens = _tokens(pos=5)
    seen = []
    hooked.generate(tokens, max_new_tokens=4, do_sample=False, pad_token_id=0,
                    fwd_hooks=[("blocks.1.hook_resid_post", lambda a, hook: seen.append((hook.step, hook.positions.tolist(), a.shape[1])))])
    assert seen == [(0, [0, 1, 2, 3, 4], 5), (1, [5], 1), (2, [6], 1), (3, [7], 1)]
    points = []
    hooked.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_resid_post", lambda a, hook: points.append(hook))])
    assert points[0].step is None and points[0].positions is None  # plain runs keep the old HookPoint


def _add_to_block_output(block, vector, columns=None):
    """A hand-written forward hook adding ``vector`` at the block's output (all rows, or the given absolute columns)."""
    state = {"seen": 0}

    def hook(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        n = hidden.shape[1]
        start = state["seen"]
        state["seen"] += n
        hidden = hidden.clone()
        for i in range(n):
            if columns is None or start + i in columns:
                hidden[:, i] = hidden[:, i] + vector
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    return block.register_forward_hook(hook)


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_steering_during_generation_matches_a_hand_written_hook(architecture):
    hooked, plain = _pair(architecture)
    tokens = _tokens()
    vector = torch.randn(hooked.cfg.d_model, dtype=torch.float64)
    with hooked.steer("blocks.0.hook_resid_post", vector, coeff=3.0):
        ours = hooked.generate(tokens, max_new_tokens=N_NEW, do_sample=False, pad_token_id=0,
                               return_dict_in_generate=True, output_logits=True)
    unsteered = _hf_generate(plain, tokens)
    handle = _add_to_block_output(plain.get_submodule(hooked.architecture_spec.layers)[0], 3.0 * vector)
    try:
        ref = _hf_generate(plain, tokens)
    finally:
        handle.remove()
    assert not torch.equal(ref.sequences, unsteered.sequences) or not torch.allclose(ref.logits[0], unsteered.logits[0])
    assert torch.equal(ours.sequences, ref.sequences)
    for a, b in zip(ours.logits, ref.logits):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=0)


def test_steering_at_absolute_positions_equals_a_full_forward_with_the_same_edit():
    hooked, plain = _pair()
    tokens = _tokens(pos=5)
    vector = torch.randn(hooked.cfg.d_model, dtype=torch.float64) * 4
    columns = {2, 6}  # one prompt position, one generated position
    with hooked.steer("blocks.0.hook_resid_post", vector, positions=sorted(columns)):
        ours = hooked.generate(tokens, max_new_tokens=N_NEW, do_sample=False, pad_token_id=0,
                               return_dict_in_generate=True, output_logits=True)
    handle = _add_to_block_output(plain.model.layers[0], vector, columns)
    try:
        full = plain(ours.sequences, use_cache=False).logits  # one pass over the whole generated sequence
    finally:
        handle.remove()
    for step, logits in enumerate(ours.logits):
        torch.testing.assert_close(logits.double(), full[:, tokens.shape[1] - 1 + step], atol=1e-6, rtol=0)
    assert torch.equal(ours.sequences[:, tokens.shape[1]:], full[:, tokens.shape[1] - 1 : -1].argmax(-1))


def test_steer_at_hook_z_adds_per_head_in_plain_runs():
    hooked, plain = _pair()
    tokens = _tokens()
    vector = torch.randn(hooked.cfg.n_heads, hooked.cfg.d_head, dtype=torch.float64)
    with hooked.steer("blocks.1.attn.hook_z", vector, coeff=-2.0):
        ours = hooked(tokens)
    o_proj = plain.model.layers[1].self_attn.o_proj

    def pre(module, args):
        return (args[0] + (-2.0 * vector).reshape(-1),)

    handle = o_proj.register_forward_pre_hook(pre)
    try:
        ref = plain(tokens, use_cache=False).logits
    finally:
        handle.remove()
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(hooked(tokens), plain(tokens, use_cache=False).logits, atol=0, rtol=0)  # removed after


def test_generation_and_steering_refusals():
    hooked, _ = _pair()
    tokens = _tokens()
    for name in ("blocks.0.attn.hook_k", "blocks.0.attn.hook_pattern"):
        with pytest.raises(InterpError, match="during generation"):
            hooked.generate(tokens, max_new_tokens=2, fwd_hooks=[(name, lambda a, h: None)])
    with pytest.raises(InterpError, match="during generation"):
        hooked.generate(tokens, max_new_tokens=2, cache_names=["blocks.0.attn.hook_v"])
    with pytest.raises(InterpError, match=r"shape \[32\]"), hooked.steer("blocks.0.hook_resid_post", torch.zeros(4, 8)):
        pass
    with pytest.raises(InterpError, match="not blocks.0.attn.hook_pattern"), hooked.steer("blocks.0.attn.hook_pattern", torch.zeros(32)):
        pass
    with pytest.raises(InterpError, match="max_new_tokens"):
        hooked.generate(tokens, max_new_tokens=0)


def test_intervene_positions_are_absolute_during_generation():
    hooked, _ = _pair()
    tokens = _tokens(pos=5)
    seen = []
    with hooked.intervene("blocks.0.hook_resid_post", scale=0.0, positions=[-1]):
        hooked.generate(tokens, max_new_tokens=3, do_sample=False, pad_token_id=0,
                        fwd_hooks=[("blocks.0.hook_resid_post", lambda a, h: seen.append(a[:, -1].abs().max().item()))])
    assert seen == [0.0, 0.0, 0.0]  # -1 is each step's newest token


def _layer_outputs(plain, tokens):
    """Each block's output at every position, by hand-written hooks on the HF blocks."""
    outputs, handles = {}, []
    for layer, block in enumerate(plain.model.layers):
        handles.append(block.register_forward_hook(
            lambda m, a, o, layer=layer: outputs.__setitem__(layer, (o[0] if isinstance(o, tuple) else o).detach())))
    try:
        plain(tokens, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def test_steering_vector_is_the_mean_difference_of_hidden_states(smollm):
    positive, negative = ["I love it", "Wonderful and happy day"], ["I hate it"]
    name = "blocks.2.hook_resid_post"
    vector = interp.steering_vector(smollm, positive, negative, name)
    hidden = lambda text: smollm.model(**smollm.tokenizer(text, return_tensors="pt"), output_hidden_states=True).hidden_states[3][0, -1]
    with torch.no_grad():
        ref = torch.stack([hidden(t) for t in positive]).mean(0) - torch.stack([hidden(t) for t in negative]).mean(0)
    torch.testing.assert_close(vector, ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(InterpError, match="no negative prompts"):
        interp.steering_vector(smollm, positive, [], name)


def test_patchscope_matches_hand_written_patching_and_generation():
    hooked, plain = _pair()
    source, target = _tokens(batch=1, pos=6, seed=2), _tokens(batch=1, pos=5, seed=3)
    frame = interp.patchscope(hooked, source, source_position=3, target=target, target_position=-2, max_new_tokens=4)
    assert list(frame.layer) == [0, 1] and list(frame.target_layer) == [0, 1]
    assert list(frame.columns[:3]) == ["layer", "position", "token"] and (frame.position == 3).all()
    states = _layer_outputs(plain, source)
    for layer in (0, 1):
        def patch(module, args, output, layer=layer):
            hidden = output[0] if isinstance(output, tuple) else output
            if hidden.shape[1] == 1:  # a decoding step: only the prompt pass is patched
                return None
            hidden = hidden.clone()
            hidden[:, 3] = states[layer][0, 3]  # target position -2 of 5 tokens
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        handle = plain.model.layers[layer].register_forward_hook(patch)
        try:
            ref = plain.generate(target, attention_mask=torch.ones_like(target), max_new_tokens=4, do_sample=False,
                                 pad_token_id=0, return_dict_in_generate=True, output_logits=True)
        finally:
            handle.remove()
        new = ref.sequences[0, target.shape[1]:]
        assert frame.continuation[layer] == " ".join(str(int(t)) for t in new if int(t) != 0)
        probs = torch.softmax(ref.logits[0][0].double(), -1)
        assert frame.top_tokens[layer][0] == str(int(probs.argmax()))
        assert frame.top_probs[layer][0] == pytest.approx(float(probs.max()), abs=1e-9)
    fixed = interp.patchscope(hooked, source, source_layer=[1], target=target, target_layer=0, max_new_tokens=2)
    assert list(fixed.target_layer) == [0]
    with pytest.raises(InterpError, match="layer"):
        interp.patchscope(hooked, source, source_layer=5)


def test_logit_lens_on_a_prompt_reads_the_final_layer_as_the_model_does(smollm):
    frame = interp.logit_lens(smollm, "The Eiffel Tower is in the city of", k=3)
    assert list(frame.columns) == ["layer", "position", "token", "top_tokens", "top_probs"]
    assert list(frame.layer) == list(range(-1, smollm.cfg.n_layers))
    with torch.no_grad():
        probs = torch.softmax(smollm("The Eiffel Tower is in the city of")[0, -1].double(), -1)
    last = frame.iloc[-1]
    assert last.top_tokens[0] == smollm.tokenizer.decode([int(probs.argmax())])
    assert last.top_probs[0] == pytest.approx(float(probs.max()), abs=1e-5)
    every = interp.logit_lens(smollm, "Hello world", position=None, k=1)
    assert len(every) == (smollm.cfg.n_layers + 1) * smollm.to_tokens("Hello world").shape[1]


def test_left_padded_generation_cache_matches_a_full_forward_on_real_tokens():
    hooked, _ = _pair()
    tokens = _tokens()
    mask = torch.ones_like(tokens)
    mask[0, :3] = 0
    tokens[0, :3] = 0
    sequences, cache = hooked.generate(tokens, attention_mask=mask, max_new_tokens=N_NEW, do_sample=False,
                                       pad_token_id=0, eos_token_id=None, cache_names=lambda n: n.endswith("hook_resid_post"))
    full_mask = torch.cat([mask, torch.ones(2, sequences.shape[1] - tokens.shape[1], dtype=mask.dtype)], dim=1)
    position_ids = (full_mask.cumsum(-1) - 1).clamp(min=0)  # as generate numbers left-padded rows
    _, full = hooked.run_with_cache(sequences, names=list(cache), attention_mask=full_mask, position_ids=position_ids)
    real = full_mask.bool()
    for name in cache:
        torch.testing.assert_close(cache[name][real], full[name][real], atol=1e-6, rtol=0)


@pytest.mark.parametrize("model_type", sorted(TESTED))
def test_generation_on_every_tested_model_type(model_type):
    """Coverage matrix: no-hook generate is HF generate bit for bit, the cache matches a full forward,
    and steering equals a hand-written hook on the HF block (float32: MoE experts run no float64)."""
    hooked, plain = HookedModel(generic_tiny_model(model_type)), generic_tiny_model(model_type)
    tokens = _tokens()
    options = {"max_new_tokens": 3, "do_sample": False, "pad_token_id": 0, "eos_token_id": None,
               "return_dict_in_generate": True, "output_logits": True}
    ours = hooked.generate(tokens, **options)
    ref = plain.generate(tokens, attention_mask=torch.ones_like(tokens), **options)
    assert torch.equal(ours.sequences, ref.sequences)
    assert all(torch.equal(a, b) for a, b in zip(ours.logits, ref.logits))
    output, cache = hooked.generate(tokens, cache_names=lambda n: n.endswith(("hook_resid_post", "attn.hook_z")), **options)
    _, full = hooked.run_with_cache(output.sequences, names=list(cache))
    for name in cache:
        torch.testing.assert_close(cache[name], full[name], atol=1e-4, rtol=1e-4)
    vector = torch.randn(hooked.cfg.d_model, generator=torch.Generator().manual_seed(2))
    with hooked.steer("blocks.0.hook_resid_post", vector, coeff=2.0):
        steered = hooked.generate(tokens, **options)
    handle = _add_to_block_output(plain.get_submodule(hooked.architecture_spec.layers)[0], 2.0 * vector)
    try:
        by_hand = plain.generate(tokens, attention_mask=torch.ones_like(tokens), **options)
    finally:
        handle.remove()
    assert torch.equal(steered.sequences, by_hand.sequences)
    for a, b in zip(steered.logits, by_hand.logits):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
