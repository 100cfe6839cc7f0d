"""Edge attribution patching (EAP, Syed et al. 2023) and EAP with integrated gradients (EAP-IG, Hanna et al. 2024).

For an edge ``u -> v`` (``u`` writes the residual stream, ``v`` is one input that reads it):

    EAP(u -> v) = mean over prompts of  sum over positions of  (out_u(corrupted) - out_u(clean)) . dM/d in_v (clean)

the first-order estimate of ``M(clean with only that edge fed its corrupted value) - M(clean)``
(the sign convention of hannamw's EAP-IG). EAP-IG replaces the clean gradient by the mean over
``steps`` runs whose input embeddings are interpolated ``corrupted + k/steps (clean - corrupted)``,
``k = 1..steps`` (hannamw's default, "EAP-IG-inputs").

The other methods of MIB's circuit-localization track, as hannamw's ``attribute.py`` defines them:
"eap-ig-activations" averages the gradient over runs that each replace one node's output (the
embedding, one layer's attention, one MLP) by the constant ``corrupted + k/steps (clean - corrupted)``;
"clean-corrupted" averages the clean run's and the corrupted run's gradient; "exact" scores each edge
by its exact single-edge patching effect (:func:`~interp.circuits.evaluation.patch_edges`).

Cost: two no-grad forwards (clean, corrupted) plus one forward and backward per step, batched over
the dataset. Memory: the upstream differences ``[batch, pos, n_up, d_model]`` and, per layer, the
input gradients ``[batch, pos, slots, d_model]``; scores are one ``[n_up, n_down]`` matrix, never
anything of size edges x tokens x d_model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from interp.catalog import METHODS as METHODS, check_method  # METHODS re-exported
from interp.circuits.edge_scores import EdgeScores, Progress, as_batches
from interp.circuits.evaluation import patch_edges
from interp.circuits.graph import (CircuitGraph, circuit_layout, kv_projections_widen, output_hooks, split_inputs,
                                   upstream_outputs, work_dtype)
from interp.causal.metrics import TaskMetric, get_metric
from interp.causal.pairs import PromptPairs, TaskBatch
from interp.distributed import all_reduce_sum, shard_batches
from interp.errors import InterpError
from interp.hooks import HookedModel, hook_name
from interp.hooks.modules import module_hooks

# Scoring methods (MIB's names; "eap-ig" is MIB's "EAP-IG-inputs", accepted under that name too).
STEP_METHODS = ("eap-ig", "eap-ig-activations")
# Exact scoring runs every edge alone on every prompt; above this many single-prompt forwards it is refused.
EXACT_LIMIT = 1_000_000


def check_exact_cost(graph: CircuitGraph, n_prompts: int, limit: int | None = EXACT_LIMIT) -> int:
    """Single-prompt forwards exact scoring needs (``n_edges x n_prompts``); a one-line error above ``limit``."""
    cost = graph.n_edges * n_prompts
    if limit is not None and cost > limit:
        fits = limit // graph.n_edges
        lower = f"use at most {fits} prompts (--n {fits})" if fits else "use a smaller model"
        raise InterpError(
            f"exact scoring patches each edge alone: {graph.n_edges:,} edges x {n_prompts} prompts = {cost:,} "
            f"single-prompt forwards, over the limit of {limit:,}; {lower}, score with eap-ig, or force it "
            f"(--force-exact, exact_limit=None)")
    return cost


def edge_attribution(
    model: HookedModel,
    data: PromptPairs | Sequence[TaskBatch],
    *,
    method: str = "eap-ig",
    steps: int = 5,
    metric: str | TaskMetric = "logit_diff",
    batch_size: int = 16,
    progress: Progress = None,
    exact_limit: int | None = EXACT_LIMIT,
    ungroup_kv: bool = False,
) -> EdgeScores:
    """Score every edge with ``method`` (MIB's circuit-localization methods, see the module doc):

    ``"eap"``; ``"eap-ig"`` (= ``"eap-ig-inputs"``, ``steps`` interpolation steps of the input embeddings);
    ``"eap-ig-activations"`` (``steps`` steps of each node's activation in turn); ``"clean-corrupted"``
    (the gradient averaged over the clean and the corrupted run); ``"exact"`` (each edge's exact
    single-edge patching effect, refused above ``exact_limit`` single-prompt forwards; None forces it).

    ``progress(n)`` is called after each batch of ``n`` prompts. ``ungroup_kv``: on GQA models, score
    the graph with one k and one v input per query head (MIB's graph, :class:`~interp.circuits.graph.CircuitGraph`).
    """
    method = check_method(method)
    if method in STEP_METHODS and steps < 1:
        raise InterpError(f"{method} needs steps >= 1, got {steps}")
    metric_fn = get_metric(metric)
    graph = CircuitGraph.of(model, ungroup_kv)
    batches = as_batches(model, data, batch_size)
    if method == "exact":
        check_exact_cost(graph, sum(b.size for b in batches), exact_limit)
    scores = torch.zeros(graph.n_up, graph.n_down, dtype=torch.float64)
    wd = work_dtype(model)
    n, clean_total, corrupted_total = 0, 0.0, 0.0
    for batch in shard_batches(batches):  # this rank's rows (all of them in one process)
        clean_logits, clean_out = upstream_outputs(model, batch.clean)
        corrupted_logits, corrupted_out = upstream_outputs(model, batch.corrupted)
        clean_last = batch.last(clean_logits).to(wd)
        clean_total += float(metric_fn(clean_last, batch, clean_last).sum())
        corrupted_total += float(metric_fn(batch.last(corrupted_logits).to(wd), batch, clean_last).sum())
        n += batch.size
        if method == "exact":
            continue  # scored below, over every batch at once
        diff = corrupted_out - clean_out
        real = batch.real()
        if real is not None:  # pads get no gradient; zero their differences too, so they add exactly nothing
            diff.mul_(real[:, :, None, None].to(diff.dtype))
        del corrupted_out, corrupted_logits
        if method == "eap":
            grads = input_gradients(model, batch, metric_fn, clean_last, ungroup_kv=ungroup_kv)
        elif method == "eap-ig":
            grads = None
            for k in range(1, steps + 1):
                # corrupted + k/steps (clean - corrupted), with diff = corrupted - clean
                embed = clean_out[:, :, 0] + (1 - k / steps) * diff[:, :, 0]
                step = input_gradients(model, batch, metric_fn, clean_last, embed=embed, ungroup_kv=ungroup_kv)
                grads = step if grads is None else [g.add_(s) for g, s in zip(grads, step)]
            grads = [g / steps for g in grads]
        elif method == "clean-corrupted":
            grads = input_gradients(model, batch, metric_fn, clean_last, ungroup_kv=ungroup_kv)
            on_corrupted = TaskBatch(batch.corrupted, batch.corrupted, batch.answers, batch.wrong, batch.rows, batch.lengths)
            other = input_gradients(model, on_corrupted, metric_fn, clean_last, ungroup_kv=ungroup_kv)
            grads = [(g + o) / 2 for g, o in zip(grads, other)]
        else:
            grads = activation_ig_gradients(model, batch, metric_fn, clean_last, clean_out, diff, steps, ungroup_kv=ungroup_kv)
        accumulate_scores(graph, scores, diff, grads)
        if progress is not None:
            progress(batch.size)
    if method == "exact":  # patch_edges shards its own rows and combines them
        n, clean_total, corrupted_total = all_reduce_sum(n, clean_total, corrupted_total)
        up, down = torch.nonzero(graph.edge_mask, as_tuple=True)
        edges = list(zip(up.tolist(), down.tolist()))
        effects = patch_edges(model, batches, edges, metric=metric_fn, batch_size=batch_size, progress=progress,
                              ungroup_kv=ungroup_kv)
        scores[up, down] = torch.as_tensor(effects, dtype=torch.float64)
    else:
        scores, n, clean_total, corrupted_total = all_reduce_sum(scores, n, clean_total, corrupted_total)
        scores /= n
    name = metric if isinstance(metric, str) else getattr(metric, "__name__", "custom")
    return EdgeScores(graph, scores, method, steps if method in STEP_METHODS else 0, name,
                      clean_total / n, corrupted_total / n, n)


def interpolated_nodes(graph: CircuitGraph) -> list[tuple[str, int, slice]]:
    """The nodes EAP-IG-activations interpolates one at a time, as MIB does: ``(kind, layer, upstream slice)``
    for the embedding, then per layer its attention (all its nodes at once) and its MLP."""
    nodes = [("embed", -1, slice(0, 1))]
    for layer in range(graph.n_layers):
        first = graph.attn_index(layer)
        mlp = graph.mlp_index(layer)
        nodes += [("attn", layer, slice(first, first + graph.attn_nodes)), ("mlp", layer, slice(mlp, mlp + 1))]
    return nodes


def fixed_node_hooks(model: HookedModel, kind: str, layer: int, fixed: torch.Tensor) -> list[tuple[str, Callable]]:
    """Hooks that make layer ``layer``'s attention (``kind="attn"``, all its nodes) or MLP add the constant
    ``fixed`` ``[batch, pos, d_model]`` to the residual stream instead of its own output, on any architecture.

    The node's live output is read in the same forward as :func:`~interp.circuits.graph.output_hooks`
    defines it, and the stream just after the node writes becomes ``stream - live output + fixed``:
    constant biases stay, and no gradient flows back through the replaced node.
    """
    graph = CircuitGraph.of(model)
    node = graph.attn_index(layer) if kind == "attn" else graph.mlp_index(layer)
    live: list[torch.Tensor] = []

    def store(index: int, value: torch.Tensor) -> None:
        if index == node:
            live[:] = [value.sum(2)]

    def swap(activation, hook):
        stream = activation.reshape(live[0].shape)
        return (stream - live[0] + fixed.to(stream.dtype)).reshape(activation.shape)

    block = f"blocks.{layer}."
    pairs = [(name, fn) for name, fn in output_hooks(model, store) if name.startswith(block)]
    written = "hook_resid_mid" if kind == "attn" and not graph.is_parallel(layer) else "hook_resid_post"
    return pairs + [(hook_name(layer, written), swap)]  # after output_hooks' own hook at that point


def activation_ig_gradients(
    model: HookedModel,
    batch: TaskBatch,
    metric_fn: TaskMetric,
    clean_last: torch.Tensor,
    clean_out: torch.Tensor,
    diff: torch.Tensor,
    steps: int,
    *,
    ungroup_kv: bool = False,
) -> list[torch.Tensor]:
    """EAP-IG-activations' gradient at every input (the layout of :func:`input_gradients`), MIB's definition:
    the mean, over every node ``w`` of :func:`interpolated_nodes` and ``k = 1..steps``, of the gradient on
    the clean prompt with ``w``'s output replaced by the constant ``corrupted + k/steps (clean - corrupted)``
    (so no gradient flows back through ``w`` in that run). ``diff`` is ``corrupted - clean``.

    The ``steps`` runs of one node share one forward and backward (the batch repeated ``steps`` times).
    """
    b = batch.size
    rows = batch.repeat(steps)
    clean_rows = clean_last.repeat(steps, 1)
    # [steps * batch, pos, n_up, d]: step k's rows hold corrupted + k/steps (clean - corrupted)
    weights = torch.tensor([1 - k / steps for k in range(1, steps + 1)], dtype=diff.dtype, device=diff.device)
    total = None
    graph = CircuitGraph.of(model)
    nodes = interpolated_nodes(graph)
    for kind, layer, span in nodes:
        value = (clean_out[None, :, :, span] + weights[:, None, None, None, None] * diff[None, :, :, span]).flatten(0, 1)
        if kind == "embed":
            grads = input_gradients(model, rows, metric_fn, clean_rows, embed=value[:, :, 0], ungroup_kv=ungroup_kv)
        else:
            with model.hooks(fixed_node_hooks(model, kind, layer, value.sum(2))):
                grads = input_gradients(model, rows, metric_fn, clean_rows, ungroup_kv=ungroup_kv)
        grads = [g.reshape(steps, b, *g.shape[1:]).sum(0) for g in grads]
        total = grads if total is None else [t.add_(g) for t, g in zip(total, grads)]
    return [t / (len(nodes) * steps) for t in total]


def input_gradients(
    model: HookedModel,
    batch: TaskBatch,
    metric_fn: TaskMetric,
    clean_last: torch.Tensor,
    *,
    embed: torch.Tensor | None = None,
    ungroup_kv: bool = False,
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

    ``ungroup_kv`` (GQA): the attention slots hold one k and one v input per query head; the fast path
    then widens every layer's keys and values to one head per query head (a copy of its KV head's), so
    that each copy's gradient is its own query head's.
    """
    graph = CircuitGraph.of(model, ungroup_kv)
    wd = work_dtype(model)
    lay = circuit_layout(model)
    if not (lay.fast_qkv and all(n is not None for n in lay.attn_norm) and all(r == "norm" for r in lay.mlp_read)
            and model.layout.ln_final is not None and (not graph.ungroup_kv or kv_projections_widen(model))):
        return _split_gradients(model, batch, metric_fn, clean_last, embed, graph)
    attn_norms, mlp_norms, final_norm = lay.attn_norm, lay.mlp_site, lay.logits_site
    H, KV, D = graph.n_heads, graph.n_kv_heads, model.cfg.d_head
    KI, per = graph.kv_inputs, graph.n_heads // graph.n_kv_heads
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
            if key[0] != "q" and KI != KV:  # ungrouped: one copy of each KV head per query head, [.., H * d_head]
                output = output.reshape(*output.shape[:-1], KV, D).repeat_interleave(per, -2).flatten(-2)
                watched[key] = output
                return output
            watched[key] = output
            return None
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
        for part, heads in (("q", H), ("k", KI), ("v", KI)):
            g = grad_of((part, layer))
            weight = getattr(attention, f"{part}_proj").weight.detach().to(wd).reshape(H if part == "q" else KV, D, -1)
            if heads != weight.shape[0]:
                weight = weight.repeat_interleave(heads // weight.shape[0], 0)
            pulled.append(torch.einsum("bphd,hdm->bphm", g.reshape(*g.shape[:2], heads, D), weight))
        out.append(norm_vjp(attn_norms[layer], norm_inputs[("attn", layer)], torch.cat(pulled, dim=2)))
        out.append(flat_vjp(mlp_norms[layer], ("mlp", layer)))
    out.append(flat_vjp(final_norm, ("logits", graph.n_layers)))
    return out


def _split_gradients(
    model: HookedModel, batch: TaskBatch, metric_fn: TaskMetric, clean_last: torch.Tensor, embed: torch.Tensor | None,
    graph: CircuitGraph,
) -> list[torch.Tensor]:
    """:func:`input_gradients` for any architecture: autograd through :func:`split_inputs` with zero deltas."""
    wd = work_dtype(model)
    deltas: dict[tuple[str, int], torch.Tensor] = {}

    def delta(group: str, layer: int, x: torch.Tensor) -> torch.Tensor:
        shape = (*x.shape[:-1], graph.slots, x.shape[-1]) if group == "attn" else x.shape
        d = torch.zeros(shape, device=x.device, dtype=x.dtype, requires_grad=True)
        deltas[(group, layer)] = d
        return d

    def start(activation, hook):
        return None if embed is None else embed.to(activation.dtype)

    with torch.enable_grad(), split_inputs(model, delta, ungroup_kv=graph.ungroup_kv), model.hooks([(hook_name(0, "hook_resid_pre"), start)]):
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
        y = norm.forward(wide.to(x.dtype))  # .forward: no hook on the norm (hook_resid_mid, ln*.hook_*) sees this copy
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
