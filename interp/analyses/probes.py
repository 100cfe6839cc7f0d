"""Probe inputs the scan runs heads on: natural text, code and repeated random tokens.

Everything is generated offline and seeded, so the same settings give the same tokens.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from importlib import resources

import torch

from interp.errors import InterpError
from interp.hooks import HookedModel


def natural_text() -> str:
    """The bundled English prose (original text, ~1,000 words, several unrelated topics)."""
    return resources.files("interp.data").joinpath("natural_text.txt").read_text(encoding="utf-8")


def code_text() -> str:
    """The bundled Python source (original code, ~80 lines)."""
    return resources.files("interp.data").joinpath("code_text.txt").read_text(encoding="utf-8")


def natural_text_tokens(model: HookedModel, n_tokens: int, *, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """``[batch, n_tokens]`` of natural text: the bundled paragraphs, shuffled per row and repeated as needed.

    Beyond ~1,300 tokens paragraphs recur, which copy-aware heads will notice; keep that in mind when
    reading induction-like scores on long natural-text probes.
    """
    return _shuffled_blocks_tokens(model, natural_text(), "\n\n", n_tokens, batch=batch, seed=seed)


def code_tokens(model: HookedModel, n_tokens: int, *, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """``[batch, n_tokens]`` of Python source: the bundled code's top-level blocks, shuffled per row."""
    return _shuffled_blocks_tokens(model, code_text(), "\n\n\n", n_tokens, batch=batch, seed=seed)


def _shuffled_blocks_tokens(
    model: HookedModel, text: str, separator: str, n_tokens: int, *, batch: int, seed: int
) -> torch.Tensor:
    """Blocks of ``text`` (split at ``separator``) shuffled per row with a seeded RNG, tokenized, cut to length."""
    if model.tokenizer is None:
        raise InterpError("text probes need a tokenizer; load the model with interp.load or pass tokenizer=")
    paragraphs = [p.strip() for p in text.split(separator) if p.strip()]
    rows = []
    for row in range(batch):
        rng = random.Random(seed * 1009 + row)
        ids: list[int] = []
        while len(ids) < n_tokens:
            order = paragraphs[:]
            rng.shuffle(order)
            joined = separator.join(order) + separator
            ids += model.tokenizer(joined, add_special_tokens=not ids)["input_ids"]
        rows.append(ids[:n_tokens])
    return torch.tensor(rows, device=model.device)


def random_tokens(model: HookedModel, length: int, *, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """``[batch, length]`` tokens drawn uniformly from the vocabulary minus the special tokens."""
    generator = torch.Generator().manual_seed(seed)
    special = set(getattr(model.tokenizer, "all_special_ids", []) or []) if model.tokenizer is not None else set()
    allowed = torch.tensor([t for t in range(model.cfg.d_vocab) if t not in special])
    return allowed[torch.randint(len(allowed), (batch, length), generator=generator)].to(model.device)


def repeated_random_tokens(model: HookedModel, half_length: int, *, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """``[batch, 2 * half_length]``: random tokens, then the same tokens again (the induction probe).

    Tokens are drawn uniformly from the vocabulary minus the special tokens.
    """
    first_half = random_tokens(model, half_length, batch=batch, seed=seed)
    return torch.cat([first_half, first_half], dim=1)


def check_probe_length(model: HookedModel, context_length: int, *, beyond_context: bool = False) -> None:
    """Refuse a probe length below 8 tokens, or past the model's trained window without ``beyond_context``.

    Runs before any text is tokenized (a huge length would otherwise tokenize for minutes first).
    """
    if isinstance(context_length, bool) or not isinstance(context_length, int):
        raise InterpError(f"--context-length must be an integer, got {context_length!r}")
    if context_length < 8:
        raise InterpError(f"--context-length must be at least 8 tokens, got {context_length}")
    if model.cfg.n_ctx is not None and context_length > model.cfg.n_ctx and not beyond_context:
        raise InterpError(
            f"--context-length {context_length} exceeds the model's context window of {model.cfg.n_ctx} tokens; "
            f"use at most {model.cfg.n_ctx}, or pass --beyond-context to scan positions the model was not trained on"
        )


@dataclass
class Probe:
    """A named batch of probe tokens ``[batch, pos]``."""

    name: str
    tokens: torch.Tensor
    description: str


def default_probes(
    model: HookedModel, *, context_length: int = 256, batch: int = 2, seed: int = 0, beyond_context: bool = False
) -> dict[str, Probe]:
    """The scan's probe set: natural text, Python code and repeated random tokens, each ``context_length`` long.

    ``beyond_context`` allows lengths past the model's trained context window (positions there are
    extrapolation: attention still runs, but what heads do there is not what they were trained to do).
    """
    check_probe_length(model, context_length, beyond_context=beyond_context)
    if model.tokenizer is None:
        # A live model without a tokenizer still scans: the text probes become seeded random tokens, and say so.
        warnings.warn("the model has no tokenizer: the natural-text and code probes are random tokens", stacklevel=2)
        return {
            name: Probe(
                name,
                random_tokens(model, context_length, batch=batch, seed=seed + offset),
                "uniform random tokens (no tokenizer, so no text probe)",
            )
            for offset, name in ((101, "natural"), (202, "code"))
        } | {
            "repeated": Probe(
                "repeated",
                repeated_random_tokens(model, context_length // 2, batch=batch, seed=seed),
                "uniform random tokens followed by an exact repeat",
            ),
        }
    return {
        "natural": Probe(
            "natural",
            natural_text_tokens(model, context_length, batch=batch, seed=seed),
            "bundled English prose, paragraphs shuffled per row",
        ),
        "code": Probe(
            "code",
            code_tokens(model, context_length, batch=batch, seed=seed),
            "bundled Python source, top-level blocks shuffled per row",
        ),
        "repeated": Probe(
            "repeated",
            repeated_random_tokens(model, context_length // 2, batch=batch, seed=seed),
            "uniform random tokens followed by an exact repeat",
        ),
    }
