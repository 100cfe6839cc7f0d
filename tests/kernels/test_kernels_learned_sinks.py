"""Learned attention sinks (gpt_oss): one extra logit per head in the softmax denominator, attending to nothing."""

import math

import pytest
import torch

from interp.kernels import StatsConfig, attention_with_stats

CONFIG = StatsConfig(n_sink=2, window=3, received=True)


def test_uniform_scores_with_a_sink_match_the_closed_form():
    # q = 0: every visible key scores 0, so query p sees p + 1 keys of weight 1 and the sink of weight e^s.
    n, sink = 6, 1.5
    q, k, v = torch.zeros(1, 1, n, 4), torch.randn(1, 1, n, 4), torch.randn(1, 1, n, 4)
    for backend in ("reference", "chunked"):
        out, stats = attention_with_stats(q, k, v, config=CONFIG, backend=backend, sinks=torch.tensor([sink]))
        for p in range(n):
            total = p + 1 + math.exp(sink)
            assert stats.learned_sink_mass[0, 0, p].item() == pytest.approx(math.exp(sink) / total, rel=1e-5)
            assert stats.max_prob[0, 0, p].item() == pytest.approx(1 / total, rel=1e-5)
            assert stats.lse[0, 0, p].item() == pytest.approx(math.log(total), rel=1e-5)
            probs = [1 / total] * (p + 1) + [math.exp(sink) / total]
            assert stats.entropy[0, 0, p].item() == pytest.approx(-sum(x * math.log(x) for x in probs), rel=1e-5)
            torch.testing.assert_close(out[0, 0, p], v[0, 0, : p + 1].sum(0) / total, atol=1e-5, rtol=1e-5)
        # Key 0 receives 1 / (p + 1 + e^s) from every query p.
        expected = sum(1 / (p + 1 + math.exp(sink)) for p in range(n))
        assert stats.received[0, 0, 0].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("sliding_window", [None, 3])
def test_chunked_equals_reference_with_sinks(sliding_window):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 9, 8) * 2, torch.randn(2, 2, 9, 8), torch.randn(2, 2, 9, 8)
    sinks = torch.tensor([-1.0, 0.5, 3.0, 8.0])
    kwargs = dict(config=CONFIG, sinks=sinks, sliding_window=sliding_window)
    ref_out, ref = attention_with_stats(q, k, v, backend="reference", **kwargs)
    out, got = attention_with_stats(q, k, v, backend="chunked", **kwargs)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    for name, value in ref.to_dict().items():
        torch.testing.assert_close(getattr(got, name), value, atol=1e-5, rtol=1e-4, msg=name)


def test_a_very_negative_sink_changes_nothing():
    torch.manual_seed(1)
    q, k, v = torch.randn(1, 2, 7, 8), torch.randn(1, 2, 7, 8), torch.randn(1, 2, 7, 8)
    plain_out, plain = attention_with_stats(q, k, v, config=CONFIG, backend="chunked")
    out, got = attention_with_stats(q, k, v, config=CONFIG, backend="chunked", sinks=torch.full((2,), -1e4))
    torch.testing.assert_close(out, plain_out)
    assert got.learned_sink_mass.abs().max() < 1e-6 and plain.learned_sink_mass is None
    torch.testing.assert_close(got.entropy, plain.entropy)


def test_triton_refuses_sinks_in_one_line():
    q = torch.randn(1, 1, 4, 8)
    with pytest.raises(ValueError, match="learned sinks") as error:
        attention_with_stats(q, q, q, backend="triton", sinks=torch.zeros(1))
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="one logit per query head"):
        attention_with_stats(q, q, q, backend="chunked", sinks=torch.zeros(3))


def test_chunked_attention_sees_only_its_own_chunk():
    """Llama 4: with chunks of 3, the query at position 4 sees keys 3 and 4 only (hand-built, uniform scores)."""
    q, k, v = torch.zeros(1, 1, 7, 4), torch.randn(1, 1, 7, 4), torch.randn(1, 1, 7, 4)
    for backend in ("reference", "chunked"):
        out, stats = attention_with_stats(q, k, v, config=CONFIG, backend=backend, attention_chunk=3)
        assert stats.max_prob[0, 0].tolist() == pytest.approx([1, 1 / 2, 1 / 3, 1, 1 / 2, 1 / 3, 1])
        torch.testing.assert_close(out[0, 0, 4], v[0, 0, 3:5].mean(0))
        assert stats.sink_mass[0, 0, 3:].abs().max() == 0  # keys 0-1 are outside every later chunk


def test_chunked_backend_equals_reference_with_attention_chunks():
    torch.manual_seed(2)
    q, k, v = torch.randn(2, 4, 11, 8) * 2, torch.randn(2, 2, 11, 8), torch.randn(2, 2, 11, 8)
    ref_out, ref = attention_with_stats(q, k, v, backend="reference", config=CONFIG, attention_chunk=4)
    out, got = attention_with_stats(q, k, v, backend="chunked", config=CONFIG, attention_chunk=4)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    for name, value in ref.to_dict().items():
        torch.testing.assert_close(getattr(got, name), value, atol=1e-5, rtol=1e-4, msg=name)
    with pytest.raises(ValueError, match="chunked and reference"):
        attention_with_stats(q, k, v, backend="triton", attention_chunk=4)


@pytest.mark.parametrize("native", [True, False], ids=["native", "torch"])
def test_a_sink_logit_of_minus_infinity_is_no_sink(native: bool) -> None:
    """Its share is exactly 0; the entropy's 0 * log 0 term must be 0, not NaN (the reference agrees)."""
    from interp.kernels.native import native_kernels

    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, 12, 8, generator=g) for _ in range(3))
    with native_kernels(native):
        out, got = attention_with_stats(q, k, v, config=CONFIG, backend="chunked", sinks=torch.tensor([float("-inf"), 0.5]))
    ref_out, ref = attention_with_stats(q, k, v, config=CONFIG, backend="reference", sinks=torch.tensor([float("-inf"), 0.5]))
    plain_out, plain = attention_with_stats(q, k, v, config=CONFIG, backend="reference")
    assert got.entropy.isfinite().all() and got.lse.isfinite().all()
    torch.testing.assert_close(got.entropy, ref.entropy, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(got.entropy[:, 0], plain.entropy[:, 0], atol=2e-5, rtol=1e-5)
    assert (got.learned_sink_mass[:, 0] == 0).all()
    torch.testing.assert_close(out, ref_out, atol=2e-5, rtol=1e-5)
