"""Every backend against values computed by hand on tiny, hand-built inputs."""

from __future__ import annotations

import math
import os

import pytest
import torch

from interp.kernels import StatsConfig, attention_with_stats, triton_available

CAN_RUN_TRITON = triton_available() and (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1")
DEVICE = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"
BACKENDS = [
    "reference",
    "chunked",
    pytest.param("triton", marks=pytest.mark.skipif(not CAN_RUN_TRITON, reason="needs CUDA or TRITON_INTERPRET=1")),
]
ATOL = 1e-5


def run(q, k, v, backend, **kwargs):
    return attention_with_stats(q.to(DEVICE), k.to(DEVICE), v.to(DEVICE), backend=backend, **kwargs)


def close(actual: torch.Tensor, expected, atol: float = ATOL) -> None:
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    torch.testing.assert_close(actual.cpu(), expected.expand_as(actual.cpu()), atol=atol, rtol=0)


def uniform_inputs(n_key: int, n_query: int | None = None, d: int = 16, d_v: int = 4):
    """q = 0 makes every score 0: each query spreads evenly over the keys it can see."""
    n_query = n_key if n_query is None else n_query
    q = torch.zeros(1, 1, n_query, d)
    k = torch.randn(1, 1, n_key, d)
    v = torch.randn(1, 1, n_key, d_v)
    return q, k, v


def previous_token_inputs(n: int, sharpness: float = 60.0):
    """One-hot keys; query p points at key p-1, so every query p >= 1 attends (almost) only to p-1."""
    d = 16
    assert n <= d
    k = torch.eye(d)[:n][None, None]  # key j = e_j
    q = torch.zeros(1, 1, n, d)
    for p in range(1, n):
        q[0, 0, p, p - 1] = sharpness
    v = torch.arange(n, dtype=torch.float32)[None, None, :, None].expand(1, 1, n, 2).contiguous()
    return q, k, v


@pytest.mark.parametrize("backend", BACKENDS)
def test_uniform_attention(backend: str) -> None:
    n = 19  # more than one 16-wide Triton block
    q, k, v = uniform_inputs(n)
    targets = torch.tensor([0, 0, 2, -1, n + 5])[None, None].expand(1, n, 5).contiguous()
    out, stats = run(q, k, v, backend, config=StatsConfig(n_sink=2, window=3, targets=targets))

    count = torch.arange(1, n + 1, dtype=torch.float32)  # query p sees p + 1 keys
    pos = torch.arange(n)
    close(stats.lse[0, 0], count.log())
    close(stats.entropy[0, 0], count.log())
    close(stats.max_prob[0, 0], 1 / count)
    assert stats.argmax.cpu().tolist() == [[[0] * n]]  # all tied -> lowest index
    close(stats.diag_mass[0, 0], 1 / count)
    close(stats.prev_mass[0, 0], torch.where(pos >= 1, 1 / count, 0.0))
    close(stats.sink_mass_per_position[0, 0, :, 0], 1 / count)
    close(stats.sink_mass_per_position[0, 0, :, 1], torch.where(pos >= 1, 1 / count, 0.0))
    close(stats.sink_mass[0, 0], torch.clamp(count, max=2) / count)
    close(stats.window_mass[0, 0], torch.clamp(count, max=3) / count)
    # Targets {0, 2} (duplicate 0 counted once, -1 and out-of-range ignored); key 2 is visible from p = 2.
    close(stats.target_mass[0, 0], torch.where(pos >= 2, 2 / count, 1 / count))
    received = torch.tensor([sum(1 / (p + 1) for p in range(j, n)) for j in range(n)])
    close(stats.received[0, 0], received, atol=1e-4)
    expected_out = v[0, 0].cumsum(0) / count[:, None]
    close(out[0, 0].float(), expected_out)


@pytest.mark.parametrize("backend", BACKENDS)
def test_previous_token_head(backend: str) -> None:
    n = 12
    q, k, v = previous_token_inputs(n)
    out, stats = run(q, k, v, backend, scale=1.0, config=StatsConfig(n_sink=1, window=2))
    pos = torch.arange(n)

    # Query 0 only sees itself; every later query puts ~all its mass on p - 1.
    assert stats.argmax.cpu()[0, 0].tolist() == [0] + list(range(n - 1))
    close(stats.prev_mass[0, 0], torch.where(pos >= 1, 1.0, 0.0))
    close(stats.diag_mass[0, 0], torch.where(pos == 0, 1.0, 0.0))
    close(stats.max_prob[0, 0], 1.0)
    close(stats.entropy[0, 0], 0.0, atol=1e-4)
    close(stats.window_mass[0, 0], 1.0)
    close(stats.sink_mass[0, 0], torch.where(pos <= 1, 1.0, 0.0))
    close(stats.lse[0, 0], torch.where(pos >= 1, 60.0, 0.0), atol=1e-4)
    received = torch.ones(n)
    received[0], received[-1] = 2.0, 0.0  # key 0 gets queries 0 and 1; nobody looks at the last key
    close(stats.received[0, 0], received, atol=1e-4)
    close(out[0, 0, :, 0].float(), torch.clamp(pos - 1, min=0).float())


@pytest.mark.parametrize("backend", BACKENDS)
def test_decoding_queries_are_the_last_positions(backend: str) -> None:
    n_key, n_query = 10, 3
    q, k, v = uniform_inputs(n_key, n_query)
    _, stats = run(q, k, v, backend, config=StatsConfig(window=4))
    count = torch.tensor([8.0, 9.0, 10.0])  # positions 7, 8, 9
    close(stats.entropy[0, 0], count.log())
    close(stats.window_mass[0, 0], 4 / count)
    received = torch.tensor([sum(1 / c for c in count if c > j) for j in range(n_key)])
    close(stats.received[0, 0], received, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sliding_window_includes_the_diagonal(backend: str) -> None:
    n, w = 20, 3
    q, k, v = uniform_inputs(n)
    out, stats = run(q, k, v, backend, sliding_window=w, config=StatsConfig(n_sink=1, window=8))
    pos = torch.arange(n)
    count = torch.clamp(pos + 1, max=w).float()  # keys max(0, p-w+1)..p
    close(stats.entropy[0, 0], count.log())
    close(stats.sink_mass[0, 0], torch.where(pos < w, 1 / count, 0.0))
    close(stats.window_mass[0, 0], 1.0)  # the 8-key window covers the whole 3-key sliding window
    expected_out = torch.stack([v[0, 0, max(0, p - w + 1) : p + 1].mean(0) for p in range(n)])
    close(out[0, 0].float(), expected_out)


@pytest.mark.parametrize("backend", BACKENDS)
def test_softcap_is_applied_before_softmax(backend: str) -> None:
    d, cap = 16, 5.0
    k = torch.zeros(1, 1, 2, d)
    k[0, 0, 0, 0] = 1.0
    q = torch.zeros(1, 1, 2, d)
    q[0, 0, 1, 0] = 10.0  # query 1: raw scores (10, 0) -> capped (5 tanh 2, 0)
    v = torch.randn(1, 1, 2, 4)
    _, stats = run(q, k, v, backend, scale=1.0, softcap=cap)
    capped = cap * math.tanh(10.0 / cap)
    close(stats.max_prob[0, 0, 1], 1 / (1 + math.exp(-capped)))
    close(stats.lse[0, 0, 1], math.log(math.exp(capped) + 1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_gqa_query_head_reads_kv_head_h_div_group(backend: str) -> None:
    n = 10
    q_prev, k_prev, v_prev = previous_token_inputs(n)
    k = torch.cat([k_prev, torch.zeros_like(k_prev)], dim=1)  # kv head 1: all scores 0 -> uniform
    v = torch.cat([v_prev, v_prev], dim=1)
    q = q_prev.expand(1, 4, n, 16).contiguous()  # heads 0, 1 -> kv 0; heads 2, 3 -> kv 1
    _, stats = run(q, k, v, backend, scale=1.0)
    pos = torch.arange(n)
    for h in (0, 1):
        close(stats.prev_mass[0, h], torch.where(pos >= 1, 1.0, 0.0))
    for h in (2, 3):
        close(stats.entropy[0, h], (pos + 1).float().log())


@pytest.mark.parametrize("backend", BACKENDS)
def test_fully_padded_rows_are_zero_not_nan(backend: str) -> None:
    n = 18
    q, k, v = uniform_inputs(n)
    real = torch.ones(1, n, dtype=torch.bool)
    real[0, :3] = False  # queries 0..2 see only padding
    targets = torch.zeros(1, n, 1, dtype=torch.int64)
    out, stats = run(
        q, k, v, backend, key_padding_mask=real.to(DEVICE),
        config=StatsConfig(n_sink=2, window=4, targets=targets.to(DEVICE)),
    )
    out, stats = out.cpu(), {name: t.cpu() for name, t in stats.to_dict().items()}
    masked = slice(0, 3)
    assert torch.isneginf(stats["lse"][0, 0, masked]).all()
    assert torch.isfinite(stats["lse"][0, 0, 3:]).all()
    assert stats["argmax"][0, 0, masked].tolist() == [-1, -1, -1]
    assert stats["argmax"][0, 0, 3:].eq(3).all()  # uniform over keys 3..p, ties -> lowest
    for name, t in stats.items():
        if name not in ("lse", "argmax", "received"):
            assert torch.isfinite(t).all(), name
            assert t[0, 0, masked].eq(0).all(), name
    assert out[0, 0, masked].eq(0).all() and torch.isfinite(out).all()
    count = torch.arange(1, n + 1).float() - 3
    close(stats["entropy"][0, 0, 3:], count[3:].log())
    close(stats["received"][0, 0, :3], 0.0)
