"""Attention sinks: how much attention a head puts on the first token.

``sink_mass`` is the mean, over queries ``p >= 1`` (and batch), of the attention probability on key 0
(Xiao et al., "Efficient Streaming Language Models with Attention Sinks", 2023). Measured on the
natural-text probe.
"""

from __future__ import annotations

import pandas as pd
import torch

from interp.analyses.head_stats import head_frame, head_stat_means
from interp.analyses.registry import register
from interp.hooks import HookedModel
from interp.kernels import StatsConfig


def sink_scores(model: HookedModel, tokens: torch.Tensor, *, n_sink: int = 1, backend: str = "auto") -> pd.DataFrame:
    """Per head: ``sink_mass`` (mean mass on token 0) and ``sink_mass_first_k`` (on tokens 0..n_sink-1)."""
    means = head_stat_means(model, tokens, StatsConfig(n_sink=n_sink, window=0, received=False), backend=backend)
    return _frame(model, means, n_sink)


def _frame(model: HookedModel, means: dict[str, torch.Tensor], n_sink: int) -> pd.DataFrame:
    frame = head_frame(model, {"sink_mass": means["first_token_mass"], "sink_mass_first_k": means["sink_mass"]})
    frame.attrs["settings"] = {"n_sink": n_sink}
    return frame


@register(
    "sink",
    columns={
        "sink_mass": "mean attention probability on the first token (queries p>=1, natural text)",
        "sink_mass_first_k": "mean attention probability on the first n_sink tokens (default 4)",
    },
    description="Attention sinks: mass each head puts on the first token(s).",
)
def _scan_sink(ctx) -> pd.DataFrame:
    means = ctx.head_means("natural")
    return _frame(ctx.model, means, ctx.settings.n_sink)
