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
from interp.analyses.split import split_rows
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
    _check_targets(tokens, role)
    parts = _role_parts(model, tokens, role, backend)
    return parts["mass"] / parts["weight"], parts["tl"]


def _check_targets(tokens: torch.Tensor, role: str) -> None:
    if not bool(role_targets(tokens.cpu(), role)[1].any()):
        raise ValueError(f"no query in these tokens has a {role} target; use repeated tokens")


def _role_parts(model: HookedModel, tokens: torch.Tensor, role: str, backend: str) -> dict[str, torch.Tensor]:
    """``mass``: the attention on ``role``'s targets summed over the queries that have one ``[layer, head]``;
    ``weight``: how many queries have one; ``tl``: the mean mass over every query ``[layer, head]``."""
    targets, has_target = role_targets(tokens.cpu(), role)
    weights = has_target.to(model.device, torch.float32)
    config = StatsConfig(n_sink=0, window=0, received=False,
                         targets=None if targets is None else targets.to(model.device))

    def reduce(layer: int, stats: AttentionStats) -> tuple[torch.Tensor, torch.Tensor]:
        mass = stats.prev_mass if targets is None else stats.target_mass  # [batch, head, query]
        return (mass * weights[:, None]).sum(dim=(0, 2)).cpu(), mass.mean(dim=(0, 2)).cpu()

    per_layer = per_layer_stats(model, tokens, config, reduce, backend=backend)
    return {"mass": torch.stack([mass for mass, _ in per_layer]), "weight": weights.sum().cpu(),
            "tl": torch.stack([tl for _, tl in per_layer])}


def _split_role_scores(ctx, probe: str, role: str) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`role_scores` on the scan's ``probe``, each rank running its share of the rows."""
    tokens = ctx.probes[probe].tokens
    _check_targets(tokens, role)
    parts = split_rows(len(tokens), lambda rows: _role_parts(ctx.model, tokens[rows.start:rows.stop], role, ctx.settings.backend),
                       {"mass": "sum", "weight": "sum", "tl": "mean"})
    return parts["mass"] / parts["weight"], parts["tl"]


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
        if role == "previous_token":
            score, tl_score = _previous_token_from_means(ctx, "repeated")
            natural, _ = _previous_token_from_means(ctx, "natural")
        else:
            score, tl_score = _split_role_scores(ctx, "repeated", role)
            natural, _ = _split_role_scores(ctx, "natural", role)
        return head_frame(
            ctx.model, {f"{role}_score": score, f"{role}_score_tl": tl_score, f"{role}_score_natural": natural}
        )


for _role in ROLES:  # columns and descriptions: interp.catalog
    _register(_role)
