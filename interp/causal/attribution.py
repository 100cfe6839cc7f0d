"""Attribution patching: a first-order estimate of every activation-patching cell from one backward pass.

For a base run (the corrupted prompt when denoising) and a source run (the clean prompt),

    effect(cell) ~= sum over the cell's slice of (source_act - base_act) * d metric / d base_act

(Nanda 2023, "Attribution Patching"; Syed et al. 2023). Cost: one forward on the source prompt, one
forward plus one backward on the base prompt, whatever the number of cells. Same sites, columns and
normalization as :func:`~interp.causal.patching.activation_patching`, with ``metric``
the estimated patched metric (base + effect). The estimate is linear: it is good for small,
spread-out changes and can be poor where the model saturates (e.g. the residual stream at the
positions that differ, or attention that flips between tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from interp.causal.patching import SITES, cells_frame, finish_patching_frame, patching_sweep
from interp.causal.common import Prompts
from interp.causal.metrics import Metric
from interp.hooks import HookedModel
from interp.causal.checks import check_patching
from interp.hooks.points import HookPoint


def attribution_patching(
    model: HookedModel,
    clean: Prompts,
    corrupted: Prompts,
    *,
    answers: Any = None,
    metric: Metric | None = None,
    sites: str | Sequence[str] = ("resid_pre",),
    direction: str = "denoise",
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Linear estimate of activation patching for every cell; arguments and columns as in ``activation_patching``.

    Returns:
        DataFrame ``site, layer, position, head, token, metric, delta, normalized``: ``delta`` is the
        estimated effect and ``metric`` the base metric plus it. ``attrs`` as in activation patching.
    """
    check_patching(model, clean, corrupted, answers, metric)  # interp.causal.checks
    sweep = patching_sweep(
        model, clean, corrupted, answers=answers, metric=metric, sites=sites, direction=direction,
        layers=layers, positions=positions, heads=heads,
    )
    clean_tokens, corrupted_tokens, metric, cells, names = (
        sweep.clean_tokens, sweep.corrupted_tokens, sweep.metric, sweep.cells, sweep.names
    )
    base_tokens, source_tokens = (
        (corrupted_tokens, clean_tokens) if direction == "denoise" else (clean_tokens, corrupted_tokens)
    )
    with torch.no_grad():
        source_logits, source_cache = model.run_with_cache(source_tokens, names=names)
        source_value = float(metric(source_logits).float().mean())

    captured: dict[str, torch.Tensor] = {}

    def capture(activation: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        # With frozen weights nothing upstream needs grad: make the activation itself a leaf that does.
        if not activation.requires_grad:
            activation = activation.detach().requires_grad_(True)
        captured[hook.name] = activation
        return activation

    with torch.enable_grad():
        logits = model.run_with_hooks(base_tokens, fwd_hooks=[(name, capture) for name in names])
        value = metric(logits).float().mean()
        grads = torch.autograd.grad(value, [captured[n] for n in names], allow_unused=True)
    base_value = float(value.detach())

    effects: dict[str, torch.Tensor] = {}
    for name, grad in zip(names, grads):
        activation = captured[name].detach()
        grad = torch.zeros_like(activation) if grad is None else grad
        # [batch, pos, d] or [batch, pos, head, d] -> per (pos[, head]), summed over prompts and d.
        effects[name] = ((source_cache[name] - activation) * grad).sum(dim=-1).sum(dim=0).double().cpu()
    estimate = []
    for cell in cells:
        per_cell = effects[cell.hook]
        axes = SITES[cell.site].axes
        if axes == ("pos",):
            estimate.append(per_cell[cell.position])
        elif len(axes) == 1:
            estimate.append(per_cell[:, cell.head].sum())
        else:
            estimate.append(per_cell[cell.position, cell.head])
    clean_value, corrupted_value = (
        (source_value, base_value) if direction == "denoise" else (base_value, source_value)
    )
    frame = cells_frame(model, cells, clean_tokens[0])
    frame["delta"] = torch.stack(estimate).numpy() if estimate else []
    frame["metric"] = base_value + frame["delta"]
    frame = frame[["site", "layer", "position", "head", "token", "metric", "delta"]].copy()
    return finish_patching_frame(
        frame, model, sweep, clean_value=clean_value, corrupted_value=corrupted_value, direction=direction
    )
