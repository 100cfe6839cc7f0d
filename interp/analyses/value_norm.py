"""Value-norm drain: sink tokens tend to carry tiny value vectors, so attending to them writes ~nothing.

``value_norm_first`` is the mean L2 norm of the value vector at position 0 (over probe rows);
``value_norm_ratio`` divides it by the mean value norm over positions ``p >= 1``. A ratio well below
1 on a head with high ``sink_mass`` is the "no-op" sink mechanism (Gu et al. 2024; Guo et al. 2024).
Values belong to key/value heads: with GQA every query head of a group shows its KV head's value.
Natural-text probe.
"""

from __future__ import annotations

import pandas as pd
import torch

from interp.analyses.head_stats import head_frame
from interp.analyses.registry import register
from interp.hooks import HookedModel, hook_name


def value_norm_scores(model: HookedModel, tokens: torch.Tensor) -> pd.DataFrame:
    """Per (query) head: ``value_norm_first`` and ``value_norm_ratio`` on ``tokens`` ``[batch, pos]``."""
    names = [hook_name(layer, "attn.hook_v") for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names=names, logits_to_keep=1)
    first, ratio = [], []
    for name in names:
        norms = cache[name].float().norm(dim=-1)  # [batch, pos, kv_head]
        per_kv_first = norms[:, 0].mean(dim=0)
        per_kv_rest = norms[:, 1:].mean(dim=(0, 1))
        first.append(per_kv_first.repeat_interleave(model.cfg.n_groups))
        ratio.append((per_kv_first / per_kv_rest).repeat_interleave(model.cfg.n_groups))
    return head_frame(model, {"value_norm_first": torch.stack(first), "value_norm_ratio": torch.stack(ratio)})


@register("value_norm")
def _scan_value_norm(ctx) -> pd.DataFrame:
    return value_norm_scores(ctx.model, ctx.probes["natural"].tokens)
