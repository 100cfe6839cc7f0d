"""Patchscopes (Ghandeharioun et al. 2024): read a hidden state by letting the model talk about it.

The source prompt's residual stream at one position and layer is written into a target prompt
(by default the identity prompt :data:`IDENTITY_PROMPT`, which asks the model to repeat its last
token), and the model's greedy continuation there says what the state encodes. One generate call
runs every source layer at once, one batch row per layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from interp.causal.common import check_layers, prompt_tokens, token_strings
from interp.errors import InterpError
from interp.hooks import HookedModel, hook_name
from interp.hooks.interventions import selection
from interp.hooks.points import HookPoint

# The paper's identity prompt: few-shot "repeat the token", ending on a placeholder whose state is replaced.
IDENTITY_PROMPT = "cat -> cat; 1135 -> 1135; hello -> hello; ?"


def top_tokens(model: HookedModel, logits: torch.Tensor, k: int) -> tuple[list[list[str]], list[list[float]]]:
    """The ``k`` most likely next tokens (text) and their probabilities for each row of ``logits [batch, vocab]``."""
    probs = torch.softmax(logits.double(), dim=-1)
    values, ids = probs.topk(k, dim=-1)
    return [token_strings(model, row) for row in ids], [[float(v) for v in row] for row in values]


def patchscope(
    model: HookedModel,
    source: str | torch.Tensor,
    source_layer: int | Sequence[int] | None = None,
    source_position: int = -1,
    target: str | torch.Tensor = IDENTITY_PROMPT,
    target_position: int = -1,
    target_layer: int | None = None,
    max_new_tokens: int = 10,
    *,
    k: int = 5,
) -> pd.DataFrame:
    """Decode ``source``'s ``hook_resid_post`` at ``source_position`` of each ``source_layer`` (default all).

    The state replaces the target prompt's ``hook_resid_post`` at ``target_position`` of
    ``target_layer`` (default: the source's own layer) on the prompt pass; generation is greedy.
    One row per source layer: ``layer, position, token`` (the source token), ``target_layer``,
    ``continuation`` (the decoded new tokens), and ``top_tokens``/``top_probs``: the first new
    token's ``k`` most likely choices, as in :func:`interp.logit_lens`'s frame.
    """
    n_layers = model.cfg.n_layers
    layers = check_layers(model, [source_layer] if isinstance(source_layer, int) else source_layer)
    if target_layer is not None and not 0 <= target_layer < n_layers:
        raise InterpError(f"target_layer {target_layer} does not exist: layers 0..{n_layers - 1}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InterpError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    source_tokens = prompt_tokens(model, source, what="source prompt")[:1]
    target_tokens = prompt_tokens(model, target, what="target prompt")[:1]
    n_source, n_target = source_tokens.shape[1], target_tokens.shape[1]
    if not -n_source <= source_position < n_source:
        raise InterpError(f"source_position {source_position} is outside the source prompt ({n_source} tokens)")
    if not -n_target <= target_position < n_target:
        raise InterpError(f"target_position {target_position} is outside the target prompt ({n_target} tokens)")
    source_pos, target_pos = source_position % n_source, target_position % n_target

    names = {layer: hook_name(layer, "hook_resid_post") for layer in layers}
    with torch.no_grad():
        _, cache = model.run_with_cache(source_tokens, names=list(names.values()))
    states = torch.stack([cache[names[layer]][0, source_pos] for layer in layers])  # [row, d_model]
    into = [layer if target_layer is None else target_layer for layer in layers]

    def patch_at(target: int):
        rows = torch.tensor([i for i, t in enumerate(into) if t == target])

        def fn(activation: torch.Tensor, hook: HookPoint) -> torch.Tensor:
            _, local = selection(hook, None, [target_pos])  # empty after the prompt pass
            if isinstance(local, list) and not local:
                return activation
            out = activation.clone()
            out[rows[:, None], torch.tensor(local)[None, :]] = states[rows].to(out.dtype)[:, None]
            return out

        return fn

    hooks = [(hook_name(t, "hook_resid_post"), patch_at(t)) for t in sorted(set(into))]
    output = model.generate(
        target_tokens.expand(len(layers), -1), max_new_tokens=max_new_tokens, fwd_hooks=hooks,
        do_sample=False, return_dict_in_generate=True, output_logits=True,
    )
    new = output.sequences[:, n_target:]
    skip = {model.tokenizer.pad_token_id, model.tokenizer.eos_token_id} if model.tokenizer is not None else set()
    continuations = [
        model.tokenizer.decode([int(t) for t in row if int(t) not in skip]) if model.tokenizer is not None
        else " ".join(str(int(t)) for t in row)
        for row in new
    ]
    tops, probs = top_tokens(model, output.logits[0], k)
    token = token_strings(model, source_tokens[0, source_pos : source_pos + 1])[0]
    return pd.DataFrame({
        "layer": layers, "position": source_pos, "token": token, "target_layer": into,
        "continuation": continuations, "top_tokens": tops, "top_probs": probs,
    })
