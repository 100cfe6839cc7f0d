"""Containers shared by every backend: what to compute (`StatsConfig`) and what comes back (`AttentionStats`)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from torch import Tensor


@dataclass(frozen=True, eq=False)
class StatsConfig:
    """Which statistics to compute, and their parameters.

    Attributes:
        n_sink: number of leading key positions (0..n_sink-1) treated as "sink" tokens.
            0 disables `sink_mass` and `sink_mass_per_position` (they come back as None).
        window: size of the "recent keys" window for `window_mass`: keys p-window+1..p
            (the diagonal included). 0 disables `window_mass`.
        targets: optional LongTensor [batch, n_query, T] of absolute key indices per query,
            padded with -1; enables `target_mass`.
        received: whether to compute `received` (column sums over queries); costs a second pass.
    """

    n_sink: int = 1
    window: int = 8
    targets: Tensor | None = None
    received: bool = True


@dataclass(eq=False)
class AttentionStats:
    """Per-head attention statistics; see the `interp.kernels` docstring for exact definitions.

    Shapes use b=batch, h=n_heads (query heads), q=n_query, k=n_key. Everything is float32
    except `argmax` (int64). A field is None when its statistic was not requested.
    """

    lse: Tensor  # [b, h, q]
    entropy: Tensor  # [b, h, q]
    max_prob: Tensor  # [b, h, q]
    argmax: Tensor  # [b, h, q] int64
    diag_mass: Tensor  # [b, h, q]
    prev_mass: Tensor  # [b, h, q]
    sink_mass: Tensor | None = None  # [b, h, q]
    sink_mass_per_position: Tensor | None = None  # [b, h, q, n_sink]
    window_mass: Tensor | None = None  # [b, h, q]
    target_mass: Tensor | None = None  # [b, h, q]
    received: Tensor | None = None  # [b, h, k]
    learned_sink_mass: Tensor | None = None  # [b, h, q]: probability on a learned sink logit (gpt_oss); None without one

    def to_dict(self) -> dict[str, Tensor]:
        """The statistics that were computed, by field name (None fields left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
