"""MIB's edge-score JSON (hannamw/EAP-IG ``Graph.to_json``, read by MIB's circuit-localization track).

The file is ``{"cfg": {...}, "nodes": {"input": {"in_graph": ...}, "a0.h0": ..., "m0": ..., "logits": ...},
"edges": {"a0.h0->a1.h2<q>": {"score": ..., "in_graph": ...}, "input->m0": ..., "m1->logits": ...}}``.
Node names: ``input`` (interp's ``embed``), ``a{l}.h{h}``, ``m{l}``, ``logits``; an edge into an attention
head names the query head and the input ``<q>``, ``<k>`` or ``<v>``. Parallel blocks set ``cfg``'s
``parallel_attn_mlp`` (as MIB does). Models whose attention is one node per layer (post-norm blocks,
see :mod:`interp.circuits.graph`) write upstream nodes ``a{l}`` and ``cfg["attention_nodes"] = "layer"``,
interp's extension: such files round-trip through interp but are not comparable with MIB's per-head graphs.

MIB gives every *query* head its own k and v input ("ungrouped" GQA). interp's graph does too with
``ungroup_kv`` (:class:`~interp.circuits.graph.CircuitGraph`), and then export and import map edge to
edge. By default it has one k and one v input per KV head, shared by its ``n_heads / n_kv_heads`` query
heads, and the mapping is:

* export: an edge into KV head ``g``'s k (v) input becomes one MIB edge into each query head of the
  group, each with the KV input's score **divided equally** by the group size and the same ``in_graph``.
  The shared input's gradient is the sum of its per-query-head copies' gradients, so under EAP's
  linear estimate the copies' scores sum to the shared input's score; an equal split is the one
  choice that keeps that sum (the per-copy shares themselves are not known to interp).
* import: a KV input's score is the **sum** of its query heads' MIB scores, and it is ``in_graph`` when
  **any** of them is (a circuit keeping some copies only is not expressible in interp's graph; this is
  its smallest superset). Export then import gives back the scores and circuit exactly (up to float
  rounding of the division). Such an export writes ``cfg["kv_inputs"] = "grouped"`` (interp's
  extension), so that it is not taken for per-query-head scores (:func:`check_mib_scores`).

Without GQA (``n_kv_heads == n_heads``) both directions are the identity.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from interp.circuits.evaluation import circuit_nodes
from interp.circuits.graph import CircuitGraph
from interp.errors import InterpError
from interp.output import write_text_atomic


def _src(name: str) -> str:
    return "input" if name == "embed" else name


def mib_edges(graph: CircuitGraph) -> list[tuple[str, int, int, int]]:
    """``(mib_name, up_index, down_index, group_size)`` for every MIB edge, in ``Graph.from_model``'s order.

    ``group_size`` is the number of MIB edges that share the interp edge (query heads per KV head for
    grouped k/v inputs, else 1; an ungrouped graph, ``graph.ungroup_kv``, maps one to one).
    """
    per = 1 if graph.ungroup_kv else graph.n_heads // graph.n_kv_heads
    ups = graph.up_names
    out: list[tuple[str, int, int, int]] = []
    for layer in range(graph.n_layers):
        base = graph.attn_down(layer).start
        for u in range(graph.visible_attn(layer)):
            for h in range(graph.n_heads):
                g = h // per
                for letter, v, size in (("q", base + h, 1), ("k", base + graph.n_heads + g, per),
                                        ("v", base + graph.n_heads + graph.kv_inputs + g, per)):
                    out.append((f"{_src(ups[u])}->a{layer}.h{h}<{letter}>", u, v, size))
        for u in range(graph.visible_mlp(layer)):
            out.append((f"{_src(ups[u])}->m{layer}", u, graph.mlp_down(layer), 1))
    for u in range(graph.n_up):
        out.append((f"{_src(ups[u])}->logits", u, graph.logits_down, 1))
    return out


def mib_node_names(graph: CircuitGraph) -> list[str]:
    return [_src(name) for name in graph.up_names] + ["logits"]


def to_mib_dict(graph: CircuitGraph, scores: torch.Tensor, circuit: torch.Tensor | None = None, *,
                d_model: int | None = None) -> dict[str, Any]:
    """The MIB JSON object for ``scores`` (``[n_up, n_down]``) and an optional circuit mask (``in_graph``)."""
    if circuit is None:
        circuit = torch.zeros(graph.n_up, graph.n_down, dtype=torch.bool)
    cfg: dict[str, Any] = {"n_layers": graph.n_layers, "n_heads": graph.n_heads, "parallel_attn_mlp": any(graph.parallel),
                           "d_model": int(d_model) if d_model is not None else None}
    if not graph.head_nodes:
        cfg["attention_nodes"] = "layer"  # interp's extension: one upstream node a{l} per layer (post-norm blocks)
    if graph.n_kv_heads != graph.n_heads:
        cfg["n_key_value_heads"] = graph.n_kv_heads  # informational: MIB's names are per query head
        if not graph.ungroup_kv:  # interp's extension: the k/v scores are a KV input's, split equally (module doc)
            cfg["kv_inputs"] = "grouped"
    inside = {_src(n) for n in circuit_nodes(graph, circuit)} if bool(circuit.any()) else set()
    nodes = {name: {"in_graph": name in inside} for name in mib_node_names(graph)}
    values = scores.double()
    edges = {name: {"score": float(values[u, v]) / size, "in_graph": bool(circuit[u, v])}
             for name, u, v, size in mib_edges(graph)}
    return {"cfg": cfg, "nodes": nodes, "edges": edges}


def write_mib_scores(path: str | Path, graph: CircuitGraph, scores: torch.Tensor, circuit: torch.Tensor | None = None,
                     *, d_model: int | None = None) -> Path:
    """Write ``mib_scores.json`` (see :func:`to_mib_dict`); an existing file is replaced."""
    path = Path(path)
    write_text_atomic(path, json.dumps(to_mib_dict(graph, scores, circuit, d_model=d_model)), overwrite=True)
    return path


def _load(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InterpError(f"MIB scores file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InterpError(f"{path} is not readable JSON ({error}); give a file written by Graph.to_json") from None
    if not isinstance(data, dict) or not isinstance(data.get("edges"), dict) or not isinstance(data.get("cfg"), dict):
        raise InterpError(f"{path} has no 'cfg' and 'edges' objects; give a file written by Graph.to_json")
    return data


def _check_edges(path: str | Path, data: dict[str, Any], graph: CircuitGraph) -> list[tuple[str, int, int, int]]:
    expected = mib_edges(graph)
    names = {name for name, *_ in expected}
    got = set(data["edges"])
    if got != names:
        missing, extra = sorted(names - got), sorted(got - names)
        example = f"e.g. missing {missing[0]!r}" if missing else f"e.g. unknown {extra[0]!r}"
        raise InterpError(
            f"{path}'s {len(got)} edges do not match the {len(names)} of a {graph.n_layers}-layer, {graph.n_heads}-head "
            f"graph ({len(missing)} missing, {len(extra)} unknown, {example}); score the same model")
    for name in (expected[0][0], expected[-1][0]):
        entry = data["edges"][name]
        if not isinstance(entry, dict) or not isinstance(entry.get("score"), (int, float)):
            raise InterpError(f"{path}: edge {name!r} has no numeric 'score'; give a file written by Graph.to_json")
    return expected


def check_mib_scores(path: str | Path, *, ungroup_kv: bool = False) -> tuple[int, int]:
    """``(n_layers, n_heads)`` of an MIB scores file after checking its edges match its own ``cfg`` (no model needed).

    ``ungroup_kv``: refuse a file interp wrote from a grouped GQA graph (``cfg["kv_inputs"] == "grouped"``),
    whose per-query-head k/v scores are equal shares of one KV input's, not scores of their own.
    """
    data = _load(path)
    try:
        n_layers, n_heads = int(data["cfg"]["n_layers"]), int(data["cfg"]["n_heads"])
    except (KeyError, TypeError, ValueError):
        raise InterpError(f"{path}: 'cfg' lacks integer n_layers and n_heads; give a file written by Graph.to_json") from None
    if n_layers < 1 or n_heads < 1:
        raise InterpError(f"{path}: cfg has n_layers {n_layers}, n_heads {n_heads}; both must be at least 1")
    head_nodes = data["cfg"].get("attention_nodes", "head") != "layer"
    parallel = (True,) * n_layers if data["cfg"].get("parallel_attn_mlp") else ()
    _check_edges(path, data, CircuitGraph(n_layers, n_heads, n_heads, head_nodes, parallel))  # names do not depend on KV heads
    if ungroup_kv and data["cfg"].get("kv_inputs") == "grouped":
        raise InterpError(f"{path} holds grouped k/v scores (each KV input's score split equally over its query heads, "
                          f"written without --ungroup-kv); evaluate it without --ungroup-kv, or rescore with --ungroup-kv")
    return n_layers, n_heads


def read_mib_scores(path: str | Path, graph: CircuitGraph) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scores [n_up, n_down] float64, in_graph [n_up, n_down] bool)`` from an MIB file, for ``graph``.

    Refuses (one line) a file whose edges are not exactly ``graph``'s in MIB naming. GQA: a KV input's
    score is the sum of its query heads' scores, ``in_graph`` if any is (see the module docstring).
    """
    data = _load(path)
    expected = _check_edges(path, data, graph)
    scores = torch.zeros(graph.n_up, graph.n_down, dtype=torch.float64)
    in_graph = torch.zeros(graph.n_up, graph.n_down, dtype=torch.bool)
    edges = data["edges"]
    for name, u, v, _ in expected:
        entry = edges[name]
        try:
            scores[u, v] += float(entry["score"])
        except (KeyError, TypeError, ValueError):
            raise InterpError(f"{path}: edge {name!r} has no numeric 'score'; give a file written by Graph.to_json") from None
        if entry.get("in_graph"):
            in_graph[u, v] = True
    return scores, in_graph
