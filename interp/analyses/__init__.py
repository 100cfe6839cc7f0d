"""Analyses: each module computes one family of per-head scores and registers its scan entry.

Public functions return tidy DataFrames with one row per (layer, head)."""

from interp.analyses import sink, entropy, max_attention, token_roles, dormant, value_norm, retrieval, streaming  # noqa: F401,I001  (registration order = column order)
from interp.analyses.entropy import entropy_scores
from interp.analyses.head_stats import head_frame, head_stat_means
from interp.analyses.max_attention import max_attention_scores
from interp.analyses.registry import ANALYSES, Analysis, register, resolve_analyses
from interp.analyses.retrieval import retrieval_ablation_check, retrieval_scores
from interp.analyses.streaming import mass_outside, streaming_head_mask, streaming_scores
from interp.analyses.sink import secondary_sinks, sink_rate, sink_scores
from interp.analyses.value_norm import value_norm_scores
from interp.analyses.token_roles import role_scores, role_targets, token_role_scores

__all__ = [
    "ANALYSES",
    "Analysis",
    "entropy_scores",
    "head_frame",
    "head_stat_means",
    "max_attention_scores",
    "register",
    "resolve_analyses",
    "retrieval_ablation_check",
    "retrieval_scores",
    "role_scores",
    "role_targets",
    "secondary_sinks",
    "sink_rate",
    "sink_scores",
    "mass_outside",
    "streaming_head_mask",
    "streaming_scores",
    "value_norm_scores",
    "token_role_scores",
]
