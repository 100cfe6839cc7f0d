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

from interp.causal.attribution import attribution_patching
from interp.causal.knockout import attention_knockout, subject_knockout_sweep
from interp.causal.metrics import METRICS, answer_prob, kl_to_clean, logit_diff
from interp.causal.patching import activation_patching, plot_patching
from interp.causal.patchscope import IDENTITY_PROMPT, patchscope
from interp.causal.steering import steering_vector
from interp.causal.tracing import average_traces, causal_trace, plot_causal_trace, to_rome

__all__ = [
    "IDENTITY_PROMPT",
    "METRICS",
    "activation_patching",
    "answer_prob",
    "attention_knockout",
    "attribution_patching",
    "average_traces",
    "causal_trace",
    "kl_to_clean",
    "logit_diff",
    "patchscope",
    "plot_causal_trace",
    "plot_patching",
    "steering_vector",
    "subject_knockout_sweep",
    "to_rome",
]
