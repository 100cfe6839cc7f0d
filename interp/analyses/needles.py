"""Offline needle-in-a-haystack prompts for retrieval-head analyses.

A *needle* is a sentence holding a seeded random answer ("The secret password is amber harbor
seventeen."), inserted at a chosen depth of a haystack made of the bundled natural text, followed by
a question that the model answers by copying the answer ("... The secret password is"). Nothing is
downloaded; the same seed gives the same prompts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from interp.errors import InterpError
from interp.hooks import HookedModel
from interp.analyses.probes import natural_text_tokens

ADJECTIVES = ["amber", "silent", "crimson", "golden", "frozen", "hollow", "bright", "quiet", "copper", "velvet"]
NOUNS = ["harbor", "lantern", "meadow", "falcon", "orchard", "compass", "glacier", "violin", "canyon", "pebble"]
NUMBERS = ["seventeen", "forty", "ninety", "twelve", "sixty", "thirteen", "eighty", "twenty", "fifty", "eleven"]
TEMPLATES = [
    (" The secret password is", " What is the secret password? The secret password is"),
    (" Remember this: the hidden phrase is", " What is the hidden phrase? The hidden phrase is"),
    (" The code word for the mission is", " What is the code word for the mission? The code word for the mission is"),
]


@dataclass
class NeedleSample:
    """One needle prompt. ``answer_span`` is ``[start, end)`` of the answer tokens inside ``tokens``."""

    tokens: torch.Tensor  # [1, pos]
    answer_ids: list[int]
    answer_span: tuple[int, int]
    context_length: int
    depth: float
    answer: str


def _ids(model: HookedModel, text: str) -> list[int]:
    return model.tokenizer(text, add_special_tokens=False)["input_ids"]


def needle_sample(model: HookedModel, context_length: int, depth: float, *, seed: int = 0) -> NeedleSample:
    """A prompt of about ``context_length`` tokens with the needle at ``depth`` (0 = start, 1 = end of haystack).

    The needle goes right after the sentence end nearest to ``depth`` so it reads as its own sentence.
    """
    if model.tokenizer is None:
        raise InterpError("needle prompts need a tokenizer; load the model with interp.load")
    rng = random.Random(seed)
    prefix, question = TEMPLATES[rng.randrange(len(TEMPLATES))]
    answer = f" {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {rng.choice(NUMBERS)}"
    prefix_ids, answer_ids, end_ids = _ids(model, prefix), _ids(model, answer), _ids(model, ".")
    question_ids = _ids(model, "\n\n" + question)
    hay_length = context_length - len(prefix_ids) - len(answer_ids) - len(end_ids) - len(question_ids)
    if hay_length < 16:
        raise InterpError(f"context length {context_length} is too short for a needle prompt; use at least 64")
    haystack = natural_text_tokens(model, hay_length, seed=seed)[0].tolist()
    sentence_ends = [i + 1 for i, t in enumerate(haystack) if model.tokenizer.decode([t]).rstrip().endswith(".")]
    target = depth * hay_length
    cut = min(sentence_ends, key=lambda i: abs(i - target)) if sentence_ends else int(target)
    start = cut + len(prefix_ids)
    ids = haystack[:cut] + prefix_ids + answer_ids + end_ids + haystack[cut:] + question_ids
    return NeedleSample(
        tokens=torch.tensor([ids], device=model.device),
        answer_ids=answer_ids,
        answer_span=(start, start + len(answer_ids)),
        context_length=len(ids),
        depth=depth,
        answer=answer,
    )


def needle_grid(
    model: HookedModel, *, context_lengths: list[int], n_samples: int, seed: int = 0
) -> list[NeedleSample]:
    """``n_samples`` prompts spread over ``context_lengths`` x evenly spaced depths in [0.1, 0.9]."""
    per_length = max(1, -(-n_samples // len(context_lengths)))
    depths = [0.5] if per_length == 1 else [0.1 + 0.8 * i / (per_length - 1) for i in range(per_length)]
    samples = []
    for length in context_lengths:
        for depth in depths:
            if len(samples) < n_samples:
                samples.append(needle_sample(model, length, depth, seed=seed + len(samples)))
    return samples
