"""The checks every architecture of the coverage matrix must pass, against references independent of interp.

References: the plain HF model (logits), HF's own eager attention weights (``output_attentions=True``),
statistics computed directly from those weights, and a hand-written hook loop for patching.
"""

from __future__ import annotations

import copy
import warnings

import torch

import interp
from interp.hooks import HookedModel

N_SINK = 2
SEQ = 16


def tokens_for(model: torch.nn.Module, batch: int = 2, pos: int = SEQ, seed: int = 1) -> torch.Tensor:
    vocab = model.get_output_embeddings().weight.shape[0]
    return torch.randint(3, vocab, (batch, pos), generator=torch.Generator().manual_seed(seed))


def eager_copy(model: torch.nn.Module) -> torch.nn.Module:
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    return eager


def eager_patterns(model: torch.nn.Module, tokens: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return [a.float() for a in eager_copy(model)(input_ids=tokens, output_attentions=True).attentions]


def check_load_and_logits(model: torch.nn.Module) -> HookedModel:
    """(a) interp.load on the live model; (b) bit-identical logits with hooks installed and while capturing."""
    tokens = tokens_for(model)
    with torch.no_grad():
        plain = model(input_ids=tokens).logits
    hooked = interp.load(copy.deepcopy(model))
    assert isinstance(hooked, HookedModel)
    with torch.no_grad():
        assert torch.equal(hooked(tokens), plain), "hooked logits differ from the plain model"
        logits, _ = hooked.run_with_cache(tokens, names=lambda n: not n.endswith("hook_pattern"))
    assert torch.equal(logits, plain), "capturing activations changed the logits"
    return hooked


def check_cache_and_pattern(model: torch.nn.Module, hooked: HookedModel) -> None:
    """(c) q/k/v/z/pattern/resid shapes, and the pattern equals HF's eager attention weights."""
    tokens = tokens_for(model)
    batch, pos = tokens.shape
    c = hooked.cfg
    with torch.no_grad():
        _, cache = hooked.run_with_cache(tokens)
    for layer in range(c.n_layers):
        prefix = f"blocks.{layer}."
        assert cache[prefix + "hook_resid_pre"].shape == (batch, pos, c.d_model)
        assert cache[prefix + "attn.hook_q"].shape[:3] == (batch, pos, c.n_heads)
        assert cache[prefix + "attn.hook_k"].shape[:3] == (batch, pos, c.n_kv_heads)
        assert cache[prefix + "attn.hook_v"].shape[:3] == (batch, pos, c.n_kv_heads)
        assert cache[prefix + "attn.hook_z"].shape == (batch, pos, c.n_heads, c.d_head)
        assert cache[prefix + "attn.hook_pattern"].shape == (batch, c.n_heads, pos, pos)
    for layer, expected in enumerate(eager_patterns(model, tokens)):
        got = cache[f"blocks.{layer}.attn.hook_pattern"]
        if has_learned_sinks(model):
            # The sink takes part of each row's mass; GraniteSWA's eager weights leave it out (it rescales the
            # output instead), so compare the distributions over keys, and check the mass through the logits below.
            got, expected = got / got.sum(-1, keepdim=True), expected / expected.sum(-1, keepdim=True)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4, msg=f"pattern of layer {layer}")
    with torch.no_grad():
        plain = model(input_ids=tokens).logits
        with_pattern, _ = hooked.run_with_cache(tokens, names=lambda n: n.endswith("hook_pattern"))
    torch.testing.assert_close(with_pattern, plain, atol=1e-4, rtol=1e-4, msg="logits through the explicit pattern")


def has_learned_sinks(model: torch.nn.Module) -> bool:
    return any(name.endswith(".sinks") for name, _ in model.named_parameters())


