"""One call from a task to a circuit: scores, faithfulness curve, chosen circuit, DLA, exact checks, files.

``discover_circuit(model, pairs)`` returns a :class:`CircuitResult`; ``result.save(DIR)`` writes

* ``edges.csv`` / ``edges.parquet``: every edge, ``upstream, downstream, kind, score, abs_score,
  rank, in_circuit`` (best first);
* ``nodes.csv``: every node, ``node, kind, layer, head, dla, eap, in_circuit`` (+ the scan's
  ``roles`` and scores with ``scan_dir``);
* ``logit_lens.csv``, ``faithfulness.csv``, ``verification.csv`` (EAP score vs exact patching for a
  sample of top edges);
* ``circuit.json`` (settings, metrics, the circuit's edges and nodes, MIB's ``cpr`` / ``cmd`` and grid
  rows) and ``circuit.html``;
* ``mib_scores.json``: every edge's score in MIB's format (:mod:`interp.circuits.mib`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from interp.circuits.dla import direct_logit_attribution, logit_lens
from interp.circuits.eap import EXACT_LIMIT, EdgeScores, edge_attribution
from interp.circuits.graph import CircuitGraph
from interp.circuits.evaluation import (SELECTIONS, circuit_nodes, faithfulness_curve, mib_curve, mib_sizes, patch_edges,
                                        select_edges)
from interp.causal.metrics import TaskMetric
from interp.causal.pairs import PromptPairs
from interp.errors import InterpError
from interp.hooks import HookedModel

SCHEMA_VERSION = 1
# A step callback: (description, total units or None) -> advance(units) function.
StepProgress = Callable[[str, int | None], Callable[[int], None]]


def default_sizes(n_edges: int) -> list[int]:
    """Circuit sizes for the faithfulness curve: 1, 2, 5, 10, 20, 50, ... up to every edge."""
    sizes, base = [], 1
    while base < n_edges:
        sizes += [s for s in (base, 2 * base, 5 * base) if s < n_edges]
        base *= 10
    return sorted(set(sizes + [n_edges]))


@dataclass
class CircuitResult:
    model_name: str
    task: str
    scores: EdgeScores
    circuit: torch.Tensor
    curve: pd.DataFrame
    dla: pd.DataFrame
    lens: pd.DataFrame
    verification: pd.DataFrame
    settings: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    roles: pd.DataFrame | None = None
    mib: pd.DataFrame | None = None  # MIB's edge-fraction grid (evaluation.mib_curve); attrs hold cpr and cmd

    @property
    def graph(self):
        return self.scores.graph

    def edges(self) -> pd.DataFrame:
        frame = self.scores.frame()
        frame["in_circuit"] = self.circuit[torch.as_tensor(frame["up_index"].to_numpy().copy()),
                                          torch.as_tensor(frame["down_index"].to_numpy().copy())].numpy()
        return frame[["upstream", "downstream", "kind", "score", "abs_score", "rank", "in_circuit", "up_index",
                      "down_index"]]

    def nodes(self) -> pd.DataFrame:
        frame = self.dla[self.dla["kind"] != "bias"].copy().reset_index(drop=True)
        node_scores = self.scores.node_scores().numpy()
        frame["eap"] = [float(node_scores[i]) for i in range(len(frame))]
        inside = set(circuit_nodes(self.graph, self.circuit))
        frame = pd.concat([frame, pd.DataFrame([{"node": "logits", "kind": "logits", "layer": self.graph.n_layers,
                                                "head": -1, "dla": np.nan, "eap": np.nan}])], ignore_index=True)
        frame["in_circuit"] = frame["node"].isin(inside)
        if self.roles is not None:
            frame = frame.merge(self.roles, on=["layer", "head"], how="left")
            frame.loc[frame["kind"] != "head", [c for c in self.roles.columns if c not in ("layer", "head")]] = np.nan
            if "roles" in frame:
                frame["roles"] = frame["roles"].fillna("")
        return frame

    def faithfulness_rows(self) -> pd.DataFrame:
        """faithfulness.csv: the size curve (``fraction`` empty), then one row per MIB grid point (``fraction`` set)."""
        sizes = self.curve.copy()
        sizes.insert(0, "fraction", np.nan)
        if self.mib is None:
            return sizes
        return pd.concat([sizes, self.mib[sizes.columns]], ignore_index=True)

    def summary(self) -> dict[str, Any]:
        inside = self.curve.attrs
        chosen = self.settings["n_circuit"]
        row = self.curve[self.curve["n"] == chosen]
        up, down = torch.nonzero(self.circuit, as_tuple=True)
        info = self.graph.down_info
        edges = [{"upstream": self.graph.up_names[u], "downstream": info[v][0], "kind": info[v][1],
                  "score": float(self.scores.scores[u, v])} for u, v in zip(up.tolist(), down.tolist())]
        edges.sort(key=lambda e: -abs(e["score"]))
        verification = {}
        if len(self.verification):
            v = self.verification
            verification = {"n_edges": int(len(v)), "spearman": float(v["score"].rank().corr(v["exact"].rank())),
                            "pearson": float(v["score"].corr(v["exact"]))}
        return {
            "schema_version": SCHEMA_VERSION,
            "model": self.model_name,
            "task": self.task,
            "settings": self.settings,
            "clean_metric": self.scores.clean_metric,
            "corrupted_metric": self.scores.corrupted_metric,
            "n_graph_edges": self.graph.n_edges,
            "graph": {"n_layers": self.graph.n_layers, "n_heads": self.graph.n_heads, "n_kv_heads": self.graph.n_kv_heads,
                      # "head": a node per attention head; "layer": one attention node a{l} per layer (post-norm blocks)
                      "attention_nodes": self.graph.granularity, "parallel": any(self.graph.parallel),
                      # True: k and v inputs per query head (MIB's graph); False: per KV head (or no GQA)
                      "ungroup_kv": self.graph.ungroup_kv},
            "circuit": {
                "n_selected": chosen,
                "n_edges": int(self.circuit.sum()),
                "faithfulness": float(row["faithfulness"].iloc[0]) if len(row) else None,
                "metric": float(row["metric"].iloc[0]) if len(row) else None,
                "nodes": circuit_nodes(self.graph, self.circuit),
                "edges": edges,
            },
            "faithfulness_curve": self.curve.to_dict(orient="records"),
            "cpr": self.mib.attrs["cpr"] if self.mib is not None else None,
            "cmd": self.mib.attrs["cmd"] if self.mib is not None else None,
            "mib_curve": self.mib.to_dict(orient="records") if self.mib is not None else [],
            "curve_clean_metric": inside.get("clean_metric"),
            "curve_corrupted_metric": inside.get("corrupted_metric"),
            "dla_logit_diff": self.dla.attrs.get("logit_diff"),
            "verification": verification,
            "timings_s": self.timings,
        }

    def save(self, out: str | Path, *, scan_dir: str | Path | None = None) -> Path:
        """Write every file into the folder ``out`` (created; existing files replaced)."""
        from interp.report.circuit_report import circuit_html

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        edges = self.edges()
        edges.to_csv(out / "edges.csv", index=False)
        edges.to_parquet(out / "edges.parquet", index=False)
        self.nodes().to_csv(out / "nodes.csv", index=False)
        self.lens.to_csv(out / "logit_lens.csv", index=False)
        self.faithfulness_rows().to_csv(out / "faithfulness.csv", index=False)
        from interp.circuits.mib import write_mib_scores

        write_mib_scores(out / "mib_scores.json", self.graph, self.scores.scores, self.circuit,
                         d_model=self.settings.get("d_model"))
        self.verification.to_csv(out / "verification.csv", index=False)
        summary = self.summary()
        (out / "circuit.json").write_text(json.dumps(summary, indent=2, default=_json_default), encoding="utf-8")
        (out / "circuit.html").write_text(circuit_html(self), encoding="utf-8")
        return out


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _noop_progress(description: str, total: int | None) -> Callable[[int], None]:
    return lambda n: None


def discover_circuit(
    model: HookedModel,
    pairs: PromptPairs,
    *,
    method: str = "eap-ig",
    steps: int = 5,
    metric: str | TaskMetric = "logit_diff",
    n_edges: int | None = None,
    sizes: Sequence[int] | None = None,
    target_faithfulness: float = 0.8,
    selection: str = "top",
    verify: int = 20,
    batch_size: int = 16,
    roles: pd.DataFrame | None = None,
    scores: EdgeScores | None = None,
    progress: StepProgress | None = None,
    exact_limit: int | None = EXACT_LIMIT,
    ungroup_kv: bool = False,
) -> CircuitResult:
    """Score every edge, evaluate top-n circuits exactly, pick one, and check the scores by patching.

    ``n_edges``: size of the reported circuit (top-n by |score|, then pruned); by default the
    smallest size in the curve (``sizes``, default :func:`default_sizes`) whose faithfulness reaches
    ``target_faithfulness`` (else the largest). ``selection``: ``"top"`` or ``"greedy"`` edges
    (:func:`~interp.circuits.evaluation.select_edges`). ``verify``: how many top edges to patch one at a time
    for ``verification.csv`` (0 = none). ``scores``: evaluate these edge scores (e.g. read from an MIB
    file) instead of computing them. ``method``: any of :data:`~interp.circuits.eap.METHODS`; ``exact_limit``
    as in :func:`~interp.circuits.eap.edge_attribution`. The MIB grid (:data:`~interp.circuits.evaluation.MIB_FRACTIONS`) is
    evaluated with the curve, giving ``result.mib`` and CPR / CMD. ``ungroup_kv``: on GQA models, the
    graph with one k and v input per query head (MIB's edges; ``scores`` must be for that graph too).
    """
    if selection not in SELECTIONS:  # before the long steps
        raise InterpError(f"unknown edge selection {selection!r}; use 'top' or 'greedy'")
    progress = progress or _noop_progress
    timings: dict[str, float] = {}
    n_prompts = len(pairs)
    batches = pairs.encode(model, batch_size=batch_size, pad=True)  # checks every row before any model work

    start = time.perf_counter()
    if scores is None:
        scores = edge_attribution(model, batches, method=method, steps=steps, metric=metric, batch_size=batch_size,
                                  progress=progress(f"{method.upper()} edge scores", n_prompts), exact_limit=exact_limit,
                                  ungroup_kv=ungroup_kv)
    elif scores.graph != CircuitGraph.of(model, ungroup_kv):
        raise InterpError(f"the scores are for a graph {scores.graph} but the model's is {CircuitGraph.of(model, ungroup_kv)}")
    timings["attribution"] = time.perf_counter() - start

    graph = scores.graph
    sizes = sorted(set(int(s) for s in (sizes or default_sizes(graph.n_edges))) | ({int(n_edges)} if n_edges else set()))
    grid = mib_sizes(graph.n_edges)
    start = time.perf_counter()
    both = faithfulness_curve(model, batches, scores, sorted(set(sizes) | set(grid)), metric=metric, batch_size=batch_size,
                              selection=selection, progress=progress("faithfulness curve (exact)", n_prompts))
    curve = both[both["n"].isin(sizes)].reset_index(drop=True)
    curve.attrs.update(both.attrs)
    mib = mib_curve(both, graph.n_edges)
    timings["faithfulness_curve"] = time.perf_counter() - start
    if scores.n_prompts == 0:  # scores read from a file: the clean / corrupted metrics are this evaluation's
        scores.clean_metric, scores.corrupted_metric = curve.attrs["clean_metric"], curve.attrs["corrupted_metric"]
    if n_edges is None:
        good = curve[curve["faithfulness"] >= target_faithfulness]
        n_edges = int(good["n"].iloc[0]) if len(good) else int(curve["n"].iloc[-1])
    circuit = select_edges(graph, scores.scores, n_edges, selection)

    start = time.perf_counter()
    dla = direct_logit_attribution(model, batches, batch_size=batch_size)
    lens = logit_lens(model, batches, batch_size=batch_size)
    timings["dla_and_lens"] = time.perf_counter() - start

    verification = pd.DataFrame(columns=["upstream", "downstream", "kind", "score", "exact"])
    if verify:
        top = scores.frame().head(int(verify))
        start = time.perf_counter()
        exact = patch_edges(model, batches, list(zip(top["up_index"], top["down_index"])), metric=metric,
                            batch_size=batch_size, ungroup_kv=graph.ungroup_kv,
                            progress=progress(f"exact patching of the top {len(top)} edges", n_prompts))
        timings["verification"] = time.perf_counter() - start
        verification = top[["upstream", "downstream", "kind", "score"]].copy()
        verification["exact"] = exact

    settings = {"method": scores.method, "steps": scores.steps, "metric": scores.metric, "n_prompts": n_prompts,
                "batch_size": batch_size, "d_model": model.cfg.d_model, "selection": selection, "n_circuit": int(n_edges), "target_faithfulness": target_faithfulness,
                **pairs.meta}
    return CircuitResult(model.cfg.name, pairs.name, scores, circuit, curve, dla, lens, verification, settings,
                         timings, roles, mib)


def scan_roles(scan_dir: str | Path) -> pd.DataFrame:
    """``layer, head, roles`` and the scan's main scores from a scan folder (for nodes.csv and node colours)."""
    from interp.report import load_heads

    heads = load_heads(scan_dir)
    if "roles" not in heads.columns:
        from interp.scanning.table import head_roles

        heads = heads.copy()
        heads["roles"] = head_roles(heads)
    wanted = ["layer", "head", "roles"] + [c for c in ("importance", "previous_token_score", "induction_score",
                                                       "duplicate_token_score", "sink_mass") if c in heads.columns]
    return heads[wanted].copy()
