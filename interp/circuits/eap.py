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

from interp.circuits.graph import CircuitGraph, circuit_layout, split_inputs, upstream_outputs, work_dtype
from interp.causal.metrics import TaskMetric, get_metric
from interp.causal.pairs import PromptPairs, TaskBatch
from interp.distributed import all_reduce_sum, shard_batches
from interp.errors import InterpError
from interp.hooks import HookedModel, hook_name
from interp.hooks.modules import module_hooks

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
    for batch in shard_batches(as_batches(model, data, batch_size)):  # this rank's rows (all in one process)
        clean_logits, clean_out = upstream_outputs(model, batch.clean)
        corrupted_logits, corrupted_out = upstream_outputs(model, batch.corrupted)
        clean_last = batch.last(clean_logits).to(wd)
        clean_total += float(metric_fn(clean_last, batch, clean_last).sum())
        corrupted_total += float(metric_fn(batch.last(corrupted_logits).to(wd), batch, clean_last).sum())
        diff = corrupted_out - clean_out
        real = batch.real()
        if real is not None:  # pads get no gradient; zero their differences too, so they add exactly nothing
            diff.mul_(real[:, :, None, None].to(diff.dtype))
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
    scores, n, clean_total, corrupted_total = all_reduce_sum(scores, n, clean_total, corrupted_total)
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

    Fast path (pre-norm blocks with separate per-head q/k/v projections, as Llama): one ordinary
    forward and backward gives the gradient at every q/k/v projection output, MLP input and
    final-norm output; each slot's gradient is then pulled back by hand through its own head's
    projection weights and its norm (the chain rule :func:`split_inputs` would apply, without
    widening the forward to one residual stream per slot). Any other architecture: autograd through
    :func:`split_inputs` with zero deltas (exact by definition, slower).
    """
    graph = CircuitGraph.of(model)
    wd = work_dtype(model)
    lay = circuit_layout(model)
    if not (lay.fast_qkv and all(n is not None for n in lay.attn_norm) and all(r == "norm" for r in lay.mlp_read)
            and model.layout.ln_final is not None):
        return _split_gradients(model, batch, metric_fn, clean_last, embed)
    attn_norms, mlp_norms, final_norm = lay.attn_norm, lay.mlp_site, lay.logits_site
    H, KV, D = graph.n_heads, graph.n_kv_heads, model.cfg.d_head
    norm_inputs: dict[tuple[str, int], torch.Tensor] = {}
    watched: dict[tuple[str, int], torch.Tensor] = {}

    def keep_norm(key: tuple[str, int]):
        def hook(module, args, output):
            norm_inputs[key] = args[0].detach()
            if key[0] != "attn":
                watched[key] = output  # d metric / d the norm's output, for this input alone
        return hook

    def keep_proj(key: tuple[str, int]):
        def hook(module, args, output):
            watched[key] = output
        return hook

    def start(activation, hook):
        return (activation if embed is None else embed.to(activation.dtype)).detach().requires_grad_(True)

    forward = []
    for layer in range(graph.n_layers):
        attention = model.attention_module(layer)
        forward.append((attn_norms[layer], keep_norm(("attn", layer))))
        forward += [(getattr(attention, f"{part}_proj"), keep_proj((part, layer))) for part in ("q", "k", "v")]
        forward.append((mlp_norms[layer], keep_norm(("mlp", layer))))
    forward.append((final_norm, keep_norm(("logits", graph.n_layers))))
    with module_hooks(forward), torch.enable_grad(), model.hooks([(hook_name(0, "hook_resid_pre"), start)]):
        logits = model(batch.clean)
        value = metric_fn(batch.last(logits).to(wd), batch, clean_last).sum()
        keys = list(watched)
        found = dict(zip(keys, torch.autograd.grad(value, [watched[k] for k in keys], allow_unused=True)))

    def grad_of(key: tuple[str, int]) -> torch.Tensor:
        g = found.get(key)
        return torch.zeros_like(watched[key], dtype=wd) if g is None else g.to(wd)

    def flat_vjp(norm, key):  # blocks that flatten [batch, pos] (OPT) hand the norm [batch*pos, d]
        x, g = norm_inputs[key], grad_of(key)
        return norm_vjp(norm, x, g).reshape(*batch.clean.shape, -1)

    out = []
    for layer in range(graph.n_layers):
        attention = model.attention_module(layer)
        pulled = []
        for part, heads in (("q", H), ("k", KV), ("v", KV)):
            g = grad_of((part, layer))
            weight = getattr(attention, f"{part}_proj").weight.detach().to(wd).reshape(heads, D, -1)
            pulled.append(torch.einsum("bphd,hdm->bphm", g.reshape(*g.shape[:2], heads, D), weight))
        out.append(norm_vjp(attn_norms[layer], norm_inputs[("attn", layer)], torch.cat(pulled, dim=2)))
        out.append(flat_vjp(mlp_norms[layer], ("mlp", layer)))
    out.append(flat_vjp(final_norm, ("logits", graph.n_layers)))
    return out


def _split_gradients(
    model: HookedModel, batch: TaskBatch, metric_fn: TaskMetric, clean_last: torch.Tensor, embed: torch.Tensor | None,
) -> list[torch.Tensor]:
    """:func:`input_gradients` for any architecture: autograd through :func:`split_inputs` with zero deltas."""
    graph = CircuitGraph.of(model)
    wd = work_dtype(model)
    deltas: dict[tuple[str, int], torch.Tensor] = {}

    def delta(group: str, layer: int, x: torch.Tensor) -> torch.Tensor:
        shape = (*x.shape[:-1], graph.slots, x.shape[-1]) if group == "attn" else x.shape
        d = torch.zeros(shape, device=x.device, dtype=x.dtype, requires_grad=True)
        deltas[(group, layer)] = d
        return d

    def start(activation, hook):
        return None if embed is None else embed.to(activation.dtype)

    with torch.enable_grad(), split_inputs(model, delta), model.hooks([(hook_name(0, "hook_resid_pre"), start)]):
        logits = model(batch.clean)
        value = metric_fn(batch.last(logits).to(wd), batch, clean_last).sum()
        keys = list(deltas)
        found = dict(zip(keys, torch.autograd.grad(value, [deltas[k] for k in keys], allow_unused=True)))
    b, p = batch.clean.shape

    def grad_of(key: tuple[str, int], *shape: int) -> torch.Tensor:
        g = found.get(key)
        if g is None:
            return torch.zeros(b, p, *shape, model.cfg.d_model, device=batch.clean.device, dtype=wd)
        return g.to(wd).reshape(b, p, *shape, model.cfg.d_model)

    out = []
    for layer in range(graph.n_layers):
        out += [grad_of(("attn", layer), graph.slots), grad_of(("mlp", layer))]
    out.append(grad_of(("logits", graph.n_layers)))
    return out


def norm_vjp(norm: torch.nn.Module, x: torch.Tensor, cotangent: torch.Tensor) -> torch.Tensor:
    """The norm's vector-Jacobian product at ``x [batch, pos, d]``: ``cotangent [batch, pos, d]`` or
    ``[batch, pos, slots, d]`` (one per slot) -> same shape, the gradient with respect to ``x``.

    Llama-style RMSNorm (``weight * x / rms(x)``, as Llama, Mistral and Qwen use) in closed form;
    any other norm through autograd on a copy of ``x`` per slot.
    """
    wd = cotangent.dtype
    xs = x.to(wd) if cotangent.ndim == x.ndim else x.to(wd).unsqueeze(2)
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    weight = getattr(norm, "weight", None)
    if type(norm).__name__ in _LLAMA_RMSNORMS and isinstance(eps, float) and weight is not None:
        r = torch.rsqrt(xs.pow(2).mean(-1, keepdim=True) + eps)
        a = cotangent * weight.detach().to(wd)
        return r * a - xs * (r.pow(3) * (a * xs).mean(-1, keepdim=True))
    wide = xs.expand_as(cotangent).clone().requires_grad_(True)
    with torch.enable_grad():
        y = norm(wide.to(x.dtype))
        (grad,) = torch.autograd.grad(y, wide, cotangent.to(y.dtype))
    return grad.to(wd)


# Norm classes computing ``weight * x * rsqrt(mean(x^2) + eps)`` (checked against autograd in the tests).
_LLAMA_RMSNORMS = frozenset({"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm"})


def accumulate_scores(graph: CircuitGraph, scores: torch.Tensor, diff: torch.Tensor, grads: list[torch.Tensor]) -> None:
    """``scores[u, v] += sum over batch, pos, d of diff[.., u, :] * grad_v`` for every edge.

    One matrix product ``[n_up, batch*pos*d] @ [batch*pos*d, n_down]`` (non-edges are dropped by the
    mask): far faster than one contraction per layer, which re-reads ``diff`` for each.
    """
    n_up = diff.shape[2]
    flat_diff = diff.permute(2, 0, 1, 3).reshape(n_up, -1)  # [n_up, batch*pos*d]
    columns = []
    for layer in range(graph.n_layers):
        attn, mlp = grads[2 * layer], grads[2 * layer + 1]
        columns += [attn.permute(2, 0, 1, 3).reshape(attn.shape[2], -1), mlp.reshape(1, -1)]
    columns.append(grads[-1].reshape(1, -1))
    flat_grads = torch.cat(columns, dim=0)  # [n_down, batch*pos*d], in downstream index order
    product = (flat_diff @ flat_grads.T).double().cpu()
    scores += product * graph.edge_mask
