"""Steering vectors by contrastive activation addition (Rimsky et al. 2024): the mean activation
difference between prompts that show a behaviour and prompts that show its opposite.

Add the vector with ``HookedModel.steer`` (plain runs and ``generate``); ``interp steer`` sweeps its
coefficient from the command line.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from interp.errors import InterpError
from interp.hooks import HookedModel


def _check_prompts(prompts: Sequence[str], what: str) -> list[str]:
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not texts:
        raise InterpError(f"no {what} prompts given: pass at least one")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise InterpError(f"{what} prompt {i} is empty: give every prompt at least one non-space character")
    return texts


def mean_activation(model: HookedModel, prompts: Sequence[str], name: str, *, position: int = -1, what: str = "") -> torch.Tensor:
    """Mean over ``prompts`` of the activation at ``name`` and token ``position`` of each prompt (one forward each).

    Each prompt runs alone, so ``position`` counts within that prompt (``-1``: its last token) and no
    padding enters. The mean is taken in at least float32.
    """
    texts = _check_prompts(prompts, what or "steering")
    total = None
    for i, text in enumerate(texts):
        tokens = model.to_tokens(text)
        n = tokens.shape[1]
        if not -n <= position < n:
            raise InterpError(f"position {position} is outside {what} prompt {i} ({n} tokens); use -1 for the last token")
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names=[name])
        row = cache[name][0, position]
        row = row.to(torch.promote_types(row.dtype, torch.float32))
        total = row if total is None else total + row
    return total / len(texts)


def steering_vector(
    model: HookedModel, positive: Sequence[str], negative: Sequence[str], name: str, position: int = -1
) -> torch.Tensor:
    """``mean(positive) - mean(negative)`` of the activation at hook point ``name``, token ``position``.

    Returns the vector ``HookedModel.steer`` takes at ``name``: ``[d_model]``, or ``[head, d_head]`` at
    ``attn.hook_z``. ``with model.steer(name, vector, coeff=4.0): model.generate(...)``.
    """
    model.steering_shape(name)  # refuses names steer cannot add to, before any forward
    positive = _check_prompts(positive, "positive")
    negative = _check_prompts(negative, "negative")
    return mean_activation(model, positive, name, position=position, what="positive") - mean_activation(
        model, negative, name, position=position, what="negative"
    )
