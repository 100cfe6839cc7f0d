"""Edge scores and the batching every scoring method shares (kept below :mod:`interp.circuits.eap` and
:mod:`interp.circuits.evaluation`, so that scoring can call exact patching without an import cycle)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from interp.circuits.graph import CircuitGraph
from interp.causal.pairs import PromptPairs, TaskBatch
from interp.hooks import HookedModel

Progress = Callable[[int], None] | None


@dataclass
class EdgeScores:
    """Scores for every edge of a model's graph: ``scores[up, down]`` (0 where there is no edge)."""

    graph: CircuitGraph
    scores: torch.Tensor
    method: str
    steps: int
    metric: str
    clean_metric: float
    corrupted_metric: float
    n_prompts: int
    extra: dict[str, Any] = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        """``upstream, downstream, kind, score, abs_score, rank`` per edge, best first (rank 1 = largest |score|)."""
        frame = self.graph.edges_frame(self.scores)
        frame["abs_score"] = frame["score"].abs()
        frame = frame.sort_values("abs_score", ascending=False, kind="stable").reset_index(drop=True)
        frame["rank"] = range(1, len(frame) + 1)
        return frame

    def node_scores(self) -> torch.Tensor:
        """``[n_up]``: each upstream node's total score over its outgoing edges (= node-level EAP)."""
        return self.scores.sum(dim=1)


def as_batches(model: HookedModel, data: PromptPairs | Sequence[TaskBatch], batch_size: int) -> list[TaskBatch]:
    if isinstance(data, PromptPairs):
        batches = data.encode(model, batch_size=batch_size, pad=True)
    else:
        batches = [piece for b in data for piece in b.split(batch_size)]
    return [b.to(model.device) for b in batches]
