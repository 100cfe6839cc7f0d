"""Collect per-head attention statistics during an ordinary forward pass.

Inside ``with model.collect_attention_stats(config) as stats:`` every (selected) layer computes its
attention with :func:`interp.kernels.attention_with_stats`, so the forward pass returns the usual
logits and ``stats[layer]`` holds that layer's :class:`~interp.kernels.AttentionStats`. The
``[batch, head, query, key]`` pattern is never materialized (except with ``backend="reference"``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from interp.kernels import AttentionStats, StatsConfig, attention_with_stats


def key_padding_from_mask(attention_mask: torch.Tensor | None, n_key: int | None = None) -> torch.Tensor | None:
    """``[batch, key]`` (True = real token) from the mask a model hands its attention function.

    That is a ``[batch, key]`` padding mask while statistics are collected on every layer (see
    :func:`interp.hooks.attention.key_padding_only_masks`); otherwise a 4-D mask from transformers that
    combines causality, padding and sliding windows, where a key that no query may see is padding.
    Causality and windows are re-applied by the kernel itself.
    """
    if attention_mask is None:
        return None
    if attention_mask.dim() == 2:
        visible = attention_mask[:, -n_key:].bool() if n_key is not None else attention_mask.bool()
        return None if bool(visible.all()) else visible
    visible = attention_mask if attention_mask.dtype == torch.bool else attention_mask > torch.finfo(attention_mask.dtype).min / 2
    visible = visible.any(dim=-2)  # [batch, heads|1, key]
    return visible[:, 0] if not bool(visible.all()) else None


class StatsCollector:
    """Receives each layer's attention inputs, returns the attention output and keeps the statistics.

    Args:
        config: which statistics (see :class:`~interp.kernels.StatsConfig`).
        layers: restrict to these layers (others run the model's own attention); None = all.
        backend: ``auto`` | ``triton`` | ``chunked`` | ``reference``.
        reduce: optional ``fn(layer, AttentionStats) -> object`` applied as each layer finishes, to
            keep only what an analysis needs (long context: per-query statistics of every layer add up).
    """

    def __init__(
        self,
        config: StatsConfig,
        *,
        layers: Iterable[int] | None = None,
        backend: str = "auto",
        reduce: Callable[[int, AttentionStats], object] | None = None,
    ) -> None:
        self.config = config
        self.layers = None if layers is None else set(layers)
        self.backend = backend
        self.reduce = reduce
        self.results: dict[int, object] = {}

    def wants(self, layer: int) -> bool:
        return self.layers is None or layer in self.layers

    def compute(
        self,
        layer: int,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        *,
        scaling: float,
        softcap: float | None,
        sliding_window: int | None,
        sinks: torch.Tensor | None = None,
        attention_chunk: int | None = None,
    ) -> torch.Tensor:
        """Attention output ``[batch, head, query, d_head]``; statistics stored under ``layer``."""
        out, stats = attention_with_stats(
            query,
            key,
            value,
            scale=scaling,
            sliding_window=sliding_window,
            softcap=softcap,
            key_padding_mask=key_padding_from_mask(attention_mask, key.shape[-2]),
            config=self.config,
            backend=self.backend,
            sinks=sinks,
            attention_chunk=attention_chunk,
        )
        self.results[layer] = self.reduce(layer, stats) if self.reduce is not None else stats
        return out

    def __getitem__(self, layer: int) -> object:
        return self.results[layer]

    def __len__(self) -> int:
        return len(self.results)
