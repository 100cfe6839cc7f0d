"""MIB's scoring methods (EAP-IG-activations, clean-corrupted, exact) against references written here.

The references use plain torch forward hooks on the HF modules for node outputs and replacements,
:func:`split_inputs` with zero deltas that require grad for the gradient at every input (autograd
through the widened forward, not interp's hand-pulled gradients), and a hand-written logit difference.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pandas as pd
import pytest
import torch
import typer
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import float64_rms_norms, tiny_model  # noqa: E402

from interp.circuits import CircuitGraph, PromptPairs, edge_attribution, induction_task, split_inputs  # noqa: E402
from interp.errors import InterpError  # noqa: E402
from interp.hooks import HookedModel  # noqa: E402


def _linear_llama() -> torch.nn.Module:
    """A tiny Llama that is linear in its residual stream: norms that pass x through, uniform attention (q, k = 0),
    MLP ``down(up(x))`` (activation replaced by ones). Patching is then exactly first order."""
    hf = tiny_model("llama", seed=3).double()
    hf.model.norm = _LinearNorm()  # another class than RMSNorm, so no closed-form RMSNorm gradient applies
    with torch.no_grad():
        hf.model.embed_tokens.weight.mul_(100)  # without norms the 0.02-scale init gives ~1e-6 scores
        for layer in hf.model.layers:
            layer.input_layernorm, layer.post_attention_layernorm = _LinearNorm(), _LinearNorm()
            layer.self_attn.q_proj.weight.zero_()
            layer.self_attn.k_proj.weight.zero_()
            layer.mlp.act_fn = _Ones()
    return hf


class _LinearNorm(torch.nn.Module):
    """``x`` as a new tensor (an ``nn.Identity`` would hand back the residual stream itself)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1.0


