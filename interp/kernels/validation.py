"""Input checks shared by all backends. Every problem is reported as a one-line ValueError."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from interp.kernels.stats import StatsConfig

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def validate_inputs(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    scale: float | None,
    sliding_window: int | None,
    softcap: float | None,
    key_padding_mask: Tensor | None,
    config: StatsConfig,
) -> float:
    """Check shapes, dtypes, devices and options; return the resolved softmax scale."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor) or t.dim() != 4:
            raise ValueError(f"{name} must be a 4-D tensor [batch, heads, seq, d_head], got {_shape(t)}")
        if t.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"{name} has dtype {t.dtype}; supported: float32, float16, bfloat16")
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")

    batch, n_heads, n_query, d_head = q.shape
    if k.shape[:3] != v.shape[:3]:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must agree on [batch, n_kv_heads, n_key]")
    if k.shape[0] != batch:
        raise ValueError(f"batch mismatch: q has {batch}, k/v have {k.shape[0]}")
    if k.shape[3] != d_head:
        raise ValueError(f"d_head mismatch: q has {d_head}, k has {k.shape[3]}")
    n_kv_heads, n_key = k.shape[1], k.shape[2]
    if n_kv_heads == 0 or n_heads % n_kv_heads != 0:
        raise ValueError(f"n_heads ({n_heads}) must be a multiple of n_kv_heads ({n_kv_heads})")
    if n_query < 1 or n_query > n_key:
        raise ValueError(f"need 1 <= n_query <= n_key, got n_query={n_query}, n_key={n_key}")
    if d_head < 1 or v.shape[3] < 1:
        raise ValueError(f"head dims must be positive, got d_head={d_head}, d_head_v={v.shape[3]}")

    if scale is None:
        scale = d_head**-0.5
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    if sliding_window is not None and (
        isinstance(sliding_window, bool) or not isinstance(sliding_window, numbers.Integral) or sliding_window < 1
    ):
        raise ValueError(f"sliding_window must be a positive int or None, got {sliding_window!r}")
    if softcap is not None and not (math.isfinite(softcap) and softcap > 0):
        raise ValueError(f"softcap must be a positive finite float or None, got {softcap!r}")

    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool:
            raise ValueError(f"key_padding_mask must be a bool tensor, got {key_padding_mask.dtype}")
        if tuple(key_padding_mask.shape) != (batch, n_key):
            raise ValueError(f"key_padding_mask must have shape {(batch, n_key)}, got {tuple(key_padding_mask.shape)}")
        if key_padding_mask.device != q.device:
            raise ValueError(f"key_padding_mask is on {key_padding_mask.device} but q is on {q.device}")

    if config.n_sink < 0 or config.window < 0:
        raise ValueError(f"n_sink and window must be >= 0, got n_sink={config.n_sink}, window={config.window}")
    targets = config.targets
    if targets is not None:
        if targets.dtype != torch.int64 or targets.dim() != 3 or tuple(targets.shape[:2]) != (batch, n_query):
            raise ValueError(
                f"targets must be an int64 tensor [batch, n_query, T] = [{batch}, {n_query}, T], "
                f"got {targets.dtype} {tuple(targets.shape)}"
            )
        if targets.device != q.device:
            raise ValueError(f"targets is on {targets.device} but q is on {q.device}")
    return float(scale)


def _shape(t: object) -> str:
    return str(tuple(t.shape)) if isinstance(t, Tensor) else type(t).__name__
