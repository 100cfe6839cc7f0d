"""Triton pass 1: flash-attention forward that also accumulates per-query statistics online.

One program handles BLOCK_M queries of one (batch, head) and streams over the key blocks
those queries can see, keeping a running max `m`, normalizer `l = sum exp(s - m)` and output
accumulator, all rescaled by alpha = exp(m_old - m_new) whenever the max grows. The extra
statistics ride along the same way:

- masses over fixed key subsets (sink, diagonal, previous, recent window) are running sums of
  exp(s - m), rescaled by alpha exactly like `l`, and divided by `l` at the end;
- entropy = lse - E[s] = log(l) - P / l with P = sum exp(s - m) * (s - m). Keeping P relative
  to the running max avoids cancelling two large numbers; when the max moves from m to m',
  P' = alpha * (P + (m - m') * l);
- argmax is the position of the running max score (strict ">" across blocks, first index
  within a block, so ties go to the lowest key index); max_prob = exp(m - lse) = 1 / l.

Besides lse = m + log(l), the row max m and log(l) = lse - m are written separately: later
probabilities are computed as exp((s - m) - log(l)), because lse is large when the scores are
(Gemma 3: ~355, where a float32 ulp is 3e-5) and exp(s - lse) would inherit its rounding.

Memory is O(n_query) per (batch, head) beyond the inputs and output.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from interp.kernels.triton_common import apply_softcap, dot_in_fp32, head_dim_block, interpreting

# Row statistics are written into one float32 buffer [N_ROW_STATS, batch, heads, n_query],
# in this order.
ROW_STATS = ("lse", "entropy", "max_prob", "sink_mass", "diag_mass", "prev_mass", "window_mass")
N_ROW_STATS = len(ROW_STATS)
# Not statistics, so in a buffer of their own [2, batch, heads, n_query] that the returned statistics
# do not keep alive: the row max m (-inf for a row without keys) and log_norm = log(l) = lse - m (0 for
# such a row), which later passes need to compute probabilities without cancellation.
NORMALIZER = ("row_max", "log_norm")


def forward_config(d_head: int, d_head_v: int) -> dict[str, int]:
    """Block sizes / launch parameters for the forward kernel.

    The interpreter runs programs one after another in numpy, and tests use short sequences,
    so small blocks there exercise the multi-block paths without costing much.
    """
    if interpreting():
        return dict(BLOCK_M=16, BLOCK_N=16, num_warps=1, num_stages=1)
    if max(d_head, d_head_v) <= 64:
        return dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2)
    return dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=2)


@triton.jit
def _attention_forward_kernel(
    q_ptr, k_ptr, v_ptr, pad_ptr, out_ptr, stats_ptr, norm_ptr, argmax_ptr,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_pb, stride_pn,
    n_heads, n_query, n_key, d_head, d_head_v, group,
    scale, softcap, sliding_window, n_sink, window, stats_plane,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr, HAS_SLIDING: tl.constexpr, HAS_PADDING: tl.constexpr,
    DOT_FP32: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    # int64 so that batch/head base offsets cannot overflow on large tensors.
    b = (pid_bh // n_heads).to(tl.int64)
    h = (pid_bh % n_heads).to(tl.int64)
    kv_h = h // group
    q_offset = n_key - n_query

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = offs_m < n_query
    q_pos = q_offset + offs_m

    q = tl.load(
        q_ptr + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
        mask=row_ok[:, None] & (offs_d[None, :] < d_head), other=0.0,
    )
    if DOT_FP32:
        q = q.to(tl.float32)
    k_base = k_ptr + b * stride_kb + kv_h * stride_kh
    v_base = v_ptr + b * stride_vb + kv_h * stride_vh

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    p_s = tl.zeros([BLOCK_M], tl.float32)  # sum exp(s - m) * (s - m)
    sink = tl.zeros([BLOCK_M], tl.float32)
    diag = tl.zeros([BLOCK_M], tl.float32)
    prev = tl.zeros([BLOCK_M], tl.float32)
    recent = tl.zeros([BLOCK_M], tl.float32)
    arg_i = tl.full([BLOCK_M], -1, tl.int32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)

    # Keys visible to any query of this block: causal upper bound, sliding-window lower bound.
    hi = tl.minimum(n_key, q_offset + (pid_m + 1) * BLOCK_M)
    lo = 0
    if HAS_SLIDING:
        lo = tl.maximum(0, q_offset + pid_m * BLOCK_M - sliding_window + 1)
        lo = (lo // BLOCK_N) * BLOCK_N

    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        key_ok = offs_n < n_key
        k_t = tl.load(  # [BLOCK_D, BLOCK_N]
            k_base + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd,
            mask=key_ok[None, :] & (offs_d[:, None] < d_head), other=0.0,
        )
        v = tl.load(
            v_base + offs_n[:, None] * stride_vn + offs_dv[None, :] * stride_vd,
            mask=key_ok[:, None] & (offs_dv[None, :] < d_head_v), other=0.0,
        )
        if DOT_FP32:
            s = tl.dot(q, k_t.to(tl.float32), input_precision="ieee")
        else:
            s = tl.dot(q, k_t)
        s = s * scale
        if HAS_SOFTCAP:
            s = apply_softcap(s, softcap)

        visible = row_ok[:, None] & key_ok[None, :] & (offs_n[None, :] <= q_pos[:, None])
        if HAS_SLIDING:
            visible = visible & (offs_n[None, :] > q_pos[:, None] - sliding_window)
        if HAS_PADDING:
            real = tl.load(pad_ptr + b * stride_pb + offs_n * stride_pn, mask=key_ok, other=0)
            visible = visible & (real[None, :] != 0)
        s = tl.where(visible, s, float("-inf"))

        block_max = tl.max(s, axis=1)
        block_arg = tl.argmax(s, axis=1)  # first maximal index within the block
        m_new = tl.maximum(m_i, block_max)
        # Rows that have seen no visible key yet keep m = -inf; shift by 0 so nothing becomes NaN.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(s - m_safe[:, None])  # 0 where not visible
        s_rel = tl.where(visible, s - m_safe[:, None], 0.0)
        shift = tl.where(m_i == float("-inf"), 0.0, m_i - m_safe)

        p_s = alpha * (p_s + shift * l_i) + tl.sum(p * s_rel, axis=1)
        l_i = alpha * l_i + tl.sum(p, axis=1)
        key = offs_n[None, :]
        sink = alpha * sink + tl.sum(tl.where(key < n_sink, p, 0.0), axis=1)
        diag = alpha * diag + tl.sum(tl.where(key == q_pos[:, None], p, 0.0), axis=1)
        prev = alpha * prev + tl.sum(tl.where(key == q_pos[:, None] - 1, p, 0.0), axis=1)
        recent = alpha * recent + tl.sum(tl.where(key > q_pos[:, None] - window, p, 0.0), axis=1)
        arg_i = tl.where(block_max > m_i, start_n + block_arg, arg_i)
        m_i = m_new

        if DOT_FP32:
            acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32), input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)

    # Finalize. Rows with no visible key (l = 0): out 0, lse -inf, other stats 0, argmax -1.
    has_keys = l_i > 0.0
    inv_l = tl.where(has_keys, 1.0 / tl.where(has_keys, l_i, 1.0), 0.0)
    log_l = tl.log(tl.where(has_keys, l_i, 1.0))
    lse = tl.where(has_keys, m_i + log_l, float("-inf"))
    entropy = tl.where(has_keys, tl.maximum(log_l - p_s * inv_l, 0.0), 0.0)

    out = acc * inv_l[:, None]
    tl.store(
        out_ptr + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_dv[None, :] * stride_od,
        out.to(out_ptr.dtype.element_ty),
        mask=row_ok[:, None] & (offs_dv[None, :] < d_head_v),
    )
    row = stats_ptr + pid_bh.to(tl.int64) * n_query + offs_m
    tl.store(row + 0 * stats_plane, lse, mask=row_ok)
    tl.store(row + 1 * stats_plane, entropy, mask=row_ok)
    tl.store(row + 2 * stats_plane, inv_l, mask=row_ok)  # max_prob = exp(m - lse) = 1 / l
    tl.store(row + 3 * stats_plane, sink * inv_l, mask=row_ok)
    tl.store(row + 4 * stats_plane, diag * inv_l, mask=row_ok)
    tl.store(row + 5 * stats_plane, prev * inv_l, mask=row_ok)
    tl.store(row + 6 * stats_plane, recent * inv_l, mask=row_ok)
    norm = norm_ptr + pid_bh.to(tl.int64) * n_query + offs_m
    tl.store(norm, m_i, mask=row_ok)
    tl.store(norm + stats_plane, log_l, mask=row_ok)
    tl.store(argmax_ptr + pid_bh.to(tl.int64) * n_query + offs_m, arg_i.to(tl.int64), mask=row_ok)


def attention_forward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    scale: float,
    sliding_window: int | None,
    softcap: float | None,
    key_padding_mask: Tensor | None,
    n_sink: int,
    window: int,
) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """Launch pass 1. Inputs must already be validated (see `validation.validate_inputs`).

    Returns (out [b, h, q, d_v] in q.dtype, {name in ROW_STATS + NORMALIZER: float32 [b, h, q]},
    argmax int64 [b, h, q]).
    """
    batch, n_heads, n_query, d_head = q.shape
    n_kv_heads, n_key, d_head_v = k.shape[1], k.shape[2], v.shape[3]
    out = torch.empty(batch, n_heads, n_query, d_head_v, device=q.device, dtype=q.dtype)
    stats = torch.empty(N_ROW_STATS, batch, n_heads, n_query, device=q.device, dtype=torch.float32)
    normalizer = torch.empty(len(NORMALIZER), batch, n_heads, n_query, device=q.device, dtype=torch.float32)
    argmax = torch.empty(batch, n_heads, n_query, device=q.device, dtype=torch.int64)
    if key_padding_mask is not None:
        pad = key_padding_mask.to(torch.int8)
    else:
        pad = torch.empty(1, 1, device=q.device, dtype=torch.int8)  # never read

    cfg = forward_config(d_head, d_head_v)
    grid = (triton.cdiv(n_query, cfg["BLOCK_M"]), batch * n_heads)
    _attention_forward_kernel[grid](
        q, k, v, pad, out, stats, normalizer, argmax,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(), *pad.stride(),
        n_heads, n_query, n_key, d_head, d_head_v, n_heads // n_kv_heads,
        scale, softcap if softcap is not None else 1.0,
        sliding_window if sliding_window is not None else 0,
        n_sink, window, batch * n_heads * n_query,
        BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
        BLOCK_D=head_dim_block(d_head), BLOCK_DV=head_dim_block(d_head_v),
        HAS_SOFTCAP=softcap is not None, HAS_SLIDING=sliding_window is not None,
        HAS_PADDING=key_padding_mask is not None, DOT_FP32=dot_in_fp32(q.dtype),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return out, dict(zip(ROW_STATS, stats.unbind(0))) | dict(zip(NORMALIZER, normalizer.unbind(0))), argmax
