"""Hook functions that change activations: zero, replace, scale, at chosen heads and positions.

Each builder returns a :data:`~interp.hooks.points.HookFn` for ``HookedModel.hooks``; the model's
``intervene`` and ``ablate_heads`` context managers wrap the common cases. Positions index the
``pos`` axis (query axis for ``hook_pattern``); heads index the head axis of per-head sites.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import torch

from interp.errors import InterpError
from interp.hooks.points import HookFn, HookPoint, hook_name

if TYPE_CHECKING:
    from interp.hooks.model import HookedModel

PER_HEAD_SITES = ("attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z", "attn.hook_result")

Index = int | Sequence[int] | slice | None


def _as_index(index: Index) -> slice | list[int]:
    if index is None:
        return slice(None)
    if isinstance(index, slice):
        return index
    return [index] if isinstance(index, int) else list(index)


def selection(hook: HookPoint, heads: Index, positions: Index) -> tuple:
    """The indexing tuple that selects ``heads`` x ``positions`` of the activation at ``hook``."""
    pos, head = _as_index(positions), _as_index(heads)
    if hook.site == "attn.hook_pattern":  # [batch, head, query, key]
        if isinstance(pos, list) and isinstance(head, list):
            return (slice(None), torch.tensor(head)[:, None], torch.tensor(pos)[None, :])
        return (slice(None), head, pos)
    if hook.site in PER_HEAD_SITES:  # [batch, pos, head, d]
        if isinstance(pos, list) and isinstance(head, list):
            return (slice(None), torch.tensor(pos)[:, None], torch.tensor(head)[None, :])
        return (slice(None), pos, head)
    if heads is not None:
        raise ValueError(f"{hook.name} has no head axis; drop heads= or use a per-head site ({', '.join(PER_HEAD_SITES)})")
    return (slice(None), pos)


def replace_fn(value: torch.Tensor, *, heads: Index = None, positions: Index = None) -> HookFn:
    """Write ``value`` (broadcast to the selected slice) into the activation."""

    def fn(activation: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        out = activation.clone()
        out[selection(hook, heads, positions)] = value.to(device=out.device, dtype=out.dtype)
        return out

    return fn


def scale_fn(factor: float, *, heads: Index = None, positions: Index = None) -> HookFn:
    """Multiply the selected slice by ``factor`` (``0.0`` is zero-ablation)."""

    def fn(activation: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        out = activation.clone()
        index = selection(hook, heads, positions)
        out[index] = out[index] * factor
        return out

    return fn


def head_ablation_hooks(
    model: HookedModel,
    heads: Iterable[tuple[int, int]],
    *,
    method: str = "zero",
    reference: torch.Tensor | None = None,
    positions: Index = None,
) -> list[tuple[str, HookFn]]:
    """``(hook_z name, fn)`` pairs ablating ``(layer, head)`` pairs (see ``HookedModel.ablate_heads``)."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        if not (0 <= layer < model.cfg.n_layers and 0 <= head < model.cfg.n_heads):
            raise InterpError(
                f"head ({layer}, {head}) does not exist: layers 0..{model.cfg.n_layers - 1}, heads 0..{model.cfg.n_heads - 1}"
            )
        by_layer.setdefault(layer, []).append(head)
    names = {layer: hook_name(layer, "attn.hook_z") for layer in by_layer}
    if method == "zero":
        fns = [(names[layer], scale_fn(0.0, heads=hs, positions=positions)) for layer, hs in by_layer.items()]
    elif method == "mean":
        if reference is None:
            raise InterpError("mean ablation needs reference= tokens [batch, pos] to average each head over")
        _, cache = model.run_with_cache(reference, names=list(names.values()))
        fns = [
            (names[layer], replace_fn(cache[names[layer]][:, :, hs].mean(dim=(0, 1)), heads=hs, positions=positions))
            for layer, hs in by_layer.items()
        ]
    else:
        raise InterpError(f"unknown ablation method {method!r}; use 'zero' or 'mean'")
    return fns
