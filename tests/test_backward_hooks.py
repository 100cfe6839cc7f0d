"""Backward hooks and ``model.gradients``: float64 gradients at every kind of hook point equal
``torch.autograd.grad`` on the plain HF model, taken at tensors captured by hand-written module hooks
(or, inside attention, derived from those by the softmax and matmul backward written out here)."""

import copy

import pytest
import torch
from tiny_models import generic_tiny_model, tiny_model

import interp
from interp.errors import InterpError
from interp.hooks import HookedModel

ARCHITECTURES = ["llama", "gpt2", "gemma2", "phi3", "opt"]


def _model(architecture):
    model = generic_tiny_model(architecture) if architecture in ("phi3", "opt", "mixtral") else tiny_model(architecture)
    return model.double()


def _metric_weights(vocab, pos):
    return torch.randn(pos, vocab, generator=torch.Generator().manual_seed(7), dtype=torch.float64)


def _tokens(model, batch=2, pos=7):
    vocab = model.get_output_embeddings().weight.shape[0]
    return torch.randint(3, vocab, (batch, pos), generator=torch.Generator().manual_seed(3))


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def _reference(model: torch.nn.Module, hooked: HookedModel, tokens, metric):
    """name -> d(metric)/d(activation) from the plain model in eager attention, by hand-placed torch hooks."""
    plain = copy.deepcopy(model)
    plain.set_attn_implementation("eager")
    spec, layout, c = hooked.architecture_spec, hooked.layout, hooked.cfg
    blocks = plain.get_submodule(spec.layers)
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def keep(name, pre=False, index=0):
        if pre:
            def hook(module, args, kwargs):
                captured[name] = args[0] if args else kwargs["hidden_states"]
            return hook

        def hook(module, args, kwargs, output):
            captured[name] = output[index] if isinstance(output, tuple) else output
        return hook

    def watch(module, name, pre=False, index=0):
        if pre:
            handles.append(module.register_forward_pre_hook(keep(name, True), with_kwargs=True))
        else:
            handles.append(module.register_forward_hook(keep(name, index=index), with_kwargs=True))

    watch(plain.get_input_embeddings(), "hook_embed")
    for layer, lay in enumerate(layout.layers):
        block, p = blocks[layer], f"blocks.{layer}."
        attention = block.get_submodule(spec.attention)
        watch(block, p + "hook_resid_pre", pre=True)
        watch(block, p + "hook_resid_post")
        watch(block.get_submodule(spec.attention.split(".")[0]), p + "hook_attn_out")
        watch(block.get_submodule(spec.mlp), p + "hook_mlp_out")
        watch(getattr(attention, spec.out_proj), p + "z_flat", pre=True)
        watch(getattr(attention, spec.out_proj), p + "out_proj")
        for ln, norm in (("ln1", lay.ln1), ("ln2", lay.ln2)):
            if norm is not None:
                watch(block.get_submodule(norm.path), f"{p}{ln}.hook_normalized")
                watch(block.get_submodule(norm.path), f"{p}{ln}.input", pre=True)
        if lay.mid is not None:
            watch(block.get_submodule(lay.mid), p + "hook_resid_mid", pre=True)
        if lay.mlp.kind == "gated":
            watch(block.get_submodule(lay.mlp.pre), p + "mlp.hook_pre")
            watch(block.get_submodule(lay.mlp.pre_linear), p + "mlp.hook_pre_linear")
        if lay.mlp.kind == "fused":
            watch(block.get_submodule(lay.mlp.pre), p + "gate_up")
        if lay.mlp.kind == "plain":
            watch(block.get_submodule(lay.mlp.pre), p + "mlp.hook_pre")
        if lay.mlp.post is not None:
            watch(block.get_submodule(lay.mlp.post), p + "mlp.hook_post", pre=True)
        if lay.mlp.router is not None:
            watch(block.get_submodule(lay.mlp.router), p + "mlp.hook_router", index=lay.mlp.router_index)
    watch(plain.get_submodule(layout.ln_final.path), "ln_final.hook_normalized")
    watch(plain.get_submodule(layout.ln_final.path), "ln_final.input", pre=True)
    try:
        out = plain(input_ids=tokens, output_attentions=True)
    finally:
        for handle in handles:
            handle.remove()
    patterns = {f"blocks.{layer}.attn.hook_pattern": a for layer, a in enumerate(out.attentions)}
    value = metric(out.logits)
    names = list(captured) + list(patterns)
    tensors = [captured.get(n, patterns.get(n)) for n in names]
    grads = dict(zip(names, torch.autograd.grad(value, tensors, allow_unused=True)))
    batch, pos = tokens.shape
    expected = {n: g.reshape(batch, pos, -1) if g.dim() == 2 else g for n, g in grads.items() if g is not None}

    with torch.no_grad():
        _, acts = hooked.run_with_cache(tokens)
    for layer, lay in enumerate(layout.layers):
        p = f"blocks.{layer}."
        expected[p + "attn.hook_z"] = expected.pop(p + "z_flat").reshape(batch, pos, c.n_heads, c.d_head)
        g_out = expected.pop(p + "out_proj")
        expected[p + "attn.hook_result"] = g_out[:, :, None, :].expand(batch, pos, c.n_heads, c.d_model)
        for ln, norm in (("ln1", lay.ln1), ("ln2", lay.ln2)):
            if norm is not None:
                expected.pop(f"{p}{ln}.input", None)
                expected[f"{p}{ln}.hook_scale"] = _scale_grad(
                    captured[f"{p}{ln}.input"].detach(), captured[f"{p}{ln}.hook_normalized"].detach(),
                    expected[f"{p}{ln}.hook_normalized"], norm, blocks[layer].get_submodule(norm.path),
                )
        if lay.mlp.kind == "fused":
            gate, up = expected.pop(p + "gate_up").chunk(2, dim=-1)
            expected[p + "mlp.hook_pre"], expected[p + "mlp.hook_pre_linear"] = gate, up
        # Inside attention: softmax backward to the scores, then the score matmul's backward to q and k,
        # and the pattern matmul's backward to v.
        pattern, g_pattern = acts[p + "attn.hook_pattern"], expected[p + "attn.hook_pattern"]
        g_scores = pattern * (g_pattern - (pattern * g_pattern).sum(-1, keepdim=True))
        expected[p + "attn.hook_attn_scores"] = g_scores
        q, k = acts[p + "attn.hook_q"], acts[p + "attn.hook_k"]
        scaling, softcap = _scaling_and_softcap(blocks[layer].get_submodule(spec.attention), q.shape[-1])
        g_raw = g_scores
        if softcap is not None:
            scores = acts[p + "attn.hook_attn_scores"]
            g_raw = g_scores * (1 - (scores / softcap) ** 2).clamp_min(0)
        groups = c.n_heads // k.shape[2]
        k_rep = k.repeat_interleave(groups, dim=2)
        expected[p + "attn.hook_q"] = scaling * torch.einsum("bhqk,bkhd->bqhd", g_raw, k_rep)
        g_k = scaling * torch.einsum("bhqk,bqhd->bkhd", g_raw, q)
        expected[p + "attn.hook_k"] = g_k.reshape(batch, pos, -1, groups, c.d_head).sum(3)
        g_v = torch.einsum("bhqk,bqhd->bkhd", pattern, expected[p + "attn.hook_z"])
        expected[p + "attn.hook_v"] = g_v.reshape(batch, pos, -1, groups, c.d_head).sum(3)
    expected.pop("ln_final.input", None)
    expected["ln_final.hook_scale"] = _scale_grad(
        captured["ln_final.input"].detach(), captured["ln_final.hook_normalized"].detach(),
        expected["ln_final.hook_normalized"], layout.ln_final, plain.get_submodule(layout.ln_final.path),
    )
    return expected


