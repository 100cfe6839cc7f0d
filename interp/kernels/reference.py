"""Reference implementation: materializes the full [batch, head, query, key] pattern.

Meant as executable documentation of every statistic and as the oracle for tests; it needs
O(batch * heads * n_query * n_key) memory, so use `attention_with_stats` for real workloads.
"""

from __future__ import annotations

import torch
from torch import Tensor

from interp.kernels.stats import AttentionStats, StatsConfig
from interp.kernels.validation import validate_inputs


def reference_pattern(
    q: Tensor,
    k: Tensor,
    *,
    scale: float,
    sliding_window: int | None = None,
    softcap: float | None = None,
    key_padding_mask: Tensor | None = None,
    attention_chunk: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Full float32 (scores, probs), both [b, h, n_query, n_key]; invisible scores are -inf.

    probs rows sum to 1, or are all 0 for a query that sees no key.
    """
    batch, n_heads, n_query, _ = q.shape
    n_kv_heads, n_key = k.shape[1], k.shape[2]
    # GQA: query head h reads kv head h // group.
    k_full = k.float().repeat_interleave(n_heads // n_kv_heads, dim=1)
    scores = scale * (q.float() @ k_full.transpose(-1, -2))
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)

    # Query i sits at absolute position n_key - n_query + i (bottom-right aligned).
    query_pos = torch.arange(n_query, device=q.device) + (n_key - n_query)
    key_pos = torch.arange(n_key, device=q.device)
    qp, kp = query_pos[:, None], key_pos[None, :]
    visible = kp <= qp  # causal
    if sliding_window is not None:
        visible = visible & (kp > qp - sliding_window)
    if attention_chunk is not None:  # a query sees only its own chunk (Llama 4)
        visible = visible & (kp >= qp // attention_chunk * attention_chunk)
    visible = visible.expand(batch, 1, n_query, n_key)
    if key_padding_mask is not None:
        visible = visible & key_padding_mask[:, None, None, :]

    scores = scores.masked_fill(~visible, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1, keepdim=True)
    # Masked entries become exp(-inf) = 0; a row with no visible key becomes all zeros.
    probs = torch.exp(scores - torch.where(torch.isfinite(lse), lse, 0.0))
    return scores, probs


def attention_with_stats_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    scale: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    key_padding_mask: Tensor | None = None,
    config: StatsConfig | None = None,
    sinks: Tensor | None = None,
    attention_chunk: int | None = None,
) -> tuple[Tensor, AttentionStats]:
    """Attention output and statistics, computed the obvious way in float32."""
    config = config or StatsConfig()
    scale = validate_inputs(
        q, k, v, scale=scale, sliding_window=sliding_window, softcap=softcap,
        key_padding_mask=key_padding_mask, config=config,
    )
    batch, n_heads, n_query, _ = q.shape
    n_key = k.shape[2]
    scores, probs = reference_pattern(
        q, k, scale=scale, sliding_window=sliding_window, softcap=softcap, key_padding_mask=key_padding_mask,
        attention_chunk=attention_chunk,
    )
    lse = torch.logsumexp(scores, dim=-1)  # -inf where a row sees no key
    row_ok = torch.isfinite(lse)
    learned_sink = None
    if sinks is not None:
        # The learned sink logit joins the softmax denominator; its probability is the mass no key gets.
        sink_logits = sinks.float().view(1, n_heads, 1).expand(batch, n_heads, n_query)
        lse = torch.logaddexp(lse, sink_logits)
        probs = torch.exp(scores - lse[..., None])
        learned_sink = torch.exp(sink_logits - lse)
    query_pos = torch.arange(n_query, device=q.device) + (n_key - n_query)  # absolute positions
    qp, kp = query_pos[:, None], torch.arange(n_key, device=q.device)[None, :]
    v_full = v.float().repeat_interleave(n_heads // v.shape[1], dim=1)
    out = (probs @ v_full).to(q.dtype)

    entropy = -torch.special.xlogy(probs, probs).sum(-1)
    if learned_sink is not None:
        entropy = entropy - torch.special.xlogy(learned_sink, learned_sink)
    # Argmax over scores (= argmax of probs, but ties are decided on the unrounded scores).
    # torch.argmax returns the first maximal index, i.e. ties -> lowest key index.
    argmax = torch.where(row_ok, scores.argmax(-1), -1)
    max_prob = probs.amax(-1)

    def mass(key_selected: Tensor) -> Tensor:
        """Total probability on the keys where key_selected ([q, k] or broadcastable) is True."""
        return (probs * key_selected).sum(-1)

    stats = AttentionStats(
        lse=lse,
        entropy=entropy,
        max_prob=max_prob,
        argmax=argmax,
        diag_mass=mass(kp == qp),
        prev_mass=mass(kp == qp - 1),
        learned_sink_mass=learned_sink,
    )
    if config.n_sink > 0:
        per_position = torch.zeros(batch, n_heads, n_query, config.n_sink, device=q.device)
        n_real = min(config.n_sink, n_key)
        per_position[..., :n_real] = probs[..., :n_real]
        stats.sink_mass_per_position = per_position
        stats.sink_mass = mass(kp < config.n_sink)
    if config.window > 0:
        stats.window_mass = mass((kp > qp - config.window) & (kp <= qp))
    if config.targets is not None:
        # A set membership mask: duplicate indices set the same entry, so they count once.
        # Invalid indices (-1 or >= n_key) are routed to an extra column that is dropped.
        t = config.targets
        t = torch.where((t >= 0) & (t < n_key), t, n_key)
        is_target = torch.zeros(batch, n_query, n_key + 1, dtype=torch.bool, device=q.device)
        is_target.scatter_(-1, t, True)
        stats.target_mass = mass(is_target[:, None, :, :n_key])
    if config.received:
        stats.received = probs.sum(dim=-2)  # [b, h, k]
    return out, stats
