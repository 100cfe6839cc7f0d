"""Direct logit attribution and the logit lens, on a task's clean prompts at the last position.

DLA: each upstream node's output at the last position (``embed``, every head's ``hook_result``,
every MLP's output), passed through the final norm with its scale frozen from the clean run
(TransformerLens' ``apply_ln_to_stack``: divide by the clean residual's rms, or centre each output
and divide by the clean residual's standard deviation for a LayerNorm, then apply the norm's gain), then through the unembedding, projected on the metric's
direction ``mean W_U[answers] - mean W_U[wrong]``. The residual stream is exactly the sum of these
outputs (plus constant biases and the norm's offset, reported as ``bias``), so the rows sum to the logit difference.

Logit lens: the residual stream after each block, through the (unfrozen) final norm and the
unembedding: the logit difference and answer probability it would give on a task, or, on one
prompt, the top tokens it would predict (the frame :func:`interp.patchscope` returns too).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from interp.circuits.eap import as_batches
from interp.circuits.graph import CircuitGraph, upstream_outputs, work_dtype
from interp.causal.metrics import _gather_mean, answer_prob
from interp.causal.pairs import PromptPairs, TaskBatch
from interp.errors import InterpError
from interp.hooks import HookedModel, hook_name
from interp.hooks.layout import norm_scale


def _final_norm(model: HookedModel) -> torch.nn.Module:
    """The norm whose output reaches the unembedding (identity where there is none)."""
    site = model.layout.ln_final
    return torch.nn.Identity() if site is None else model.model.get_submodule(site.path)


def _frozen_norm(model: HookedModel, wd: torch.dtype) -> tuple[str | None, float, torch.Tensor, torch.Tensor]:
    """``(kind, eps, gain, offset)`` of the final norm ``y = gain * xhat + offset`` (``kind`` None: no norm).

    Read from the module on ``u`` and ``-u`` (``u`` alternating +-1, whose normalisation is known and far
    from 0), so any per-feature affine RMSNorm or LayerNorm works (Gemma's ``1 + weight`` included). A norm
    whose formula or eps the layout could not read (OLMo's parameter-free LayerNorm) is tried with common
    eps values and used only if one reproduces the module on a small-variance input.
    """
    site = model.layout.ln_final
    d = model.cfg.d_model
    device = next(model.model.parameters()).device
    if site is None:
        return None, 0.0, torch.ones(d, dtype=wd, device=device), torch.zeros(d, dtype=wd, device=device)
    norm = model.model.get_submodule(site.path)
    dtype = next(model.model.parameters()).dtype
    u = (1.0 - 2.0 * (torch.arange(d, device=device) % 2)).to(torch.float64)
    probe = 0.01 * torch.linspace(-1.0, 2.0, d, device=device, dtype=torch.float64) ** 3  # small variance: eps matters
    with torch.no_grad():
        plus, minus, seen = (norm(s[None].to(dtype))[0].to(wd) for s in (u, -u, probe))
    kinds = (site.kind,) if site.kind is not None else ("rms", "layer")
    epsilons = (site.eps,) if site.eps is not None else (1e-5, 1e-6, 1e-8, 1e-12, 0.0)
    tolerance = 1e-4 if dtype in (torch.float32, torch.float64) else 3e-2
    for kind in kinds:
        for eps in epsilons:
            gain, offset = (plus - minus) / (2 * _xhat(u, kind, eps).to(wd)), (plus + minus) / 2
            fitted = gain * _xhat(probe, kind, eps).to(wd) + offset
            if float((fitted - seen).abs().max()) <= tolerance * max(float(seen.abs().max()), 1e-30):
                return kind, float(eps), gain, offset
    raise InterpError(f"direct logit attribution needs an RMSNorm or LayerNorm final norm, got {site.cls} at {site.path}")


def _xhat(x: torch.Tensor, kind: str, eps: float) -> torch.Tensor:
    centred = x - x.mean() if kind == "layer" else x
    return centred / torch.sqrt(centred.pow(2).mean() + eps)


def _unembed(model: HookedModel) -> torch.nn.Module:
    return model.model.get_output_embeddings()


def direct_logit_attribution(
    model: HookedModel,
    data: PromptPairs | Sequence[TaskBatch],
    *,
    batch_size: int = 16,
) -> pd.DataFrame:
    """Per node: ``node, kind`` (embed, head, attn (a whole layer's attention), mlp, bias)``, layer, head, dla`` (mean over prompts of its share of the logit difference).

    ``attrs``: ``logit_diff`` (the model's actual mean logit difference) and ``total`` (the sum of
    the rows; equal up to float error).
    """
    graph = CircuitGraph.of(model)
    wd = work_dtype(model)
    kind, eps, gain, offset = _frozen_norm(model, wd)
    unembed = _unembed(model)
    totals = torch.zeros(graph.n_up + 1, dtype=torch.float64)
    actual, n = 0.0, 0
    for batch in as_batches(model, data, batch_size):
        resid: dict[str, torch.Tensor] = {}

        def keep(activation, hook):
            resid["final"] = activation.detach()

        last = hook_name(graph.n_layers - 1, "hook_resid_post")
        logits, outputs = upstream_outputs(model, batch.clean, extra_hooks=[(last, keep)])
        final = batch.last(resid["final"]).to(wd)  # [batch, d_model]
        parts = batch.last(outputs)  # [batch, n_up, d_model]
        bias = final - parts.sum(1)
        parts = torch.cat([parts, bias[:, None]], dim=1)
        if kind == "layer":  # centring is linear: each part is centred on its own
            parts = parts - parts.mean(-1, keepdim=True)
        if kind is None:
            scale = torch.ones(final.shape[0], 1, dtype=wd, device=final.device)
        else:
            scale = 1 / norm_scale(final, kind, eps).to(wd)  # frozen from the clean run
        direction = _direction(unembed.weight.detach().to(wd), batch)  # [batch, d_model]
        contributions = torch.einsum("bnd,bd->bn", parts * scale[:, None] * gain, direction)
        contributions[:, -1] += (offset[None] * direction).sum(-1)  # the norm's bias is a constant
        lm_bias = getattr(unembed, "bias", None)
        lm_bias = None if lm_bias is None else lm_bias.detach()
        if lm_bias is not None:
            contributions[:, -1] += _gather_mean(lm_bias.to(wd)[None].expand(batch.size, -1), batch.answers) - \
                _gather_mean(lm_bias.to(wd)[None].expand(batch.size, -1), batch.wrong)
        totals += contributions.sum(0).double().cpu()
        last_logits = batch.last(logits).to(wd)
        actual += float((_gather_mean(last_logits, batch.answers) - _gather_mean(last_logits, batch.wrong)).sum())
        n += batch.size
    totals /= n
    rows = []
    for index, name in enumerate(graph.up_names + ["bias"]):
        if name == "embed":
            kind, layer, head = "embed", -1, -1
        elif name == "bias":
            kind, layer, head = "bias", -1, -1
        elif name.startswith("m"):
            kind, layer, head = "mlp", int(name[1:]), -1
        elif ".h" in name:
            layer_text, head_text = name[1:].split(".h")
            kind, layer, head = "head", int(layer_text), int(head_text)
        else:  # one attention node per layer (post-norm blocks)
            kind, layer, head = "attn", int(name[1:]), -1
        rows.append({"node": name, "kind": kind, "layer": layer, "head": head, "dla": float(totals[index])})
    frame = pd.DataFrame(rows)
    frame.attrs.update(logit_diff=actual / n, total=float(totals.sum()))
    return frame


def _direction(w_u: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    def mean_rows(ids: torch.Tensor) -> torch.Tensor:
        valid = (ids >= 0).to(w_u.dtype)
        rows = w_u[ids.clamp(min=0).to(w_u.device)]  # [batch, k, d_model]
        return (rows * valid[..., None]).sum(1) / valid.sum(1, keepdim=True)

    return mean_rows(batch.answers) - mean_rows(batch.wrong)


def logit_lens(
    model: HookedModel,
    data: str | torch.Tensor | PromptPairs | Sequence[TaskBatch],
    *,
    position: int | None = -1,
    k: int = 5,
    batch_size: int = 16,
) -> pd.DataFrame:
    """The residual stream after each layer (-1 = the embedding), read out through the final norm and unembedding.

    On one prompt (text or token ids): ``layer, position, token, top_tokens, top_probs``, the ``k`` most
    likely next tokens at ``position`` (None: every position), the layout of :func:`interp.patchscope`.
    On a task (prompt pairs or batches): ``layer, logit_diff, prob``, means over prompts.
    """
    if isinstance(data, (str, torch.Tensor)):
        return _prompt_lens(model, data, position=position, k=k)
    return _task_lens(model, data, batch_size=batch_size)


def _prompt_lens(model: HookedModel, prompt: str | torch.Tensor, *, position: int | None, k: int) -> pd.DataFrame:
    from interp.causal.common import check_positions, prompt_tokens, token_strings
    from interp.causal.patchscope import top_tokens

    tokens = prompt_tokens(model, prompt)[:1]
    positions = check_positions(tokens.shape[1], None if position is None else [position])
    final_norm = _final_norm(model)
    unembed = _unembed(model)
    names = [hook_name(0, "hook_resid_pre")] + [hook_name(layer, "hook_resid_post") for layer in range(model.cfg.n_layers)]
    texts = token_strings(model, tokens[0])
    rows = []
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names=names)
        for layer, name in zip(range(-1, model.cfg.n_layers), names):
            logits = unembed(final_norm(cache[name][0, positions]))
            tops, probs = top_tokens(model, logits, k)
            rows += [dict(layer=layer, position=p, token=texts[p], top_tokens=t, top_probs=q)
                     for p, t, q in zip(positions, tops, probs)]
    return pd.DataFrame(rows)


def _task_lens(model: HookedModel, data: PromptPairs | Sequence[TaskBatch], *, batch_size: int) -> pd.DataFrame:
    graph = CircuitGraph.of(model)
    final_norm = _final_norm(model)
    unembed = _unembed(model)
    wd = work_dtype(model)
    names = [hook_name(0, "hook_resid_pre")] + [hook_name(layer, "hook_resid_post") for layer in range(graph.n_layers)]
    diff = torch.zeros(len(names), dtype=torch.float64)
    prob = torch.zeros(len(names), dtype=torch.float64)
    n = 0
    for batch in as_batches(model, data, batch_size):
        with torch.no_grad():
            _, cache = model.run_with_cache(batch.clean, names=names)
            for i, name in enumerate(names):
                logits = unembed(final_norm(batch.last(cache[name])[:, None]))[:, 0].to(wd)
                diff[i] += float((_gather_mean(logits, batch.answers) - _gather_mean(logits, batch.wrong)).sum())
                prob[i] += float(answer_prob(logits, batch).sum())
        n += batch.size
    return pd.DataFrame({"layer": list(range(-1, graph.n_layers)), "logit_diff": (diff / n).numpy(),
                         "prob": (prob / n).numpy()})
