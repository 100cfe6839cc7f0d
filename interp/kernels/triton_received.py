"""Triton pass 2: `received`, the column sums sum_q A[q, k] of the attention pattern.

Column sums need the final softmax normalizer of every row, which pass 1 only knows at the
end. Rather than atomically adding partial columns from pass 1 (which cannot work before the
row's lse is final, and would make results run-to-run nondeterministic), this pass is
organized by key blocks: one program owns BLOCK_N keys of one (batch, head), loops over the
query blocks that can see them, recomputes the scores and sums exp((s - m) - log(l)) using the
row max m and log-normalizer log(l) = lse - m from pass 1 (not exp(s - lse): lse reaches the
hundreds, and its float32 rounding would pass into every probability). It costs one more Q.K^T,
writes each output once, needs no extra memory and is deterministic.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from interp.kernels.triton_common import apply_softcap, dot_in_fp32, head_dim_block, interpreting


def received_config(d_head: int) -> dict[str, int]:
    """Block sizes / launch parameters for the received kernel (see `forward_config`)."""
    if interpreting():
        return dict(BLOCK_M=16, BLOCK_N=16, num_warps=1, num_stages=1)
    if d_head <= 64:
        return dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2)
    return dict(BLOCK_M=32, BLOCK_N=64, num_warps=4, num_stages=2)


@triton.jit
def _attention_received_kernel(
    q_ptr, k_ptr, pad_ptr, row_max_ptr, log_norm_ptr, received_ptr,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_pb, stride_pn,
    n_heads, n_query, n_key, d_head, group,
    scale, softcap, sliding_window,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr, HAS_SLIDING: tl.constexpr, HAS_PADDING: tl.constexpr,
    DOT_FP32: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    b = pid_bh // n_heads
    h = pid_bh % n_heads
    kv_h = h // group
    q_offset = n_key - n_query

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    key_ok = offs_n < n_key
    k_t = tl.load(  # [BLOCK_D, BLOCK_N]
        k_ptr + b * stride_kb + kv_h * stride_kh + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd,
        mask=key_ok[None, :] & (offs_d[:, None] < d_head), other=0.0,
    )
    if DOT_FP32:
        k_t = k_t.to(tl.float32)
    key_real = key_ok
    if HAS_PADDING:
        real = tl.load(pad_ptr + b * stride_pb + offs_n * stride_pn, mask=key_ok, other=0)
        key_real = key_real & (real != 0)
    q_base = q_ptr + b * stride_qb + h * stride_qh
    row_max_base = row_max_ptr + pid_bh * n_query
    log_norm_base = log_norm_ptr + pid_bh * n_query

    # Queries that can see some key of this block: position >= first key (causal) and, with a
    # sliding window, position <= last key + sliding_window - 1.
    lo = tl.maximum(0, pid_n * BLOCK_N - q_offset)
    lo = (lo // BLOCK_M) * BLOCK_M
    hi = n_query
    if HAS_SLIDING:
        hi = tl.minimum(n_query, (pid_n + 1) * BLOCK_N - 1 + sliding_window - q_offset)

    col = tl.zeros([BLOCK_N], tl.float32)
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        row_ok = offs_m < n_query
        q_pos = q_offset + offs_m
        q = tl.load(
            q_base + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
            mask=row_ok[:, None] & (offs_d[None, :] < d_head), other=0.0,
        )
        m = tl.load(row_max_base + offs_m, mask=row_ok, other=float("-inf"))
        log_norm = tl.load(log_norm_base + offs_m, mask=row_ok, other=0.0)
        if DOT_FP32:
            s = tl.dot(q.to(tl.float32), k_t, input_precision="ieee")
        else:
            s = tl.dot(q, k_t)
        s = s * scale
        if HAS_SOFTCAP:
            s = apply_softcap(s, softcap)
        visible = row_ok[:, None] & key_real[None, :] & (offs_n[None, :] <= q_pos[:, None])
        if HAS_SLIDING:
            visible = visible & (offs_n[None, :] > q_pos[:, None] - sliding_window)
        s = tl.where(visible, s, float("-inf"))
        # Rows with no visible key have m = -inf; subtracting +inf instead gives p = 0, not NaN.
        m_safe = tl.where(m == float("-inf"), float("inf"), m)
        p = tl.exp((s - m_safe[:, None]) - log_norm[:, None])
        col += tl.sum(p, axis=0)

    tl.store(received_ptr + pid_bh * n_key + offs_n, col, mask=key_ok)


def attention_received(
    q: Tensor,
    k: Tensor,
    row_max: Tensor,
    log_norm: Tensor,
    *,
    scale: float,
    sliding_window: int | None,
    softcap: float | None,
    key_padding_mask: Tensor | None,
) -> Tensor:
    """Launch pass 2 given pass 1's float32 row_max and log_norm [b, h, q]; returns received [b, h, n_key] float32."""
    batch, n_heads, n_query, d_head = q.shape
    n_kv_heads, n_key = k.shape[1], k.shape[2]
    for name, t in (("row_max", row_max), ("log_norm", log_norm)):
        if t.shape != (batch, n_heads, n_query) or t.dtype != torch.float32:
            raise ValueError(f"{name} must be float32 {(batch, n_heads, n_query)}, got {t.dtype} {tuple(t.shape)}")
    row_max, log_norm = row_max.contiguous(), log_norm.contiguous()
    received = torch.empty(batch, n_heads, n_key, device=q.device, dtype=torch.float32)
    if key_padding_mask is not None:
        pad = key_padding_mask.to(torch.int8)
    else:
        pad = torch.empty(1, 1, device=q.device, dtype=torch.int8)  # never read

    cfg = received_config(d_head)
    grid = (triton.cdiv(n_key, cfg["BLOCK_N"]), batch * n_heads)
    _attention_received_kernel[grid](
        q, k, pad, row_max, log_norm, received,
        *q.stride(), *k.stride(), *pad.stride(),
        n_heads, n_query, n_key, d_head, n_heads // n_kv_heads,
        scale, softcap if softcap is not None else 1.0,
        sliding_window if sliding_window is not None else 0,
        BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_D=head_dim_block(d_head),
        HAS_SOFTCAP=softcap is not None, HAS_SLIDING=sliding_window is not None,
        HAS_PADDING=key_padding_mask is not None, DOT_FP32=dot_in_fp32(q.dtype),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return received
