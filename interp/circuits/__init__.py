"""Circuit discovery: task datasets, direct logit attribution, edge attribution (EAP, EAP-IG and MIB's other
methods), exact evaluation.

    from interp.circuits import ioi_task, edge_attribution, top_n_mask, evaluate_circuits
    pairs = ioi_task(64, model=model)
    scores = edge_attribution(model, pairs, method="eap-ig", steps=5)
    circuit = top_n_mask(scores.graph, scores.scores, 200)
    evaluate_circuits(model, pairs, [circuit])["faithfulness"]

Graph, hooks and definitions: :mod:`interp.circuits.graph`; scores: :mod:`interp.circuits.eap`;
circuits and faithfulness: :mod:`interp.circuits.evaluation`; DLA and the logit lens:
:mod:`interp.circuits.dla`; MIB's edge-score JSON: :mod:`interp.circuits.mib`; files and the HTML page: :mod:`interp.report.circuit_report`.
"""

from interp.circuits.eap import EdgeScores, edge_attribution
from interp.circuits.evaluation import (
    MIB_FRACTIONS,
    area_under_curve,
    circuit_nodes,
    evaluate_circuits,
    faithfulness,
    faithfulness_curve,
    greedy_mask,
    patch_edges,
    prune,
    select_edges,
    threshold_mask,
    top_n_mask,
)
from interp.causal.metrics import METRICS, answer_prob, kl_to_clean, logit_diff
from interp.causal.pairs import PromptPairs, TaskBatch, read_pairs
from interp.circuits.graph import CircuitGraph, CircuitLayout, circuit_layout, split_inputs
from interp.circuits.mib import read_mib_scores, write_mib_scores
from interp.circuits.tasks import (
    IOI_TEMPLATES,
    TASKS,
    arithmetic_task,
    factual_task,
    greater_than_task,
    induction_task,
    ioi_task,
    make_task,
    mcqa_task,
)

__all__ = [
    "IOI_TEMPLATES", "MIB_FRACTIONS", "area_under_curve", "read_mib_scores", "write_mib_scores", "CircuitGraph", "CircuitLayout", "circuit_layout", "EdgeScores", "METRICS", "PromptPairs", "TASKS", "TaskBatch", "answer_prob", "circuit_nodes",
    "edge_attribution", "evaluate_circuits", "factual_task", "faithfulness", "faithfulness_curve",
    "greater_than_task", "induction_task", "ioi_task", "kl_to_clean", "logit_diff", "make_task", "patch_edges",
    "greedy_mask", "prune", "read_pairs", "select_edges", "split_inputs", "threshold_mask", "top_n_mask",
    "mcqa_task", "arithmetic_task",
]
