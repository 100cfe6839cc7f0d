"""Chunked PyTorch implementation: exact statistics in O(chunk_size x n_key) memory per (batch, head).

Loops over blocks of queries; each block only looks at the key span it can see (causality
and the sliding window bound it), so nothing of size n_query x n_key is ever allocated.
This is the default backend on CPU.

On a CPU, each chunk's per-row work (everything between the two matrix products) runs in one C call
when :mod:`interp.kernels.native` could build its library: three passes per row while it is in cache.
Without it (no compiler, ``INTERP_NATIVE_KERNELS=0``, or gradients) torch's ops do the same work, and
since their passes over each [chunk, span] block of scores cost as much as the two matmuls, every
statistic is derived from as few of them as possible:

* the causal mask touches only the trailing [chunk, chunk] square (every earlier key is visible);
* one fused ``softmax`` gives the pattern ``A``; a blocked ``amax`` gives the row maximum ``m`` of
  the scores and their argmax; then ``max_prob = A[argmax]`` and ``lse = m - log(max_prob)``;
* ``entropy = (lse - m) - sum(A * (s - m))`` is one in-place subtraction and one fused row dot
  product; ``received`` is a sum over queries;
* the other statistics read a few columns of ``A``.

With several torch threads, whole chunks go to worker threads that each run torch's ops on one core
(`_run_in_threads`): the ops of one chunk are too many and too short to split across cores.

Everything is kept relative to ``m``: ``lse - m = -log(max_prob)`` and ``s - m`` are small (or exactly
representable), while ``lse`` itself reaches the hundreds (Gemma 3: ~355, where a float32 ulp is 3e-5),
so ``lse - sum(A * s)`` would cancel two numbers of that size and lose 1e-5..1e-4 of the entropy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
import math
import os
import threading

import torch
from torch import Tensor

from interp.kernels.native import row_kernels
from interp.kernels.stats import AttentionStats, StatsConfig
from interp.kernels.validation import validate_inputs

# Default chunk size targets this many bytes for one float32 [batch, heads, chunk, n_key] block
# (the implementation keeps two such buffers, plus small temporaries), but never fewer
# than MIN_CHUNK queries: below that, Python loop overhead dominates at long context.
# The block is read and written by about eight passes (two products, max, softmax, shift, entropy,
# column sums): a few MB stays in the CPU's caches between them, 16 MB did not and ran each pass
# 1.5-2x slower per element (SmolLM2 at 1-2K tokens the kernel took 1.3-1.5x longer; docs/benchmarks.md).
DEFAULT_CHUNK_BUDGET_BYTES = 4 * 2**20
MIN_CHUNK = 64
# With the C row passes (interp.kernels.native), which walk each row while it is in cache, blocks of about
# 2 MB measured fastest on one thread (SmolLM2's shapes at 1K-8K tokens; docs/benchmarks.md), within 32..128
# queries: fewer make the products slow, more fall out of the cache. N workers take N times that each, since
# the Python between a chunk's ops runs one worker at a time (2 threads at 1K-2K: 56 queries beat 32).
NATIVE_BLOCK_BYTES = 2 * 2**20
NATIVE_CHUNK_RANGE = (32, 128)

# Stands in for -inf on masked scores: softmax gives them exactly 0 weight, and 0 * _MASKED is 0
# where 0 * -inf would be NaN. Real scores are dozens of orders of magnitude smaller.
_MASKED = torch.finfo(torch.float32).min / 2

# Columns per block when looking for the argmax (see `_row_max_argmax`).
_ARGMAX_BLOCK = 64


_planned_budget: ContextVar[int | None] = ContextVar("interp_chunk_budget", default=None)


@contextmanager
def chunk_budget(budget_bytes: int | None) -> Iterator[None]:
    """Inside the block, the chunked backend sizes its score block to ``budget_bytes`` (None: default).

    Memory planning (:func:`interp.memory.plan_scan`) uses it so that every statistics pass of a scan
    fits ``--max-memory`` without threading a size through each analysis.
    """
    token = _planned_budget.set(budget_bytes)
    try:
        yield
    finally:
        _planned_budget.reset(token)


_scratch = threading.local()
_reusing: ContextVar[bool] = ContextVar("interp_reuse_workspace", default=False)


@contextmanager
def reuse_workspace() -> Iterator[None]:
    """Inside the block, the chunked backend keeps its two score buffers between calls; freed on exit.

    Fresh score blocks per call fragment the CPU allocator's heap, which then grows by about one block
    per layer (several hundred MB over a 30-layer forward at 4K tokens); ``collect_attention_stats``
    therefore reuses them for its whole block. Outside such a block every call allocates its own.
    """
    token = _reusing.set(True)
    try:
        yield
    finally:
        _reusing.reset(token)
        if not _reusing.get():
            _scratch.__dict__.pop("buffers", None)


def _workspace(numel: int, device: torch.device, slot: int = 0, pattern: bool = True) -> tuple[Tensor, Tensor]:
    """Two flat float32 buffers (scores, pattern) of at least ``numel`` elements; one pair per ``slot`` (worker).

    ``pattern=False`` (the C row passes write the pattern over the scores): the second may be empty.
    """
    pattern_numel = numel if pattern else 0

    def fresh() -> tuple[Tensor, Tensor]:
        # Plain tensors even under torch.inference_mode(): a later call outside it must still write to them.
        with torch.inference_mode(False):
            return (
                torch.empty(numel, dtype=torch.float32, device=device),
                torch.empty(pattern_numel, dtype=torch.float32, device=device),
            )

    if not _reusing.get():
        return fresh()
    buffers: dict[str, tuple[Tensor, Tensor]] = _scratch.__dict__.setdefault("buffers", {})
    key = f"{device}/{slot}"
    held = buffers.get(key)
    if held is None or held[0].numel() < numel or held[1].numel() < pattern_numel:
        buffers.pop(key, None)  # free the smaller pair before allocating the larger one
        held = buffers[key] = fresh()
    return held


def default_chunk_size(
    batch: int, n_heads: int, n_query: int, n_key: int, budget_bytes: int | None = None, workers: int = 1,
    native: bool = False,
) -> int:
    """Queries per chunk so that ``workers`` float32 ``[batch, heads, chunk, n_key]`` score blocks fit a budget.

    ``budget_bytes=None`` uses DEFAULT_CHUNK_BUDGET_BYTES but never goes below MIN_CHUNK queries (Python
    overhead), or NATIVE_BLOCK_BYTES per worker's block with ``native`` (the C row passes); an explicit
    budget (from memory planning) is honoured strictly, down to one query.
    """
    per_query = batch * n_heads * n_key * 4 * workers
    if budget_bytes is None:
        if native:
            low, high = NATIVE_CHUNK_RANGE
            # ... and at least 8 chunks per worker where that keeps 32 queries, so the deal (`_deal`) can even out their work.
            chunk = min(high, NATIVE_BLOCK_BYTES * workers // (per_query // workers), n_query // (8 * workers))
            return max(1, min(n_query, max(low, chunk)))
        return max(1, min(n_query, max(MIN_CHUNK, DEFAULT_CHUNK_BUDGET_BYTES // per_query)))
    return max(1, min(n_query, budget_bytes // per_query))


def _x_log_x(x: Tensor, log_x: Tensor) -> Tensor:
    """``x * log_x``, with 0 where ``x`` is 0 (where ``log_x`` may be -inf)."""
    return torch.where(x > 0, x * log_x, 0.0)


def _row_max_argmax(scores: Tensor) -> tuple[Tensor, Tensor]:
    """``(max, argmax)`` over the last axis, ties -> lowest index, like ``scores.max(-1)``.

    ``Tensor.max(dim)`` tracks indices element by element and is ~15x slower on CPU than ``amax``;
    here one vectorized ``amax`` per block of columns finds the first block holding the maximum,
    and the argmax is searched only inside that block.
    """
    span = scores.shape[-1]
    full = span - span % _ARGMAX_BLOCK
    parts = []
    if full:
        parts.append(scores[..., :full].unflatten(-1, (-1, _ARGMAX_BLOCK)).amax(-1))
    if full < span:
        parts.append(scores[..., full:].amax(-1, keepdim=True))
    block_max = torch.cat(parts, -1) if len(parts) > 1 else parts[0]
    row_max, block = block_max.max(-1)  # few columns: the slow indexed max is fine here
    cols = block[..., None] * _ARGMAX_BLOCK + torch.arange(_ARGMAX_BLOCK, device=scores.device)
    if full < span:
        cols = cols.clamp(max=span - 1)  # a short last block repeats its last column: harmless for argmax
    within = scores.gather(-1, cols).argmax(-1)
    return row_max, block * _ARGMAX_BLOCK + within


_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    """A pool kept per process and worker count, so a forward does not start threads for every layer.

    Keyed by the process id too: a forked child inherits the parent's pool object but not its threads.
    """
    key = (os.getpid(), workers)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = ThreadPoolExecutor(workers, thread_name_prefix="interp-chunk")
        return pool


def _deal(costs: list[int], workers: int) -> list[list[int]]:
    """Chunk indices per worker, the costliest first to the least loaded (ties: lowest index), each list in order.

    Causal chunks cost more the later they start, so dealing them in turn leaves the last worker the
    most work (2 workers, 9 chunks of cost 1..9: 25 against 20); this greedy deal gives 23 against 22.
    """
    loads, dealt = [0] * workers, [[] for _ in range(workers)]
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        worker = min(range(workers), key=lambda w: (loads[w], w))
        loads[worker] += costs[index]
        dealt[worker].append(index)
    return [sorted(indices) for indices in dealt]


def _run_in_threads(
    run_chunk: Callable[[int, Tensor, Tensor, Tensor | None], None],
    starts: range,
    costs: list[int],
    buffers: list[tuple[Tensor, Tensor]],
    received: Tensor | None,
) -> None:
    """Run the chunks on ``len(buffers)`` threads, each running torch's ops on one core.

    torch parallelizes each op across its threads, and the chunked kernel makes a few dozen ops per
    chunk: each ends at a barrier, where every thread waits for the slowest (on a busy machine, for one
    that lost its core), and most are too short to split well. Whole chunks per thread need no barrier
    but the last, and each chunk's ops then run on one thread, so the results do not depend on the number
    of threads (except ``received``, summed over threads at the end). The output and statistics of
    different chunks are disjoint; ``received`` overlaps, so every thread but the first sums into a
    buffer of its own. The chunks are dealt by their ``costs`` (:func:`_deal`); a fixed assignment keeps
    ``received``'s summation order, and so its bits, the same from run to run.
    """
    workers = len(buffers)
    sums = [received] + [None if received is None else torch.zeros_like(received) for _ in buffers[1:]]
    # Grad and inference mode are per thread: the workers take the caller's.
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    dealt = _deal(costs, workers)

    def work(slot: int) -> None:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            for index in dealt[slot]:
                run_chunk(starts[index], *buffers[slot], sums[slot])

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pool = _pool(workers - 1)
        others = [pool.submit(work, slot) for slot in range(1, workers)]
        work(0)
        for other in others:
            other.result()
    finally:
        torch.set_num_threads(threads)
    for extra in sums[1:]:
        if extra is not None:
            received += extra


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
    sinks: Tensor | None = None,
    attention_chunk: int | None = None,
    chunk_size: int | None = None,
    chunk_bytes: int | None = None,
) -> tuple[Tensor, AttentionStats]:
    """Same results as the reference, computed query chunk by query chunk.

    chunk_size: queries per chunk; None picks ``default_chunk_size(..., budget_bytes=chunk_bytes)``, shared
    by the worker threads (one per torch thread, without gradients on the CPU).
    chunk_bytes: None takes the enclosing :func:`chunk_budget`, if any. The block buffers (two per worker;
    one with the C row passes) take about ``2 * chunk_bytes``.

    Without gradients on the CPU, each chunk's per-row work (softmax, every statistic but target_mass)
    runs in one C call (:mod:`interp.kernels.native`) when its library could be built, else in torch's ops.
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
    track = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    # Without gradients on the CPU, each of torch's threads takes whole chunks (`_run_in_threads`).
    threads = 1 if track or q.device.type != "cpu" else torch.get_num_threads()
    native = None if track or q.device.type != "cpu" else row_kernels()
    if chunk_size is None:  # the workers' blocks share the budget
        budget = chunk_bytes if chunk_bytes is not None else _planned_budget.get()
        chunk_size = default_chunk_size(batch, n_heads, n_query, n_key, budget, workers=threads, native=native is not None)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    device = q.device
    f32 = dict(device=device, dtype=torch.float32)
    # Work grouped by kv head: [b, kv, g, ...], flattened to [b, h, ...] at the end (h = kv * group + g).
    grouped = (batch, n_kv_heads, group, n_query)
    out = torch.empty(*grouped, d_head_v, device=device, dtype=q.dtype)
    # Every float32 statistic is a view of one allocation: callers keep the statistics of each layer,
    # and a dozen small blocks per layer left between freed activations fragment the CPU heap.
    # (Autograd cannot write into views of one buffer, so tracked calls allocate each on its own.)
    shapes = [grouped] * 8 + [(*grouped, config.n_sink), (batch, n_kv_heads, group, n_key if config.received else 0)]
    numels = [math.prod(shape) for shape in shapes]
    if track:
        kept = [torch.zeros(shape, **f32) for shape in shapes]
    else:
        kept = [t.view(shape) for t, shape in zip(torch.zeros(sum(numels), **f32).split(numels), shapes)]
    lse, entropy, max_prob, diag_mass, prev_mass, window_mass, target_mass, sink_mass, sink_per_position = kept[:9]
    received = kept[9] if config.received else None
    argmax = torch.empty(grouped, device=device, dtype=torch.int64)
    sink_logits = None if sinks is None else sinks.float().view(1, n_kv_heads, group, 1)
    learned_sink = None if sinks is None else torch.zeros(grouped, **f32)

    # [b, kv, g, q, d]. Tracked: scaled here; otherwise the product scales (baddbmm's alpha), sparing a copy of q.
    q_heads = (q.float() * scale if track else q.float()).unflatten(1, (n_kv_heads, group))
    # Contiguous [d, key] operands make the per-kv-head matrix products markedly faster on CPU.
    k_t = k.float().transpose(-1, -2).contiguous()
    v32 = v.float().contiguous()  # HF hands a transposed view; contiguous, each chunk's rows are a view too
    # Per chunk shape, built once per call: the causal mask [c, c] and the recent-window columns.
    masks: dict[int, Tensor] = {}
    windows: dict[tuple[int, int], Tensor] = {}
    if native is not None:  # where the C row passes write each statistic (checked once per call)
        native_outputs = native.outputs(
            argmax=argmax.view(-1, n_query), n_sink=config.n_sink,
            sink_logits=None if sinks is None else sink_logits.reshape(-1).contiguous(),
            **{name: None if array is None else array.view(-1, n_query, *array.shape[4:]) for name, array in [
                ("lse", lse), ("entropy", entropy), ("max_prob", max_prob), ("diag_mass", diag_mass),
                ("prev_mass", prev_mass), ("window_mass", window_mass if config.window > 0 else None),
                ("sink_mass", sink_per_position if config.n_sink > 0 else None), ("learned_sink", learned_sink),
            ]},
        )

    def key_range(start: int) -> tuple[int, int, int]:
        """(stop, key_lo, key_hi): the chunk's queries are [start, stop), the keys they can see [key_lo, key_hi)."""
        stop = min(start + chunk_size, n_query)
        key_lo = 0 if sliding_window is None else max(0, q_offset + start - sliding_window + 1)
        if attention_chunk is not None:  # Llama 4: a query sees only its own chunk of attention_chunk positions
            key_lo = max(key_lo, (q_offset + start) // attention_chunk * attention_chunk)
        return stop, key_lo, q_offset + stop

    def run_chunk(start: int, scores_buffer: Tensor | None, probs_buffer: Tensor | None, received: Tensor | None) -> None:
        """Queries [start, start + chunk_size): their output and statistics, added to ``received``."""
        stop, key_lo, key_hi = key_range(start)
        c, span = stop - start, key_hi - key_lo
        rows = slice(start, stop)

        # One [g*c, d] @ [d, span] product per (batch, kv head): its g query heads share the keys.
        q_c = q_heads[:, :, :, rows].reshape(batch, n_kv_heads, group * c, d_head)
        if track:
            scores = torch.matmul(q_c, k_t[..., key_lo:key_hi])
            if softcap is not None:
                scores = softcap * torch.tanh(scores / softcap)
        else:
            scores = scores_buffer[: batch * n_heads * c * span].view(batch, n_kv_heads, group * c, span)
            # One batched product: a loop of per-head products is as fast on an idle CPU, but each is a
            # parallel region of its own, and on a busy one every region waits for its slowest thread.
            flat = scores.flatten(0, 1)
            torch.baddbmm(flat, q_c.flatten(0, 1), k_t[..., key_lo:key_hi].flatten(0, 1), beta=0, alpha=scale, out=flat)
            if softcap is not None:
                scores.div_(softcap).tanh_().mul_(softcap)
        scores = scores.view(batch, n_kv_heads, group, c, span)

        # Causality hides keys after the query; they are all in the last c columns (the C code skips them itself).
        if native is None:
            later = masks.get(c)
            if later is None:
                later = masks[c] = torch.ones(c, c, dtype=torch.bool, device=device).triu_(1)
            scores[..., span - c :].masked_fill_(later, _MASKED)
        if sliding_window is not None or key_padding_mask is not None or attention_chunk is not None:
            query_pos = torch.arange(start, stop, device=device) + q_offset  # [c]
            key_pos = torch.arange(key_lo, key_hi, device=device)
            hidden = torch.zeros(batch, 1, 1, c, span, dtype=torch.bool, device=device)
            if sliding_window is not None:
                hidden |= key_pos[None, :] <= query_pos[:, None] - sliding_window
            if attention_chunk is not None:
                hidden |= key_pos[None, :] < query_pos[:, None] // attention_chunk * attention_chunk
            if key_padding_mask is not None:
                hidden |= ~key_padding_mask[:, None, None, None, key_lo:key_hi]
            scores.masked_fill_(hidden, _MASKED)

        if native is not None:
            # One C call (interp.kernels.native): the scores become the pattern in place, and every
            # statistic but target_mass is written straight into its array.
            native.attention_rows(
                scores.view(-1, span), native_outputs, None if received is None else received.view(-1, n_key),
                rows_per_head=c, diag0=span - c, start=start, key_lo=key_lo, window=config.window,
            )
            probs = scores
        else:
            row_max, row_argmax = _row_max_argmax(scores)  # [b, kv, g, c]
            if track:
                probs = torch.softmax(scores, dim=-1)
            else:
                probs = probs_buffer[: scores.numel()].view(scores.shape)
                torch._softmax(scores, -1, False, out=probs)  # torch.softmax has no out=
            if key_padding_mask is not None:
                # A query that sees no key has every score masked, and softmax made its row uniform.
                row_ok = row_max > _MASKED / 2
                probs = probs * row_ok[..., None] if track else probs.mul_(row_ok[..., None])
            peak = probs.gather(-1, row_argmax[..., None])[..., 0]  # = 1 / sum(exp(s - max))
            # log_norm = lse - m = log(sum(exp(s - m))) >= 0. Rows that see no key (peak 0) get lse = -inf
            # below; log(1) here keeps their gradient finite.
            log_norm = -torch.log(peak if key_padding_mask is None else torch.where(row_ok, peak, 1.0))
            # The scores are not read again: shift them in place (masked ones stay huge and negative, and
            # A = 0 there, so they add 0). sum(A * (s - m)) per row; einsum lowers it to a batched dot
            # product (no [c, span] temporary). Both terms are >= 0, so the entropy is too.
            shifted = scores - row_max[..., None] if track else scores.sub_(row_max[..., None])
            row_entropy = log_norm - torch.einsum("...s,...s->...", probs, shifted)
            if sink_logits is not None:
                # A learned sink is one more logit in the softmax denominator: relative to m the keys
                # weigh exp(log_norm) together and the sink exp(sink - m), so every key keeps the share
                # kept = sigmoid(gap) of its mass and the sink takes 1 - kept = sigmoid(-gap) (see
                # interp.kernels). log-sigmoids keep both shares accurate when either is tiny.
                gap = log_norm - (sink_logits - row_max)
                log_kept, log_sink = torch.nn.functional.logsigmoid(gap), torch.nn.functional.logsigmoid(-gap)
                kept, sink_share = torch.exp(log_kept), torch.exp(log_sink)
                # x log x -> 0 as x -> 0: a sink logit of -inf (or +inf) gives a share of 0 and a log of -inf.
                row_entropy = kept * row_entropy - _x_log_x(kept, log_kept) - _x_log_x(sink_share, log_sink)
                log_norm, peak = log_norm - log_kept, peak * kept  # lse' = lse - log(kept)
                learned_sink[..., rows] = sink_share
                probs = probs * kept[..., None] if track else probs.mul_(kept[..., None])
            row_lse = row_max + log_norm

        flat_probs = probs.view(batch, n_kv_heads, group * c, span)
        if track:
            out_c = torch.matmul(flat_probs, v32[:, :, key_lo:key_hi])
        else:
            out_c = torch.empty(batch, n_kv_heads, group * c, d_head_v, **f32)
            torch.bmm(flat_probs.flatten(0, 1), v32[:, :, key_lo:key_hi].flatten(0, 1), out=out_c.flatten(0, 1))
        out[:, :, :, rows] = out_c.view(batch, n_kv_heads, group, c, d_head_v).to(q.dtype)
        if native is None:
            lse[..., rows] = row_lse
            entropy[..., rows] = row_entropy
            max_prob[..., rows] = peak
            argmax[..., rows] = row_argmax + key_lo
            if key_padding_mask is not None:
                lse[..., rows].masked_fill_(~row_ok, float("-inf"))
                entropy[..., rows].masked_fill_(~row_ok, 0.0)
                argmax[..., rows].masked_fill_(~row_ok, -1)

            # The diagonal, the previous key and the recent window lie in a band of the last columns:
            # query i's own key is band column shift + i, so the first two are diagonals of the band (views).
            lo = max(0, span - c - max(config.window, 2) + 1)
            band, shift = probs[..., lo:], span - c - lo
            diag_mass[..., rows] = band.diagonal(shift, -2, -1)
            if shift > 0:
                prev_mass[..., rows] = band.diagonal(shift - 1, -2, -1)
            else:  # the chunk starts at key 0: its first query has no previous key (its mass stays 0)
                prev_mass[..., start + 1 : stop] = band.diagonal(-1, -2, -1)

            sink_hi = min(config.n_sink, key_hi)
            if key_lo < sink_hi:
                sink_per_position[..., rows, key_lo:sink_hi] = probs[..., : sink_hi - key_lo]
            if config.window > 0:
                # Keys in (p - window, p]: band columns shift + i - window < j <= shift + i.
                in_window = windows.get((c, shift))
                if in_window is None:
                    j = torch.arange(span - lo, device=device)
                    i = torch.arange(c, device=device)[:, None] + shift
                    in_window = windows[(c, shift)] = ((j > i - config.window) & (j <= i)).float()
                window_mass[..., rows] = torch.einsum("...s,...s->...", band, in_window)
        if config.targets is not None:
            # Scatter into a per-query membership mask over the span (duplicates collapse);
            # indices outside the span (incl. -1) go to a dropped extra column.
            t = config.targets[:, rows] - key_lo
            t = torch.where((t >= 0) & (t < span), t, span)
            is_target = torch.zeros(batch, c, span + 1, **f32)
            is_target.scatter_(-1, t, 1.0)
            target_mass[..., rows] = torch.einsum("bgcs,bcs->bgc", probs.flatten(1, 2), is_target[..., :span]).view(
                batch, n_kv_heads, group, c
            )
        if received is not None and native is None:
            received[..., key_lo:key_hi] += probs.sum(dim=-2)

    # Gradients (e.g. attribution through a statistics forward) need the allocating, out-of-place ops;
    # without them the products and the softmax write into reused buffers, one pair per worker.
    starts = range(0, n_query, chunk_size)
    workers = max(1, min(threads, len(starts)))
    if track:
        for start in starts:
            run_chunk(start, None, None, received)
    else:
        reaches = [w for w in (sliding_window, attention_chunk) if w is not None]
        max_span = n_key if not reaches else min(n_key, chunk_size + min(reaches) - 1)
        numel = batch * n_heads * min(chunk_size, n_query) * max_span
        buffers = [_workspace(numel, device, slot, pattern=native is None) for slot in range(workers)]
        if workers == 1:
            for start in starts:
                run_chunk(start, *buffers[0], received)
        else:
            costs = [(stop - start) * (key_hi - key_lo) for start in starts for stop, key_lo, key_hi in [key_range(start)]]
            _run_in_threads(run_chunk, starts, costs, buffers, received)

    def flat(t: Tensor) -> Tensor:
        """[b, kv, g, ...] -> [b, h, ...]."""
        return t.reshape(batch, n_heads, *t.shape[3:])

    stats = AttentionStats(
        lse=flat(lse), entropy=flat(entropy), max_prob=flat(max_prob), argmax=flat(argmax),
        diag_mass=flat(diag_mass), prev_mass=flat(prev_mass),
        received=None if received is None else flat(received),
    )
    if learned_sink is not None:
        stats.learned_sink_mass = flat(learned_sink)
    if config.n_sink > 0:
        stats.sink_mass_per_position = flat(sink_per_position)
        stats.sink_mass = flat(sink_per_position.sum(-1) if track else torch.sum(sink_per_position, -1, out=sink_mass))
    if config.window > 0:
        stats.window_mass = flat(window_mass)
    if config.targets is not None:
        stats.target_mass = flat(target_mass)
    return flat(out), stats