def _scale_grad(x, y, g_y, norm, module):
    """d/d(scale) of y = w * centred(x) / scale + b, holding x fixed: -sum((y - b) * g_y) / scale."""
    x, y = x.reshape(g_y.shape), y.reshape(g_y.shape)  # OPT flattens [batch, pos] before its MLP norm
    centred = x - x.mean(-1, keepdim=True) if norm.kind == "layer" else x
    scale = torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + norm.eps)
    bias = module.bias if isinstance(getattr(module, "bias", None), torch.Tensor) else 0
    return -((y - bias) * g_y).sum(-1, keepdim=True) / scale


def _scaling_and_softcap(attention, d_head):
    scaling = getattr(attention, "scaling", None)
    if type(attention).__name__ == "OPTAttention":
        scaling = 1.0  # OPT scales the query projection and calls attention with scaling=1.0
    if scaling is None:  # GPT-2 divides by sqrt(d_head) itself
        scaling = d_head ** -0.5
    return scaling, getattr(attention, "attn_logit_softcapping", None)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_gradients_at_every_hook_point_equal_autograd_on_the_plain_model(architecture):
    model = _model(architecture)
    hooked = interp.load(copy.deepcopy(model))
    tokens = _tokens(model)
    weights = _metric_weights(hooked.cfg.d_vocab, tokens.shape[1])

    def metric(logits):
        return (logits * weights).sum()

    expected = _reference(model, hooked, tokens, metric)
    got = hooked.gradients(tokens, metric)
    assert set(got) == set(hooked.hook_names())
    # HF's RMSNorm and most eager softmaxes compute in float32 even in a float64 model, so there the two runs
    # (interp's explicit attention for the pattern, HF's eager one) agree to float32 rounding; GPT-2 stays float64.
    float32_inside = architecture != "gpt2"
    for name in hooked.hook_names():
        assert name in expected, name
        scale = float(expected[name].detach().abs().max())
        tolerance = {"atol": 1e-5 * scale, "rtol": 1e-4} if float32_inside else {"atol": 1e-10 * scale, "rtol": 1e-8}
        # (OPT's hook_mlp_out is its fc2 output, flat [batch * pos, d_model], as in interp 0.1)
        torch.testing.assert_close(got[name].reshape(expected[name].shape), expected[name], **tolerance, msg=name)
    assert all(p.grad is None for p in hooked.model.parameters()), "gradients() must not accumulate parameter gradients"


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_bwd_hooks_receive_the_gradient_during_backward_and_can_replace_it(architecture):
    model = _model(architecture)
    hooked = interp.load(copy.deepcopy(model))
    tokens = _tokens(model)
    weights = _metric_weights(hooked.cfg.d_vocab, tokens.shape[1])
    names = ["hook_embed", "blocks.1.hook_resid_mid", "blocks.0.ln1.hook_scale", "blocks.1.attn.hook_q", "blocks.0.mlp.hook_post"]
    received = {}

    def save(grad, hook):
        received[hook.name] = grad.clone()

    with hooked.hooks(bwd_hooks=[(n, save) for n in names]):
        (hooked(tokens) * weights).sum().backward()
    reference = hooked.gradients(tokens, lambda logits: (logits * weights).sum(), names=names)
    for name in names:
        torch.testing.assert_close(received[name], reference[name], atol=1e-10, rtol=1e-8, msg=name)

    # A returned gradient replaces it upstream, as a tensor hook on the plain model does.
    plain = copy.deepcopy(model)
    block1 = plain.get_submodule(hooked.architecture_spec.layers)[1]
    embedded = {}
    handles = [
        block1.register_forward_pre_hook(
            lambda m, args, kwargs: (args[0] if args else kwargs["hidden_states"]).register_hook(lambda g: 3 * g) and None,
            with_kwargs=True,
        ),
        plain.get_input_embeddings().register_forward_hook(lambda m, a, out: embedded.setdefault("x", out)),
    ]
    try:
        value = (plain(input_ids=tokens).logits * weights).sum()
        (expected,) = torch.autograd.grad(value, [embedded["x"]])
    finally:
        for handle in handles:
            handle.remove()
    with hooked.hooks(bwd_hooks=[("blocks.1.hook_resid_pre", lambda g, hook: 3 * g)]):
        got = hooked.gradients(tokens, lambda logits: (logits * weights).sum(), names=["hook_embed"])
    torch.testing.assert_close(got["hook_embed"], expected, atol=1e-10, rtol=1e-8)

    # After the block, backward sees plain gradients again (TransformerLens removes its backward hooks).
    calls = []
    with hooked.hooks(bwd_hooks=[("blocks.0.hook_resid_post", lambda g, hook: calls.append(1))]):
        loss = (hooked(tokens) * weights).sum()
    loss.backward()
    assert calls == []


