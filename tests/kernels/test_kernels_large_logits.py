"""Statistics stay exact when the attention scores are in the hundreds (Gemma 3 reaches lse ~ 355).

A float32 ulp at 355 is 3e-5, so a backend that subtracts two numbers of that size (``lse - sum(A * s)``
for the entropy, ``exp(s - lse)`` for a probability) loses 1e-5..1e-4; every statistic must instead be
kept relative to the row maximum. The scores here are built to be exact in float32 whatever the order
of summation (small integers times a power-of-two scale; dimension 0 carries a per-row offset of up to
+-500), so the only rounding left is each backend's own, and a float64 softmax of the same scores,
written out below independently of the backends, is the truth to 1e-5 absolute. lse itself is
compared to 1e-5 beyond half a float32 ulp (1.5e-5 at 500): no float32 can be closer than that.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interp.kernels import StatsConfig, attention_with_stats, attention_with_stats_chunked, triton_available

INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
CAN_RUN_TRITON = triton_available() and (torch.cuda.is_available() or INTERPRETING)
DEVICE = "cuda" if torch.cuda.is_available() and not INTERPRETING else "cpu"

ATOL = 1e-5
D_HEAD = 16
SCALE = 0.25  # a power of two: q * scale and every partial sum of the scores stay exact
MAX_OFFSET = 500


@dataclass
class Case:
    batch: int = 1
    n_kv_heads: int = 1
    group: int = 1
    n_query: int = 20
    n_key: int = 20
    spread: int = 2  # the non-offset entries of q and k are integers in [-spread, spread]
    sliding_window: int | None = None
    sinks: bool = False
    n_sink: int = 2
    window: int = 4
    seed: int = 0


def make_inputs(c: Case) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """q, k with exact float32 scores ``offset + small`` (|offset| <= 500, one per head plus a little per row)."""
    g = torch.Generator().manual_seed(c.seed)
    n_heads = c.n_kv_heads * c.group
    q = torch.randint(-c.spread, c.spread + 1, (c.batch, n_heads, c.n_query, D_HEAD), generator=g).float()
    k = torch.randint(-c.spread, c.spread + 1, (c.batch, c.n_kv_heads, c.n_key, D_HEAD), generator=g).float()
    head_offset = torch.randint(-MAX_OFFSET + 5, MAX_OFFSET - 5 + 1, (1, n_heads, 1), generator=g)
    head_offset[0, 0] = (MAX_OFFSET - 5) * (1 if torch.rand(1, generator=g) < 0.5 else -1)  # one head at the extreme
    row_offset = head_offset + torch.randint(-5, 6, (c.batch, n_heads, c.n_query), generator=g)
    q[..., 0] = row_offset.float() / SCALE
    k[..., 0] = 1.0
    v = torch.randn(c.batch, c.n_kv_heads, c.n_key, D_HEAD, generator=g)
    sinks = None
    if c.sinks:  # near each head's scores, where the sink takes a fair share of the mass
        sinks = head_offset.view(n_heads).float() + 8 * torch.rand(n_heads, generator=g) - 4
    return q, k, v, sinks


def float64_stats(c: Case, q: torch.Tensor, k: torch.Tensor, sinks: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The statistics from a float64 softmax over the full pattern."""
    n_heads = q.shape[1]
    s = SCALE * (q.double() @ k.double().repeat_interleave(c.group, dim=1).transpose(-1, -2))
    qp = (torch.arange(c.n_query) + c.n_key - c.n_query)[:, None]
    kp = torch.arange(c.n_key)[None, :]
    visible = kp <= qp
    if c.sliding_window is not None:
        visible &= kp > qp - c.sliding_window
    s = s.masked_fill(~visible, float("-inf"))
    argmax = s.argmax(-1)
    if sinks is not None:
        s = torch.cat([s, sinks.double().view(1, n_heads, 1, 1).expand(c.batch, n_heads, c.n_query, 1)], dim=-1)
    p = torch.softmax(s, dim=-1)
    stats = dict(lse=torch.logsumexp(s, dim=-1), entropy=-torch.special.xlogy(p, p).sum(-1))
    if sinks is not None:
        stats["learned_sink_mass"] = p[..., c.n_key]
        p = p[..., : c.n_key]
    per_position = torch.zeros(c.batch, n_heads, c.n_query, c.n_sink, dtype=torch.float64)
    per_position[..., : min(c.n_sink, c.n_key)] = p[..., : c.n_sink]
    return stats | dict(
        max_prob=p.amax(-1),
        argmax=argmax,
        diag_mass=(p * (kp == qp)).sum(-1),
        prev_mass=(p * (kp == qp - 1)).sum(-1),
        sink_mass=(p * (kp < c.n_sink)).sum(-1),
        sink_mass_per_position=per_position,
        window_mass=(p * ((kp > qp - c.window) & (kp <= qp))).sum(-1),
        received=p.sum(-2),
    )


