"""Attention-edge knockout: which (query, key) edges each layer's attention must not use.

:meth:`~interp.hooks.model.HookedModel.knockout` adds edges for a ``with`` block; the attention hook of
a knocked-out layer asks :meth:`Knockouts.mask` for its blocked edges and computes attention
explicitly with them set to -inf before the softmax.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch

from interp.errors import InterpError


def _fit_edges(edges: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Knockout ``edges [..., n, n]`` for scores ``[batch, head, query, key]``: the keys must be the prompt's
    ``n`` tokens; with a cached prefix (fewer queries than keys) the edges of the last queries apply."""
    n_query, n_key = shape[2], shape[3]
    if edges.shape[-1] != n_key or edges.shape[-2] < n_query:
        raise InterpError(
            f"knockout edges cover {edges.shape[-2]} x {edges.shape[-1]} (query x key) tokens but the input has "
            f"{n_key} tokens; build edges of shape [..., {n_key}, {n_key}]"
        )
    if edges.ndim >= 3 and edges.shape[0] not in (1, shape[0]):
        raise InterpError(f"knockout edges have {edges.shape[0]} batch rows but the input has {shape[0]}")
    return edges[..., edges.shape[-2] - n_query :, :]


class Knockouts:
    """The knocked-out edges per layer, for a model of ``n_layers`` layers of ``n_heads`` query heads."""

    def __init__(self, n_layers: int, n_heads: int) -> None:
        self.n_layers = n_layers
        self.n_heads = n_heads
        self._by_layer: dict[int, list[tuple[torch.Tensor, list[int] | None]]] = {}

    def __getitem__(self, layer: int) -> list[tuple[torch.Tensor, list[int] | None]]:
        """The ``(edges, heads)`` entries knocked out on ``layer``, innermost last."""
        return self._by_layer[layer]

    def active(self, layer: int) -> bool:
        return layer in self._by_layer

    def any_active(self) -> bool:
        return bool(self._by_layer)

    def mask(self, layer: int, shape: torch.Size, device: torch.device) -> torch.Tensor | None:
        """Boolean ``[batch|1, head, query, key]`` mask of blocked edges for ``layer`` (True = blocked)."""
        entries = self._by_layer.get(layer)
        if not entries:
            return None
        per_row = any(edges.ndim >= 3 for edges, _ in entries)
        blocked = torch.zeros(shape[0] if per_row else 1, *shape[1:], dtype=torch.bool, device=device)
        for edges, heads in entries:
            edges = _fit_edges(edges, shape).to(device)
            if edges.ndim == 3:  # [batch, query, key]: the same for every selected head
                edges = edges[:, None]
                if heads is not None:
                    blocked[:, heads] |= edges
                    continue
            if edges.ndim == 4:  # [batch, head, query, key]
                blocked |= edges
            elif heads is None:
                blocked |= edges
            else:
                blocked[:, heads] |= edges
        return blocked

    @contextmanager
    def added(
        self, edges: torch.Tensor, *, layers: Iterable[int] | None = None, heads: Sequence[int] | None = None
    ) -> Iterator[None]:
        """Knock out ``edges`` on ``layers`` and ``heads`` for the ``with`` block (see ``HookedModel.knockout``)."""
        if edges.dtype != torch.bool or edges.ndim not in (2, 3, 4):
            raise InterpError(
                "knockout edges must be a boolean [query, key], [batch, query, key] or [batch, head, query, key] "
                "tensor (True = block that edge)"
            )
        if edges.ndim == 4 and heads is not None:
            raise InterpError("knockout edges with a head axis select heads themselves; drop heads=")
        if edges.ndim == 4 and edges.shape[1] != self.n_heads:
            raise InterpError(
                f"knockout edges [batch, head, query, key] have {edges.shape[1]} heads but the model has {self.n_heads}"
            )
        if edges.shape[-1] != edges.shape[-2]:
            raise InterpError(
                f"knockout edges must be square over the prompt's tokens ([..., n, n]), got {tuple(edges.shape)}"
            )
        chosen = range(self.n_layers) if layers is None else list(layers)
        bad = [layer for layer in chosen if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self.n_layers]
        if bad or (layers is not None and not chosen):
            raise InterpError(
                f"knockout layers {bad or list(chosen)} are out of range: the model has layers 0..{self.n_layers - 1}"
            )
        if heads is not None:
            heads = list(heads)
            bad = [h for h in heads if isinstance(h, bool) or not isinstance(h, int) or not 0 <= h < self.n_heads]
            if bad or not heads:
                raise InterpError(
                    f"knockout heads {bad or heads} are out of range: the model has query heads 0..{self.n_heads - 1}"
                )
        entry = (edges, list(heads) if heads is not None else None)
        for layer in chosen:
            self._by_layer.setdefault(layer, []).append(entry)
        try:
            yield
        finally:
            for layer in chosen:
                # Remove by identity: comparing tuples of tensors with == is elementwise.
                self._by_layer[layer] = [e for e in self._by_layer[layer] if e is not entry]
                if not self._by_layer[layer]:
                    del self._by_layer[layer]
