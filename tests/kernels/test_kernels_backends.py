"""Chunked and Triton backends against the reference on random inputs.

Tolerances (absolute, with rtol = 1e-5 so large lse values are compared relatively):
- statistics: 2e-5 for every input dtype, because all backends compute them in float32 from
  the same (upcast) inputs; only summation order differs. received: 1e-4 (a sum over queries).
  A probability exp(s - lse) inherits the absolute rounding error of s, about eps32 * |s|,
  so both get an extra 8 * eps32 * max|s| (x n_query for received; x max|v| for out): it matters
  for the large-magnitude cases, where |s| reaches hundreds. With a softcap, |s| is that of the raw
  product before tanh (hypothesis found a magnitude-100, softcap-2 case off by 2.8e-5 in lse).
- out: 2e-5 for float32; for half precision the output itself is rounded to the input dtype
  (and on GPU the P.V product runs in it), so float16: 4e-3 and bfloat16: 3e-2 (a few ulps).
Triton runs on CUDA when available, else in the interpreter (TRITON_INTERPRET=1), where sizes
stay small because the interpreter is slow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interp.kernels import (
    StatsConfig,
    attention_with_stats_chunked,
    attention_with_stats_reference,
    triton_available,
)
from interp.kernels.native import native_kernels, row_kernels
from interp.kernels.reference import reference_pattern
from interp.kernels.testing import assert_stats_close

INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
CAN_RUN_TRITON = triton_available() and (torch.cuda.is_available() or INTERPRETING)
DEVICE = "cuda" if torch.cuda.is_available() and not INTERPRETING else "cpu"
needs_triton = pytest.mark.skipif(not CAN_RUN_TRITON, reason="needs CUDA or TRITON_INTERPRET=1")

STATS_ATOL = 2e-5
RECEIVED_ATOL = 1e-4
OUT_ATOL = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


@dataclass
class Case:
    """One random attention problem."""

    batch: int = 1
    n_kv_heads: int = 1
    group: int = 1
    n_query: int = 20
    n_key: int = 20
    d_head: int = 16
    d_head_v: int | None = None
    dtype: torch.dtype = torch.float32
    magnitude: float = 1.0  # multiplies q: large values make near one-hot patterns
    sliding_window: int | None = None
    softcap: float | None = None
    padding: bool = False  # random key padding, with some fully padded rows
    targets: bool = False
    n_sink: int = 1
    window: int = 8
    received: bool = True
    strided: bool = False  # q/k/v as [b, seq, heads, d] transposed views
    seed: int = 0


def make_inputs(c: Case) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], dict]:
    g = torch.Generator().manual_seed(c.seed)
    n_heads = c.n_kv_heads * c.group
    d_v = c.d_head_v or c.d_head

    def randn(b: int, h: int, n: int, d: int) -> torch.Tensor:
        if c.strided:
            return torch.randn(b, n, h, d, generator=g).transpose(1, 2)
        return torch.randn(b, h, n, d, generator=g)

    q = randn(c.batch, n_heads, c.n_query, c.d_head) * c.magnitude
    k = randn(c.batch, c.n_kv_heads, c.n_key, c.d_head)
    v = randn(c.batch, c.n_kv_heads, c.n_key, d_v)
    q, k, v = (t.to(device=DEVICE, dtype=c.dtype) for t in (q, k, v))

    padding = None
    if c.padding:
        padding = torch.rand(c.batch, c.n_key, generator=g) > 0.3
        padding[0, : c.n_key // 3] = False  # early queries of batch 0 see only padding
        padding = padding.to(DEVICE)
    targets = None
    if c.targets:
        # -1 padding, duplicates, out-of-range and future (invisible) keys all included.
        targets = torch.randint(-1, c.n_key + 3, (c.batch, c.n_query, 6), generator=g)
        targets[..., 1] = targets[..., 0]
        targets = targets.to(DEVICE)
    kwargs = dict(
        sliding_window=c.sliding_window,
        softcap=c.softcap,
        key_padding_mask=padding,
        config=StatsConfig(n_sink=c.n_sink, window=c.window, targets=targets, received=c.received),
    )
    return (q, k, v), kwargs


def check_against_reference(c: Case, backend: str, **backend_kwargs) -> None:
    (q, k, v), kwargs = make_inputs(c)
    expected_out, expected = attention_with_stats_reference(q, k, v, **kwargs)
    if backend == "chunked":
        out, stats = attention_with_stats_chunked(q, k, v, **kwargs, **backend_kwargs)
    else:
        from interp.kernels.triton_backend import attention_with_stats_triton

        out, stats = attention_with_stats_triton(q, k, v, **kwargs)

    assert out.dtype == q.dtype and out.shape == expected_out.shape
    assert torch.isfinite(out).all()
    scores, probs = reference_pattern(
        q, k, scale=q.shape[-1] ** -0.5, sliding_window=c.sliding_window, softcap=c.softcap,
        key_padding_mask=kwargs["key_padding_mask"],
    )
    max_score = scores[scores.isfinite()].abs().max().item() if scores.isfinite().any() else 0.0
    if c.softcap is not None:
        # The rounding happens in the raw product q.k * scale (the backends scale q before or after it),
        # before tanh squashes it: sech^2 passes up to all of that error through unsaturated scores.
        raw = q.float() @ k.float().repeat_interleave(q.shape[1] // k.shape[1], dim=1).transpose(-1, -2)
        max_score = max(max_score, raw.abs().max().item() * q.shape[-1] ** -0.5)
    score_slack = 8 * torch.finfo(torch.float32).eps * max_score
    # out = sum_j A_j v_j inherits the probabilities' rounding, scaled by the values.
    out_slack = score_slack * v.float().abs().max().item()
    torch.testing.assert_close(out.float(), expected_out.float(), atol=OUT_ATOL[c.dtype] + out_slack, rtol=1e-2)
    assert_stats_close(
        stats, expected, atol=STATS_ATOL + score_slack, rtol=1e-5,
        received_atol=RECEIVED_ATOL + c.n_query * score_slack, expected_probs=probs,
    )


# Hand-picked cases: each option on its own, then together, across dtypes and head sizes.
CASES = {
    "plain": Case(),
    "decoding": Case(n_query=5, n_key=37),
    # q_offset = 1 (mod 16): a query block's last visible key opens a new 16-wide key block.
    "decoding_offset_1": Case(n_query=40, n_key=41),
    "decoding_offset_17": Case(n_query=20, n_key=37, n_kv_heads=2),
    "single_query": Case(n_query=1, n_key=33, batch=2),
    "gqa": Case(n_kv_heads=2, group=3, n_query=23, n_key=23),
    "d32_dv48": Case(d_head=32, d_head_v=48, n_query=17, n_key=30),
    "d64": Case(d_head=64, n_query=20, n_key=35),
    "d128": Case(d_head=128, n_query=18, n_key=18),
    "d_not_pow2": Case(d_head=24, d_head_v=20),
    "sliding": Case(sliding_window=5, n_query=40, n_key=50),
    "sliding_1": Case(sliding_window=1, n_query=19, n_key=19),
    # With 16-wide interpreter blocks, windows of 2 and 18 make the last query that can see a
    # key block start a new query block: catches off-by-one loop bounds in the received pass.
    "sliding_2": Case(sliding_window=2, n_query=35, n_key=35),
    "sliding_18": Case(sliding_window=18, n_query=50, n_key=50),
    "softcap": Case(softcap=2.0, magnitude=10.0),
    "padding": Case(padding=True, batch=2, n_query=30, n_key=40),
    "targets": Case(targets=True, n_query=33, n_key=40),
    "sinks_beyond_n_key": Case(n_sink=6, n_query=4, n_key=4),
    "no_optional_stats": Case(n_sink=0, window=0, received=False),
    "large_magnitude": Case(magnitude=100.0, n_query=30, n_key=45, sliding_window=9),
    "strided": Case(strided=True, n_kv_heads=2, group=2, d_head_v=8),
    "everything": Case(
        batch=2, n_kv_heads=2, group=2, n_query=21, n_key=34, sliding_window=7, softcap=20.0,
        padding=True, targets=True, n_sink=3, window=5,
    ),
    "everything_fp16": Case(
        dtype=torch.float16, n_kv_heads=2, group=2, n_query=21, n_key=34, sliding_window=7,
        softcap=20.0, padding=True, targets=True, n_sink=3, window=5, magnitude=100.0,
    ),
    "everything_bf16": Case(
        dtype=torch.bfloat16, batch=2, group=3, n_query=20, n_key=20, sliding_window=11,
        softcap=30.0, padding=True, targets=True, n_sink=2, window=4, magnitude=100.0,
    ),
    "bf16_d128": Case(dtype=torch.bfloat16, d_head=128, n_query=17, n_key=33),
}


def check_chunked(case: Case, native: bool, chunk_size: int) -> None:
    """The chunked backend with its C row passes (``native``) or with torch's ops only."""
    if native:
        assert row_kernels() is not None, "the C row passes did not build on this machine (see interp.kernels.native)"
    with native_kernels(native):
        check_against_reference(case, "chunked", chunk_size=chunk_size)


