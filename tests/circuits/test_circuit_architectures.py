"""Circuits on every architecture of the coverage matrix (issue 21, check (h)), on float64 tiny random models.

Per model type: the full circuit gives the clean metric and the empty circuit the corrupted one, both
computed here from the plain Hugging Face forward (before interp wraps the model); EAP equals a central
difference of single-edge patching on edges into a q, k, v, MLP and logits input; DLA's rows and the logit
lens add up to HF's unembedded final hidden state. The fast per-head
projection path agrees with the generic (attention-probe) path, and a whole pipeline run works on GPT-2
(head nodes, parallel-free, fused c_attn) and Gemma 3 (one attention node per layer).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import generic_tiny_model  # noqa: E402

import interp  # noqa: E402
from interp.causal.pairs import TaskBatch  # noqa: E402
from interp.circuits import CircuitGraph, edge_attribution, evaluate_circuits, patch_edges  # noqa: E402
from interp.circuits import graph as graph_module  # noqa: E402
from interp.circuits.dla import direct_logit_attribution, logit_lens  # noqa: E402
from interp.circuits.graph import circuit_layout  # noqa: E402
from interp.errors import InterpError  # noqa: E402
from interp.models.coverage import TESTED  # noqa: E402

# Model types whose blocks circuits cannot express exactly, with the reason they are refused (docs/circuits.md).
REFUSED: dict[str, str] = {
    "minicpm3": "rescales the final norm's output before the unembedding",
}
SUPPORTED = [t for t in TESTED if t not in REFUSED]
# Known granularity: post-norm / sandwich-norm blocks get one attention node per layer.
# Post-norm / sandwich-norm blocks get one attention node per layer, and so do norms on the concatenated heads
# before the output projection (hook_result would not be one head's output alone).
LAYER_NODES = {"gemma2", "gemma3_text", "olmo2", "olmo3", "flex_olmo", "exaone4", "glm4", "hyperclovax", "kolibri1",
               "afmoe", "beam", "bitnet", "diffllama", "jetmoe", "laguna"}
EPS = 1e-3  # a few types keep float32 islands (rounding ~1e-9): smaller steps would measure those


@pytest.fixture
def float64_everywhere(monkeypatch):
    """HF norms, eager softmax and a few routers round to float32 inside a float64 model; keep float64 tensors float64."""
    to, flt = torch.Tensor.to, torch.Tensor.float

    def keep_to(self, *args, **kwargs):
        if self.dtype == torch.float64:
            args = tuple(torch.float64 if a is torch.float32 else a for a in args)
            if kwargs.get("dtype") is torch.float32:
                kwargs["dtype"] = torch.float64
        return to(self, *args, **kwargs)

    def keep_float(self, *args, **kwargs):
        return self if self.dtype == torch.float64 else flt(self, *args, **kwargs)

    kind = torch.Tensor.type

    def keep_type(self, *args, **kwargs):  # routers: hidden_states.type(torch.float32)
        if self.dtype == torch.float64 and args and args[0] is torch.float32:
            return self
        return kind(self, *args, **kwargs)

    softmax = torch.nn.functional.softmax

    def keep_softmax(x, *args, **kwargs):
        if x.dtype == torch.float64 and kwargs.get("dtype") is torch.float32:
            kwargs["dtype"] = torch.float64
        return softmax(x, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", keep_to)
    monkeypatch.setattr(torch.Tensor, "float", keep_float)
    monkeypatch.setattr(torch.Tensor, "type", keep_type)
    monkeypatch.setattr(torch.nn.functional, "softmax", keep_softmax)


def _plain(model_type: str) -> torch.nn.Module:
    model = generic_tiny_model(model_type).double()
    if hasattr(model.config, "_experts_implementation"):
        model.config._experts_implementation = "eager"  # grouped_mm has no float64 kernel
    return model


def _batch(vocab: int) -> TaskBatch:
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(3, vocab, (2, 5), generator=g)
    corrupted = clean.clone()
    corrupted[:, 1] = torch.randint(3, vocab, (2,), generator=g)
    corrupted[:, 3] = torch.randint(3, vocab, (2,), generator=g)
    return TaskBatch(clean, corrupted, torch.tensor([[4], [5]]), torch.tensor([[6], [7]]), [0, 1])


def _logit_diff(plain: torch.nn.Module, tokens: torch.Tensor, batch: TaskBatch) -> float:
    with torch.no_grad():
        last = plain(input_ids=tokens, use_cache=False).logits[:, -1].double()
    rows = torch.arange(2)
    return float((last[rows, batch.answers[:, 0]] - last[rows, batch.wrong[:, 0]]).mean())


def _edges(graph: CircuitGraph) -> list[tuple[int, int]]:
    """Edges into the last layer's q, k, v (head 1, KV head 0) and MLP, and into the logits."""
    last = graph.n_layers - 1
    attn = graph.attn_down(last).start
    return [(0, attn + 1), (graph.mlp_index(0), attn + graph.n_heads), (graph.attn_index(0), attn + graph.n_heads + graph.n_kv_heads),
            (1, graph.mlp_down(last)), (graph.mlp_index(last), graph.logits_down), (graph.attn_index(last), graph.logits_down)]


