"""Feature attribution: activation x gradient per (feature, position), as in sparse feature circuits.

Marks et al. 2024 ("Sparse Feature Circuits") estimate the effect of moving one SAE feature from its
value ``a`` to a baseline ``a'`` by the first-order term ``(a - a') * d metric / d a``. Here the SAE is
attached with its error term, so the forward pass is the model's own; one forward and one backward give
every feature's gradient at once.

- prompts: the baseline is 0 (zero-ablation): ``attribution = activation * gradient``, so zero-ablating
  the feature at that position changes the metric by about ``-attribution``.
- ``(clean, corrupted)`` pairs: the baseline is the feature's value on the corrupted prompt:
  ``attribution = (activation - baseline) * gradient``, about ``metric(clean) - metric(clean with the
  feature patched to its corrupted value)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import torch

from interp.causal.common import Prompts, paired_tokens, prompt_tokens
from interp.errors import InterpError
from interp.hooks import HookedModel
from interp.hooks.attachments import features_name, transcoder_layer
from interp.hooks.points import HookPoint, hook_name
from interp.saes.load import load_sae

COLUMNS = ["row", "position", "feature", "activation", "baseline", "gradient", "attribution"]


def feature_attribution(
    model: HookedModel,
    sae: Any,
    prompts_or_pairs: Prompts | tuple[Prompts, Prompts],
    metric: Callable[[torch.Tensor], torch.Tensor],
    *,
    min_abs: float = 0.0,
) -> pd.DataFrame:
    """Activation x gradient of every active SAE (or transcoder) feature at every position.

    Args:
        sae: an SAE or transcoder (interp's, a SAELens folder, or a live ``sae_lens`` object).
        prompts_or_pairs: prompts (text, a list of texts of equal token length, or ids ``[batch, pos]``),
            or a ``(clean, corrupted)`` tuple of such, for a corrupted baseline.
        metric: ``metric(logits) -> scalar`` tensor, e.g. a logit difference.
        min_abs: keep rows with ``|attribution| > min_abs`` only (0 keeps every active feature).

    Returns:
        DataFrame ``row, position, feature, activation, baseline, gradient, attribution``, one row per
        batch row, position and feature active (or with a nonzero baseline), sorted by ``|attribution|``.
        ``attrs["metric"]`` is the metric of the (clean) run.
    """
    sae = load_sae(sae)
    if isinstance(prompts_or_pairs, tuple) and len(prompts_or_pairs) == 2:
        tokens, corrupted = paired_tokens(model, *prompts_or_pairs)
    else:
        tokens, corrupted = prompt_tokens(model, prompts_or_pairs), None
    attach = model.attach_transcoder if getattr(sae, "transcoder", False) else model.attach_sae
    point = hook_name(transcoder_layer(sae), "hook_mlp_out") if getattr(sae, "transcoder", False) else sae.hook_name
    name = features_name(point)
    seen: dict[str, torch.Tensor] = {}

    def leaf(acts: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        seen["acts"] = acts.detach().requires_grad_(True)
        return seen["acts"]

    with attach(sae, use_error_term=True):
        baseline = None
        if corrupted is not None:
            with torch.no_grad():
                _, cache = model.run_with_cache(corrupted, names=[name])
            baseline = cache[name]
        with torch.enable_grad(), model.hooks([(name, leaf)]):
            value = metric(model(tokens))
            if value.numel() != 1:
                raise InterpError(f"the metric must return one number, got shape {tuple(value.shape)}; average it over rows")
            (gradient,) = torch.autograd.grad(value, seen["acts"])
    acts = seen["acts"].detach()
    baseline = torch.zeros_like(acts) if baseline is None else baseline.to(acts.dtype)
    attribution = (acts - baseline) * gradient
    keep = (acts != 0) | (baseline != 0)
    if min_abs > 0:
        keep &= attribution.abs() > min_abs
    row, position, feature = keep.nonzero(as_tuple=True)
    frame = pd.DataFrame({
        "row": row.cpu().numpy(),
        "position": position.cpu().numpy(),
        "feature": feature.cpu().numpy(),
        "activation": acts[keep].double().cpu().numpy(),
        "baseline": baseline[keep].double().cpu().numpy(),
        "gradient": gradient[keep].double().cpu().numpy(),
        "attribution": attribution[keep].double().cpu().numpy(),
    }, columns=COLUMNS)
    frame = frame.reindex(frame["attribution"].abs().sort_values(ascending=False, kind="stable").index).reset_index(drop=True)
    frame.attrs["metric"] = float(value.detach())
    frame.attrs["hook_name"] = name
    return frame
