"""The chunked backend with several torch threads: chunks run on worker threads, one core each.

Each case is checked against the reference (which never splits work), and against the same call on
one thread: every statistic is computed by the same single-threaded ops either way, so all but
``received`` (summed over workers at the end) agree bit for bit.
"""

from __future__ import annotations

import pytest
import torch

from interp.kernels import StatsConfig, attention_with_stats_chunked, attention_with_stats_reference
from interp.kernels.reference import reference_pattern
from interp.kernels.testing import assert_stats_close

CASES = {
    "gqa": dict(n_kv_heads=2, group=3),
    "decode_offset": dict(n_query=23, n_key=61),
    "sliding_window": dict(sliding_window=9),
    "padding": dict(padding=True),
    "learned_sinks": dict(sinks=True),
    "softcap_targets": dict(softcap=3.0, targets=True),
    "attention_chunk": dict(attention_chunk=16),
}


def make_case(
    *, n_kv_heads: int = 1, group: int = 2, n_query: int = 61, n_key: int = 61, sliding_window: int | None = None,
    padding: bool = False, sinks: bool = False, softcap: float | None = None, targets: bool = False,
    attention_chunk: int | None = None,
) -> tuple[tuple[torch.Tensor, ...], dict]:
    g = torch.Generator().manual_seed(7)
    batch, n_heads = 2, n_kv_heads * group
    q = torch.randn(batch, n_heads, n_query, 16, generator=g) * 2
    k = torch.randn(batch, n_kv_heads, n_key, 16, generator=g)
    v = torch.randn(batch, n_kv_heads, n_key, 8, generator=g)
    mask = None
    if padding:  # left padding in row 0 (its first queries see no key), a gap in row 1
        mask = torch.ones(batch, n_key, dtype=torch.bool)
        mask[0, :13] = False
        mask[1, 30:41] = False
    config = StatsConfig(
        n_sink=3, window=5, received=True,
        targets=torch.randint(-1, n_key, (batch, n_query, 4), generator=g) if targets else None,
    )
    kwargs = dict(
        sliding_window=sliding_window, softcap=softcap, key_padding_mask=mask, config=config,
        sinks=torch.randn(n_heads, generator=g) if sinks else None, attention_chunk=attention_chunk,
    )
    return (q, k, v), kwargs


@pytest.fixture
def threads():
    """Run the test body on torch threads set by the test; restore the count afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", sorted(CASES))
def test_chunks_on_two_threads_match_the_reference(name: str, threads) -> None:
    (q, k, v), kwargs = make_case(**CASES[name])
    threads(2)
    out, stats = attention_with_stats_chunked(q, k, v, chunk_size=5, **kwargs)
    assert torch.get_num_threads() == 2  # the workers' single-threaded ops do not leak out
    ref_out, ref_stats = attention_with_stats_reference(q, k, v, **kwargs)
    torch.testing.assert_close(out, ref_out, atol=2e-5, rtol=1e-5)
    probs = reference_pattern(
        q, k, scale=16**-0.5, sliding_window=kwargs["sliding_window"], softcap=kwargs["softcap"],
        key_padding_mask=kwargs["key_padding_mask"], attention_chunk=kwargs["attention_chunk"],
    )[1]
    assert_stats_close(stats, ref_stats, atol=2e-5, received_atol=1e-4, expected_probs=None if kwargs["sinks"] is not None else probs)


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_threads_give_the_bits_of_one_except_received(name: str, threads) -> None:
    (q, k, v), kwargs = make_case(**CASES[name])
    threads(1)
    out_1, stats_1 = attention_with_stats_chunked(q, k, v, chunk_size=5, **kwargs)
    threads(2)
    out_2, stats_2 = attention_with_stats_chunked(q, k, v, chunk_size=5, **kwargs)
    assert torch.equal(out_1, out_2)
    for field, value in stats_1.to_dict().items():
        if field == "received":
            torch.testing.assert_close(stats_2.received, value, atol=1e-6, rtol=1e-6)
        else:
            assert torch.equal(getattr(stats_2, field), value), field


def test_worker_threads_write_inference_tensors(threads) -> None:
    """Grad and inference mode are per thread: the workers must run in the caller's."""
    (q, k, v), kwargs = make_case(n_kv_heads=2, group=2)
    threads(2)
    with torch.inference_mode():
        out, stats = attention_with_stats_chunked(q, k, v, chunk_size=4, **kwargs)
    ref_out, ref_stats = attention_with_stats_reference(q, k, v, **kwargs)
    torch.testing.assert_close(out, ref_out, atol=2e-5, rtol=1e-5)
    assert_stats_close(stats, ref_stats, atol=2e-5, received_atol=1e-4)


