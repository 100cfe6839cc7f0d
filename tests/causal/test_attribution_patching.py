"""Attribution patching: equals an independently computed gradient product; ranks like exact patching."""

import pytest
import torch
from causal_helpers import ioi_inputs, logit_diff, random_pair, tiny_model

from interp.causal.patching import activation_patching
from interp.causal.attribution import attribution_patching
from interp.hooks import HookedModel

ANSWERS = torch.tensor([[3, 5], [7, 9]])


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_equals_gradient_times_difference_computed_by_hand(architecture):
    model = HookedModel(tiny_model(architecture))
    clean, corrupted = random_pair(pos=5)
    frame = attribution_patching(model, clean, corrupted, answers=ANSWERS, sites=["resid_pre", "head_out", "head_out_pos"])
    for layer in range(2):
        resid, z = f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.attn.hook_z"
        with torch.no_grad():
            _, clean_cache = model.run_with_cache(clean, names=[resid, z])
            _, corrupt_cache = model.run_with_cache(corrupted, names=[resid, z])
        # Gradient through an added zero perturbation, a different route from capturing activations.
        bumps = {name: torch.zeros_like(corrupt_cache[name], requires_grad=True) for name in (resid, z)}
        logits = model.run_with_hooks(corrupted, fwd_hooks=[(n, lambda act, hook: act + bumps[hook.name]) for n in bumps])
        grads = dict(zip(bumps, torch.autograd.grad(logit_diff(logits, ANSWERS), list(bumps.values()))))
        per_pos = ((clean_cache[resid] - corrupt_cache[resid]) * grads[resid]).sum(dim=(0, 2))
        per_head_pos = ((clean_cache[z] - corrupt_cache[z]) * grads[z]).sum(dim=(0, 3))
        got = frame[(frame["site"] == "resid_pre") & (frame["layer"] == layer)]["delta"].to_numpy()
        assert torch.allclose(torch.tensor(got), per_pos.double(), atol=1e-5)
        got = frame[(frame["site"] == "head_out") & (frame["layer"] == layer)]["delta"].to_numpy()
        assert torch.allclose(torch.tensor(got), per_head_pos.sum(0).double(), atol=1e-5)
        got = frame[(frame["site"] == "head_out_pos") & (frame["layer"] == layer)]["delta"].to_numpy()
        assert torch.allclose(torch.tensor(got), per_head_pos.reshape(-1).double(), atol=1e-5)
    assert frame.attrs["corrupted_metric"] == pytest.approx(float(logit_diff(model(corrupted).detach(), ANSWERS)), abs=1e-5)


def test_real_model_ioi_ranks_like_exact_patching(smollm):
    """Attention and MLP outputs at the last position on IOI (names swapped in the corrupted prompt)."""
    clean, corrupted, answers = ioi_inputs()
    kwargs = dict(answers=answers, sites=["attn_out", "mlp_out"], positions=[-1])
    exact = activation_patching(smollm, clean, corrupted, batch_size=128, **kwargs)
    approx = attribution_patching(smollm, clean, corrupted, **kwargs)
    assert exact.attrs["clean_metric"] > 2 and exact.attrs["corrupted_metric"] < -2  # the model does IOI
    top = exact["delta"].abs().sort_values(ascending=False).index[:20]
    spearman = exact.loc[top, "delta"].rank().corr(approx.loc[top, "delta"].rank())
    signs = ((exact.loc[top, "delta"] > 0) == (approx.loc[top, "delta"] > 0)).mean()
    print(f"IOI attribution vs exact, top-20 attn/mlp outputs: Spearman {spearman:.3f}, sign agreement {signs:.2f}")
    assert spearman > 0.8
    assert signs >= 0.9
