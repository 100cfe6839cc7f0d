"""The public entry point: validation messages, backend selection, optional fields."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import interp.kernels as kernels
from interp.kernels import StatsConfig, attention_with_stats, triton_available
from interp.kernels.testing import assert_stats_close


def inputs(b: int = 1, h: int = 2, kv: int = 1, nq: int = 5, nk: int = 7, d: int = 16, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(b, h, nq, d, generator=g).to(dtype),
        torch.randn(b, kv, nk, d, generator=g).to(dtype),
        torch.randn(b, kv, nk, d, generator=g).to(dtype),
    )


def test_public_api_is_exported() -> None:
    for name in kernels.__all__:
        assert getattr(kernels, name) is not None
    assert isinstance(triton_available(), bool)


def test_importing_the_package_does_not_load_the_kernels() -> None:
    # @triton.jit picks interpreter vs compiled mode from TRITON_INTERPRET when a kernel module
    # is imported, so the package must load those modules lazily (on first triton use).
    code = (
        "import sys, interp.kernels; "
        "assert not {'interp.kernels.triton_forward', 'interp.kernels.triton_received'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


q, k, v = inputs()
BAD_CALLS = {
    "q_not_4d": (lambda: attention_with_stats(q[0], k, v), "q must be a 4-D tensor"),
    "float64": (lambda: attention_with_stats(q.double(), k.double(), v.double()), "supported: float32"),
    "dtype_mismatch": (lambda: attention_with_stats(q, k.half(), v), "share a dtype"),
    "heads_not_divisible": (lambda: attention_with_stats(*inputs(h=3, kv=2)), "multiple of n_kv_heads"),
    "d_head_mismatch": (lambda: attention_with_stats(q, k[..., :8], v), "d_head mismatch"),
    "kv_len_mismatch": (lambda: attention_with_stats(q, k, v[:, :, :6]), "must agree"),
    "batch_mismatch": (lambda: attention_with_stats(q.expand(2, -1, -1, -1), k, v), "batch mismatch"),
    "more_queries_than_keys": (lambda: attention_with_stats(*inputs(nq=8, nk=7)), "n_query <= n_key"),
    "sliding_window_0": (lambda: attention_with_stats(q, k, v, sliding_window=0), "sliding_window"),
    "negative_softcap": (lambda: attention_with_stats(q, k, v, softcap=-1.0), "softcap"),
    "padding_not_bool": (lambda: attention_with_stats(q, k, v, key_padding_mask=torch.ones(1, 7)), "bool"),
    "padding_shape": (
        lambda: attention_with_stats(q, k, v, key_padding_mask=torch.ones(1, 5, dtype=torch.bool)),
        "key_padding_mask must have shape",
    ),
    "targets_shape": (
        lambda: attention_with_stats(q, k, v, config=StatsConfig(targets=torch.zeros(1, 4, 2, dtype=torch.long))),
        "targets must be",
    ),
    "targets_dtype": (
        lambda: attention_with_stats(q, k, v, config=StatsConfig(targets=torch.zeros(1, 5, 2, dtype=torch.int32))),
        "targets must be",
    ),
    "negative_n_sink": (lambda: attention_with_stats(q, k, v, config=StatsConfig(n_sink=-1)), "n_sink"),
    "unknown_backend": (lambda: attention_with_stats(q, k, v, backend="cuda"), "backend must be one of"),
    "bad_chunk_size": (lambda: kernels.attention_with_stats_chunked(q, k, v, chunk_size=0), "chunk_size"),
}


@pytest.mark.parametrize("name", BAD_CALLS)
def test_invalid_inputs_raise_one_line_value_error(name: str) -> None:
    call, message = BAD_CALLS[name]
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_optional_statistics_are_none_unless_requested(backend: str) -> None:
    off = StatsConfig(n_sink=0, window=0, targets=None, received=False)
    _, stats = attention_with_stats(q, k, v, config=off, backend=backend)
    assert stats.sink_mass is None and stats.sink_mass_per_position is None
    assert stats.window_mass is None and stats.target_mass is None and stats.received is None
    assert set(stats.to_dict()) == {"lse", "entropy", "max_prob", "argmax", "diag_mass", "prev_mass"}

    on = StatsConfig(n_sink=3, window=2, targets=torch.zeros(1, 5, 1, dtype=torch.long), received=True)
    _, stats = attention_with_stats(q, k, v, config=on, backend=backend)
    assert stats.sink_mass_per_position.shape == (1, 2, 5, 3)
    assert stats.received.shape == (1, 2, 7)
    for name in ("lse", "entropy", "max_prob", "argmax", "sink_mass", "window_mass", "target_mass"):
        assert getattr(stats, name).shape == (1, 2, 5), name


def test_auto_backend_on_cpu_uses_chunked(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = kernels.dispatch.attention_with_stats_chunked
    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(kernels.dispatch, "attention_with_stats_chunked", spy)
    attention_with_stats(q, k, v)
    assert calls == [1]


def test_output_keeps_input_dtype_and_stats_are_float32() -> None:
    qh, kh, vh = inputs(dtype=torch.bfloat16)
    out, stats = attention_with_stats(qh, kh, vh, backend="chunked")
    assert out.dtype == torch.bfloat16
    assert stats.lse.dtype == torch.float32 and stats.argmax.dtype == torch.int64
    assert stats.received.dtype == torch.float32


def test_default_chunk_size_respects_budget() -> None:
    from interp.kernels.chunked import DEFAULT_CHUNK_BUDGET_BYTES, MIN_CHUNK, default_chunk_size

    chunk = default_chunk_size(batch=2, n_heads=32, n_query=8192, n_key=8192)
    assert 1 <= chunk < 8192
    assert 2 * 32 * chunk * 8192 * 4 <= DEFAULT_CHUNK_BUDGET_BYTES or chunk == MIN_CHUNK
    assert default_chunk_size(1, 1, 10, 10) == 10


def test_planned_chunk_budget_is_honoured_down_to_one_query() -> None:
    from interp.kernels import chunk_budget
    from interp.kernels.chunked import default_chunk_size

    assert default_chunk_size(1, 2, 100, 100, budget_bytes=3 * 2 * 100 * 4) == 3  # no MIN_CHUNK floor
    assert default_chunk_size(1, 2, 100, 100, budget_bytes=1) == 1
    qh, kh, vh = inputs()
    expected_out, expected = attention_with_stats(qh, kh, vh, backend="reference")
    with chunk_budget(1):  # one query per chunk
        out, stats = attention_with_stats(qh, kh, vh, backend="chunked")
    torch.testing.assert_close(out, expected_out, atol=2e-5, rtol=1e-5)
    assert_stats_close(stats, expected, atol=2e-5)


def test_chunked_backend_is_differentiable_like_the_reference() -> None:
    """Attribution through a statistics forward needs gradients; the fast path writes into buffers, so a
    tracked call must take the allocating path. (The reference's entropy, -xlogy(A, A), has NaN gradients
    at masked keys, so entropy is only checked for finiteness.)"""
    torch.manual_seed(0)
    q, k, v = (torch.randn(*shape, requires_grad=True) for shape in [(2, 4, 9, 16), (2, 2, 11, 16), (2, 2, 11, 16)])
    padding = torch.ones(2, 11, dtype=torch.bool)
    padding[0, :3] = False
    kwargs = dict(key_padding_mask=padding, softcap=5.0, sliding_window=6, config=StatsConfig(n_sink=2, window=3))
    grads = {}
    for backend in ("chunked", "reference"):
        out, stats = attention_with_stats(q, k, v, backend=backend, **kwargs)
        loss = out.square().sum() + stats.received.sum() + stats.sink_mass.sum() + stats.window_mass.sum()
        grads[backend] = torch.autograd.grad(loss, (q, k, v))
    for actual, expected in zip(grads["chunked"], grads["reference"]):
        torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)
    _, stats = attention_with_stats(q, k, v, backend="chunked", **kwargs)
    assert all(g.isfinite().all() for g in torch.autograd.grad(stats.entropy.sum(), (q, k)))


def test_chunked_buffers_survive_inference_mode_and_are_freed_outside_a_reuse_block() -> None:
    from interp.kernels.chunked import _scratch, attention_with_stats_chunked, reuse_workspace

    qh, kh, vh = inputs()
    with reuse_workspace():
        with torch.inference_mode():
            attention_with_stats_chunked(qh, kh, vh)
        assert _scratch.__dict__.get("buffers")  # kept between calls inside the block
        attention_with_stats_chunked(qh, kh, vh)  # not an inference tensor: writable outside inference mode
    assert not _scratch.__dict__.get("buffers")
    attention_with_stats_chunked(qh, kh, vh)
    assert not _scratch.__dict__.get("buffers")  # a direct call keeps nothing
