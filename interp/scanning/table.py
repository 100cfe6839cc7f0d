"""The head-importance table of a scan: every score column plus ``roles``, ``importance`` and ``importance_rank``.

:func:`head_table` turns a :class:`~interp.scanning.result.ScanResult` into one tidy row per (layer, head):
the scan's columns plus three derived ones (:data:`DERIVED_COLUMNS`):

- ``roles``: semicolon-separated role labels, from :data:`ROLE_RULES` (``score > threshold`` on
  columns that exist; a head may carry several, ``""`` for none);
- ``importance``: the value heads are ranked by: ``head_ablation_loss_delta`` when the scan has it
  (loss increase when the head is ablated), else the largest of the role scores that exist
  (:data:`IMPORTANCE_SCORES`), else ``max_attention_mean``;
- ``importance_rank``: 1 = most important; ties keep (layer, head) order, NaN ranks last.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from interp.scanning.result import ScanResult


DERIVED_COLUMNS = {
    "roles": "semicolon-separated role labels (see interp.scanning.files.ROLE_RULES); empty when none applies",
    "importance": "value the heads are ranked by (head_ablation_loss_delta, else the largest role score)",
    "importance_rank": "1 = most important head by `importance`; ties keep (layer, head) order",
}


@dataclass(frozen=True)
class RoleRule:
    """``role`` applies to a head when ``column > threshold`` (skipped when the scan lacks ``column``).

    ``only_if_inactive``: apply only to heads that carry no role besides ``sink``/``dormant``/``long_range``.
    """

    role: str
    column: str
    threshold: float
    only_if_inactive: bool = False


ROLE_RULES: tuple[RoleRule, ...] = (
    # Xiao et al. 2023: most of the head's attention parks on the first token.
    RoleRule("sink", "sink_mass", 0.5),
    # Guo et al. 2024 ("active-dormant" heads): almost all attention on the first token of natural text,
    # i.e. the head is off. Induction heads also park on the sink when nothing repeats, so a head with
    # an active role is not called dormant.
    RoleRule("dormant", "sink_mass", 0.9, only_if_inactive=True),
    # The token-role scores are means over queries that have a target, so 1 = a perfect head.
    RoleRule("previous_token", "previous_token_score", 0.5),
    RoleRule("duplicate_token", "duplicate_token_score", 0.3),
    RoleRule("induction", "induction_score", 0.3),
    # Wu et al. 2024's threshold, the same as the retrieval_head column.
    RoleRule("retrieval", "retrieval_score", 0.1),
    # Restricting the head's KV group to sink + recent window costs the needle answer > 0.5 nats/token:
    # DuoAttention would keep it on full attention (it cannot stream). Per KV group, so every query
    # head of the group carries it; streaming_score itself is NaN unless --streaming-per-head.
    RoleRule("long_range", "streaming_score_kv", 0.5),
)


ABLATION_COLUMN = "head_ablation_loss_delta"


IMPORTANCE_SCORES = ("previous_token_score", "duplicate_token_score", "induction_score", "retrieval_score")


def head_roles(heads: pd.DataFrame, *, rules: Iterable[RoleRule] = ROLE_RULES) -> pd.Series:
    """Per row, the roles whose rule holds, joined by ``;`` in rule order (``""`` for none)."""
    rules = list(rules)
    labels: list[list[str]] = [[] for _ in range(len(heads))]
    for rule in rules:
        if rule.column in heads:
            for i in np.flatnonzero(heads[rule.column].to_numpy(dtype=float) > rule.threshold):
                labels[i].append(rule.role)
    # long_range is decided per KV group, so it says nothing about whether this query head is active.
    passive = {"sink", "long_range"} | {r.role for r in rules if r.only_if_inactive}
    conditional = {r.role for r in rules if r.only_if_inactive}
    for roles in labels:
        if any(r not in passive for r in roles):
            roles[:] = [r for r in roles if r not in conditional]
    return pd.Series([";".join(roles) for roles in labels], index=heads.index, dtype="str", name="roles")


def importance(heads: pd.DataFrame) -> tuple[pd.Series, str]:
    """``(importance per row, basis)`` where basis names the column(s) used (see module docstring)."""
    if ABLATION_COLUMN in heads:
        return heads[ABLATION_COLUMN].astype("float64"), ABLATION_COLUMN
    scores = [c for c in IMPORTANCE_SCORES if c in heads]
    if scores:
        return heads[scores].astype("float64").max(axis=1, skipna=True), f"max({', '.join(scores)})"
    if "max_attention_mean" in heads:
        return heads["max_attention_mean"].astype("float64"), "max_attention_mean"
    return pd.Series(np.nan, index=heads.index, dtype="float64"), "none"


def head_table(result: ScanResult, *, rules: Iterable[RoleRule] = ROLE_RULES) -> pd.DataFrame:
    """The scan's per-head table plus ``roles``, ``importance`` and ``importance_rank``.

    Idempotent: derived columns already present are recomputed. ``attrs["importance_basis"]`` says
    what ``importance`` is.
    """
    table = result.heads.drop(columns=[c for c in DERIVED_COLUMNS if c in result.heads]).reset_index(drop=True)
    table["roles"] = head_roles(table, rules=rules)
    table["importance"], basis = importance(table)
    rank = table["importance"].rank(method="first", ascending=False, na_option="bottom")
    table["importance_rank"] = rank.astype("int64")
    table.attrs["importance_basis"] = basis
    return table


def column_meanings(result: ScanResult) -> dict[str, str]:
    """Every column of :func:`head_table` with its one-line meaning."""
    keys = {"layer": "0-based layer", "head": "0-based query head", "kv_head": "key/value head it reads"}
    return {**keys, **result.metadata.get("columns", {}), **DERIVED_COLUMNS}