def test_hooks_keeps_positional_forward_hooks_and_run_with_hooks_takes_bwd_hooks():
    model = _model("llama")
    hooked = interp.load(copy.deepcopy(model))
    tokens = _tokens(model)
    seen = []
    with hooked.hooks([("blocks.0.hook_resid_post", lambda a, h: seen.append(a.shape))]):
        hooked(tokens)
    assert seen == [(2, 7, 32)]
    grads = []
    logits = hooked.run_with_hooks(tokens, bwd_hooks=[("blocks.0.hook_resid_post", lambda g, h: grads.append(g))])
    assert grads == []  # backward ran after the call returned
    with pytest.raises(InterpError, match="scalar"):
        hooked.gradients(tokens, lambda logits: logits[:, -1])
    assert logits.shape[-1] == hooked.cfg.d_vocab


def test_router_gradient_equals_autograd_at_the_routers_logits():
    """MoE experts run grouped matmuls that need float32, so this one is float32."""
    model = generic_tiny_model("mixtral")
    hooked = interp.load(copy.deepcopy(model))
    tokens = _tokens(model)
    weights = _metric_weights(hooked.cfg.d_vocab, tokens.shape[1]).float()
    names = [f"blocks.{layer}.mlp.hook_router" for layer in range(hooked.cfg.n_layers)]
    logits_at = []
    handles = [
        block.get_submodule("mlp.gate").register_forward_hook(lambda m, a, out: logits_at.append(out[0]))
        for block in model.get_submodule("model.layers")
    ]
    try:
        value = (model(input_ids=tokens).logits * weights).sum()
        expected = torch.autograd.grad(value, logits_at)
    finally:
        for handle in handles:
            handle.remove()
    got = hooked.gradients(tokens, lambda logits: (logits * weights).sum(), names=names)
    for name, grad in zip(names, expected):
        assert float(grad.abs().max()) > 0
        torch.testing.assert_close(got[name], grad.reshape(got[name].shape), atol=1e-6, rtol=1e-4, msg=name)
