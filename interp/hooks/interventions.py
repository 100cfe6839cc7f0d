"""Hook functions that change activations: zero, replace, scale, at chosen heads and positions.

Each builder returns a :data:`~interp.hooks.points.HookFn` for ``HookedModel.hooks``; the model's
``intervene``, ``ablate_heads`` and ``steer`` context managers wrap the common cases. Positions index the
``pos`` axis (query axis for ``hook_pattern``); heads index the head axis of per-head sites.

During generation (``hook.positions`` set) positions are absolute: columns of the whole generated
sequence. Each step selects those of its rows whose position is wanted; a negative position counts
from the end of the sequence so far (``-1`` is each step's newest token), a slice spans the sequence so far.
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


def _local_rows(absolute: torch.Tensor, positions: Index) -> slice | list[int]:
    """Rows of a step whose absolute position (``absolute[i]``) is among ``positions``."""
    if positions is None:
        return slice(None)
    held = absolute.tolist()
    length = held[-1] + 1  # the sequence so far ends at this step's last row
    if isinstance(positions, slice):
        wanted = set(range(length)[positions])
    else:
        wanted = {p + length if p < 0 else p for p in ([positions] if isinstance(positions, int) else positions)}
    return [i for i, p in enumerate(held) if p in wanted]


def selection(hook: HookPoint, heads: Index, positions: Index) -> tuple:
    """The indexing tuple that selects ``heads`` x ``positions`` of the activation at ``hook``.

    With ``hook.positions`` set (generation), ``positions`` are absolute positions (see the module doc).
    """
    pos = _as_index(positions) if hook.positions is None else _local_rows(hook.positions, positions)
    head = _as_index(heads)
    if hook.site == "attn.hook_pattern":  # [batch, head, query, key]
        if isinstance(pos, list) and isinstance(head, list):
            return (slice(None), torch.tensor(head, dtype=torch.long)[:, None], torch.tensor(pos, dtype=torch.long)[None, :])
        return (slice(None), head, pos)
    if hook.site in PER_HEAD_SITES:  # [batch, pos, head, d]
        if isinstance(pos, list) and isinstance(head, list):
            return (slice(None), torch.tensor(pos, dtype=torch.long)[:, None], torch.tensor(head, dtype=torch.long)[None, :])
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


def steer_fn(vector: torch.Tensor, coeff: float = 1.0, *, positions: Index = None) -> HookFn:
    """Add ``coeff * vector`` (broadcast over batch and the selected positions) to the activation."""
    delta = coeff * vector
    cast: dict[tuple, torch.Tensor] = {}  # the delta per (dtype, device), converted once

    def fn(activation: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        key = (activation.dtype, activation.device)
        added = cast.get(key)
        if added is None:
            added = cast.setdefault(key, delta.to(device=activation.device, dtype=activation.dtype))
        if positions is None:
            return activation + added
        index = selection(hook, None, positions)
        out = activation.clone()
        out[index] = out[index] + added
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
