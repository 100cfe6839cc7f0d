"""The one declaration of every scan analysis: its name, one-sentence description and columns.

Each analysis module registers its scan entry under a name declared here
(:func:`interp.analyses.registry.register`), which takes the columns and description from this table.
Kept free of torch, so that ``interp analyses`` and the CLI's argument checks answer in well under a
second. Order = the scan's column order.
"""

from __future__ import annotations

from interp.errors import InterpError

# Names the CLI checks before anything heavy is imported; tests keep them equal to the registries
# they name (interp.circuits.tasks.TASKS, interp.causal.metrics.METRICS).
TASK_NAMES: tuple[str, ...] = ("ioi", "greater_than", "induction", "factual", "mcqa", "arithmetic", "arithmetic_subtraction")
# The corruptions a task offers (``--counterfactual``; the first is the default), equal to the tasks' own tuples.
TASK_COUNTERFACTUALS: dict[str, tuple[str, ...]] = {
    "ioi": ("abc", "s2_io_flip"),
    "mcqa": ("symbol", "answerPosition", "randomLetter", "answerPosition_randomLetter"),
    "arithmetic": ("random", "ones_op1", "ones_op2", "tens_op1", "tens_op2"),
    "arithmetic_subtraction": ("random", "ones_op1", "ones_op2", "tens_op1", "tens_op2"),
}
METRIC_NAMES: tuple[str, ...] = ("logit_diff", "prob", "kl")

CATALOG: dict[str, dict] = {'sink': {'description': 'Attention sinks: mass each head puts on the first token(s); secondary sinks; model sink '
                         'rate.',
          'columns': {'sink_mass': 'mean attention probability on the first token (queries p>=1, natural text)',
                      'sink_mass_first_k': 'mean attention probability on the first n_sink tokens (default 4)',
                      'sink_alpha0': 'Gu et al. alpha_0: attention the first token receives per query that sees it '
                                     '(natural text)',
                      'sink_has_sink': 'sink_alpha0 > epsilon (0.3)'}},
 'entropy': {'description': 'Attention entropy: collapsed versus diffuse heads.',
             'columns': {'entropy_mean': 'mean attention entropy in nats (queries p>=1, natural text)',
                         'entropy_normalized': 'mean of entropy / log(visible keys): 0 = one-hot, 1 = uniform'}},
 'max_attention': {'description': 'Maximum attention: how peaked each head is.',
                   'columns': {'max_attention_mean': 'mean over queries of the largest attention probability '
                                                     '(natural text)',
                               'max_attention_repeated': 'the same on repeated random tokens'}},
 'previous_token': {'description': 'previous-token heads: attention on the previous token.',
                    'columns': {'previous_token_score': 'mean attention mass on the previous token, over queries '
                                                        'that have one (repeated random tokens)',
                                'previous_token_score_tl': "TransformerLens detect_head 'mul' score on the same "
                                                           'tokens (mass summed over all queries / count)',
                                'previous_token_score_natural': 'as previous_token_score, on natural text'}},
 'duplicate_token': {'description': 'duplicate-token heads: attention on the earlier occurrences of the current '
                                    'token.',
                     'columns': {'duplicate_token_score': 'mean attention mass on the earlier occurrences of the '
                                                          'current token, over queries that have one (repeated '
                                                          'random tokens)',
                                 'duplicate_token_score_tl': "TransformerLens detect_head 'mul' score on the same "
                                                             'tokens (mass summed over all queries / count)',
                                 'duplicate_token_score_natural': 'as duplicate_token_score, on natural text'}},
 'induction': {'description': 'induction heads: attention on the token after an earlier occurrence of the current '
                              'token.',
               'columns': {'induction_score': 'mean attention mass on the token after an earlier occurrence of the '
                                              'current token, over queries that have one (repeated random tokens)',
                           'induction_score_tl': "TransformerLens detect_head 'mul' score on the same tokens (mass "
                                                 'summed over all queries / count)',
                           'induction_score_natural': 'as induction_score, on natural text'}},
 'dormant': {'description': "Active/dormant heads: how a head's sink mass changes with the input domain.",
             'columns': {'dormant_sink_natural': 'sink mass (first token) on natural text',
                         'dormant_sink_code': 'sink mass on Python code',
                         'dormant_sink_repeated': 'sink mass on repeated random tokens',
                         'dormant_sink_range': 'max minus min sink mass over the three domains',
                         'dormant_switching': 'dormant (sink mass >= 0.9) on one domain and active (< 0.5) on '
                                              'another'}},
 'value_norm': {'description': "Value-norm drain: how small the first token's value vectors are.",
                'columns': {'value_norm_first': 'mean L2 norm of the value vector at the first token (natural text)',
                            'value_norm_ratio': 'value_norm_first / mean value norm at positions p >= 1'}},
 'retrieval': {'description': "Retrieval heads: heads that copy the needle's answer while the model retrieves it.",
               'columns': {'retrieval_score': 'Wu et al. copy-paste score on needle-in-a-haystack prompts (mean over '
                                              'retrieved samples)',
                           'retrieval_head': 'retrieval_score > 0.1'}},
 'streaming': {'description': 'Streaming heads: what a head loses when it only sees sink tokens plus a recent '
                              'window.',
               'columns': {'streaming_mass_outside': 'attention mass outside first 4 + last 256 tokens (queries p >= '
                                                     '260, natural text)',
                           'streaming_score': 'answer-loss increase (nats/token) on needle prompts when this head '
                                              'alone sees only sink + window (NaN unless --streaming-per-head)',
                           'streaming_score_kv': "the same with the head's whole KV group restricted (DuoAttention "
                                                 'granularity)'}},
 'head_ablation': {'description': 'Head importance: loss increase on natural text when each head is mean-ablated.',
                   'columns': {'head_ablation_loss_delta': "increase in mean next-token loss (nats) when the head's "
                                                           'output is replaced by its mean (natural text)'}}}


def analysis_names(names: str | list[str] | None) -> list[str]:
    """The analyses ``names`` selects (comma-separated or list; None = all), checked like
    :func:`interp.analyses.resolve_analyses` but without importing the analyses."""
    if names is None:
        return list(CATALOG)
    wanted = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    if not wanted:
        raise InterpError(f"--analyses is empty; choose from: {', '.join(CATALOG)}")
    unknown = [n for n in wanted if n not in CATALOG]
    if unknown:
        raise InterpError(f"unknown analysis {', '.join(unknown)}; choose from: {', '.join(CATALOG)}")
    return list(dict.fromkeys(wanted))


# Edge-scoring methods of interp.circuits.eap (MIB's circuit-localization methods), checked without torch.
METHODS: tuple[str, ...] = ("eap", "eap-ig", "eap-ig-activations", "clean-corrupted", "exact")
_METHOD_ALIASES = {"eap-ig-inputs": "eap-ig"}


def check_method(method: str) -> str:
    """The canonical name of an edge-scoring method (see :data:`METHODS`), or a one-line error."""
    name = method.lower().replace("_", "-")
    name = _METHOD_ALIASES.get(name, name)
    if name not in METHODS:
        raise InterpError(f"unknown attribution method {method!r}; use one of {', '.join(METHODS)} "
                          f"(eap-ig-inputs is eap-ig)")
    return name
