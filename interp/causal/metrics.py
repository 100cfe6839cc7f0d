"""Task metrics on the last position: ``metric(logits [batch, vocab], batch, clean_logits [batch, vocab]) -> [batch]``.

``logit_diff``: mean logit of the correct answer(s) minus mean logit of the wrong answer(s);
``prob``: total probability of the correct answer(s); ``kl``: KL(clean || this run) of the next-token
distribution (0 on the clean run, so smaller is better: faithfulness still reads 1 = clean, 0 = corrupted).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from interp.causal.pairs import TaskBatch
from interp.errors import InterpError

TaskMetric = Callable[[torch.Tensor, TaskBatch, torch.Tensor], torch.Tensor]


def _wide(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()


def _gather_mean(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    valid = ids >= 0
    values = logits.gather(1, ids.clamp(min=0).to(logits.device))
    return (values * valid).sum(1) / valid.sum(1)


def logit_diff(logits: torch.Tensor, batch: TaskBatch, clean: torch.Tensor | None = None) -> torch.Tensor:
    return _gather_mean(logits, batch.answers) - _gather_mean(logits, batch.wrong)


def answer_prob(logits: torch.Tensor, batch: TaskBatch, clean: torch.Tensor | None = None) -> torch.Tensor:
    probs = torch.softmax(_wide(logits), dim=-1)
    ids = batch.answers.to(logits.device)
    valid = ids >= 0
    return (probs.gather(1, ids.clamp(min=0)) * valid).sum(1)


def kl_to_clean(logits: torch.Tensor, batch: TaskBatch, clean: torch.Tensor | None = None) -> torch.Tensor:
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
