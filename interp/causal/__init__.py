"""Causal methods on prompts: what changes when an activation is patched, ablated or knocked out.

Every method takes clean (and corrupted) prompts and a metric with one signature,
``metric(logits [batch, pos, vocab]) -> [batch]`` (:mod:`~interp.causal.metrics`), and returns a tidy
DataFrame. Sweeps replay the clean run from each patched block (:mod:`interp.hooks.replay`).

- :mod:`~interp.causal.patching`: activation patching over (layer, position) or (layer, head);
- :mod:`~interp.causal.attribution`: attribution patching (a first-order estimate of the same grid);
- :mod:`~interp.causal.tracing`: causal tracing (ROME), corrupted subject embeddings restored site by site;
- :mod:`~interp.causal.knockout`: attention knockout (cut edges from chosen keys to queries);
- :mod:`~interp.causal.steering`: steering vectors (contrastive activation addition);
- :mod:`~interp.causal.patchscope`: patchscopes (a hidden state decoded by generating from a target prompt);
- :mod:`~interp.causal.common`: prompts, answers and row patches shared by all of them;
- :mod:`~interp.causal.checks`: the argument checks the CLI also runs before loading a model.
"""

from typing import TYPE_CHECKING

# Public names -> their module, imported on first use (PEP 562), so that the torch-free
# interp.causal.checks answers the CLI's argument checks without importing the methods.
_LAZY = {
    "METRICS": "interp.causal.metrics",
    "answer_prob": "interp.causal.metrics",
    "kl_to_clean": "interp.causal.metrics",
    "logit_diff": "interp.causal.metrics",
    "activation_patching": "interp.causal.patching",
    "plot_patching": "interp.causal.patching",
    "attribution_patching": "interp.causal.attribution",
    "attention_knockout": "interp.causal.knockout",
    "subject_knockout_sweep": "interp.causal.knockout",
    "average_traces": "interp.causal.tracing",
    "causal_trace": "interp.causal.tracing",
    "plot_causal_trace": "interp.causal.tracing",
    "to_rome": "interp.causal.tracing",
    "PromptPairs": "interp.causal.pairs",
    "read_pairs": "interp.causal.pairs",
    "IDENTITY_PROMPT": "interp.causal.patchscope",
    "patchscope": "interp.causal.patchscope",
    "steering_vector": "interp.causal.steering",
}


def __getattr__(name: str):
    import importlib

    if name not in _LAZY:
        raise AttributeError(f"module 'interp.causal' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:
    from interp.causal.attribution import attribution_patching
    from interp.causal.knockout import attention_knockout, subject_knockout_sweep
    from interp.causal.metrics import METRICS, answer_prob, kl_to_clean, logit_diff
    from interp.causal.pairs import PromptPairs, read_pairs
    from interp.causal.patching import activation_patching, plot_patching
    from interp.causal.patchscope import IDENTITY_PROMPT, patchscope
    from interp.causal.steering import steering_vector
    from interp.causal.tracing import average_traces, causal_trace, plot_causal_trace, to_rome

__all__ = [
    "IDENTITY_PROMPT", "patchscope", "steering_vector",
    "METRICS", "PromptPairs", "activation_patching", "answer_prob", "attention_knockout", "attribution_patching",
    "average_traces", "causal_trace", "kl_to_clean", "logit_diff", "plot_causal_trace", "plot_patching",
    "read_pairs", "subject_knockout_sweep", "to_rome",
]