def check_statistics(model: torch.nn.Module, hooked: HookedModel) -> None:
    """(d) statistics within 1e-4 of those computed from the eager pattern; logits unchanged while collecting."""
    tokens = tokens_for(model)
    with torch.no_grad():
        plain = model(input_ids=tokens).logits
        with hooked.collect_attention_stats(interp.StatsConfig(n_sink=N_SINK)) as stats:
            logits = hooked(tokens)
    torch.testing.assert_close(logits, plain, atol=1e-4, rtol=1e-4, msg="logits changed while collecting statistics")
    if has_learned_sinks(model):  # the explicit pattern (checked against eager in check_cache_and_pattern) carries the sink
        with torch.no_grad():
            _, cache = hooked.run_with_cache(tokens, names=lambda n: n.endswith("hook_pattern"))
        patterns = [cache[f"blocks.{layer}.attn.hook_pattern"] for layer in range(hooked.cfg.n_layers)]
    else:
        patterns = eager_patterns(model, tokens)
    for layer, pattern in enumerate(patterns):
        got = stats[layer]
        learned_sink = (1 - pattern.sum(-1)).clamp_min(0)
        expected = {
            "max_prob": pattern.amax(-1),
            "sink_mass": pattern[..., :N_SINK].sum(-1),
            "entropy": -torch.special.xlogy(pattern, pattern).sum(-1) - torch.special.xlogy(learned_sink, learned_sink),
        }
        if has_learned_sinks(model):
            expected["learned_sink_mass"] = learned_sink
        for name, value in expected.items():
            torch.testing.assert_close(getattr(got, name), value, atol=1e-4, rtol=1e-4, msg=f"{name} of layer {layer}")


def check_scan(hooked: HookedModel) -> None:
    """(e) a scan of sink, entropy and induction at 64 tokens, tokenizer or not."""
    settings = interp.ScanSettings(context_length=64, batch=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = interp.scan(hooked, analyses="sink,entropy,induction", settings=settings)
    heads = result.heads
    assert len(heads) == hooked.cfg.n_layers * hooked.cfg.n_heads
    for column in ("sink_mass", "entropy_mean", "induction_score"):
        values = heads[column].to_numpy(dtype=float)
        assert ((values >= -1e-6) & (values <= max(1.0, float(torch.log(torch.tensor(64.0)))) + 1e-6)).all(), column


def check_patching(model: torch.nn.Module, hooked: HookedModel) -> None:
    """(f) resid_pre and head_out patching equal a hand-written one-forward-per-cell hook loop."""
    from interp.analyses import activation_patching

    clean, corrupted = tokens_for(model, batch=1, pos=6, seed=3), tokens_for(model, batch=1, pos=6, seed=4)
    answers = (5, 7)

    def metric(logits):
        return logits[:, -1, answers[0]] - logits[:, -1, answers[1]]

    frame = activation_patching(
        hooked, clean, corrupted, answers=answers, metric=metric, sites=("resid_pre", "head_out"), layers=[1]
    )
    with torch.no_grad():
        _, cache = hooked.run_with_cache(clean)
    for row in frame.itertuples():
        if row.site == "resid_pre":
            name, position = f"blocks.{row.layer}.hook_resid_pre", int(row.position)

            def patch(act, hook, name=name, position=position):
                act = act.clone()
                act[:, position] = cache[name][:, position]
                return act
        else:
            name, head = f"blocks.{row.layer}.attn.hook_z", int(row.head)

            def patch(act, hook, name=name, head=head):
                act = act.clone()
                act[:, :, head] = cache[name][:, :, head]
                return act

        with torch.no_grad():
            expected = float(metric(hooked.run_with_hooks(corrupted, fwd_hooks=[(name, patch)])).mean())
        assert abs(row.metric - expected) <= 1e-4 * max(1.0, abs(expected)), (row.site, row.layer, row.metric, expected)


def check_all(model: torch.nn.Module) -> None:
    hooked = check_load_and_logits(model)
    check_cache_and_pattern(model, hooked)
    check_statistics(model, hooked)
    check_scan(hooked)
    check_patching(model, hooked)
