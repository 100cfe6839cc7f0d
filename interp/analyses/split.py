"""How the scan's analyses share their work over ``torch.distributed`` ranks (docs/distributed.md).

Every rank builds the same probes. An analysis whose score is a mean over probe rows runs
:func:`split_rows`: each rank computes its contiguous rows, and the ranks add up ``mean x rows`` (or
sums, or zero-padded per-row values) in one float64 ``all_reduce``. An analysis whose work is a list of
independent cells (heads, layers, groups of prompts) takes every N-th cell
(:func:`interp.distributed.shard` with ``strided``) and combines with :func:`~interp.distributed.merge_owned`.
In one process every function here is the plain computation over all rows, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from interp.distributed import all_reduce_sum, shard_range, world

MEAN, SUM = "mean", "sum"


def split_rows(
    n_rows: int, compute: Callable[[range], dict[str, torch.Tensor]], kinds: Mapping[str, str | int] | None = None
) -> dict[str, torch.Tensor]:
    """``compute(rows)`` over all ``n_rows`` rows, each rank computing its contiguous share.

    ``compute`` returns tensors of three kinds (``kinds[name]``, default ``"mean"``): ``"mean"``, the
    mean over ``rows`` (ranks add ``mean x len(rows)``, then divide by ``n_rows``); ``"sum"``, a sum over
    ``rows`` (added); an int ``d``, one entry per row along axis ``d`` (gathered: exact). Values come
    back in their own dtype. A rank without rows (fewer rows than ranks) runs row 0 for the shapes only
    and adds zeros.
    """
    kinds = dict(kinds or {})
    w = world()
    if not w.parallel:
        return compute(range(n_rows))
    rows = shard_range(n_rows, w)
    local = compute(rows if len(rows) else range(min(1, n_rows)))
    parts = []
    for name, value in local.items():
        kind = kinds.get(name, MEAN)
        if isinstance(kind, int):
            shape = list(value.shape)
            shape[kind] = n_rows
            full = torch.zeros(shape, dtype=torch.float64)
            if len(rows):
                full.narrow(kind, rows.start, len(rows)).copy_(value.detach().cpu())
            parts.append(full)
        elif kind in (MEAN, SUM):
            scale = len(rows) if kind == MEAN else 1
            parts.append(value.detach().cpu().double() * scale if len(rows) else torch.zeros(value.shape, dtype=torch.float64))
        else:
            raise ValueError(f"unknown kind {kind!r} for {name}; use 'mean', 'sum' or an axis")
    totals = all_reduce_sum(*parts) if parts else ()
    totals = (totals,) if len(parts) == 1 else totals
    out = {}
    for (name, value), total in zip(local.items(), totals):
        if kinds.get(name, MEAN) == MEAN:
            total = total / n_rows
        out[name] = total.to(value.device, value.dtype)
    return out