@pytest.mark.parametrize("native", [True, False], ids=["native", "torch"])
@pytest.mark.parametrize("name", CASES)
def test_chunked_matches_reference(name: str, native: bool) -> None:
    check_chunked(CASES[name], native, chunk_size=7)


@needs_triton
@pytest.mark.parametrize("name", CASES)
def test_triton_matches_reference(name: str) -> None:
    check_against_reference(CASES[name], "triton")


@st.composite
def cases(draw: st.DrawFn, max_len: int) -> Case:
    n_key = draw(st.integers(1, max_len))
    return Case(
        batch=draw(st.integers(1, 2)),
        n_kv_heads=draw(st.sampled_from([1, 2])),
        group=draw(st.sampled_from([1, 2, 3])),
        n_key=n_key,
        n_query=draw(st.integers(1, n_key)),
        d_head=draw(st.sampled_from([16, 32, 64, 128])),
        dtype=draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16])),
        magnitude=draw(st.sampled_from([1.0, 100.0])),
        sliding_window=draw(st.none() | st.integers(1, 20)),
        softcap=draw(st.none() | st.sampled_from([2.0, 30.0])),
        padding=draw(st.booleans()),
        targets=draw(st.booleans()),
        n_sink=draw(st.integers(0, 4)),
        window=draw(st.integers(0, 10)),
        strided=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(max_len=90), chunk_size=st.integers(1, 40), native=st.booleans())
def test_chunked_matches_reference_property(case: Case, chunk_size: int, native: bool) -> None:
    check_chunked(case, native, chunk_size)


@needs_triton
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(max_len=70))
def test_triton_matches_reference_property(case: Case) -> None:
    check_against_reference(case, "triton")
