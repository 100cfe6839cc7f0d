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
from interp.analyses.split import split_rows
from interp.hooks import HookedModel, hook_name


def value_norm_scores(model: HookedModel, tokens: torch.Tensor) -> pd.DataFrame:
    """Per (query) head: ``value_norm_first`` and ``value_norm_ratio`` on ``tokens`` ``[batch, pos]``."""
    return _frame(model, _value_norms(model, tokens))


def _value_norms(model: HookedModel, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """``first``: mean value norm at position 0; ``rest``: over positions ``>= 1``; each ``[layer, kv_head]``, mean over rows."""
    names = [hook_name(layer, "attn.hook_v") for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names=names, logits_to_keep=1)
    first, rest = [], []
    for name in names:
        norms = cache[name].float().norm(dim=-1)  # [batch, pos, kv_head]
        first.append(norms[:, 0].mean(dim=0))
        rest.append(norms[:, 1:].mean(dim=(0, 1)))
    return {"first": torch.stack(first), "rest": torch.stack(rest)}


def _frame(model: HookedModel, norms: dict[str, torch.Tensor]) -> pd.DataFrame:
    groups = model.cfg.n_groups
    first, ratio = norms["first"], norms["first"] / norms["rest"]
    return head_frame(model, {"value_norm_first": first.repeat_interleave(groups, dim=1),
                              "value_norm_ratio": ratio.repeat_interleave(groups, dim=1)})


@register("value_norm")
def _scan_value_norm(ctx) -> pd.DataFrame:
    tokens = ctx.probes["natural"].tokens  # each rank its share of the rows: every row has the same positions
    return _frame(ctx.model, split_rows(len(tokens), lambda rows: _value_norms(ctx.model, tokens[rows.start:rows.stop])))