@pytest.mark.parametrize("model_type", SUPPORTED)
def test_circuits_are_exact(model_type, float64_everywhere):
    plain = _plain(model_type)
    batch = _batch(plain.config.vocab_size if hasattr(plain.config, "vocab_size") else 64)
    clean, corrupted = _logit_diff(plain, batch.clean, batch), _logit_diff(plain, batch.corrupted, batch)
    with torch.no_grad():  # HF's last hidden state is the final norm's output: the unembedding alone, no soft-capping
        final = plain(input_ids=batch.clean, output_hidden_states=True, use_cache=False).hidden_states[-1][:, -1]
        unembedded = plain.get_output_embeddings()(final).double()
    rows = torch.arange(2)
    unembedded_diff = float((unembedded[rows, batch.answers[:, 0]] - unembedded[rows, batch.wrong[:, 0]]).mean())
    model = interp.load(plain)
    graph = CircuitGraph.of(model)
    assert graph.granularity == ("layer" if model_type in LAYER_NODES else "head")
    result = evaluate_circuits(model, [batch], [graph.edge_mask, torch.zeros_like(graph.edge_mask)])
    assert abs(result["clean"] - clean) < 1e-5 and abs(result["corrupted"] - corrupted) < 1e-5
    assert abs(result["metrics"][0] - clean) < 1e-5, "full circuit != clean run"
    assert abs(result["metrics"][1] - corrupted) < 1e-5, "empty circuit != corrupted run"
    edges = _edges(graph)
    scores = edge_attribution(model, [batch], method="eap")
    eap = np.array([float(scores.scores[u, v]) for u, v in edges])
    plus = patch_edges(model, [batch], edges, scale=EPS, reuse="none")
    minus = patch_edges(model, [batch], edges, scale=-EPS, reuse="none")
    central = (plus - minus) / (2 * EPS)
    assert np.abs(eap).max() > 1e-6  # the check compares something
    np.testing.assert_allclose(eap, central, atol=1e-5 * max(1.0, np.abs(eap).max()), rtol=0)
    # DLA's rows (frozen final-norm scale) and the logit lens at the last layer both add up to the unembedded logits.
    dla = direct_logit_attribution(model, [batch])
    assert abs(dla.attrs["total"] - unembedded_diff) < 1e-6
    assert set(dla["node"]) >= {"embed", "bias", graph.up_names[-1]}
    assert abs(logit_lens(model, [batch])["logit_diff"].iloc[-1] - unembedded_diff) < 1e-6


@pytest.mark.parametrize("model_type", ["llama", "qwen3", "gemma3_text"])
def test_fast_projection_path_equals_the_generic_attention_probe(model_type, float64_everywhere):
    """The hand-sliced q/k/v projections and the probe through hook_q/k/v give the same patched runs and gradients."""
    model = interp.load(_plain(model_type))
    batch = _batch(model.cfg.d_vocab)
    fast = circuit_layout(model)
    assert fast.fast_qkv
    graph = CircuitGraph.of(model)
    edges = _edges(graph)
    exact_fast = patch_edges(model, [batch], edges, reuse="none")
    scores_fast = edge_attribution(model, [batch], method="eap").scores
    graph_module._CACHE[model] = replace(fast, fast_qkv=False)
    try:
        exact_generic = patch_edges(model, [batch], edges, reuse="none")
        scores_generic = edge_attribution(model, [batch], method="eap").scores
    finally:
        graph_module._CACHE[model] = fast
    np.testing.assert_allclose(exact_fast, exact_generic, atol=1e-10)
    torch.testing.assert_close(scores_fast, scores_generic, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("model_type", sorted(REFUSED))
def test_unsupported_types_are_refused_in_one_line(model_type):
    from interp.circuits import ioi_task  # noqa: F401 - the package imports

    model = interp.load(generic_tiny_model(model_type))
    assert model(torch.tensor([[3, 4, 5]])).shape[-1] == model.cfg.d_vocab  # hooks still work
    with pytest.raises(InterpError) as error:
        CircuitGraph.of(model)
    message = str(error.value)
    assert "\n" not in message and model_type in message and "not a sum of node outputs" in message


@pytest.mark.parametrize("model_type", ["gpt2", "gemma3_text"])
def test_pipeline_files_name_the_node_granularity(model_type, tmp_path):
    from interp.circuits import induction_task
    from interp.circuits.pipeline import discover_circuit
    from interp.circuits.mib import read_mib_scores
    from interp.report.circuit_report import page_data

    model = interp.load(generic_tiny_model(model_type))
    pairs = induction_task(4, model=model, seed=0, block=4, repeat=2)
    result = discover_circuit(model, pairs, method="eap", verify=3, sizes=[5, 20])
    out = result.save(tmp_path / "circuit")
    summary = json.loads((out / "circuit.json").read_text())
    granularity = "layer" if model_type == "gemma3_text" else "head"
    assert summary["graph"]["attention_nodes"] == granularity
    names = set(result.edges()["upstream"])
    assert ("a0" in names) == (granularity == "layer") and ("a0.h0" in names) == (granularity == "head")
    scores, _ = read_mib_scores(out / "mib_scores.json", result.graph)
    torch.testing.assert_close(scores, result.scores.scores * result.graph.edge_mask, atol=1e-9, rtol=1e-9)
    data = page_data(summary, result.edges())
    ups = set(result.graph.up_names)
    assert all(set(fed) <= ups for fed in data["feeds"].values())
    assert set(result.nodes()["kind"]) >= ({"attn"} if granularity == "layer" else {"head"})
