"""Batched activation patching equals a one-forward-per-cell loop and TransformerLens' patching."""

import copy

import pytest
import torch
from causal_helpers import bridge_for, ioi_inputs, logit_diff, naive_patch, random_pair, tiny_model
from transformer_lens import patching as tl_patching

from interp.causal.patching import SITES, activation_patching, plot_patching
from interp.errors import InterpError
from interp.hooks import HookedModel, hook_name

ANSWERS = torch.tensor([[3, 5], [7, 9]])


def _check_against_naive(model, clean, corrupted, ids, frame, direction):
    base, source = (corrupted, clean) if direction == "denoise" else (clean, corrupted)
    with torch.no_grad():
        clean_value = float(logit_diff(model(clean), ids))
        corrupted_value = float(logit_diff(model(corrupted), ids))
    assert frame.attrs["clean_metric"] == pytest.approx(clean_value, abs=1e-5)
    assert frame.attrs["corrupted_metric"] == pytest.approx(corrupted_value, abs=1e-5)
    hooks = sorted({hook_name(layer, SITES[site].hook) for site, layer in zip(frame["site"], frame["layer"])})
    with torch.no_grad():
        _, cache = model.run_with_cache(source, names=hooks)
    worst = 0.0
    for row in frame.itertuples():
        hook = hook_name(row.layer, SITES[row.site].hook)
        position = None if str(row.position) == "<NA>" else int(row.position)
        head = None if str(row.head) == "<NA>" else int(row.head)
        expected = naive_patch(model, base, source, ids, hook, position, head, cache=cache)
        worst = max(worst, abs(row.metric - expected))
        normalized = (expected - corrupted_value) / (clean_value - corrupted_value)
        assert row.normalized == pytest.approx(normalized, abs=1e-3)
    assert worst < 1e-4, worst


@pytest.mark.parametrize(("architecture", "direction"), [("gpt2", "denoise"), ("llama", "denoise"), ("llama", "noise")])
def test_batched_sweep_equals_naive_loop_on_tiny_models(architecture, direction):
    model = HookedModel(tiny_model(architecture))
    clean, corrupted = random_pair(pos=5)
    frame = activation_patching(model, clean, corrupted, answers=ANSWERS, sites=list(SITES), direction=direction, batch_size=24)
    n_layers, n_heads, n_kv, n_pos = 2, 4, model.cfg.n_kv_heads, 5
    expected_rows = {
        "resid_pre": n_layers * n_pos, "attn_out": n_layers * n_pos, "mlp_out": n_layers * n_pos,
        "head_out": n_layers * n_heads, "head_out_pos": n_layers * n_heads * n_pos, "head_q": n_layers * n_heads,
        "head_k": n_layers * n_kv, "head_v": n_layers * n_kv,
    }
    assert frame.groupby("site").size().to_dict() == expected_rows
    _check_against_naive(model, clean, corrupted, ANSWERS, frame, direction)
    for site in SITES:
        assert plot_patching(frame, site=site).data


def test_patching_every_position_of_the_residual_stream_gives_the_clean_run():
    """Independent of the per-cell code: one patch covering all positions at layer 0 is the source run."""
    model = HookedModel(tiny_model("llama"))
    clean, corrupted = random_pair(pos=4)
    frame = activation_patching(model, clean, corrupted, answers=ANSWERS, sites="resid_pre", layers=[0], positions=[0])
    with torch.no_grad():
        _, cache = model.run_with_cache(clean, names=["blocks.0.hook_resid_pre"])
        whole = model.run_with_hooks(corrupted, fwd_hooks=[("blocks.0.hook_resid_pre", lambda act, hook: cache[hook.name])])
    assert float(logit_diff(whole, ANSWERS)) == pytest.approx(frame.attrs["clean_metric"], abs=1e-5)
    # Position 0 of a causal model differs only in its own token: a finite, partial recovery.
    assert frame["normalized"].notna().all()


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_matches_transformer_lens_patching_on_tiny_models(architecture, smollm):
    hf = tiny_model(architecture)
    model = HookedModel(copy.deepcopy(hf))
    bridge = bridge_for(hf, tokenizer=smollm.tokenizer)
    clean, corrupted = random_pair(batch=1, pos=5)
    ids = ANSWERS[:1]

    def metric(logits):
        return logit_diff(logits, ids)

    with torch.no_grad():
        _, tl_cache = bridge.run_with_cache(clean)
        ours = activation_patching(model, clean, corrupted, answers=ids, sites=["resid_pre", "attn_out", "mlp_out", "head_out", "head_v"])
    tl = {
        "resid_pre": tl_patching.get_act_patch_resid_pre(bridge, corrupted, tl_cache, metric),
        "attn_out": tl_patching.get_act_patch_attn_out(bridge, corrupted, tl_cache, metric),
        "mlp_out": tl_patching.get_act_patch_mlp_out(bridge, corrupted, tl_cache, metric),
        "head_out": tl_patching.get_act_patch_attn_head_out_all_pos(bridge, corrupted, tl_cache, metric),
        "head_v": tl_patching.get_act_patch_attn_head_v_all_pos(bridge, corrupted, tl_cache, metric),
    }
    for site, expected in tl.items():
        part = ours[ours["site"] == site]
        column = "position" if SITES[site].axes == ("pos",) else "head"
        got = torch.tensor(part.pivot(index="layer", columns=column, values="metric").to_numpy())
        assert got.shape == expected.shape, site
        assert (got - expected.double()).abs().max() < 1e-4, site


