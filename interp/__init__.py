"""interp: find out what every attention head of a Hugging Face causal LM does, and how much it matters.

    import interp
    model = interp.load("smollm2-135m")            # HookedModel: hooks, caching, interventions
    logits, cache = model.run_with_cache("Hello", names=lambda n: n.endswith("hook_z"))
    result = interp.scan(model)                    # per-head scores as a DataFrame (result.heads)
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING

from interp import _moved

# Public names -> the module defining them. They are imported on first use (PEP 562), so that
# `import interp.cli` or `import interp.errors` does not pay for torch and transformers.
_LAZY = {
    "ANALYSES": "interp.analyses",
    "entropy_scores": "interp.analyses",
    "max_attention_scores": "interp.analyses",
    "sink_scores": "interp.analyses",
    "ScanSettings": "interp.settings",
    "BUILTIN_MODELS": "interp.models.builtin",
    "DEFAULT_MODEL": "interp.models.builtin",
    "InterpError": "interp.errors",
    "ActivationCache": "interp.hooks",
    "HookedModel": "interp.hooks",
    "ModelSpec": "interp.hooks",
    "AttentionStats": "interp.kernels",
    "StatsConfig": "interp.kernels",
    "attention_with_stats": "interp.kernels",
    "load": "interp.models.loading",
    "SAE": "interp.saes",
    "load_sae": "interp.saes",
    "feature_attribution": "interp.saes.attribution",
    "CircuitReport": "interp.report",
    "ScanReport": "interp.report",
    "write_report": "interp.report",
    "ScanResult": "interp.scanning",
    "load_scan": "interp.scanning",
    "scan": "interp.scanning",
    "write_scan": "interp.scanning",
    "logit_lens": "interp.circuits.dla",
    "patchscope": "interp.causal.patchscope",
    "steering_vector": "interp.causal.steering",
}


_moved.install()  # old module paths (interp.loading, interp.probes, ...) keep importing


def __getattr__(name: str):
    import importlib

    module = _LAZY.get(name)
    if module is None:
        # Subpackages stay reachable as attributes (`interp.analyses.causal_trace`), as with eager imports.
        try:
            return importlib.import_module(f"interp.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"interp.{name}":
                raise
            raise AttributeError(f"module 'interp' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from interp.analyses import ANALYSES, entropy_scores, max_attention_scores, sink_scores
    from interp.models.builtin import BUILTIN_MODELS, DEFAULT_MODEL
    from interp.errors import InterpError
    from interp.hooks import ActivationCache, HookedModel, ModelSpec
    from interp.kernels import AttentionStats, StatsConfig, attention_with_stats
    from interp.models.loading import load
    from interp.report import CircuitReport, ScanReport, write_report
    from interp.saes import SAE, load_sae
    from interp.saes.attribution import feature_attribution
    from interp.scanning import ScanResult, load_scan, scan, write_scan
    from interp.settings import ScanSettings
    from interp.causal.patchscope import patchscope
    from interp.causal.steering import steering_vector
    from interp.circuits.dla import logit_lens

__all__ = [
    "CircuitReport",
    "ScanReport",
    "write_report",
    "ANALYSES",
    "ActivationCache",
    "AttentionStats",
    "BUILTIN_MODELS",
    "DEFAULT_MODEL",
    "HookedModel",
    "InterpError",
    "ModelSpec",
    "SAE",
    "ScanResult",
    "ScanSettings",
    "StatsConfig",
    "attention_with_stats",
    "entropy_scores",
    "feature_attribution",
    "load",
    "load_sae",
    "load_scan",
    "logit_lens",
    "max_attention_scores",
    "patchscope",
    "scan",
    "sink_scores",
    "steering_vector",
    "write_scan",
]
