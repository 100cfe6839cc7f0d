"""Circuits: choose edges, prune them, and evaluate them exactly.

A circuit is a boolean ``[n_up, n_down]`` mask over the graph's edges. Running the circuit means: on
the clean prompt, every input ``v`` reads

    in_v = embed' + sum_u out_u'   where out_u' = out_u (this run) if (u -> v) is in the circuit,
                                                 out_u (corrupted run) otherwise

(``embed'`` likewise), i.e. the residual stream of this run plus, for every edge outside the
circuit, ``out_u(corrupted) - out_u(this run)``. The whole model keeps running; only what flows along
removed edges is replaced. Faithfulness = (M(circuit) - M(corrupted)) / (M(clean) - M(corrupted)).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from interp.circuits.edge_scores import EdgeScores, Progress, as_batches
from interp.circuits.graph import CircuitGraph, output_hooks, split_inputs, upstream_outputs, work_dtype
from interp.causal.metrics import TaskMetric, get_metric
from interp.causal.pairs import PromptPairs, TaskBatch
from interp.distributed import all_reduce_sum, shard_batches
from interp.errors import InterpError
from interp.hooks import HookedModel


# ---------------------------------------------------------------------------------------------- selection
def _feeds(graph: CircuitGraph, down: int) -> list[int]:
    """Upstream nodes whose output an input helps compute (empty for ``logits``)."""
    return graph.feeds(down)


def _inputs_of(graph: CircuitGraph) -> list[list[int]]:
    inputs: list[list[int]] = [[] for _ in range(graph.n_up)]
    for v in range(graph.n_down):
        for u in _feeds(graph, v):
            inputs[u].append(v)
    return inputs


def prune(graph: CircuitGraph, mask: torch.Tensor) -> torch.Tensor:
    """Drop edges that cannot matter: from nodes no circuit path reaches from ``embed``, or into nodes with no path to the logits.

    Both removals leave the circuit's exact evaluation unchanged (such a node's output is its
    corrupted output, or is read by no circuit edge).
    """
    mask = mask.clone() & graph.edge_mask
    inputs_of = _inputs_of(graph)
    reached = torch.zeros(graph.n_up, dtype=torch.bool)
    reached[0] = True
    for u in range(1, graph.n_up):  # an input's sources all run before the node it feeds
        reached[u] = any(bool((mask[:, v] & reached).any()) for v in inputs_of[u])
    mask &= reached[:, None]
    useful = torch.zeros(graph.n_up, dtype=torch.bool)
    useful_input = torch.zeros(graph.n_down, dtype=torch.bool)
    useful_input[graph.logits_down] = True
    for u in range(graph.n_up - 1, -1, -1):
        useful[u] = bool((mask[u] & useful_input).any())
        if useful[u]:
            useful_input[inputs_of[u]] = True
    return mask & useful[:, None] & useful_input[None, :]


def top_n_mask(graph: CircuitGraph, scores: torch.Tensor, n: int, *, absolute: bool = True, pruned: bool = True) -> torch.Tensor:
    """The ``n`` edges with the largest |score| (``absolute``) or score, pruned (see :func:`prune`)."""
    values = scores.abs() if absolute else scores
    values = torch.where(graph.edge_mask, values.double(), torch.tensor(-float("inf"), dtype=torch.float64))
    n = max(0, min(int(n), graph.n_edges))
    mask = torch.zeros_like(graph.edge_mask)
    if n:
        flat = torch.topk(values.flatten(), n).indices
        mask.view(-1)[flat] = True
    return prune(graph, mask) if pruned else mask


SELECTIONS = ("top", "greedy")


def select_edges(graph: CircuitGraph, scores: torch.Tensor, n: int, selection: str = "top") -> torch.Tensor:
    """The pruned ``n``-edge circuit by ``selection``: ``"top"`` (largest |score|) or ``"greedy"`` (grown from the logits)."""
    if selection not in SELECTIONS:
        raise InterpError(f"unknown edge selection {selection!r}; use 'top' or 'greedy'")
    return (top_n_mask if selection == "top" else greedy_mask)(graph, scores, n)


def greedy_mask(graph: CircuitGraph, scores: torch.Tensor, n: int, *, absolute: bool = True, pruned: bool = True) -> torch.Tensor:
    """``n`` edges grown backward from the logits: always the best-scoring edge into a node already in the circuit.

    Unlike :func:`top_n_mask`, every chosen edge has a path to the logits, so no edge is spent on a
    node that nothing downstream reads (hannamw's EAP-IG "greedy" selection). Pruned (see
    :func:`prune`), which then drops the edges out of nodes no circuit path reaches from ``embed``.
    """
    import heapq

    values = (scores.abs() if absolute else scores).double().numpy()
    visible = graph.visible
    inputs_of = _inputs_of(graph)
    n = max(0, min(int(n), graph.n_edges))
    mask = torch.zeros_like(graph.edge_mask)
    heap: list[tuple[float, int, int]] = []
    open_inputs: set[int] = set()

    def open_input(v: int) -> None:  # every edge into input v becomes a candidate
        if v not in open_inputs:
            open_inputs.add(v)
            for u in range(int(visible[v])):
                heapq.heappush(heap, (-float(values[u, v]), u, v))

    open_input(graph.logits_down)
    in_circuit: set[int] = set()
    chosen = 0
    while heap and chosen < n:
        _, u, v = heapq.heappop(heap)
        mask[u, v] = True
        chosen += 1
        if u not in in_circuit:
            in_circuit.add(u)
            for w in inputs_of[u]:
                open_input(w)
    return prune(graph, mask) if pruned else mask


def threshold_mask(graph: CircuitGraph, scores: torch.Tensor, threshold: float, *, absolute: bool = True,
                   pruned: bool = True) -> torch.Tensor:
    values = scores.abs() if absolute else scores
    mask = (values >= threshold) & graph.edge_mask
    return prune(graph, mask) if pruned else mask


# ---------------------------------------------------------------------------------------------- evaluation
def evaluate_circuits(
    model: HookedModel,
    data: PromptPairs | Sequence[TaskBatch],
    masks: Sequence[torch.Tensor],
    *,
    metric: str | TaskMetric = "logit_diff",
    batch_size: int = 16,
    max_rows: int = 32,
    progress: Progress = None,
    ungroup_kv: bool = False,
) -> dict[str, object]:
    """Exact metric of each circuit (``masks``: ``[n_up, n_down]`` bool) plus the clean and corrupted metric.

    Returns ``{"metrics": [float per mask], "clean": float, "corrupted": float, "faithfulness": [...]}``,
    means over prompts. ``ungroup_kv``: the masks are over the graph with one k and v input per query
    head (GQA; :class:`~interp.circuits.graph.CircuitGraph`).
    """
    metric_fn = get_metric(metric)
    graph = CircuitGraph.of(model, ungroup_kv)
    _check_masks(graph, masks)
    masks = [m.to(torch.bool) & graph.edge_mask for m in masks]
    wd = work_dtype(model)
    totals = np.zeros(len(masks))
    clean_total = corrupted_total = 0.0
    n = 0
    for batch in shard_batches(as_batches(model, data, batch_size)):  # this rank's rows (all in one process)
        with torch.no_grad():
            clean_last = batch.last(model(batch.clean)).to(wd)
        corrupted_logits, corrupted_out = upstream_outputs(model, batch.corrupted)
        clean_total += float(metric_fn(clean_last, batch, clean_last).sum())
        corrupted_total += float(metric_fn(batch.last(corrupted_logits).to(wd), batch, clean_last).sum())
        per_chunk = max(1, max_rows // batch.size)
        for start in range(0, len(masks), per_chunk):
            group = masks[start:start + per_chunk]
            values = _run_circuits(model, graph, batch, corrupted_out, group, metric_fn, clean_last)
            totals[start:start + len(group)] += values
        n += batch.size
        if progress is not None:
            progress(batch.size)
    totals, clean_total, corrupted_total, n = all_reduce_sum(totals, clean_total, corrupted_total, n)
    clean, corrupted = clean_total / n, corrupted_total / n
    metrics = (totals / n).tolist()
    return {"metrics": metrics, "clean": clean, "corrupted": corrupted,
            "faithfulness": [faithfulness(m, clean, corrupted) for m in metrics]}


def _check_masks(graph: CircuitGraph, masks: Sequence[torch.Tensor]) -> None:
    for mask in masks:
        if tuple(mask.shape) != tuple(graph.edge_mask.shape):
            other = "ungroup_kv=False" if graph.ungroup_kv else "ungroup_kv=True"
            raise InterpError(f"a circuit mask is {list(mask.shape)} but this graph's edges are {list(graph.edge_mask.shape)}; "
                              f"build the mask on CircuitGraph.of(model, ungroup_kv={graph.ungroup_kv}) or pass {other}")


def faithfulness(value: float, clean: float, corrupted: float) -> float:
    span = clean - corrupted
    return float("nan") if abs(span) < 1e-12 else (value - corrupted) / span


def _run_circuits(model, graph, batch, corrupted_out, masks, metric_fn, clean_last) -> np.ndarray:
    g, b = len(masks), batch.size
    wd = corrupted_out.dtype
    p, d = batch.clean.shape[1], model.cfg.d_model
    kept_all = torch.stack(list(masks)).to(corrupted_out.device)  # [g, n_up, n_down] bool
    current = torch.zeros(g, b, p, graph.n_up, d, device=corrupted_out.device, dtype=wd)
    running = torch.zeros(g, b, p, d, device=corrupted_out.device, dtype=wd)  # sum of this run's outputs so far
    corrupted_cum = torch.cumsum(corrupted_out, dim=2)  # [b, pos, n_up, d]: corrupted sums of prefixes
    # A parallel block's MLP reads what its attention read: the running sum from before the attention wrote.
    before_attn: dict[int, torch.Tensor] = {}

    def store(index, value):
        value = value.detach().to(wd).reshape(g, b, p, -1, d)
        current[:, :, :, index:index + value.shape[3]] = value
        running.add_(value.sum(3))

    def delta(group: str, layer: int, x: torch.Tensor):
        so_far = running
        if group == "attn":
            vis, cols = graph.visible_attn(layer), graph.attn_down(layer)
            if graph.is_parallel(layer):
                before_attn[layer] = running.clone()
        elif group == "mlp":
            vis, cols = graph.visible_mlp(layer), slice(graph.mlp_down(layer), graph.mlp_down(layer) + 1)
            if graph.is_parallel(layer):
                so_far = before_attn.pop(layer)
        else:
            vis, cols = graph.n_up, slice(graph.logits_down, graph.logits_down + 1)
        kept = kept_all[:, :vis, cols]  # [g, vis, slots]
        if bool(kept.all()):
            return None
        removed = ~kept
        kept_rows = torch.nonzero(kept.any(0).any(1)).flatten()
        removed_rows = torch.nonzero(removed.any(0).any(1)).flatten()
        # correction = sum over removed u of (corrupted_u - current_u): sum directly over the removed rows,
        # or as (all rows) - (kept rows), whichever touches fewer upstream nodes.
        if len(removed_rows) <= len(kept_rows) + 1:
            rows, weights, base = removed_rows, removed[:, removed_rows], None
        else:
            rows, weights = kept_rows, kept[:, kept_rows]
            base = corrupted_cum[None, :, :, vis - 1] - so_far  # [g, b, p, d]
        diff = corrupted_out[None, :, :, rows] - current[:, :, :, rows]  # [g, b, p, k, d]
        part = torch.einsum("gbpud,gus->gbpsd", diff, weights.to(wd))
        out = part if base is None else base[:, :, :, None] - part
        shape = (g * b, p, graph.slots, d) if group == "attn" else (g * b, p, d)
        return out.reshape(shape).to(x.dtype)

    tokens = batch.clean.repeat(g, 1)
    with torch.no_grad(), split_inputs(model, delta, ungroup_kv=graph.ungroup_kv), model.hooks(output_hooks(model, store)):
        repeated = batch.repeat(g)
        logits = repeated.last(model(tokens)).to(wd)
    values = metric_fn(logits, repeated, clean_last.repeat(g, 1))
    return values.reshape(g, b).sum(1).double().cpu().numpy()


def patch_edges(
    model: HookedModel,
    data: PromptPairs | Sequence[TaskBatch],
    edges: Sequence[tuple[int, int]],
    *,
    metric: str | TaskMetric = "logit_diff",
    batch_size: int = 16,
    max_rows: int = 64,
    scale: float = 1.0,
    reuse: str = "auto",
    progress: Progress = None,
    ungroup_kv: bool = False,
) -> np.ndarray:
    """Exact effect of each edge alone: ``M(clean with only u -> v fed out_u(corrupted)) - M(clean)``, mean over prompts.

    The quantity EAP and EAP-IG estimate. Edges are ``(up_index, down_index)`` pairs; many edges
    share one batched forward (``max_rows`` rows at a time). ``scale`` patches
    ``out_u(clean) + scale (out_u(corrupted) - out_u(clean))`` instead (a small ``scale`` divided
    out gives the directional derivative EAP computes, for exact checks of the gradients).

    ``reuse="auto"`` (default) replays the clean run up to each edge's downstream block
    (:mod:`interp.hooks.replay`, staggered: edges into later layers join the forward later);
    ``"none"`` runs every edge's forward from the embedding. ``ungroup_kv``: the indices are of the graph
    with one k and v input per query head (GQA).
    """
    from interp.hooks.replay import check_reuse, record

    check_reuse(reuse)
    metric_fn = get_metric(metric)
    graph = CircuitGraph.of(model, ungroup_kv)
    for u, v in edges:
        if not bool(graph.edge_mask[u, v]):
            raise InterpError(f"({u}, {v}) is not an edge of this graph")
    # Edges into later blocks start later: sorted by their downstream block, each chunk is one staggered forward.
    order = sorted(range(len(edges)), key=lambda i: (graph.down_info[edges[i][1]][2], i))
    totals = np.zeros(len(edges))
    wd = work_dtype(model)
    n = 0
    for batch in shard_batches(as_batches(model, data, batch_size)):  # this rank's rows (all in one process)
        clean_logits, clean_out = upstream_outputs(model, batch.clean)
        _, corrupted_out = upstream_outputs(model, batch.corrupted)
        diff = (corrupted_out - clean_out) * scale
        del corrupted_out, clean_out
        clean_last = batch.last(clean_logits).to(wd)
        clean_value = metric_fn(clean_last, batch, clean_last)
        recording = None
        if reuse != "none":
            with torch.no_grad():
                recording, _ = record(model, batch.clean, reuse="layers")  # every position is patched: no prefix
        per_chunk = max(1, max_rows // batch.size)
        for start in range(0, len(edges), per_chunk):
            chunk = order[start:start + per_chunk]
            values = _run_single_edges(model, graph, batch, diff, [edges[i] for i in chunk], metric_fn, clean_last, recording)
            totals[chunk] += values - float(clean_value.sum())
        n += batch.size
        if progress is not None:
            progress(batch.size)
    totals, n = all_reduce_sum(totals, n)
    return totals / n


def _run_single_edges(model, graph, batch, diff, edges, metric_fn, clean_last, recording=None) -> np.ndarray:
    """Metric sums per edge; ``edges`` sorted by downstream layer when ``recording`` (a staggered replay) is given."""
    g, b = len(edges), batch.size
    wd = diff.dtype
    p, d = batch.clean.shape[1], model.cfg.d_model

    def delta(group: str, layer: int, x: torch.Tensor):
        if group == "attn":
            cols = range(graph.attn_down(layer).start, graph.attn_down(layer).stop)
        elif group == "mlp":
            cols = [graph.mlp_down(layer)]
        else:
            cols = [graph.logits_down]
        hits = [(i, u, v) for i, (u, v) in enumerate(edges) if v in cols]
        if not hits:
            return None
        # x holds the edges that have joined the forward so far (all of them without a replay).
        shape = (x.shape[0], p, graph.slots, d) if group == "attn" else (x.shape[0], p, d)
        out = torch.zeros(shape, device=x.device, dtype=x.dtype)
        for i, u, v in hits:
            rows = slice(i * b, (i + 1) * b)
            if group == "attn":
                out[rows, :, v - cols[0]] = diff[:, :, u].to(x.dtype)
            else:
                out[rows] = diff[:, :, u].to(x.dtype)
        return out

    repeated = batch.repeat(g)
    with torch.no_grad(), split_inputs(model, delta, ungroup_kv=graph.ungroup_kv):
        if recording is None:
            logits = model(batch.clean.repeat(g, 1))
        else:
            starts = [graph.down_info[v][2] for _, v in edges]
            logits = recording.run(g, starts=starts, last_only=batch.lengths is None)
        logits = repeated.last(logits).to(wd)
    values = metric_fn(logits, repeated, clean_last.repeat(g, 1))
    return values.reshape(g, b).sum(1).double().cpu().numpy()


def faithfulness_curve(
    model: HookedModel,
    data: PromptPairs | Sequence[TaskBatch],
    scores: EdgeScores,
    ns: Sequence[int],
    *,
    metric: str | TaskMetric | None = None,
    batch_size: int = 16,
    selection: str = "top",
    progress: Progress = None,
) -> pd.DataFrame:
    """Exact faithfulness of the ``n``-edge circuit (pruned) for each ``n``: columns ``n, n_edges, n_nodes, metric, faithfulness``.

    ``selection``: ``"top"`` (:func:`top_n_mask`) or ``"greedy"`` (:func:`greedy_mask`).
    """
    graph = scores.graph
    masks = [select_edges(graph, scores.scores, n, selection) for n in ns]
    result = evaluate_circuits(model, data, masks, metric=metric or scores.metric, batch_size=batch_size,
                               progress=progress, ungroup_kv=graph.ungroup_kv)
    frame = pd.DataFrame({
        "n": list(ns),
        "n_edges": [int(m.sum()) for m in masks],
        "n_nodes": [len(circuit_nodes(graph, m)) for m in masks],
        "metric": result["metrics"],
        "faithfulness": result["faithfulness"],
    })
    frame.attrs.update(clean_metric=result["clean"], corrupted_metric=result["corrupted"], n_total_edges=graph.n_edges)
    return frame


# MIB's circuit-localization grid (hannamw/MIB-circuit-track, evaluate_area_under_curve): fractions of the edges.
MIB_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def mib_sizes(n_edges: int, fractions: Sequence[float] = MIB_FRACTIONS) -> list[int]:
    """Circuit sizes on MIB's grid: ``int(fraction * n_edges)`` per fraction, as MIB rounds them (down)."""
    return [int(f * n_edges) for f in fractions]


