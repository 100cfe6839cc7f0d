"""Metrics: the one module that defines what the causal methods and the circuits measure.

Every causal method calls a metric as ``metric(logits [batch, pos, vocab]) -> [batch]`` (:data:`Metric`).
The named task metrics are defined once, on each row's last-position logits and its answers:
``fn(logits [batch, vocab], answers, clean [batch, vocab]) -> [batch]`` (:data:`TaskMetric`), where
``answers`` is anything with ``answers`` and ``wrong`` token ids ``[batch, k]`` padded with -1 (a
:class:`~interp.causal.pairs.TaskBatch`, or :class:`AnswerIds`). Circuits call them batch by batch;
:func:`logit_diff_metric` and :func:`answer_prob_metric` bind them to fixed answers as a :data:`Metric`.

- ``logit_diff``: mean logit of the correct answer(s) minus mean logit of the wrong answer(s);
- ``prob``: total probability of the correct answer(s);
- ``kl``: KL(clean || this run) of the next-token distribution (0 on the clean run, so smaller is
  better: faithfulness still reads 1 = clean, 0 = corrupted).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from interp.errors import InterpError

Metric = Callable[[torch.Tensor], torch.Tensor]
TaskMetric = Callable[[torch.Tensor, Any, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AnswerIds:
    """Correct and wrong answer token ids per row, ``[batch, k]`` each, padded with -1."""

    answers: torch.Tensor
    wrong: torch.Tensor


def _wide(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()


def _gather_mean(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    valid = ids >= 0
    values = logits.gather(1, ids.clamp(min=0).to(logits.device))
    return (values * valid).sum(1) / valid.sum(1)


def logit_diff(logits: torch.Tensor, batch: Any, clean: torch.Tensor | None = None) -> torch.Tensor:
    return _gather_mean(logits, batch.answers) - _gather_mean(logits, batch.wrong)


def answer_prob(logits: torch.Tensor, batch: Any, clean: torch.Tensor | None = None) -> torch.Tensor:
    probs = torch.softmax(_wide(logits), dim=-1)
    ids = batch.answers.to(logits.device)
    valid = ids >= 0
    return (probs.gather(1, ids.clamp(min=0)) * valid).sum(1)


def kl_to_clean(logits: torch.Tensor, batch: Any, clean: torch.Tensor | None = None) -> torch.Tensor:
    if clean is None:
        raise InterpError("the kl metric needs the clean run's logits")
    log_p = torch.log_softmax(_wide(clean), dim=-1)
    log_q = torch.log_softmax(_wide(logits), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


METRICS: dict[str, TaskMetric] = {"logit_diff": logit_diff, "prob": answer_prob, "kl": kl_to_clean}


def get_metric(metric: str | TaskMetric) -> TaskMetric:
    if callable(metric):
        return metric
    if metric not in METRICS:
        raise InterpError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    return METRICS[metric]


def logit_diff_metric(answer_ids: torch.Tensor, *, position: int = -1) -> Metric:
    """:func:`logit_diff` at ``position`` for ``answer_ids [batch, 2]`` (correct, wrong) per row."""
    ids = AnswerIds(answer_ids[:, :1], answer_ids[:, 1:])

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logit_diff(logits[:, position], ids)

    return reads_last_position(metric) if position == -1 else metric


def answer_prob_metric(answer_ids: torch.Tensor | int, *, position: int = -1) -> Metric:
    """:func:`answer_prob` of ``answer_ids`` (an id, or ``[batch]`` ids) at ``position``."""

    def metric(logits: torch.Tensor) -> torch.Tensor:
        ids = torch.as_tensor(answer_ids, device=logits.device).expand(logits.shape[0])[:, None]
        return answer_prob(logits[:, position], AnswerIds(ids, ids.new_full(ids.shape, -1)))

    return reads_last_position(metric) if position == -1 else metric


def next_token_loss(tokens: torch.Tensor) -> Metric:
    """Mean next-token cross-entropy per row: ``logits [batch, pos, vocab]`` against ``tokens [batch, pos]``."""

    def metric(logits: torch.Tensor) -> torch.Tensor:
        targets = tokens.to(logits.device)[:, 1:].expand(logits.shape[0], -1)
        # Row by row: each row's [pos, vocab] is contiguous, and a softmax along its last axis runs
        # several times faster than over the transposed [batch, vocab, pos] layout.
        losses = [
            torch.nn.functional.cross_entropy(logits[row, :-1].float(), targets[row], reduction="none").mean()
            for row in range(logits.shape[0])
        ]
        return torch.stack(losses) if losses else logits.new_zeros(0)

    return metric


def reads_last_position(metric: Metric) -> Metric:
    """Mark ``metric`` as reading only ``logits[:, -1]``: sweeps then unembed the last position alone."""
    metric.last_position_only = True  # type: ignore[attr-defined]
    return metric


def last_position_only(metric: Metric) -> bool:
    """Whether ``metric`` was marked by :func:`reads_last_position` (then it gets ``[batch, 1, vocab]`` logits)."""
    return bool(getattr(metric, "last_position_only", False))


def grouped_metric(metric: Metric, logits: torch.Tensor, group: int) -> torch.Tensor:
    """``[cells]``: the metric averaged over each consecutive group of ``group`` rows."""
    values = [metric(logits[i : i + group]).float().mean() for i in range(0, logits.shape[0], group)]
    return torch.stack(values)
