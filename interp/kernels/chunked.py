"""Chunked PyTorch implementation: exact statistics in O(chunk_size x n_key) memory per (batch, head).

Loops over blocks of queries; each block only looks at the key span it can see (causality
and the sliding window bound it), so nothing of size n_query x n_key is ever allocated.
This is the default backend on CPU.
"""

from __future__ import annotations

import torch
from torch import Tensor

from interp.kernels.stats import AttentionStats, StatsConfig
from interp.kernels.validation import validate_inputs

# Default chunk size targets this many bytes for one float32 [batch, heads, chunk, n_key] block
# (the implementation keeps about eight such temporaries alive at once, so ~130 MB in all), but never
# fewer than MIN_CHUNK queries: below that, Python loop overhead dominates at long context.
DEFAULT_CHUNK_BUDGET_BYTES = 16 * 2**20
MIN_CHUNK = 64


def default_chunk_size(batch: int, n_heads: int, n_query: int, n_key: int) -> int:
    """Largest query chunk whose float32 score block fits DEFAULT_CHUNK_BUDGET_BYTES (at least MIN_CHUNK)."""
    per_query = batch * n_heads * n_key * 4
    return max(1, min(n_query, max(MIN_CHUNK, DEFAULT_CHUNK_BUDGET_BYTES // per_query)))


def attention_with_stats_chunked(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    scale: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    key_padding_mask: Tensor | None = None,
    config: StatsConfig | None = None,
    chunk_size: int | None = None,
) -> tuple[Tensor, AttentionStats]:
    """Same results as the reference, computed query chunk by query chunk.

    chunk_size: queries per chunk; None picks `default_chunk_size(...)`.
    """
    config = config or StatsConfig()
    scale = validate_inputs(
        q, k, v, scale=scale, sliding_window=sliding_window, softcap=softcap,
        key_padding_mask=key_padding_mask, config=config,
    )
    batch, n_heads, n_query, d_head = q.shape
    n_kv_heads, n_key, d_head_v = k.shape[1], k.shape[2], v.shape[3]
    group = n_heads // n_kv_heads
    q_offset = n_key - n_query
    if chunk_size is None:
        chunk_size = default_chunk_size(batch, n_heads, n_query, n_key)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    device = q.device
    f32 = dict(device=device, dtype=torch.float32)
    out = torch.empty(batch, n_heads, n_query, d_head_v, device=device, dtype=q.dtype)
    lse, entropy, max_prob, diag_mass, prev_mass, window_mass, target_mass = (
        torch.zeros(batch, n_heads, n_query, **f32) for _ in range(7)
    )
    argmax = torch.empty(batch, n_heads, n_query, device=device, dtype=torch.int64)
    sink_per_position = torch.zeros(batch, n_heads, n_query, config.n_sink, **f32)
    received = torch.zeros(batch, n_heads, n_key, **f32) if config.received else None

    # Group query heads by the kv head they read: [b, n_kv_heads, group, n_query, d].
    q_grouped = q.view(batch, n_kv_heads, group, n_query, d_head)

    def flat(t: Tensor) -> Tensor:
        """[b, kv, g, c, ...] -> [b, h, c, ...] (query head h = kv * group + g)."""
        return t.reshape(batch, n_heads, *t.shape[3:])

    for start in range(0, n_query, chunk_size):
        stop = min(start + chunk_size, n_query)
        query_pos = torch.arange(start, stop, device=device) + q_offset  # [c]
        # Keys this chunk can see: [key_lo, key_hi).
        key_hi = q_offset + stop
        key_lo = 0 if sliding_window is None else max(0, q_offset + start - sliding_window + 1)
        key_pos = torch.arange(key_lo, key_hi, device=device)  # [s]
        span = key_hi - key_lo

        q_c = q_grouped[:, :, :, start:stop].float()
        k_c = k[:, :, key_lo:key_hi].float()[:, :, None]  # [b, kv, 1, s, d]
        v_c = v[:, :, key_lo:key_hi].float()[:, :, None]
        scores = scale * (q_c @ k_c.transpose(-1, -2))  # [b, kv, g, c, s]
        if softcap is not None:
            scores = softcap * torch.tanh(scores / softcap)

        visible = key_pos[None, :] <= query_pos[:, None]
        if sliding_window is not None:
            visible = visible & (key_pos[None, :] > query_pos[:, None] - sliding_window)
        visible = visible[None, None, None]  # [1, 1, 1, c, s]
        if key_padding_mask is not None:
            visible = visible & key_padding_mask[:, None, None, None, key_lo:key_hi]
        scores = scores.masked_fill(~visible, float("-inf"))

        lse_c = torch.logsumexp(scores, dim=-1)  # [b, kv, g, c]
        row_ok = torch.isfinite(lse_c)
        probs = torch.exp(scores - torch.where(row_ok, lse_c, 0.0)[..., None])
        out_c = probs @ v_c  # [b, kv, g, c, dv]

        rows = slice(start, stop)
        out[:, :, rows] = flat(out_c).to(q.dtype)
        lse[:, :, rows] = flat(lse_c)
        entropy[:, :, rows] = flat(-torch.special.xlogy(probs, probs).sum(-1))
        max_prob[:, :, rows] = flat(probs.amax(-1))
        argmax[:, :, rows] = flat(torch.where(row_ok, scores.argmax(-1) + key_lo, -1))

        # The diagonal is always inside the span; the previous key may fall just before it.
        diag_col = (query_pos - key_lo).expand(*probs.shape[:-1])[..., None]
        diag_mass[:, :, rows] = flat(probs.gather(-1, diag_col)[..., 0])
        prev_col = query_pos - 1 - key_lo
        prev_probs = probs.gather(-1, prev_col.clamp(min=0).expand(*probs.shape[:-1])[..., None])[..., 0]
        prev_mass[:, :, rows] = flat(torch.where(prev_col >= 0, prev_probs, 0.0))

        sink_hi = min(config.n_sink, key_hi)
        if key_lo < sink_hi:
            sink_per_position[:, :, rows, key_lo:sink_hi] = flat(probs[..., : sink_hi - key_lo])
        if config.window > 0:
            in_window = key_pos[None, :] > query_pos[:, None] - config.window
            window_mass[:, :, rows] = flat((probs * in_window).sum(-1))
        if config.targets is not None:
            # Scatter into a per-query membership mask over the span (duplicates collapse);
            # indices outside the span (incl. -1) go to a dropped extra column.
            t = config.targets[:, start:stop] - key_lo
            t = torch.where((t >= 0) & (t < span), t, span)
            is_target = torch.zeros(batch, stop - start, span + 1, dtype=torch.bool, device=device)
            is_target.scatter_(-1, t, True)
            target_mass[:, :, rows] = flat((probs * is_target[:, None, None, :, :span]).sum(-1))
        if received is not None:
            received[:, :, key_lo:key_hi] += probs.sum(dim=-2).reshape(batch, n_heads, span)

    stats = AttentionStats(
        lse=lse, entropy=entropy, max_prob=max_prob, argmax=argmax,
        diag_mass=diag_mass, prev_mass=prev_mass, received=received,
    )
    if config.n_sink > 0:
        stats.sink_mass_per_position = sink_per_position
        stats.sink_mass = sink_per_position.sum(-1)
    if config.window > 0:
        stats.window_mass = window_mass
    if config.targets is not None:
        stats.target_mass = target_mass
    return out, stats