def test_real_model_batched_equals_naive_loop(smollm):
    clean, corrupted, answers = ioi_inputs()
    ids = torch.tensor([[smollm.tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in pair] for pair in answers])
    frame = activation_patching(
        smollm, clean, corrupted, answers=answers, sites=["resid_pre", "attn_out", "mlp_out", "head_out", "head_v", "head_out_pos"],
        layers=[3], positions=[3], heads=[1], batch_size=64,
    )
    assert len(frame) == 6
    _check_against_naive(smollm, smollm.to_tokens(clean), smollm.to_tokens(corrupted), ids, frame, "denoise")


def test_real_model_matches_transformer_lens(smollm, smollm_folder):
    """TL's generic_activation_patch on a bridge over the same weights (eager attention on both sides)."""
    import pandas as pd
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(smollm_folder, attn_implementation="eager").eval()
    ours_model = HookedModel(copy.deepcopy(hf), smollm.tokenizer)
    bridge = bridge_for(hf, tokenizer=smollm.tokenizer)
    clean, corrupted, answers = ioi_inputs()
    clean, corrupted = smollm.to_tokens(clean[:1]), smollm.to_tokens(corrupted[:1])
    ids = torch.tensor([[smollm.tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in answers[0]]])
    cells = pd.DataFrame({"layer": [0], "pos": [3]})
    heads = pd.DataFrame({"layer": [29], "head": [8]})
    with torch.no_grad():
        _, tl_cache = bridge.run_with_cache(clean)
        tl_resid = tl_patching.generic_activation_patch(
            bridge, corrupted, tl_cache, lambda logits: logit_diff(logits, ids), tl_patching.layer_pos_patch_setter,
            "resid_pre", index_df=cells,
        )
        tl_heads = tl_patching.generic_activation_patch(
            bridge, corrupted, tl_cache, lambda logits: logit_diff(logits, ids), tl_patching.layer_head_vector_patch_setter,
            "z", index_df=heads,
        )
    resid = activation_patching(ours_model, clean, corrupted, answers=ids, sites="resid_pre", layers=[0], positions=[3])
    head = activation_patching(ours_model, clean, corrupted, answers=ids, sites="head_out", layers=[29], heads=[8])
    for (layer, pos), expected in zip(cells.itertuples(index=False), tl_resid):
        got = resid[(resid["layer"] == layer) & (resid["position"] == pos)]["metric"].item()
        assert abs(got - float(expected)) < 1e-4
    for (layer, h), expected in zip(heads.itertuples(index=False), tl_heads):
        got = head[(head["layer"] == layer) & (head["head"] == h)]["metric"].item()
        assert abs(got - float(expected)) < 1e-4


def test_input_errors_are_one_line(smollm):
    with pytest.raises(InterpError, match="same length|same number of tokens|tokens but corrupted"):
        activation_patching(smollm, "The cat sat", "The big cat sat on", answers=(" on", " in"))
    with pytest.raises(InterpError, match="single token"):
        activation_patching(smollm, "The cat sat", "The dog sat", answers=(" xqzjv", " in"))
    with pytest.raises(InterpError, match="empty"):
        activation_patching(smollm, "", "The dog sat", answers=(" on", " in"))
    with pytest.raises(InterpError, match="unknown patching site"):
        activation_patching(smollm, "The cat sat", "The dog sat", answers=(" on", " in"), sites="resid_mid")
