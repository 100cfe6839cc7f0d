"""The public entry point: pick a backend and run it."""

from __future__ import annotations

import functools
from typing import Literal

from torch import Tensor

from interp.kernels.chunked import attention_with_stats_chunked
from interp.kernels.reference import attention_with_stats_reference
from interp.kernels.stats import AttentionStats, StatsConfig

Backend = Literal["auto", "triton", "chunked", "reference"]
BACKENDS: tuple[str, ...] = ("auto", "triton", "chunked", "reference")


@functools.cache
def triton_available() -> bool:
    """Whether triton can be imported (says nothing about a GPU being present)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # ImportError, or a broken install failing at import time
        return False
    return True


def attention_with_stats(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    scale: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    key_padding_mask: Tensor | None = None,
    config: StatsConfig | None = None,
    backend: Backend = "auto",
    sinks: Tensor | None = None,
    attention_chunk: int | None = None,
) -> tuple[Tensor, AttentionStats]:
    """Causal attention output [b, h, q, d_v] plus per-head statistics, without materializing
    the [b, h, q, k] pattern (except for backend="reference").

    backend: "auto" uses "triton" for CUDA tensors when triton imports, else "chunked".
    See the `interp.kernels` module docstring for conventions and exact definitions.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        on_gpu = isinstance(q, Tensor) and q.is_cuda and triton_available()
        backend = "triton" if on_gpu and sinks is None and attention_chunk is None else "chunked"
    kwargs = dict(
        scale=scale, sliding_window=sliding_window, softcap=softcap,
        key_padding_mask=key_padding_mask, config=config,
    )
    if sinks is not None:
        if sinks.shape != (q.shape[1],):
            raise ValueError(f"sinks must hold one logit per query head, shape ({q.shape[1]},), got {tuple(sinks.shape)}")
        if backend == "triton":
            raise ValueError("learned sinks (gpt_oss) are computed by the chunked and reference backends; use one of them")
        kwargs["sinks"] = sinks
    if attention_chunk is not None:
        if isinstance(attention_chunk, bool) or not isinstance(attention_chunk, int) or attention_chunk < 1:
            raise ValueError(f"attention_chunk must be a positive int or None, got {attention_chunk!r}")
        if key_padding_mask is not None:
            raise ValueError("chunked attention with padding is not supported (chunks start at each row's first token)")
        if backend == "triton":
            raise ValueError("chunked attention (Llama 4) is computed by the chunked and reference backends; use one of them")
        kwargs["attention_chunk"] = attention_chunk
    if backend == "triton":
        if not triton_available():
            raise ValueError("backend='triton' requested but triton cannot be imported")
        from interp.kernels.triton_backend import attention_with_stats_triton

        return attention_with_stats_triton(q, k, v, **kwargs)
    if backend == "chunked":
        return attention_with_stats_chunked(q, k, v, **kwargs)
    return attention_with_stats_reference(q, k, v, **kwargs)