def area_under_curve(fractions: Sequence[float], faithfulness: Sequence[float]) -> tuple[float, float]:
    """``(cpr, cmd)``: trapezoid areas over ``fractions`` of faithfulness and of ``|1 - faithfulness|``.

    MIB's ``evaluate_area_under_curve``: the x axis is the raw edge fraction (MIB's grid ends at 1, so
    this equals print_results' normalisation by the last x), no point at 0, and CMD takes
    ``|1 - f|`` at each grid point before the trapezoid (not the absolute of the interpolated line).
    """
    x = [float(f) for f in fractions]
    y = [float(f) for f in faithfulness]
    if len(x) != len(y) or len(x) < 2:
        raise InterpError(f"need at least two (fraction, faithfulness) points of equal count, got {len(x)} and {len(y)}")
    if any(b <= a for a, b in zip(x, x[1:])):
        raise InterpError(f"fractions must increase, got {x}")
    cpr = cmd = 0.0
    for i in range(len(x) - 1):
        width = x[i + 1] - x[i]
        cpr += width * (y[i] + y[i + 1]) / 2
        cmd += width * (abs(1.0 - y[i]) + abs(1.0 - y[i + 1])) / 2
    return cpr, cmd


def mib_curve(curve: pd.DataFrame, n_edges: int, fractions: Sequence[float] = MIB_FRACTIONS) -> pd.DataFrame:
    """MIB's grid rows from a :func:`faithfulness_curve` frame that holds every :func:`mib_sizes` size.

    Columns ``fraction, n, n_edges, n_nodes, metric, faithfulness``; ``attrs`` adds ``cpr`` and ``cmd``.
    """
    by_n = curve.drop_duplicates("n").set_index("n")
    sizes = mib_sizes(n_edges, fractions)
    missing = [n for n in sizes if n not in by_n.index]
    if missing:
        raise InterpError(f"the faithfulness curve lacks MIB grid sizes {missing}; evaluate them with faithfulness_curve")
    frame = by_n.loc[sizes].reset_index()
    frame.insert(0, "fraction", list(fractions))
    cpr, cmd = area_under_curve(frame["fraction"], frame["faithfulness"])
    frame.attrs.update(curve.attrs, cpr=cpr, cmd=cmd)
    return frame


def circuit_nodes(graph: CircuitGraph, mask: torch.Tensor) -> list[str]:
    """Names of the nodes touched by the circuit's edges (upstream names; inputs by their node; ``logits``)."""
    up, down = torch.nonzero(mask, as_tuple=True)
    names = {graph.up_names[u] for u in up.tolist()}
    for v in set(down.tolist()):
        feeds = _feeds(graph, v)
        if not feeds:
            names.add("logits")
        elif graph.down_info[v][1] in ("q", "mlp") or graph.ungroup_kv:  # an ungrouped k/v input is its query head's
            names.add(graph.up_names[feeds[0]])
        # grouped k/v inputs: after pruning, the heads of the group that matter already have outgoing edges
    return sorted(names, key=lambda s: (s != "embed", s == "logits", s))

