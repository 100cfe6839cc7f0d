"""Active/dormant heads: heads whose attention collapses onto the first token on some inputs only.

Guo et al., "Active-Dormant Attention Heads: Mechanistically Demystifying Extreme-Token Phenomena
in LLMs" (2024): a head is *dormant* on an input when nearly all its attention sits on the sink
(so it writes almost nothing), and *active* otherwise; many heads switch with the input domain.
Here the sink mass (mean over queries ``p >= 1`` of the mass on token 0) is measured on three
domains (natural text, Python code, repeated random tokens):

- ``dormant_sink_natural``, ``dormant_sink_code``, ``dormant_sink_repeated``: the per-domain sink mass;
- ``dormant_sink_range``: max minus min over the domains;
- ``dormant_switching``: dormant (sink mass >= 0.9) on some domain and active (< 0.5) on another.
"""

from __future__ import annotations

import pandas as pd
import torch

from interp.analyses.head_stats import head_frame
from interp.analyses.registry import register

DOMAINS = ("natural", "code", "repeated")
DORMANT_AT = 0.9
ACTIVE_BELOW = 0.5


def dormant_frame(model, sink_by_domain: dict[str, torch.Tensor]) -> pd.DataFrame:
    """Table from ``{domain: sink mass [layer, head]}``."""
    stacked = torch.stack([sink_by_domain[d] for d in DOMAINS])
    frame = head_frame(
        model,
        {
            **{f"dormant_sink_{d}": sink_by_domain[d] for d in DOMAINS},
            "dormant_sink_range": stacked.max(0).values - stacked.min(0).values,
        },
    )
    frame["dormant_switching"] = ((stacked.max(0).values >= DORMANT_AT) & (stacked.min(0).values < ACTIVE_BELOW)).reshape(-1).numpy()
    frame.attrs["settings"] = {"dormant_at": DORMANT_AT, "active_below": ACTIVE_BELOW}
    return frame


@register("dormant")
def _scan_dormant(ctx) -> pd.DataFrame:
    return dormant_frame(ctx.model, {d: ctx.head_means(d)["first_token_mass"] for d in DOMAINS})
