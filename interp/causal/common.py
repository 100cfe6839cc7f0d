"""Shared pieces of the causal methods: prompt and answer checks, sweep sizes, and row-wise patch hooks.

Metrics live in :mod:`interp.causal.metrics`; the causal methods average them over prompts. Sweeps replicate the base input along the batch axis, one group of rows
per cell, and write each cell's intervention into its own rows with :func:`row_patch_hook`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from interp.errors import InterpError
from interp.hooks import HookedModel
from interp.hooks.points import HookFn, HookPoint
from interp.memory import sweep_batch_rows

Prompts = str | Sequence[str] | torch.Tensor
# One patch: (rows of the replicated batch, index into the activation after the batch axis, value).
RowPatch = tuple[slice, tuple, torch.Tensor]


def prompt_tokens(model: HookedModel, prompts: Prompts, *, what: str = "prompt") -> torch.Tensor:
    """Token ids ``[batch, pos]`` for one prompt, a list of prompts of equal token length, or ids."""
    if isinstance(prompts, torch.Tensor):
        tokens = prompts[None] if prompts.ndim == 1 else prompts
        if tokens.ndim != 2 or tokens.shape[1] == 0:
            raise InterpError(f"{what} tokens must be [batch, pos] with pos >= 1, got shape {tuple(prompts.shape)}")
        return tokens.to(model.device)
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not texts:
        raise InterpError(f"no {what} given: pass at least one non-empty prompt")
    rows = []
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise InterpError(f"{what} {i} is empty: give a prompt with at least one non-space character")
        rows.append(model.to_tokens(text)[0])
    lengths = {len(r) for r in rows}
    if len(lengths) > 1:
        detail = ", ".join(f"{i}: {len(r)}" for i, r in enumerate(rows))
        raise InterpError(
            f"{what}s have different token lengths ({detail}); reword them so every {what} has the same number of tokens"
        )
    return torch.stack(rows).to(model.device)


def paired_tokens(model: HookedModel, clean: Prompts, corrupted: Prompts) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean and corrupted token ids, both ``[batch, pos]``, checked to have the same shape."""
    clean_tokens = prompt_tokens(model, clean, what="clean prompt")
    corrupted_tokens = prompt_tokens(model, corrupted, what="corrupted prompt")
    if clean_tokens.shape[0] != corrupted_tokens.shape[0]:
        raise InterpError(
            f"{clean_tokens.shape[0]} clean prompts but {corrupted_tokens.shape[0]} corrupted prompts; give one corrupted prompt per clean prompt"
        )
    if clean_tokens.shape[1] != corrupted_tokens.shape[1]:
        raise InterpError(
            f"clean prompt is {clean_tokens.shape[1]} tokens but corrupted prompt is {corrupted_tokens.shape[1]}; "
            "reword the corrupted prompt so both tokenize to the same length (e.g. swap names of equal token length)"
        )
    return clean_tokens, corrupted_tokens


def answer_token(model: HookedModel, answer: str | int, *, what: str = "answer") -> int:
    """The single token id of ``answer`` (text is tokenized without special tokens; an int is taken as an id)."""
    if isinstance(answer, int):
        if not 0 <= answer < model.cfg.d_vocab:
            raise InterpError(f"{what} token id {answer} is outside the vocabulary [0, {model.cfg.d_vocab})")
        return answer
    if not answer:
        raise InterpError(f"{what} is empty: give the answer text, usually with a leading space (e.g. ' Paris')")
    if model.tokenizer is None:
        raise InterpError(f"{what} {answer!r} is text but the model has no tokenizer; pass a token id")
    ids = model.tokenizer(answer, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = [model.tokenizer.decode([i]) for i in ids]
        raise InterpError(
            f"{what} {answer!r} is {len(ids)} tokens {pieces}; give text that is a single token "
            "(often a leading space helps, e.g. ' Paris'), or a token id"
        )
    return int(ids[0])


def answer_pairs(model: HookedModel, answers: Any, n_prompts: int) -> torch.Tensor:
    """``[n_prompts, 2]`` token ids (correct, wrong) from one pair for all prompts, one pair per prompt, or ids."""
    if isinstance(answers, torch.Tensor):
        ids = answers.reshape(-1, 2) if answers.ndim == 1 else answers
    else:
        pairs = list(answers)
        if len(pairs) == 2 and all(isinstance(a, (str, int)) for a in pairs):
            pairs = [pairs]
        ids = torch.tensor(
            [[answer_token(model, a, what="correct answer"), answer_token(model, b, what="wrong answer")] for a, b in pairs]
        )
    if ids.ndim != 2 or ids.shape[1] != 2 or ids.shape[0] not in (1, n_prompts):
        raise InterpError(
            f"answers must be one (correct, wrong) pair or one pair per prompt ({n_prompts}), got shape {tuple(ids.shape)}"
        )
    return ids.expand(n_prompts, 2).to(torch.long)


def row_patch_hook(patches: list[RowPatch]) -> HookFn:
    """A hook function writing each ``value`` into ``activation[rows][index]`` (every other row untouched)."""

    def fn(activation: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        out = activation.clone()
        for rows, index, value in patches:
            out[(rows, *index)] = value.to(device=out.device, dtype=out.dtype)
        return out

    return fn


def sweep_rows(model: HookedModel, n_pos: int, batch_size: int | None, *, reuse: str, plain: int, last_only: bool = True) -> int:
    """Rows per forward of a sweep: ``batch_size`` if given; else ``plain`` for ``reuse="none"`` (the old
    default) and otherwise as many as free memory allows, up to ``interp.memory.SWEEP_MAX_ROWS``."""
    if batch_size is not None:
        if batch_size < 1:
            raise InterpError(f"batch_size must be at least 1, got {batch_size}")
        return batch_size
    if reuse == "none":
        return plain
    return sweep_batch_rows(model, n_pos, last_only=last_only)


def chunks(n: int, size: int) -> list[range]:
    """``range(0, n)`` in consecutive pieces of at most ``size``."""
    size = max(1, size)
    return [range(start, min(n, start + size)) for start in range(0, n, size)]


def check_layers(model: HookedModel, layers: Sequence[int] | None) -> list[int]:
    """Layers to sweep (default all), validated."""
    chosen = list(range(model.cfg.n_layers)) if layers is None else [int(layer) for layer in layers]
    bad = [layer for layer in chosen if not 0 <= layer < model.cfg.n_layers]
    if bad:
        raise InterpError(f"layer(s) {bad} do not exist; this model has layers 0..{model.cfg.n_layers - 1}")
    return chosen


def check_positions(n_pos: int, positions: Sequence[int] | None) -> list[int]:
    """Positions to sweep (default all), negative indices resolved, validated."""
    chosen = list(range(n_pos)) if positions is None else [int(p) + n_pos if int(p) < 0 else int(p) for p in positions]
    bad = [p for p in chosen if not 0 <= p < n_pos]
    if bad:
        raise InterpError(f"position(s) {bad} are outside the prompt (0..{n_pos - 1})")
    return chosen


def token_strings(model: HookedModel, tokens: torch.Tensor) -> list[str]:
    """Decoded text of each token of one row ``[pos]`` (token ids as text without a tokenizer)."""
    if model.tokenizer is None:
        return [str(int(t)) for t in tokens]
    return [model.tokenizer.decode([int(t)]) for t in tokens]
