"""Checks that refuse degenerate causal-analysis requests with a reason instead of answering with NaN.

One place for both callers: the public functions in :mod:`interp.analyses` call these at their top
(one line each), and the CLI calls the model-free ones before it loads the model. Importing this
module does not import torch.

- :func:`check_trace_args`: ``window >= 1`` (window 0 restores nothing: every cell equals the
  corrupted run), a finite positive ``noise`` (NaN noise makes every probability NaN, 0 corrupts
  nothing), ``samples >= 1``, ``batch_size >= 1``;
- :func:`check_answer_texts` / :func:`check_answer_ids`: correct and wrong answers differ (else the
  logit difference is 0 for every run and ``normalized`` is 0/0);
- :func:`check_prompts_differ`: clean and corrupted prompts differ (else clean == corrupted metric).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from interp.errors import InterpError


def check_batch_size(batch_size: Any) -> None:
    """None means "sized by memory" (the replayed sweeps); anything else must be a positive integer."""
    if batch_size is None:
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InterpError(f"batch_size (--batch-size) must be a positive integer, got {batch_size!r}")


def check_trace_args(*, window: Any, noise: Any, samples: Any, batch_size: Any = 1) -> None:
    """Refuse a causal trace that could only produce constant or NaN cells."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise InterpError(
            f"window (--window) must be at least 1 layer, got {window!r}; with 0 nothing is restored and every "
            f"cell would equal the corrupted run"
        )
    try:
        value = float(noise)
    except (TypeError, ValueError):
        raise InterpError(f"noise (--noise) must be a number, got {noise!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise InterpError(
            f"noise (--noise) must be a finite number above 0 (a multiple of the embedding std), got {noise!r}; "
            f"NaN or inf noise makes every probability NaN and 0 corrupts nothing"
        )
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise InterpError(f"samples (--samples) must be at least 1, got {samples!r}")
    check_batch_size(batch_size)


def check_answer_texts(pairs: Sequence[tuple[str, str]]) -> None:
    """Each ``(correct, wrong)`` pair names two different answers (compared as text)."""
    for correct, wrong in pairs:
        if isinstance(correct, str) and isinstance(wrong, str) and correct == wrong:
            raise InterpError(
                f"answers {correct!r} and {wrong!r} are the same answer: the logit difference would be 0 in every "
                f"run; give two different answers, e.g. ' Mary, John'"
            )


def check_answer_ids(answer_ids: Any) -> None:
    """``answer_ids [prompt, 2]``: correct and wrong token ids differ in every row."""
    same = (answer_ids[:, 0] == answer_ids[:, 1]).nonzero()
    if len(same):
        row = int(same[0, 0])
        raise InterpError(
            f"the correct and wrong answers of prompt {row} are the same token (id {int(answer_ids[row, 0])}): the "
            f"logit difference would be 0 in every run; give two different answers"
        )


def check_prompts_differ(clean_tokens: Any, corrupted_tokens: Any) -> None:
    """Clean and corrupted token ids ``[prompt, pos]`` differ (else clean == corrupted and ``normalized`` is 0/0)."""
    if clean_tokens.shape == corrupted_tokens.shape and bool((clean_tokens == corrupted_tokens).all()):
        raise InterpError(
            "the clean and corrupted prompts are identical, so there is nothing to patch (normalized would be 0/0); "
            "give a corrupted prompt that differs from the clean one"
        )


def check_pair_rows(batch: Any) -> None:
    """Every row of a :class:`~interp.causal.pairs.TaskBatch` can move the logit difference: its corrupted
    prompt differs from the clean one and no correct answer is also a wrong one (the error names the row)."""
    for k, row in enumerate(batch.rows):
        if bool((batch.clean[k] == batch.corrupted[k]).all()):
            raise InterpError(f"row {row}: the corrupted prompt equals the clean prompt, so there is nothing to patch")
        if set(batch.answers[k].tolist()) & set(batch.wrong[k].tolist()) - {-1}:
            raise InterpError(f"row {row}: a correct answer is also a wrong answer; the logit difference would not move")


def check_patching(model: Any, clean: Any, corrupted: Any, answers: Any, metric: Any, batch_size: Any = 1) -> None:
    """Everything :func:`interp.causal.patching` and ``attribution_patching`` refuse up front."""
    from interp.causal.common import answer_pairs, paired_tokens

    check_batch_size(batch_size)
    clean_tokens, corrupted_tokens = paired_tokens(model, clean, corrupted)
    check_prompts_differ(clean_tokens, corrupted_tokens)
    if metric is None and answers is not None:
        if isinstance(answers, tuple | list) and len(answers) == 2 and all(isinstance(a, str) for a in answers):
            check_answer_texts([tuple(answers)])
        check_answer_ids(answer_pairs(model, answers, clean_tokens.shape[0]))
