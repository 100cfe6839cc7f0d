"""The hook points beyond interp 0.1's (norms, resid_mid, attention scores, MLP neurons, router): refusals,
the traced block layout, and tracing that leaves the user's active hooks alone. Their values and replacements
are checked on every tested model type by matrix check (g) in ``architecture_checks``."""

import pytest
import torch
from tiny_models import generic_tiny_model, tiny_model

import interp
from interp.errors import InterpError


def test_parallel_blocks_refuse_resid_mid_and_moe_blocks_refuse_neurons_with_one_line():
    for architecture, name in (("gptj", "blocks.0.hook_resid_mid"), ("mixtral", "blocks.0.mlp.hook_pre"),
                               ("olmo2", "blocks.0.ln1.hook_normalized"), ("llama", "blocks.0.mlp.hook_router")):
        hooked = interp.load(generic_tiny_model(architecture))
        with pytest.raises(InterpError) as error, hooked.hooks([(name, lambda a, h: None)]):
            pass
        assert "\n" not in str(error.value) and name in str(error.value)
        assert name not in hooked.hook_names()


# Sequential pre-norm blocks as their modeling code names the norms (an independent reference for the trace).
KNOWN_BLOCK_NORMS = {architecture: ("input_layernorm", "post_attention_layernorm")
                     for architecture in ("llama", "mistral", "qwen2", "qwen3")}


def test_traced_block_norms_agree_with_the_modeling_code():
    for architecture, (attn_norm, mlp_norm) in KNOWN_BLOCK_NORMS.items():
        layout = interp.load(tiny_model(architecture)).layout
        assert all(lay.ln1.path == attn_norm and lay.ln2.path == mlp_norm and not lay.parallel for lay in layout.layers)


def test_tracing_the_layout_inside_active_hooks_and_knockouts_leaves_them_alone():
    hooked = interp.load(tiny_model("llama"))
    tokens = torch.randint(3, 90, (1, 9))
    seen = []
    with (
        hooked.hooks([("blocks.0.hook_resid_post", lambda a, h: seen.append(a.shape[1]))]),
        hooked.knockout(torch.eye(9, dtype=torch.bool), layers=[1]),
        torch.no_grad(),
        hooked.hooks([("blocks.1.hook_resid_mid", lambda a, h: None)]),  # the layout is traced here
    ):
        hooked(tokens)
    assert seen == [9]


def test_every_new_point_is_listed_in_the_docs_and_the_points_docstring():
    from pathlib import Path

    from interp.hooks import points

    docs = (Path(__file__).parent.parent / "docs" / "hooks.md").read_text()
    for site in points.LAYER_SITES + points.GLOBAL_SITES:
        assert f"``{site}``" in points.__doc__ or f"``blocks.{{l}}.{site}``" in points.__doc__, site
        assert site.split(".")[-1] in docs, site


@torch.no_grad()
def test_real_model_new_points_leave_logits_bit_identical_and_the_final_norm_feeds_the_unembedding(smollm):
    tokens = smollm.to_tokens("The capital of Germany is Berlin, and the capital of France is")
    plain = smollm(tokens)
    lay = smollm.layout.layers[0]
    assert (lay.ln1.path, lay.ln1.kind, lay.ln2.path, lay.mlp.kind) == ("input_layernorm", "rms", "post_attention_layernorm", "gated")
    new = lambda n: any(s in n for s in ("ln1.", "ln2.", "ln_final.", "hook_resid_mid", "mlp.hook_"))
    logits, cache = smollm.run_with_cache(tokens, names=new)
    assert torch.equal(logits, plain)
    assert len(cache) == 30 * 8 + 2
    unembed = smollm.model.get_output_embeddings().weight
    torch.testing.assert_close(cache["ln_final.hook_normalized"] @ unembed.T, plain, atol=1e-4, rtol=1e-4)
    x = cache["blocks.29.hook_resid_mid"]
    torch.testing.assert_close(cache["blocks.29.ln2.hook_scale"], torch.sqrt(x.pow(2).mean(-1, keepdim=True) + lay.ln2.eps))
