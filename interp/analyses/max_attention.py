"""Maximum attention per head: how peaked a head's attention is, position by position.

``max_attention_mean`` is the mean over queries ``p >= 1`` of ``max_k A[p, k]`` on the natural-text
probe; ``max_attention_repeated`` the same on the repeated-random-tokens probe.
"""

from __future__ import annotations

import pandas as pd
import torch

from interp.analyses.head_stats import head_frame, head_stat_means
from interp.analyses.registry import register
from interp.hooks import HookedModel
from interp.kernels import StatsConfig


def max_attention_scores(model: HookedModel, tokens: torch.Tensor, *, backend: str = "auto") -> pd.DataFrame:
    """Per head: ``max_attention_mean``, the mean over queries of the largest attention probability."""
    means = head_stat_means(model, tokens, StatsConfig(n_sink=0, window=0, received=False), backend=backend)
    return head_frame(model, {"max_attention_mean": means["max_prob"]})


@register("max_attention")
def _scan_max_attention(ctx) -> pd.DataFrame:
    return head_frame(
        ctx.model,
        {
            "max_attention_mean": ctx.head_means("natural")["max_prob"],
            "max_attention_repeated": ctx.head_means("repeated")["max_prob"],
        },
    )