class _Ones(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(x)


@pytest.fixture(scope="module")
def model():
    return HookedModel(float64_rms_norms(tiny_model("llama").double()))


@pytest.fixture(scope="module")
def pairs(model):
    return induction_task(5, model=model, seed=0, block=6, repeat=3)


# ------------------------------------------------------------------------------------------ references
@contextmanager
def _forward_hooks(pairs_):
    with ExitStack() as stack:
        for module, fn in pairs_:
            handle = module.register_forward_hook(fn)
            stack.callback(handle.remove)
        yield


def _node_outputs(hf, tokens: torch.Tensor) -> torch.Tensor:
    """``[batch, pos, n_up, d]``: embed, then per layer each head's ``z_h @ W_O[h]`` and the MLP output."""
    cfg = hf.config
    heads, d_head = cfg.num_attention_heads, cfg.head_dim
    outs: dict[str, torch.Tensor] = {}

    def keep(key, use_input=False):
        def hook(module, args, output):
            outs[key] = (args[0] if use_input else output).detach()
        return hook

    hooks = [(hf.model.embed_tokens, keep("embed"))]
    for layer, block in enumerate(hf.model.layers):
        hooks += [(block.self_attn.o_proj, keep(f"z{layer}", use_input=True)), (block.mlp, keep(f"m{layer}"))]
    with torch.no_grad(), _forward_hooks(hooks):
        hf(tokens)
    columns = [outs["embed"][:, :, None]]
    for layer, block in enumerate(hf.model.layers):
        z = outs[f"z{layer}"].reshape(*tokens.shape, heads, d_head)
        w_o = block.self_attn.o_proj.weight.T.reshape(heads, d_head, -1)
        columns += [torch.einsum("bphd,hdm->bphm", z, w_o), outs[f"m{layer}"][:, :, None]]
    return torch.cat(columns, dim=2)


def _logit_diff(hf, tokens, batch, hooks=()) -> torch.Tensor:
    with _forward_hooks(hooks):
        last = hf(tokens).logits[:, -1]
    return (last.gather(1, batch.answers[:, :1]) - last.gather(1, batch.wrong[:, :1])).sum()


def _input_gradients(model: HookedModel, tokens, batch, hooks=()) -> torch.Tensor:
    """``[batch, pos, n_down, d]``: d (summed logit difference) / d each input's own residual stream, by autograd."""
    graph = CircuitGraph.of(model)
    leaves: dict[tuple[str, int], torch.Tensor] = {}

    def delta(group, layer, x):
        if (group, layer) not in leaves:
            shape = (*x.shape[:2], graph.slots, x.shape[-1]) if group == "attn" else x.shape
            leaves[(group, layer)] = torch.zeros(shape, dtype=x.dtype, requires_grad=True)
        return leaves[(group, layer)]

    with torch.enable_grad(), split_inputs(model, delta):
        value = _logit_diff(model.model, tokens, batch, hooks)
    keys = list(leaves)
    grads = dict(zip(keys, torch.autograd.grad(value, [leaves[k] for k in keys], allow_unused=True)))

    def grad(key):
        g = grads.get(key)
        return torch.zeros_like(leaves[key]) if g is None else g

    columns = []
    for layer in range(graph.n_layers):
        columns += [grad(("attn", layer)), grad(("mlp", layer))[:, :, None]]
    columns.append(grad(("logits", graph.n_layers))[:, :, None])
    return torch.cat(columns, dim=2).detach()


def _scores(graph, diff, grad, n) -> torch.Tensor:
    return torch.einsum("bpud,bpvd->uv", diff, grad) * graph.edge_mask / n


def _replacement(hf, kind: str, layer: int, value: torch.Tensor):
    """A plain forward hook making node ``kind`` (``embed`` / ``attn`` / ``mlp``) output the constant ``value``."""
    if kind == "embed":
        return [(hf.model.embed_tokens, lambda m, a, o: value[:, :, 0].clone())]
    if kind == "attn":  # the attention output is the sum of its heads' results (no o_proj bias in Llama)
        return [(hf.model.layers[layer].self_attn.o_proj, lambda m, a, o: value.sum(2).clone())]
    return [(hf.model.layers[layer].mlp, lambda m, a, o: value[:, :, 0].clone())]


def _reference(model: HookedModel, pairs_, method: str, steps: int = 3) -> torch.Tensor:
    graph = CircuitGraph.of(model)
    hf = model.model
    total = torch.zeros(graph.n_up, graph.n_down, dtype=torch.float64)
    for batch in pairs_.encode(model):
        clean, corrupted = _node_outputs(hf, batch.clean), _node_outputs(hf, batch.corrupted)
        diff = corrupted - clean
        if method == "clean-corrupted":
            grad = (_input_gradients(model, batch.clean, batch) + _input_gradients(model, batch.corrupted, batch)) / 2
        elif method == "eap-ig-activations":
            nodes = [("embed", -1, [0])]
            for layer in range(graph.n_layers):
                first = graph.head_index(layer, 0)
                nodes += [("attn", layer, list(range(first, first + graph.n_heads))), ("mlp", layer, [graph.mlp_index(layer)])]
            grad = 0
            for kind, layer, columns in nodes:
                for k in range(1, steps + 1):
                    value = corrupted[:, :, columns] + k / steps * (clean[:, :, columns] - corrupted[:, :, columns])
                    grad = grad + _input_gradients(model, batch.clean, batch, _replacement(hf, kind, layer, value))
            grad = grad / (len(nodes) * steps)
        else:
            raise ValueError(method)
        total += _scores(graph, diff, grad, 1)
    return total / len(pairs_)


def _exact_reference(model: HookedModel, pairs_) -> torch.Tensor:
    """One forward per edge and prompt batch: only that input reads ``out_u(corrupted)`` instead of ``out_u(clean)``."""
    graph = CircuitGraph.of(model)
    hf = model.model
    total = torch.zeros(graph.n_up, graph.n_down, dtype=torch.float64)
    for batch in pairs_.encode(model):
        diff = _node_outputs(hf, batch.corrupted) - _node_outputs(hf, batch.clean)
        with torch.no_grad():
            base = float(_logit_diff(hf, batch.clean, batch))
        for u, v in torch.nonzero(graph.edge_mask).tolist():
            _, kind, layer = graph.down_info[v]

            def delta(group, at, x, u=u, v=v, kind=kind, layer=layer):
                if at != layer or group != {"q": "attn", "k": "attn", "v": "attn"}.get(kind, kind):
                    return None
                if group == "attn":
                    out = torch.zeros(*x.shape[:2], graph.slots, x.shape[-1], dtype=x.dtype)
                    out[:, :, v - graph.attn_down(layer).start] = diff[:, :, u]
                    return out
                return diff[:, :, u]

            with torch.no_grad(), split_inputs(model, delta):
                total[u, v] += float(_logit_diff(hf, batch.clean, batch)) - base
    return total / len(pairs_)


# ------------------------------------------------------------------------------------------ tests
def test_exact_scores_are_hand_written_single_edge_patches(model, pairs):
    scores = edge_attribution(model, pairs, method="exact")
    expected = _exact_reference(model, pairs)
    assert scores.method == "exact" and scores.steps == 0
    assert float(expected.abs().max()) > 1e-3
    assert torch.allclose(scores.scores, expected, atol=1e-10)


def test_eap_ig_activations_is_the_hand_written_interpolation_loop(model, pairs):
    scores = edge_attribution(model, pairs, method="eap-ig-activations", steps=3)
    expected = _reference(model, pairs, "eap-ig-activations", steps=3)
    assert scores.steps == 3 and float(expected.abs().max()) > 1e-3
    assert torch.allclose(scores.scores, expected, atol=1e-10)
    # not EAP-IG-inputs under another name: interpolating the later nodes changes the scores
    assert not torch.allclose(scores.scores, edge_attribution(model, pairs, method="eap-ig", steps=3).scores, atol=1e-4)


def test_clean_corrupted_averages_the_clean_and_corrupted_gradients(model, pairs):
    scores = edge_attribution(model, pairs, method="clean-corrupted")
    expected = _reference(model, pairs, "clean-corrupted")
    assert float(expected.abs().max()) > 1e-3
    assert torch.allclose(scores.scores, expected, atol=1e-10)


def test_methods_coincide_where_the_model_is_linear_in_its_residual_stream():
    """Linear model: patching is first order, so exact = EAP = EAP-IG-inputs = clean-corrupted. EAP-IG-activations
    also averages runs where one node is a constant (no gradient through it): on edges into the logits nothing
    is cut, and edges into the last MLP lose exactly the run that fixes that MLP, 1 of 2L+1 nodes."""
    model = HookedModel(_linear_llama())
    pairs_ = induction_task(4, model=model, seed=1, block=5, repeat=3)
    graph = CircuitGraph.of(model)
    eap = edge_attribution(model, pairs_, method="eap").scores
    assert float(eap.abs().max()) > 1e-4
    for method in ("exact", "eap-ig", "clean-corrupted"):
        other = edge_attribution(model, pairs_, method=method, steps=3).scores
        assert torch.allclose(other, eap, atol=1e-12, rtol=1e-8), method
    activations = edge_attribution(model, pairs_, method="eap-ig-activations", steps=2).scores
    logits, last_mlp = graph.logits_down, graph.mlp_down(graph.n_layers - 1)
    assert torch.allclose(activations[:, logits], eap[:, logits], atol=1e-12, rtol=1e-8)
    nodes = 2 * graph.n_layers + 1
    assert float(eap[:, last_mlp].abs().max()) > 1e-6
    assert torch.allclose(activations[:, last_mlp], eap[:, last_mlp] * (nodes - 1) / nodes, atol=1e-12, rtol=1e-8)
    assert not torch.allclose(activations, eap, atol=1e-12, rtol=1e-3)  # earlier inputs do lose paths


def test_new_methods_give_right_padded_batches_the_scores_of_batches_of_one_length(model):
    short, long = induction_task(2, model=model, seed=1, block=5, repeat=3), induction_task(2, model=model, seed=2, block=7, repeat=4)
    mixed = PromptPairs(pd.concat([long.frame, short.frame], ignore_index=True), name="mixed")
    padded, grouped = mixed.encode(model, batch_size=8, pad=True), mixed.encode(model)
    assert len(padded) == 1 and padded[0].lengths is not None and len(grouped) == 2
    for method in ("eap-ig-activations", "clean-corrupted", "exact"):
        a, b = edge_attribution(model, padded, method=method, steps=2), edge_attribution(model, grouped, method=method, steps=2)
        assert float(a.scores.abs().max()) > 1e-3
        assert torch.allclose(a.scores, b.scores, atol=1e-9), method


def test_exact_refuses_too_many_forwards_in_one_line_unless_forced(model, pairs):
    graph = CircuitGraph.of(model)
    with pytest.raises(InterpError) as error:
        edge_attribution(model, pairs, method="exact", exact_limit=graph.n_edges * 2)
    message = str(error.value)
    assert "\n" not in message and f"{graph.n_edges * 5:,} single-prompt forwards" in message and "--n 2" in message
    forced = edge_attribution(model, pairs, method="exact", exact_limit=None)
    assert forced.n_prompts == 5


def test_method_names_and_steps_are_checked():
    model = HookedModel(tiny_model("llama"))
    pairs_ = induction_task(2, model=model, seed=0, block=4, repeat=2)
    with pytest.raises(InterpError, match="unknown attribution method 'acdc'"):
        edge_attribution(model, pairs_, method="acdc")
    with pytest.raises(InterpError, match="eap-ig-activations needs steps >= 1"):
        edge_attribution(model, pairs_, method="eap-ig-activations", steps=0)
    assert edge_attribution(model, pairs_, method="EAP-IG-inputs", steps=1).method == "eap-ig"


def test_cli_checks_the_new_methods_before_the_model_loads(tmp_path):
    from interp.cli.circuit import register_commands

    app = typer.Typer()
    register_commands(app)
    app.command("noop")(lambda: None)
    runner = CliRunner()
    missing = str(tmp_path / "no-such-model")  # loading it would fail with another message
    for args, expected in (
        (["--method", "acdc"], "unknown --method 'acdc'"),
        (["--method", "eap-ig-activations", "--steps", "0"], "--steps must be at least 1"),
        (["--method", "eap", "--force-exact"], "--force-exact applies to --method exact only"),
    ):
        result = runner.invoke(app, ["circuit", missing, "--task", "ioi", "--out", str(tmp_path / "out"), *args])
        assert result.exit_code != 0 and expected in result.output, result.output
        assert not (tmp_path / "out").exists()
