"""interp: find out what every attention head of a Hugging Face causal LM does, and how much it matters.

    import interp
    model = interp.load("smollm2-135m")            # HookedModel: hooks, caching, interventions
    logits, cache = model.run_with_cache("Hello", names=lambda n: n.endswith("hook_z"))
    result = interp.scan(model)                    # per-head scores as a DataFrame (result.heads)
"""

__version__ = "0.1.0"

from interp.analyses import ANALYSES, entropy_scores, max_attention_scores, sink_scores
from interp.analyses.context import ScanSettings
from interp.builtin_models import BUILTIN_MODELS, DEFAULT_MODEL
from interp.errors import InterpError
from interp.hooks import ActivationCache, HookedModel, ModelSpec
from interp.kernels import AttentionStats, StatsConfig, attention_with_stats
from interp.loading import load
from interp.report import CircuitReport, write_report
from interp.scan import ScanResult, load_scan, scan, write_scan

__all__ = [
    "CircuitReport",
    "write_report",
    "ANALYSES",
    "ActivationCache",
    "AttentionStats",
    "BUILTIN_MODELS",
    "DEFAULT_MODEL",
    "HookedModel",
    "InterpError",
    "ModelSpec",
    "ScanResult",
    "ScanSettings",
    "StatsConfig",
    "attention_with_stats",
    "entropy_scores",
    "load",
    "load_scan",
    "max_attention_scores",
    "scan",
    "sink_scores",
    "write_scan",
]
