"""Attention entropy per head: collapsed (near one-hot) versus diffuse heads.

``entropy_mean`` is the mean over queries ``p >= 1`` of ``-sum_k A[p, k] log A[p, k]`` (nats);
``entropy_normalized`` divides each query's entropy by ``log(p + 1)``, its maximum (uniform over
the visible keys), so 0 = one-hot and 1 = uniform whatever the position. Natural-text probe.
"""

from __future__ import annotations

import pandas as pd
import torch

from interp.analyses.head_stats import head_frame, head_stat_means
from interp.analyses.registry import register
from interp.hooks import HookedModel
from interp.kernels import StatsConfig


def entropy_scores(model: HookedModel, tokens: torch.Tensor, *, backend: str = "auto") -> pd.DataFrame:
    """Per head: ``entropy_mean`` (nats) and ``entropy_normalized`` (0 = one-hot, 1 = uniform)."""
    means = head_stat_means(model, tokens, StatsConfig(n_sink=0, window=0, received=False), backend=backend)
    return _frame(model, means)


def _frame(model: HookedModel, means: dict[str, torch.Tensor]) -> pd.DataFrame:
    return head_frame(model, {"entropy_mean": means["entropy"], "entropy_normalized": means["entropy_normalized"]})


@register("entropy")
def _scan_entropy(ctx) -> pd.DataFrame:
    return _frame(ctx.model, ctx.head_means("natural"))
