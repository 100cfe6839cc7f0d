"""Previous-token, duplicate-token and induction heads, scored from the attention-statistics kernel.

For each query position ``q`` a role names the key positions the head "should" attend to
(as in TransformerLens ``head_detector``):

- previous token: ``q - 1``;
- duplicate token: every earlier ``k < q`` with ``token[k] == token[q]``;
- induction: every ``k`` with ``1 <= k <= q`` and ``token[k - 1] == token[q]`` for an earlier
  occurrence ``k - 1 < q`` (the token right after an earlier copy of the current token).

``<role>_score`` is the mean attention mass on those positions over the queries that have at least
one (so a perfect head scores 1). ``<role>_score_tl`` is TransformerLens' ``"mul"`` score: the same
mass summed over *all* queries divided by their number, averaged over rows, for cross-checking with
``detect_head(..., error_measure="mul")`` (Olsson et al., "In-context Learning and Induction Heads", 2022).
"""

from __future__ import annotations

from collections import defaultdict

import pandas as pd
import torch

from interp.analyses.head_stats import head_frame, per_layer_stats
from interp.analyses.registry import register
from interp.hooks import HookedModel
from interp.kernels import AttentionStats, StatsConfig

ROLES = ("previous_token", "duplicate_token", "induction")


def role_targets(tokens: torch.Tensor, role: str) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Target key positions ``[batch, query, T]`` (padded with -1; None for previous_token) and
    a ``[batch, query]`` mask of queries that have at least one target."""
    batch, n = tokens.shape
    if role == "previous_token":
        has = torch.zeros(batch, n, dtype=torch.bool)
        has[:, 1:] = True
        return None, has
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; use one of {ROLES}")
    rows: list[list[list[int]]] = []
    for row in tokens.tolist():
        seen: dict[int, list[int]] = defaultdict(list)  # token id -> earlier positions
        targets_row = []
        for q, token in enumerate(row):
            earlier = seen[token]
            targets_row.append(list(earlier) if role == "duplicate_token" else [k + 1 for k in earlier])
            earlier.append(q)
        rows.append(targets_row)
    width = max(1, max(len(t) for r in rows for t in r))
    targets = torch.full((batch, n, width), -1, dtype=torch.long)
    for b, targets_row in enumerate(rows):
        for q, positions in enumerate(targets_row):
            targets[b, q, : len(positions)] = torch.tensor(positions, dtype=torch.long)
    return targets, (targets >= 0).any(dim=-1)


def role_scores(
    model: HookedModel, tokens: torch.Tensor, role: str, *, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(score, tl_score)``, each ``[layer, head]``, for ``role`` on ``tokens`` (see module docstring)."""
    targets, has_target = role_targets(tokens.cpu(), role)
    if not bool(has_target.any()):
        raise ValueError(f"no query in these tokens has a {role} target; use repeated tokens")
    weights = has_target.to(model.device, torch.float32)
    config = StatsConfig(n_sink=0, window=0, received=False,
                         targets=None if targets is None else targets.to(model.device))

    def reduce(layer: int, stats: AttentionStats) -> tuple[torch.Tensor, torch.Tensor]:
        mass = stats.prev_mass if targets is None else stats.target_mass  # [batch, head, query]
        score = (mass * weights[:, None]).sum(dim=(0, 2)) / weights.sum()
        return score.cpu(), mass.mean(dim=(0, 2)).cpu()

    per_layer = per_layer_stats(model, tokens, config, reduce, backend=backend)
    return torch.stack([score for score, _ in per_layer]), torch.stack([tl for _, tl in per_layer])


def token_role_scores(model: HookedModel, tokens: torch.Tensor, *, backend: str = "auto") -> pd.DataFrame:
    """Per head: ``<role>_score`` and ``<role>_score_tl`` for every role, on ``tokens`` ``[batch, pos]``."""
    columns = {}
    for role in ROLES:
        score, tl_score = role_scores(model, tokens, role, backend=backend)
        columns[f"{role}_score"], columns[f"{role}_score_tl"] = score, tl_score
    return head_frame(model, columns)


def _previous_token_from_means(ctx, probe: str) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`role_scores` of previous_token from the scan's shared statistics pass over ``probe`` (no forward of its own).

    Every query but the first has a previous token, and the shared means skip exactly that query;
    the first query's previous-token mass is 0, so the TransformerLens score is ``(n - 1) / n`` of it.
    """
    score = ctx.head_means(probe)["prev_mass"]
    n = ctx.probes[probe].tokens.shape[1]
    return score, score * (n - 1) / n


def _register(role: str) -> None:
    @register(role)
    def _scan(ctx) -> pd.DataFrame:
        backend = ctx.settings.backend
        if role == "previous_token":
            score, tl_score = _previous_token_from_means(ctx, "repeated")
            natural, _ = _previous_token_from_means(ctx, "natural")
        else:
            score, tl_score = role_scores(ctx.model, ctx.probes["repeated"].tokens, role, backend=backend)
            natural, _ = role_scores(ctx.model, ctx.probes["natural"].tokens, role, backend=backend)
        return head_frame(
            ctx.model, {f"{role}_score": score, f"{role}_score_tl": tl_score, f"{role}_score_natural": natural}
        )


for _role in ROLES:  # columns and descriptions: interp.catalog
    _register(_role)