def test_tracked_calls_stay_on_the_callers_thread(threads) -> None:
    """Calls that track gradients do not use the workers (autograd graphs are built in one thread)."""
    (q, k, v), kwargs = make_case()
    threads(2)
    q = q.clone().requires_grad_(True)
    out, _ = attention_with_stats_chunked(q, k, v, chunk_size=5, **kwargs)
    out.sum().backward()
    ref_q = q.detach().clone().requires_grad_(True)
    ref_out, _ = attention_with_stats_reference(ref_q, k, v, **kwargs)
    ref_out.sum().backward()
    torch.testing.assert_close(q.grad, ref_q.grad, atol=1e-4, rtol=1e-4)


def test_the_workers_share_a_planned_block_budget(threads) -> None:
    """Memory planning sizes the score blocks (`chunk_budget`): two workers take half of it each."""
    from interp.kernels.chunked import _scratch, chunk_budget, reuse_workspace

    (q, k, v), kwargs = make_case(n_kv_heads=2, group=3)
    block_row = q.shape[0] * q.shape[1] * k.shape[2] * 4  # bytes of one query's [batch, head, key] scores
    budget = 12 * block_row
    threads(2)
    with reuse_workspace(), chunk_budget(budget):
        out, stats = attention_with_stats_chunked(q, k, v, **kwargs)
        held = _scratch.__dict__["buffers"]
        assert len(held) == 2  # a (scores, pattern) pair per worker
        assert all(buffer.numel() * 4 <= budget // 2 for pair in held.values() for buffer in pair)
    ref_out, ref_stats = attention_with_stats_reference(q, k, v, **kwargs)
    torch.testing.assert_close(out, ref_out, atol=2e-5, rtol=1e-5)
    assert_stats_close(stats, ref_stats, atol=2e-5, received_atol=1e-4)


def test_received_repeats_bit_for_bit_on_two_threads(threads) -> None:
    """Each worker takes fixed chunks, so received is summed in the same order every run."""
    (q, k, v), kwargs = make_case(n_kv_heads=2, group=3, n_query=97, n_key=97)
    threads(2)
    runs = [attention_with_stats_chunked(q, k, v, chunk_size=3, **kwargs)[1].received for _ in range(4)]
    assert all(torch.equal(run, runs[0]) for run in runs[1:])


def _threaded_call_in_child(queue) -> None:
    torch.set_num_threads(2)
    (q, k, v), kwargs = make_case(n_kv_heads=2, group=3)
    out, _ = attention_with_stats_chunked(q, k, v, chunk_size=5, **kwargs)
    queue.put(float(out.abs().sum()))


def test_a_forked_child_gets_worker_threads_of_its_own(threads) -> None:
    """The worker pool is kept between calls; a fork copies it without its threads, which must not hang the child."""
    import multiprocessing

    (q, k, v), kwargs = make_case(n_kv_heads=2, group=3)
    threads(2)
    out, _ = attention_with_stats_chunked(q, k, v, chunk_size=5, **kwargs)  # the parent's pool now has threads
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_threaded_call_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung in the threaded kernel")
    assert child.exitcode == 0
    assert queue.get(timeout=5) == pytest.approx(float(out.abs().sum()), rel=1e-6)


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_causal_chunks_are_dealt_evenly(workers) -> None:
    """Each chunk goes to one worker, and no worker's load exceeds an even share by more than one chunk."""
    from interp.kernels.chunked import _deal

    for n_chunks in (1, 5, 9, 19, 64):
        costs = [32 * (32 * (i + 1)) for i in range(n_chunks)]  # chunk i of a causal call sees 32 (i + 1) keys
        dealt = _deal(costs, workers)
        assert sorted(i for indices in dealt for i in indices) == list(range(n_chunks))
        assert all(indices == sorted(indices) for indices in dealt)
        loads = [sum(costs[i] for i in indices) for indices in dealt]
        assert max(loads) <= sum(costs) / workers + max(costs)
        if n_chunks >= 4 * workers:  # many chunks: within a few percent of an even share
            assert max(loads) <= 1.05 * sum(costs) / workers, loads
