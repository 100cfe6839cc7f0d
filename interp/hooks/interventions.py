"""Hook functions that change activations: zero, replace, scale, at chosen heads and positions.

Each builder returns a :data:`~interp.hooks.points.HookFn` for ``HookedModel.hooks``; the model's
``intervene`` and ``ablate_heads`` context managers wrap the common cases. Positions index the
``pos`` axis (query axis for ``hook_pattern``); heads index the head axis of per-head sites.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from interp.hooks.points import HookFn, HookPoint

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