def check(c: Case, backend: str, chunk_size: int | None = None, track: bool = False) -> None:
    q, k, v, sinks = make_inputs(c)
    expected = float64_stats(c, q, k, sinks)
    assert expected["lse"].abs().max() > MAX_OFFSET - 80  # the scores are as large as promised
    q, k, v = (t.to(DEVICE) for t in (q, k, v))
    kwargs = dict(
        scale=SCALE, sliding_window=c.sliding_window, sinks=None if sinks is None else sinks.to(DEVICE),
        config=StatsConfig(n_sink=c.n_sink, window=c.window, received=True),
    )
    if backend == "chunked":
        _, stats = attention_with_stats_chunked(q.requires_grad_(track), k, v, chunk_size=chunk_size, **kwargs)
    else:
        _, stats = attention_with_stats(q, k, v, backend=backend, **kwargs)

    got = {name: value.detach().cpu() for name, value in stats.to_dict().items()}
    assert set(got) == set(expected)
    assert torch.equal(got.pop("argmax"), expected.pop("argmax"))  # exact scores: no near-ties to excuse
    lse, want_lse = got.pop("lse").double(), expected.pop("lse")
    rounded = want_lse.float()
    half_ulp = (torch.nextafter(rounded.abs(), torch.tensor(float("inf"))) - rounded.abs()).double() / 2
    lse_error = (lse - want_lse).abs()
    assert (lse_error <= ATOL + half_ulp).all(), f"lse off by {(lse_error - half_ulp).max().item():.2e} beyond rounding"
    for name, want in expected.items():
        error = (got[name].double() - want).abs().max().item()
        assert error <= ATOL, f"{name} off by {error:.2e} ({backend})"


@st.composite
def cases(draw: st.DrawFn, max_len: int, sinks: bool) -> Case:
    n_key = draw(st.integers(1, max_len))
    return Case(
        batch=draw(st.integers(1, 2)),
        n_kv_heads=draw(st.sampled_from([1, 2])),
        group=draw(st.sampled_from([1, 2, 3])),  # GQA
        n_key=n_key,
        n_query=draw(st.integers(1, n_key)),
        spread=draw(st.sampled_from([0, 1, 2, 4])),  # 0: uniform rows; 4: near one-hot
        sliding_window=draw(st.none() | st.integers(1, 20)),
        sinks=sinks and draw(st.booleans()),
        n_sink=draw(st.integers(1, 3)),
        window=draw(st.integers(1, 6)),
        seed=draw(st.integers(0, 2**16)),
    )


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings(max_examples=100, **SETTINGS)
@given(case=cases(max_len=60, sinks=True))
def test_reference_is_exact_at_large_logits(case: Case) -> None:
    check(case, "reference")


@settings(max_examples=150, **SETTINGS)
@given(case=cases(max_len=60, sinks=True), chunk_size=st.integers(1, 40), track=st.booleans())
def test_chunked_is_exact_at_large_logits(case: Case, chunk_size: int, track: bool) -> None:
    check(case, "chunked", chunk_size=chunk_size, track=track)


@pytest.mark.skipif(not CAN_RUN_TRITON, reason="needs CUDA or TRITON_INTERPRET=1")
@settings(max_examples=50, **SETTINGS)
@given(case=cases(max_len=40, sinks=False))
def test_triton_is_exact_at_large_logits(case: Case) -> None:
    check(case, "triton")


def test_gemma3_sized_uniform_rows() -> None:
    """Hand-checkable: every visible score is 355, so query p has entropy log(p + 1) and max_prob 1 / (p + 1)."""
    c = Case(n_query=33, n_key=33, spread=0)
    q, k = torch.zeros(1, 1, 33, D_HEAD), torch.zeros(1, 1, 33, D_HEAD)
    q[..., 0], k[..., 0] = 355 / SCALE, 1.0
    expected = float64_stats(c, q, k, None)
    torch.testing.assert_close(expected["entropy"][0, 0], torch.arange(1, 34).double().log())
    backends = ["reference", "chunked"] + (["triton"] if CAN_RUN_TRITON else [])
    for backend in backends:
        _, stats = attention_with_stats(
            q.to(DEVICE), k.to(DEVICE), k.to(DEVICE), scale=SCALE, backend=backend, config=StatsConfig()
        )
        error = (stats.entropy.cpu().double() - expected["entropy"]).abs().max().item()
        assert error <= ATOL, f"{backend}: entropy off by {error:.2e}"
        assert (stats.max_prob.cpu().double() - expected["max_prob"]).abs().max().item() <= ATOL
