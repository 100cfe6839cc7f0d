"""Numerical health: find where non-finite activations first appear.

Statistics are always accumulated in float32 (see :mod:`interp.kernels`), so bf16/fp16 models give
scores close to fp32 ones (tested tolerances: docs/numerics.md). When a model itself overflows
(fp16 is the usual suspect), a score comes out NaN; the scan then names the first hook point whose
activation is not finite instead of writing a table of NaNs.
"""

from __future__ import annotations

import torch

from interp.errors import InterpError
from interp.hooks import HookedModel, hook_name


@torch.no_grad()
def first_nonfinite(model: HookedModel, tokens: torch.Tensor) -> str | None:
    """Name of the first hook point (execution order) with a NaN or inf activation on ``tokens``, or None."""
    found: list[str] = []

    def check(activation: torch.Tensor, hook) -> None:
        if not found and not torch.isfinite(activation).all():
            found.append(hook.name)

    order = ["hook_embed"] + [
        hook_name(layer, site)
        for layer in range(model.cfg.n_layers)
        for site in ("hook_resid_pre", "attn.hook_z", "hook_attn_out", "hook_mlp_out", "hook_resid_post")
    ]
    with model.hooks([(name, check) for name in order]):
        model(tokens, logits_to_keep=1)  # activations are checked, not the [batch, pos, vocab] logits
    return found[0] if found else None


def raise_if_nonfinite(model: HookedModel, tokens: torch.Tensor, what: str) -> None:
    """Raise a one-line :class:`InterpError` naming where activations stop being finite, if they do."""
    where = first_nonfinite(model, tokens)
    if where is not None:
        dtype = next(model.model.parameters()).dtype
        raise InterpError(
            f"{what}: activations become NaN/inf at {where} with dtype {str(dtype).removeprefix('torch.')}; "
            f"rerun with --dtype float32 (or bfloat16, whose range is wider than float16's)"
        )
