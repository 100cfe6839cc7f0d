"""Reference implementation: materializes the full [batch, head, query, key] pattern.

Meant as executable documentation of every statistic and as the oracle for tests; it needs
O(batch * heads * n_query * n_key) memory, so use `attention_with_stats` for real workloads.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    scores = masked_scores(
        q, k, scale=scale, sliding_window=sliding_window, softcap=softcap, key_padding_mask=key_padding_mask,
        attention_chunk=attention_chunk,
    )
    return scores, softmax_relative_to_max(scores).probs


def masked_scores(
    q: Tensor,
    k: Tensor,
    *,
    scale: float,
    sliding_window: int | None,
    softcap: float | None,
    key_padding_mask: Tensor | None,
    attention_chunk: int | None,
) -> Tensor:
    """Float32 scores [b, h, n_query, n_key], -inf where a key is invisible to the query."""
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

    return scores.masked_fill(~visible, float("-inf"))


@dataclass
class RowSoftmax:
    """A softmax over the last axis, kept relative to each row's maximum ``m`` (see `softmax_relative_to_max`)."""

    row_max: Tensor  # m [..., 1]; -inf for a row with no visible entry
    log_norm: Tensor  # log sum_j exp(s_j - m) = lse - m [..., 1], in [0, log n]; -inf for an empty row
    log_probs: Tensor  # (s - m) - log_norm [..., n]; -inf where invisible
    probs: Tensor  # exp(log_probs) [..., n]; all 0 in an empty row

    @property
    def lse(self) -> Tensor:
        """log sum_j exp(s_j) [...]: -inf for an empty row."""
        return (self.row_max + self.log_norm)[..., 0]

    @property
    def entropy(self) -> Tensor:
        """-sum_j p_j log p_j [...]; invisible entries (p = 0, log p = -inf) add 0."""
        return -torch.where(self.probs > 0, self.probs * self.log_probs, 0.0).sum(-1)


def softmax_relative_to_max(scores: Tensor) -> RowSoftmax:
    """Softmax of float32 ``scores`` [..., n] (-inf = invisible) with every quantity taken relative to the row max.

    ``lse`` is large when the scores are (Gemma 3 reaches ~355, where one float32 ulp is 3e-5), but
    ``s - m`` and ``log_norm`` are exact or small, so ``log p = (s - m) - log_norm`` keeps full precision.
    Computing ``exp(s - lse)`` or ``lse - sum(p * s)`` instead cancels two numbers near lse and leaves
    an absolute error of eps * |lse| in every log-probability (1e-5..1e-4 for Gemma 3).
    """
    row_max = scores.amax(-1, keepdim=True)
    shifted = scores - torch.where(torch.isfinite(row_max), row_max, 0.0)  # <= 0; -inf where invisible
    log_norm = torch.logsumexp(shifted, -1, keepdim=True)  # exp(0) = 1 is one of the terms: >= 0
    log_probs = shifted - torch.where(torch.isfinite(log_norm), log_norm, 0.0)
    return RowSoftmax(row_max=row_max, log_norm=log_norm, log_probs=log_probs, probs=torch.exp(log_probs))


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
    scores = masked_scores(
        q, k, scale=scale, sliding_window=sliding_window, softcap=softcap, key_padding_mask=key_padding_mask,
        attention_chunk=attention_chunk,
    )
    row_ok = torch.isfinite(scores.amax(-1))  # False where a row sees no key
    learned_sink = None
    if sinks is None:
        softmax = softmax_relative_to_max(scores)
        probs = softmax.probs
    else:
        # The learned sink logit is one more column of the softmax that attends to no value; its
        # probability is the mass no key gets, and its own -p log p term counts in the entropy.
        sink_logits = sinks.float().view(1, n_heads, 1, 1).expand(batch, n_heads, n_query, 1)
        softmax = softmax_relative_to_max(torch.cat([scores, sink_logits], dim=-1))
        probs, learned_sink = softmax.probs[..., :n_key], softmax.probs[..., n_key]
    lse = softmax.lse  # -inf where a row sees no key (and has no sink)
    query_pos = torch.arange(n_query, device=q.device) + (n_key - n_query)  # absolute positions
    qp, kp = query_pos[:, None], torch.arange(n_key, device=q.device)[None, :]
    v_full = v.float().repeat_interleave(n_heads // v.shape[1], dim=1)
    out = (probs @ v_full).to(q.dtype)

    entropy = softmax.entropy
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
