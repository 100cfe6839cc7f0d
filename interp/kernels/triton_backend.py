"""Triton backend: pass 1 (forward + row statistics), pass 2 (received), and two small
PyTorch gathers for the statistics that concern a handful of specific keys per query
(sink_mass_per_position, target_mass), computed exactly as exp((s - m) - (lse - m)) at those keys.

Importing this module imports triton; `interp.kernels.dispatch` only does so on demand.
"""

from __future__ import annotations

import torch
from torch import Tensor

from interp.kernels.stats import AttentionStats, StatsConfig
from interp.kernels.triton_common import interpreting
from interp.kernels.triton_forward import attention_forward
from interp.kernels.triton_received import attention_received
from interp.kernels.validation import validate_inputs


def attention_with_stats_triton(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    scale: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    key_padding_mask: Tensor | None = None,
    config: StatsConfig | None = None,
) -> tuple[Tensor, AttentionStats]:
    """Flash-attention style Triton implementation; O(n) memory. Needs CUDA tensors or TRITON_INTERPRET=1."""
    config = config or StatsConfig()
    scale = validate_inputs(
        q, k, v, scale=scale, sliding_window=sliding_window, softcap=softcap,
        key_padding_mask=key_padding_mask, config=config,
    )
    if not q.is_cuda and not interpreting():
        raise ValueError("the triton backend needs CUDA tensors (or TRITON_INTERPRET=1 set before importing triton)")
    masking = dict(sliding_window=sliding_window, softcap=softcap, key_padding_mask=key_padding_mask)

    out, row, argmax = attention_forward(
        q, k, v, scale=scale, n_sink=config.n_sink, window=config.window, **masking
    )
    stats = AttentionStats(
        lse=row["lse"], entropy=row["entropy"], max_prob=row["max_prob"], argmax=argmax,
        diag_mass=row["diag_mass"], prev_mass=row["prev_mass"],
    )
    batch, _, n_query, _ = q.shape
    # Probabilities relative to the row max (lse itself is too large to subtract without rounding).
    normalizer = dict(row_max=row["row_max"], log_norm=row["log_norm"])
    if config.n_sink > 0:
        sinks = torch.arange(config.n_sink, device=q.device).expand(batch, n_query, config.n_sink)
        stats.sink_mass_per_position = probs_at_keys(q, k, sinks, scale=scale, **normalizer, **masking)
        stats.sink_mass = row["sink_mass"]
    if config.window > 0:
        stats.window_mass = row["window_mass"]
    if config.targets is not None:
        targets = dedupe_targets(config.targets, n_key=k.shape[2])
        stats.target_mass = probs_at_keys(q, k, targets, scale=scale, **normalizer, **masking).sum(-1)
    if config.received:
        stats.received = attention_received(q, k, scale=scale, **normalizer, **masking)
    return out, stats


def dedupe_targets(targets: Tensor, n_key: int) -> Tensor:
    """Replace out-of-range and repeated indices within each row by -1 (order is not kept)."""
    t = torch.where((targets >= 0) & (targets < n_key), targets, -1).sort(dim=-1).values
    repeated = torch.zeros_like(t, dtype=torch.bool)
    repeated[..., 1:] = t[..., 1:] == t[..., :-1]
    return t.masked_fill(repeated, -1)


def probs_at_keys(
    q: Tensor,
    k: Tensor,
    key_index: Tensor,
    *,
    row_max: Tensor,
    log_norm: Tensor,
    scale: float,
    sliding_window: int | None,
    softcap: float | None,
    key_padding_mask: Tensor | None,
) -> Tensor:
    """Attention probabilities A[b, h, i, key_index[b, i, t]] -> float32 [b, h, q, T].

    row_max, log_norm: [b, h, q] from pass 1, A = exp((s - row_max) - log_norm). Entries whose key
    is -1, out of range, or invisible to query i are 0; so are rows with row_max = -inf (no key).
    Memory is O(n_query * T * d_head) per kv head.
    """
    batch, n_heads, n_query, d_head = q.shape
    n_kv_heads, n_key = k.shape[1], k.shape[2]
    group = n_heads // n_kv_heads
    n_t = key_index.shape[-1]

    query_pos = (torch.arange(n_query, device=q.device) + (n_key - n_query))[:, None]  # [q, 1]
    valid = (key_index >= 0) & (key_index < n_key) & (key_index <= query_pos)
    if sliding_window is not None:
        valid = valid & (key_index > query_pos - sliding_window)
    idx = key_index.clamp(0, n_key - 1)  # [b, q, T]
    if key_padding_mask is not None:
        valid = valid & key_padding_mask.gather(1, idx.reshape(batch, -1)).view_as(idx)

    gather_idx = idx.reshape(batch, 1, n_query * n_t, 1).expand(batch, n_kv_heads, n_query * n_t, d_head)
    k_at = k.gather(2, gather_idx).float().view(batch, n_kv_heads, n_query, n_t, d_head)
    q_grouped = q.float().view(batch, n_kv_heads, group, n_query, d_head)
    s = scale * torch.einsum("bgrqd,bgqtd->bgrqt", q_grouped, k_at).reshape(batch, n_heads, n_query, n_t)
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    row_ok = torch.isfinite(row_max)[..., None]
    p = torch.exp((s - torch.where(row_ok, row_max[..., None], 0.0)) - log_norm[..., None])
    return torch.where(valid[:, None] & row_ok, p, 0.0)
