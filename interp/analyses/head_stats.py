"""Per-head means of attention statistics over probe tokens, computed in one forward pass per batch.

Shared by the statistics-based analyses (sink, entropy, max attention, ...). Means are taken over
batch items and over query positions ``p >= skip_queries`` (the first query sees only itself, so its
mass on token 0 is 1 and its entropy 0 by construction).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

import pandas as pd
import torch

from interp.hooks import HookedModel
from interp.kernels import AttentionStats, StatsConfig

T = TypeVar("T")

PER_QUERY_FIELDS = ("entropy", "max_prob", "diag_mass", "prev_mass", "sink_mass", "window_mass", "target_mass")


def head_stat_means(
    model: HookedModel,
    tokens: torch.Tensor,
    config: StatsConfig | None = None,
    *,
    skip_queries: int = 1,
    backend: str = "auto",
) -> dict[str, torch.Tensor]:
    """``{statistic: [layer, head]}`` means over batch and query positions ``>= skip_queries``.

    Besides the per-query statistics of :class:`~interp.kernels.AttentionStats` it returns
    ``first_token_mass`` (mass on key 0; needs ``n_sink >= 1``), ``entropy_normalized``
    (entropy / log(number of visible keys)) and, when ``config.received``, ``alpha``
    ``[layer, batch, head, key]``: the mean attention key ``k`` receives from the queries that can
    see it, ``sum_q A[q, k] / (n - k)`` (Gu et al., "When Attention Sink Emerges", 2024).
    """
    config = config or StatsConfig()
    n_query = tokens.shape[1]
    if n_query <= skip_queries:
        raise ValueError(f"need more than {skip_queries} tokens per probe, got {n_query}")
    visible_keys = torch.arange(1, n_query + 1, device=tokens.device, dtype=torch.float32)[skip_queries:]
    seeing_queries = torch.arange(n_query, 0, -1, device=tokens.device, dtype=torch.float32)  # key k: n - k

    def reduce(layer: int, stats: AttentionStats) -> dict[str, torch.Tensor]:
        means = {}
        for field in PER_QUERY_FIELDS:
            value = getattr(stats, field)
            if value is not None:
                means[field] = value[:, :, skip_queries:].mean(dim=(0, 2)).cpu()
        if stats.sink_mass_per_position is not None:
            means["first_token_mass"] = stats.sink_mass_per_position[:, :, skip_queries:, 0].mean(dim=(0, 2)).cpu()
        normalized = stats.entropy[:, :, skip_queries:] / torch.log(visible_keys)
        means["entropy_normalized"] = normalized.mean(dim=(0, 2)).cpu()
        if stats.received is not None:
            means["alpha"] = (stats.received / seeing_queries).cpu()
        return means

    per_layer = per_layer_stats(model, tokens, config, reduce, backend=backend)
    return {f: torch.stack([layer[f] for layer in per_layer]) for f in per_layer[0]}


def per_layer_stats(
    model: HookedModel,
    tokens: torch.Tensor,
    config: StatsConfig,
    reduce: Callable[[int, AttentionStats], T],
    *,
    backend: str = "auto",
) -> list[T]:
    """One statistics forward over ``tokens``: ``reduce(layer, stats)`` for every layer, in layer order.

    Inside :func:`stats_progress`, reports each finished layer (long contexts take minutes per forward).
    """
    report = _progress.get()

    def reduce_and_report(layer: int, stats: AttentionStats) -> T:
        value = reduce(layer, stats)
        if report is not None:
            report(layer + 1, model.cfg.n_layers)
        return value

    with torch.no_grad(), model.collect_attention_stats(config, backend=backend, reduce=reduce_and_report) as collected:
        model(tokens, logits_to_keep=1)  # statistics only: skip the [batch, pos, vocab] logits
    return [collected[layer] for layer in range(model.cfg.n_layers)]


_progress: ContextVar[Callable[[int, int], None] | None] = ContextVar("interp_stats_progress", default=None)


@contextmanager
def stats_progress(callback: Callable[[int, int], None] | None) -> Iterator[None]:
    """Inside the block, every statistics forward calls ``callback(layers_done, n_layers)`` as layers finish."""
    token = _progress.set(callback)
    try:
        yield
    finally:
        _progress.reset(token)


def head_frame(model: HookedModel, columns: dict[str, torch.Tensor]) -> pd.DataFrame:
    """Tidy table, one row per (layer, head): ``layer, head, kv_head`` plus each ``[layer, head]`` column."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    layer = torch.arange(n_layers).repeat_interleave(n_heads)
    head = torch.arange(n_heads).repeat(n_layers)
    frame = pd.DataFrame({"layer": layer.numpy(), "head": head.numpy(), "kv_head": (head // model.cfg.n_groups).numpy()})
    for name, values in columns.items():
        if tuple(values.shape) != (n_layers, n_heads):
            raise ValueError(f"column {name} has shape {tuple(values.shape)}, expected ({n_layers}, {n_heads})")
        frame[name] = values.reshape(-1).double().numpy()
    return frame

