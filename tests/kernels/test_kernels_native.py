"""The chunked kernel's C row passes (interp.kernels.native) on hand-built score rows, and their build.

Every value is checked against float64 math written here: softmax, log-sum-exp and entropy of the
visible scores, and the first index of the maximum.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
import logging
import math

import pytest
import torch

from interp.kernels import StatsConfig, attention_with_stats_chunked, attention_with_stats_reference
from interp.kernels import native
from interp.kernels.testing import assert_stats_close


@pytest.fixture
def kernels() -> native.RowKernels:
    built = native.row_kernels()
    assert built is not None, "the C row passes did not build on this machine"
    return built


def run_rows(kernels: native.RowKernels, scores: torch.Tensor, rows_per_head: int, *, window: int = 3, n_sink: int = 2,
             key_lo: int = 0, sinks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """One call on a hand-built block; the last row of each head sees every key of the span."""
    rows, span = scores.shape
    heads = rows // rows_per_head
    stats = {name: torch.zeros(heads, rows_per_head) for name in
             ("lse", "entropy", "max_prob", "diag_mass", "prev_mass", "window_mass", "learned_sink")}
    stats["argmax"] = torch.zeros(heads, rows_per_head, dtype=torch.int64)
    stats["sink_mass"] = torch.zeros(heads, rows_per_head, n_sink)
    received = torch.zeros(heads, key_lo + span)
    outputs = kernels.outputs(n_sink=n_sink, sink_logits=sinks, **stats)
    kernels.attention_rows(
        scores, outputs, received, rows_per_head=rows_per_head, diag0=span - rows_per_head, start=0,
        key_lo=key_lo, window=window,
    )
    return stats | {"pattern": scores, "received": received}


@pytest.mark.parametrize(
    "tied",
    [(5, 21), (3, 20), (34, 35), (2, 34), (0, 16, 32)],
    ids=["same-lane", "other-lanes", "in-tail", "body-and-tail", "three"],
)
def test_ties_go_to_the_lowest_index(kernels, tied) -> None:
    # 37 keys: two 16-wide vectors and a tail of 5, so ties fall in every place the C code looks.
    scores = torch.linspace(-3, 1, 37)[torch.randperm(37, generator=torch.Generator().manual_seed(0))][None].clone()
    scores[0, list(tied)] = 2.5
    got = run_rows(kernels, scores.clone(), rows_per_head=1)
    assert got["argmax"].item() == min(tied)
    assert got["max_prob"].item() == pytest.approx(torch.softmax(scores.double(), -1).max().item(), rel=1e-6)


def test_a_row_equals_float64_softmax_lse_and_entropy(kernels) -> None:
    # Scores down to -100 relative to the maximum: exp underflows (exactly 0 below -87) on the way.
    scores = torch.cat([torch.linspace(-100, 0, 61), torch.randn(40) * 4])[None]
    got = run_rows(kernels, scores.clone(), rows_per_head=1)
    s = scores[0].double()
    p = torch.softmax(s, -1)
    assert got["lse"].item() == pytest.approx(torch.logsumexp(s, -1).item(), abs=2e-6)
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    assert got["entropy"].item() == pytest.approx(entropy, abs=2e-6)
    torch.testing.assert_close(got["pattern"][0].double(), p, atol=1e-8, rtol=2e-6)
    assert (got["pattern"][0][s < s.max() - 87.5] == 0).all()


def test_keys_after_each_query_are_hidden_and_masses_read_off_the_row(kernels) -> None:
    # Two heads of 4 queries over 9 keys: query i of a head sees keys 0..5 + i. Keys after it hold a
    # huge score, which must be ignored (causality) and come back as probability 0.
    torch.manual_seed(1)
    scores = torch.randn(8, 9) * 2
    for i in range(4):
        scores[[i, 4 + i], 6 + i:] = 1e4
    got = run_rows(kernels, scores.clone(), rows_per_head=4, window=3, n_sink=2)
    received = torch.zeros(2, 9, dtype=torch.float64)
    for row in range(8):
        head, i = divmod(row, 4)
        seen = 6 + i
        p = torch.softmax(scores[row, :seen].double(), -1)
        received[head, :seen] += p
        assert (got["pattern"][row, seen:] == 0).all()
        torch.testing.assert_close(got["pattern"][row, :seen].double(), p, atol=1e-7, rtol=1e-6)
        assert got["argmax"][head, i].item() == p.argmax().item()
        assert got["diag_mass"][head, i].item() == pytest.approx(p[-1].item(), abs=1e-7)
        assert got["prev_mass"][head, i].item() == pytest.approx(p[-2].item(), abs=1e-7)
        assert got["window_mass"][head, i].item() == pytest.approx(p[-3:].sum().item(), abs=1e-7)
        torch.testing.assert_close(got["sink_mass"][head, i].double(), p[:2], atol=1e-7, rtol=0)
    torch.testing.assert_close(got["received"].double(), received, atol=1e-6, rtol=0)


def test_a_learned_sink_and_a_row_that_sees_nothing(kernels) -> None:
    # Row 0 sees keys scoring 0, 1, 2 and a sink logit of 1.5; row 1 sees only masked keys.
    masked = torch.finfo(torch.float32).min / 2
    scores = torch.tensor([[0.0, 1.0, 2.0], [masked, masked, masked]])
    got = run_rows(kernels, scores.clone(), rows_per_head=1, sinks=torch.tensor([1.5, 1.5]))
    logits = torch.tensor([0.0, 1.0, 2.0, 1.5], dtype=torch.float64)
    p = torch.softmax(logits, -1)
    assert got["lse"][0, 0].item() == pytest.approx(torch.logsumexp(logits, -1).item(), abs=1e-6)
    assert got["entropy"][0, 0].item() == pytest.approx(-(p * p.log()).sum().item(), abs=1e-6)
    assert got["learned_sink"][0, 0].item() == pytest.approx(p[3].item(), abs=1e-7)
    torch.testing.assert_close(got["pattern"][0].double(), p[:3], atol=1e-7, rtol=0)
    # Nothing visible: lse -inf, argmax -1, all mass on the sink, zeros elsewhere.
    assert got["lse"][1, 0].item() == -math.inf and got["argmax"][1, 0].item() == -1
    assert got["learned_sink"][1, 0].item() == 1.0
    assert got["entropy"][1, 0].item() == 0 and got["max_prob"][1, 0].item() == 0
    assert (got["pattern"][1] == 0).all() and (got["received"][1] == 0).all()


def test_wrong_shapes_are_refused_before_any_write(kernels) -> None:
    stats = {name: torch.zeros(2, 4) for name in ("lse", "entropy", "max_prob", "diag_mass", "prev_mass")}
    with pytest.raises(ValueError, match="shape"):
        kernels.outputs(argmax=torch.zeros(2, 4, dtype=torch.int64), sink_logits=None, n_sink=0,
                        **stats | {"lse": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="int64"):
        kernels.outputs(argmax=torch.zeros(2, 4), sink_logits=None, n_sink=0, **stats)
    with pytest.raises(ValueError, match="always write lse"):
        kernels.outputs(argmax=torch.zeros(2, 4, dtype=torch.int64), sink_logits=None, n_sink=0,
                        **{name: t for name, t in stats.items() if name != "lse"})
    with pytest.raises(ValueError, match="learned_sink"):
        kernels.outputs(argmax=torch.zeros(2, 4, dtype=torch.int64), sink_logits=torch.zeros(2), n_sink=0, **stats)
    outputs = kernels.outputs(argmax=torch.zeros(2, 4, dtype=torch.int64), sink_logits=None, n_sink=0, **stats)
    call = dict(rows_per_head=4, start=0, key_lo=0, window=0)
    with pytest.raises(ValueError, match="does not hold"):
        kernels.attention_rows(torch.zeros(8, 5), outputs, None, diag0=3, **call)  # row 3's key would be column 6
    with pytest.raises(ValueError, match="contiguous"):
        kernels.attention_rows(torch.zeros(5, 8).t(), outputs, None, diag0=1, **call)
    with pytest.raises(ValueError, match="fit received"):
        kernels.attention_rows(torch.zeros(8, 5), outputs, torch.zeros(2, 4), diag0=1, **call)
    with pytest.raises(ValueError, match="do not fit outputs"):  # three heads' rows, outputs for two
        kernels.attention_rows(torch.zeros(12, 5), outputs, None, diag0=1, **call)
    with pytest.raises(ValueError, match="do not fit outputs"):  # queries 2..6 of 4
        kernels.attention_rows(torch.zeros(8, 5), outputs, None, diag0=1, **call | {"start": 2})


@pytest.fixture
def fresh_build(tmp_path, monkeypatch):
    """An empty kernel cache and no loaded library; the real one is loaded again afterwards."""
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path))
    native._load.cache_clear()
    yield tmp_path
    native._load.cache_clear()


def test_without_a_compiler_the_torch_ops_take_over(fresh_build, monkeypatch, caplog) -> None:
    monkeypatch.setenv("CC", str(fresh_build / "no-such-cc"))
    with caplog.at_level(logging.WARNING, logger="interp.kernels.native"):
        assert native.row_kernels() is None
    assert "no C compiler" in caplog.text and "torch's ops" in caplog.text
    assert not list((fresh_build / "kernels").glob("*")), "a failed build must leave no file behind"
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 40, 16, generator=g) for _ in range(3))
    config = StatsConfig(n_sink=2, window=4)
    out, stats = attention_with_stats_chunked(q, k, v, config=config)
    ref_out, ref_stats = attention_with_stats_reference(q, k, v, config=config)
    torch.testing.assert_close(out, ref_out, atol=2e-5, rtol=1e-5)
    assert_stats_close(stats, ref_stats, atol=2e-5)


def test_the_library_is_built_once_per_cache_even_by_racing_threads(fresh_build, monkeypatch) -> None:
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: native._build(), range(4)))
    assert len(set(paths)) == 1 and paths[0].parent == fresh_build / "kernels"
    assert [p.name for p in (fresh_build / "kernels").iterdir()] == [paths[0].name]  # no temporary left

    def no_compiling(*args, **kwargs):
        raise AssertionError("compiled again although the cache holds the library")

    monkeypatch.setattr(native.subprocess, "run", no_compiling)
    assert native._build() == paths[0]
    assert native.row_kernels() is not None


def test_the_environment_switch_turns_it_off(monkeypatch) -> None:
    monkeypatch.setenv("INTERP_NATIVE_KERNELS", "0")
    assert native.row_kernels() is None
    monkeypatch.delenv("INTERP_NATIVE_KERNELS")
    assert native.row_kernels() is not None
    with native.native_kernels(False):
        assert native.row_kernels() is None


def test_nan_scores_show_in_the_statistics(kernels) -> None:
    """Non-finite activations upstream must reach the scan's NaN check, not pass as a row that sees nothing."""
    scores = torch.tensor([[0.5, float("nan"), 1.0], [float("nan")] * 3, [1.0, 2.0, float("inf")]])
    got = run_rows(kernels, scores.clone(), rows_per_head=1)
    for name in ("lse", "entropy", "max_prob"):
        assert got[name].isnan().all(), name
    assert got["received"].isnan().any(dim=1).all()
