"""Edge attribution patching (EAP, Syed et al. 2023) and EAP with integrated gradients (EAP-IG, Hanna et al. 2024).

For an edge ``u -> v`` (``u`` writes the residual stream, ``v`` is one input that reads it):

    EAP(u -> v) = mean over prompts of  sum over positions of  (out_u(corrupted) - out_u(clean)) . dM/d in_v (clean)

the first-order estimate of ``M(clean with only that edge fed its corrupted value) - M(clean)``
(the sign convention of hannamw's EAP-IG). EAP-IG replaces the clean gradient by the mean over
``steps`` runs whose input embeddings are interpolated ``corrupted + k/steps (clean - corrupted)``,
``k = 1..steps`` (hannamw's default, "EAP-IG-inputs").

Cost: two no-grad forwards (clean, corrupted) plus one forward and backward per step, batched over
the dataset. Memory: the upstream differences ``[batch, pos, n_up, d_model]`` and, per layer, the
input gradients ``[batch, pos, slots, d_model]``; scores are one ``[n_up, n_down]`` matrix, never
anything of size edges x tokens x d_model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from interp.circuits.graph import CircuitGraph, split_inputs, upstream_outputs, work_dtype
from interp.circuits.metrics import TaskMetric, get_metric
from interp.circuits.tasks import PromptPairs, TaskBatch
from interp.errors import InterpError
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
        batches = data.encode(model, batch_size=batch_size)
    else:
        batches = [piece for b in data for piece in b.split(batch_size)]
    return [b.to(model.device) for b in batches]


def edge_attribution(
    model: HookedModel,
    data: PromptPairs | Sequence[TaskBatch],
    *,
    method: str = "eap-ig",
    steps: int = 5,
    metric: str | TaskMetric = "logit_diff",
    batch_size: int = 16,
    progress: Progress = None,
) -> EdgeScores:
    """Score every edge with ``method`` ``"eap"`` or ``"eap-ig"`` (``steps`` interpolation steps).

    ``progress(n)`` is called after each batch of ``n`` prompts.
    """
    method = method.lower().replace("_", "-")
    if method not in ("eap", "eap-ig"):
        raise InterpError(f"unknown attribution method {method!r}; use 'eap' or 'eap-ig'")
    if method == "eap-ig" and steps < 1:
        raise InterpError(f"EAP-IG needs steps >= 1, got {steps}")
    metric_fn = get_metric(metric)
    graph = CircuitGraph.of(model)
    scores = torch.zeros(graph.n_up, graph.n_down, dtype=torch.float64)
    wd = work_dtype(model)
    n, clean_total, corrupted_total = 0, 0.0, 0.0
    for batch in as_batches(model, data, batch_size):
        clean_logits, clean_out = upstream_outputs(model, batch.clean)
        corrupted_logits, corrupted_out = upstream_outputs(model, batch.corrupted)
        clean_last = clean_logits[:, -1].to(wd)
        clean_total += float(metric_fn(clean_last, batch, clean_last).sum())
        corrupted_total += float(metric_fn(corrupted_logits[:, -1].to(wd), batch, clean_last).sum())
        diff = corrupted_out - clean_out
        del corrupted_out, corrupted_logits
        if method == "eap":
            grads = input_gradients(model, batch, metric_fn, clean_last)
        else:
            grads = None
            for k in range(1, steps + 1):
                # corrupted + k/steps (clean - corrupted), with diff = corrupted - clean
                embed = clean_out[:, :, 0] + (1 - k / steps) * diff[:, :, 0]
                step = input_gradients(model, batch, metric_fn, clean_last, embed=embed)
                grads = step if grads is None else [g.add_(s) for g, s in zip(grads, step)]
            grads = [g / steps for g in grads]
        accumulate_scores(graph, scores, diff, grads)
        n += batch.size
        if progress is not None:
            progress(batch.size)
    scores /= n
    name = metric if isinstance(metric, str) else getattr(metric, "__name__", "custom")
    return EdgeScores(graph, scores, method, steps if method == "eap-ig" else 0, name,
                      clean_total / n, corrupted_total / n, n)


def input_gradients(
    model: HookedModel,
    batch: TaskBatch,
    metric_fn: TaskMetric,
    clean_last: torch.Tensor,
    *,
    embed: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """d (sum over prompts of the metric) / d each input's residual stream, on the clean prompt.

    Returns per layer the attention slots ``[batch, pos, slots, d_model]`` and the MLP input
    ``[batch, pos, d_model]`` (interleaved: attn 0, mlp 0, attn 1, ...), then the logits' input.
    ``embed`` (``[batch, pos, d_model]``) replaces the residual stream entering block 0.
    """
    graph = CircuitGraph.of(model)
    wd = work_dtype(model)
    leaves: dict[tuple[str, int], torch.Tensor] = {}

    def delta(group: str, layer: int, x: torch.Tensor) -> torch.Tensor:
        shape = (*x.shape[:2], graph.slots, x.shape[-1]) if group == "attn" else x.shape
        leaf = torch.zeros(shape, dtype=x.dtype, device=x.device, requires_grad=True)
        leaves[(group, layer)] = leaf
        return leaf

    hooks = []
    if embed is not None:
        hooks.append(("blocks.0.hook_resid_pre", lambda activation, hook: embed.to(activation.dtype)))
    with torch.enable_grad(), split_inputs(model, delta), model.hooks(hooks):
        logits = model(batch.clean)
        value = metric_fn(logits[:, -1].to(wd), batch, clean_last).sum()
        order = [key for layer in range(graph.n_layers) for key in (("attn", layer), ("mlp", layer))]
        order.append(("logits", graph.n_layers))
        grads = torch.autograd.grad(value, [leaves[key] for key in order], allow_unused=True)
    return [torch.zeros_like(leaves[key]) if g is None else g.to(work_dtype(model)) for key, g in zip(order, grads)]


def accumulate_scores(graph: CircuitGraph, scores: torch.Tensor, diff: torch.Tensor, grads: list[torch.Tensor]) -> None:
    """``scores[u, v] += sum over batch, pos, d of diff[.., u, :] * grad_v`` for every edge."""
    for layer in range(graph.n_layers):
        attn, mlp = grads[2 * layer], grads[2 * layer + 1]
        vis = graph.visible_attn(layer)
        scores[:vis, graph.attn_down(layer)] += torch.einsum("bpud,bpsd->us", diff[:, :, :vis], attn).double().cpu()
        vis = graph.visible_mlp(layer)
        scores[:vis, graph.mlp_down(layer)] += torch.einsum("bpud,bpd->u", diff[:, :, :vis], mlp).double().cpu()
    scores[:, graph.logits_down] += torch.einsum("bpud,bpd->u", diff, grads[-1]).double().cpu()
