"""Fused causal attention + per-head statistics, without materializing the attention pattern.

Entry point: `attention_with_stats(q, k, v, ...) -> (out, AttentionStats)`.

Conventions
-----------
Shapes
    q: [batch, n_heads, n_query, d_head]; k: [batch, n_kv_heads, n_key, d_head];
    v: [batch, n_kv_heads, n_key, d_head_v]; out: [batch, n_heads, n_query, d_head_v].
    GQA: query head h reads kv head h // (n_heads // n_kv_heads). 1 <= n_query <= n_key.
Positions
    Queries are the LAST n_query positions of the key sequence (bottom-right aligned, as in
    KV-cache decoding): query i sits at absolute position p = (n_key - n_query) + i.
    All key indices (argmax, targets, received's last axis) are absolute key positions.
Visibility of key j to the query at position p (all conditions must hold)
    causal:           j <= p
    sliding_window=w: j > p - w, i.e. keys max(0, p-w+1)..p, the diagonal included. This is
                      transformers' `sliding_window_overlay` (masking_utils.py:
                      `kv_idx > q_idx - sliding_window`), used by Mistral / Gemma2.
    attention_chunk=C: j >= (p // C) * C, i.e. only the query's own chunk of C positions (Llama 4's
                      chunked layers; chunked and reference backends, no key_padding_mask).
    key_padding_mask: key_padding_mask[b, j] is True (False = padding, ignored).
Scores
    s = softcap * tanh(scale * q.k / softcap) if softcap is set (Gemma2), else scale * q.k;
    scale defaults to d_head ** -0.5. Masking happens after the softcap. The attention
    distribution is A[p, j] = exp(s_pj - lse_p) over visible j, 0 elsewhere.
Precision
    Statistics are float32 (argmax int64) for every input dtype; scores are accumulated in
    float32. `out` has the input dtype. Supported dtypes: float32, float16, bfloat16.

Statistics (AttentionStats fields; per (batch, head, query) unless noted)
---------------------------------------------------------------------------
lse            log sum_j exp(s_pj) over visible j (natural log).
entropy        -sum_j A log A (nats), in [0, log(#visible keys)].
max_prob       max_j A[p, j].
argmax         int64 key index of max_prob; ties (equal scores) -> lowest index.
diag_mass      A[p, p] (the query's own position).
prev_mass      A[p, p-1]; 0 when p = 0 or p-1 is not visible.
sink_mass_per_position  [b, h, q, n_sink]: A[p, j] for j = 0..n_sink-1 (0 where j >= n_key
               or j is not visible).
sink_mass      sum of sink_mass_per_position over its last axis.
window_mass    sum of A[p, j] for p-window+1 <= j <= p (the `window` most recent keys,
               diagonal included; independent of sliding_window, which restricts visibility).
target_mass    sum of A[p, j] over the SET of indices in targets[b, i, :]: -1 padding,
               out-of-range (<0 or >= n_key) and invisible indices contribute 0, and an
               index repeated within a row counts once.
received       [b, h, n_key]: column sums sum_i A[p_i, j] over all queries (fully masked
               rows contribute 0). Not normalized: divide by the number of queries that
               can see j if you want a mean.
learned_sink_mass  only with `sinks` ([n_heads] logits, gpt_oss / GraniteSWA): each head's learned
               sink logit joins every row's softmax denominator and attends to no value, so
               A[p, j] = exp(s_pj - lse'_p) with lse' = log(exp(lse) + exp(sink)); lse, entropy (which
               counts the sink's own term) and every mass above use that distribution, and
               learned_sink_mass = exp(sink - lse') = 1 - sum_j A[p, j]. chunked and reference only.
A field is None when not requested: sink_* when n_sink == 0, window_mass when window == 0,
target_mass when targets is None, received when received is False.

Rows with no visible key (only possible with key_padding_mask)
    out = 0, lse = -inf, argmax = -1 (not 0: key 0 is a real index), every other statistic
    0, and they add nothing to `received`. No NaN or inf appears anywhere else.

Backends
--------
"reference"  plain PyTorch on the full pattern: the readable definition; tests only.
"chunked"    PyTorch, loops over query chunks, O(chunk x n_key) memory; default on CPU. Inside
             `with chunk_budget(nbytes):` its score block is sized to nbytes (memory planning).
             With N torch threads, N worker threads take whole chunks (one score block each).
"triton"     flash-attention style Triton kernels, O(n) memory; default for CUDA tensors.
             On CPU it runs only under TRITON_INTERPRET=1 (set before triton is imported).
"""

from interp.kernels.chunked import attention_with_stats_chunked, chunk_budget
from interp.kernels.dispatch import BACKENDS, attention_with_stats, triton_available
from interp.kernels.reference import attention_with_stats_reference
from interp.kernels.stats import AttentionStats, StatsConfig


def __getattr__(name: str):
    # The triton backend imports triton, so it is loaded on first use only.
    if name == "attention_with_stats_triton":
        from interp.kernels.triton_backend import attention_with_stats_triton

        return attention_with_stats_triton
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BACKENDS",
    "AttentionStats",
    "StatsConfig",
    "attention_with_stats",
    "attention_with_stats_chunked",
    "attention_with_stats_reference",
    "attention_with_stats_triton",
    "chunk_budget",
    "triton_available",
]
