"""Scan settings and their validation, with no torch import (the CLI checks arguments before loading anything).

:class:`ScanSettings` checks itself in ``__post_init__``, so ``interp.scan(settings=...)`` and
``interp scan`` refuse the same bad values with the same one-line :class:`~interp.errors.InterpError`.
Checks that need the model (the trained window, memory) live in :func:`interp.scanning.run.scan`, which runs
them before any probe is tokenized.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields

from interp.errors import InterpError

# Same names as interp.kernels.BACKENDS (a test keeps them equal); kept here so checking needs no torch.
BACKENDS: tuple[str, ...] = ("auto", "triton", "chunked", "reference")

# Smallest values that give a meaningful scan; the CLI flag each field comes from, for messages.
_MINIMUM = {
    "context_length": 8,
    "batch": 1,
    "n_sink": 1,
    "window": 1,
    "needle_samples": 1,
    "retrieval_check_k": 0,
    "streaming_sink": 1,
    "streaming_window": 1,
    "ablation_tokens": 2,
    "ablation_batch": 1,
}
_FLAGS = {"context_length": "--context-length", "batch": "--batch", "needle_samples": "--needle-samples", "seed": "--seed"}


@dataclass
class ScanSettings:
    """Settings recorded in ``scan.json``; same settings and seed give the same tables."""

    context_length: int = 256
    beyond_context: bool = False  # allow context_length past the model's trained window
    batch: int = 2
    seed: int = 0
    backend: str = "auto"
    n_sink: int = 4
    window: int = 8
    needle_samples: int = 6
    retrieval_check_k: int = 5
    streaming_sink: int = 4
    streaming_window: int = 256
    streaming_per_head: bool = False
    ablation_tokens: int = 64
    ablation_batch: int = 1

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            name = _FLAGS.get(item.name, f"ScanSettings.{item.name}")
            if item.type in ("bool", bool):
                if not isinstance(value, bool):
                    raise InterpError(f"{name} must be True or False, got {value!r}")
            elif item.type in ("int", int):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise InterpError(f"{name} must be an integer, got {value!r}")
                minimum = _MINIMUM.get(item.name)
                if minimum is not None and value < minimum:
                    raise InterpError(f"{name} must be at least {minimum}, got {value}")
        if self.backend not in BACKENDS:
            raise InterpError(f"unknown --backend {self.backend!r}; use one of {', '.join(BACKENDS)}")


def check_backend(backend: str, device_type: str) -> None:
    """``backend="triton"`` needs a CUDA device (on CPU triton runs only under ``TRITON_INTERPRET=1``, for tests)."""
    if backend not in BACKENDS:
        raise InterpError(f"unknown --backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "triton" and device_type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise InterpError(
            f"--backend triton needs a CUDA GPU but the model runs on {device_type}; use --backend auto or chunked"
        )


_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "m": 2**20, "mb": 2**20, "g": 2**30, "gb": 2**30, "t": 2**40, "tb": 2**40}


def parse_size(text: str) -> int:
    """``"12GB"``, ``"512m"``, ``"1.5G"`` -> bytes (binary units)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise InterpError(f"cannot read memory size {text!r}; write it like 12GB, 512MB or 1.5G")
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size <= 0:
        raise InterpError(f"memory size {text!r} must be more than zero bytes")
    return size


# interp.threads reads it; kept here (torch-free) so the CLI checks --threads before importing torch.
THREADS_ENV = "INTERP_THREADS"


def thread_setting(value: int | str | None = None) -> int | str | None:
    """``value`` (default: ``$INTERP_THREADS``) checked: None (torch's count), ``"auto"`` or a count >= 1."""
    if value is None:
        value = os.environ.get(THREADS_ENV) or None
        if value is None and os.environ.get("INTERP_ADAPT_THREADS") == "1":
            value = "auto"  # the switch of interp <= 0.1 (then adapting was the default)
        where = f"{THREADS_ENV}={value}"
    else:
        where = f"threads={value!r}"
    if value is None or value == "auto":
        return value
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if count < 1:
        raise InterpError(f"{where} is not a thread count: use a whole number >= 1, or 'auto' to adapt to the load")
    return count
