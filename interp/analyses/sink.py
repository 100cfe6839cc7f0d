"""Attention sinks: heads that park attention on the first token, and secondary sinks elsewhere.

- ``sink_mass``: mean over queries ``p >= 1`` of the attention probability on key 0 (Xiao et al.,
  "Efficient Streaming Language Models with Attention Sinks", 2023); ``sink_mass_first_k`` the
  same on keys ``0..n_sink-1``.
- ``sink_alpha0``: Gu et al. ("When Attention Sink Emerges in Language Models", 2024) per-key
  importance ``alpha_k = sum_q A[q, k] / (number of queries that can see k)`` at ``k = 0``, mean
  over probe rows. A head *has a sink* at ``k`` when ``alpha_k > epsilon`` (default 0.3); the
  model-level **sink rate** is the share of (row, layer, head) with ``alpha_0 > epsilon`` on the
  first 64 tokens of natural text.
- **Secondary sinks** (Yu et al., "Unveiling and Harnessing Hidden Attention Sinks", 2024; "On the
  Existence and Behaviour of Secondary Attention Sinks"): positions ``k > 0`` where some head of a
  layer has ``alpha_k > threshold`` (default 0.1), with the token, the first layer where that
  happens and the number of layers where it does.

All computed from the attention-statistics kernel's column sums; the pattern is never materialized.
"""

from __future__ import annotations

import pandas as pd
import torch

from interp.analyses.head_stats import head_frame, head_stat_means
from interp.analyses.registry import register
from interp.analyses.split import split_rows
from interp.hooks import HookedModel
from interp.kernels import StatsConfig

SINK_EPSILON = 0.3
SECONDARY_THRESHOLD = 0.1
SINK_RATE_TOKENS = 64


def sink_scores(
    model: HookedModel, tokens: torch.Tensor, *, n_sink: int = 1, epsilon: float = SINK_EPSILON, backend: str = "auto"
) -> pd.DataFrame:
    """Per head: ``sink_mass``, ``sink_mass_first_k``, ``sink_alpha0`` and ``sink_has_sink`` (alpha_0 > epsilon)."""
    means = head_stat_means(model, tokens, StatsConfig(n_sink=n_sink, window=0, received=True), backend=backend)
    return _frame(model, means, n_sink=n_sink, epsilon=epsilon)


def _frame(model: HookedModel, means: dict[str, torch.Tensor], *, n_sink: int, epsilon: float) -> pd.DataFrame:
    alpha0 = means["alpha"][..., 0].mean(dim=1)  # [layer, head]
    frame = head_frame(
        model,
        {"sink_mass": means["first_token_mass"], "sink_mass_first_k": means["sink_mass"], "sink_alpha0": alpha0},
    )
    frame["sink_has_sink"] = frame["sink_alpha0"] > epsilon
    frame.attrs["settings"] = {"n_sink": n_sink, "epsilon": epsilon}
    return frame


def sink_rate(model: HookedModel, tokens: torch.Tensor, *, epsilon: float = SINK_EPSILON, backend: str = "auto") -> float:
    """Share of (row, layer, head) with ``alpha_0 > epsilon`` on the first 64 tokens of ``tokens``."""
    return _rate(_first_alpha(model, tokens, range(len(tokens)), backend), epsilon)


def _first_alpha(model: HookedModel, tokens: torch.Tensor, rows: range, backend: str) -> torch.Tensor:
    """``alpha_0`` ``[layer, row, head]`` of ``rows`` on the first ``SINK_RATE_TOKENS`` tokens."""
    first = tokens[rows.start:rows.stop, :SINK_RATE_TOKENS]
    return head_stat_means(model, first, StatsConfig(n_sink=1, window=0, received=True), backend=backend)["alpha"][..., 0]


def _rate(alpha0: torch.Tensor, epsilon: float) -> float:
    return float((alpha0 > epsilon).float().mean())


def secondary_sinks(
    model: HookedModel,
    tokens: torch.Tensor,
    alpha: torch.Tensor | None = None,
    *,
    threshold: float = SECONDARY_THRESHOLD,
    min_queries: int = 32,
    backend: str = "auto",
) -> pd.DataFrame:
    """One row per (row, position ``k > 0``) that some head treats as a sink (``alpha_k > threshold``).

    Columns: ``row, position, token, first_layer, n_layers, n_heads, max_alpha``. Keys seen by fewer
    than ``min_queries`` queries (the last few positions) are left out: their alpha is an average
    over too few queries to mean anything. ``alpha`` (``[layer, batch, head, key]``) may be passed
    when already computed.
    """
    if alpha is None:
        alpha = head_stat_means(model, tokens, StatsConfig(n_sink=1, window=0, received=True), backend=backend)["alpha"]
    n_keys = alpha.shape[-1]
    above = alpha[..., 1 : n_keys - min_queries + 1] > threshold  # [layer, batch, head, key-1]
    rows = []
    for row, position in (above.any(dim=(0, 2))).nonzero().tolist():
        layers = above[:, row, :, position].any(dim=1).nonzero().flatten()
        token_id = int(tokens[row, position + 1])
        rows.append(
            {
                "row": row,
                "position": position + 1,
                "token": model.tokenizer.decode([token_id]) if model.tokenizer is not None else str(token_id),
                "first_layer": int(layers[0]),
                "n_layers": len(layers),
                "n_heads": int(above[:, row, :, position].sum()),
                "max_alpha": float(alpha[:, row, :, position + 1].max()),
            }
        )
    columns = ["row", "position", "token", "first_layer", "n_layers", "n_heads", "max_alpha"]
    return pd.DataFrame(rows, columns=columns).sort_values(["n_heads", "max_alpha"], ascending=False, ignore_index=True)


@register("sink")
def _scan_sink(ctx) -> pd.DataFrame:
    means = ctx.head_means("natural")
    frame = _frame(ctx.model, means, n_sink=ctx.settings.n_sink, epsilon=SINK_EPSILON)
    tokens = ctx.probes["natural"].tokens
    alpha0 = split_rows(len(tokens), lambda rows: {"alpha0": _first_alpha(ctx.model, tokens, rows, ctx.settings.backend)},
                        {"alpha0": 1})["alpha0"]  # per row: each rank runs its rows
    frame.attrs["tables"] = {"secondary_sinks": secondary_sinks(ctx.model, tokens, means["alpha"])}
    frame.attrs["summary"] = {
        "sink_rate": _rate(alpha0, SINK_EPSILON),
        "sink_rate_epsilon": SINK_EPSILON,
        "sink_rate_tokens": SINK_RATE_TOKENS,
    }
    return frame
