"""Analyses: the registered per-head scores of a scan, one family per module.

Nine of the modules register a scan entry (:mod:`~interp.analyses.registry`, declared in
:mod:`interp.catalog`); :mod:`~interp.analyses.head_stats`, :mod:`~interp.analyses.context`,
:mod:`~interp.analyses.probes`, :mod:`~interp.analyses.needles`, :mod:`~interp.analyses.composition`
and :mod:`~interp.analyses.split` (sharing the work over torchrun ranks) are what they share. Public functions return tidy DataFrames with one row per (layer, head).

The causal methods live in :mod:`interp.causal`; their names stay importable from here for old code.
"""

import sys
import types

from interp.analyses import sink, entropy, max_attention, token_roles, dormant, value_norm, retrieval, streaming, head_ablation  # noqa: F401,I001  (registration order = column order)
from interp.causal.attribution import attribution_patching
from interp.causal.knockout import attention_knockout, subject_knockout_sweep
from interp.causal.patching import activation_patching, plot_patching
from interp.causal.tracing import average_traces, causal_trace, plot_causal_trace, to_rome
from interp.analyses.composition import composition_scores
from interp.analyses.entropy import entropy_scores
from interp.analyses.head_ablation import joint_ablation
from interp.analyses.head_ablation import head_ablation as head_ablation_scores
from interp.analyses.head_stats import head_frame, head_stat_means
from interp.analyses.max_attention import max_attention_scores
from interp.analyses.registry import ANALYSES, Analysis, register, resolve_analyses
from interp.analyses.retrieval import retrieval_ablation_check, retrieval_scores
from interp.analyses.streaming import kv_head_table, mass_outside, streaming_head_mask, streaming_scores
from interp.analyses.sink import secondary_sinks, sink_rate, sink_scores
from interp.analyses.value_norm import value_norm_scores
from interp.analyses.token_roles import role_scores, role_targets, token_role_scores

__all__ = [
    "activation_patching",
    "attention_knockout",
    "attribution_patching",
    "average_traces",
    "causal_trace",
    "composition_scores",
    "head_ablation_scores",
    "joint_ablation",
    "plot_causal_trace",
    "plot_patching",
    "subject_knockout_sweep",
    "to_rome",
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
    "kv_head_table",
    "mass_outside",
    "streaming_head_mask",
    "streaming_scores",
    "value_norm_scores",
    "token_role_scores",
]


class _KeepFunctions(types.ModuleType):
    """Importing an old module path such as ``interp.analyses.activation_patching`` (now
    ``interp.causal.patching``, see :mod:`interp._moved`) makes Python bind that module here, over the
    function of the same name; only real submodules of this package are bound."""

    def __setattr__(self, name: str, value: object) -> None:
        if isinstance(value, types.ModuleType) and not value.__name__.startswith(f"{self.__name__}."):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _KeepFunctions
