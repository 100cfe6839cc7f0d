"""Comparing `AttentionStats` from two backends (used by the test suite, handy for new backends)."""

from __future__ import annotations

from dataclasses import fields

import torch
from torch import Tensor

from interp.kernels.stats import AttentionStats


def assert_stats_close(
    actual: AttentionStats,
    expected: AttentionStats,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    received_atol: float | None = None,
    expected_probs: Tensor | None = None,
) -> None:
    """Raise AssertionError unless `actual` matches `expected` field by field.

    Checks the same fields are present, dtypes (float32 / int64 argmax), shapes, no NaN, lse's
    -inf rows coincide, and values agree within atol/rtol (received: received_atol, default
    10 * atol, since it sums over queries). argmax must match exactly, except that with
    `expected_probs` ([b, h, q, k], e.g. from `reference_pattern`) a different index is
    accepted when its probability is within atol of max_prob (near-ties).
    """
    for f in fields(AttentionStats):
        a, e = getattr(actual, f.name), getattr(expected, f.name)
        if (a is None) != (e is None):
            state = {True: "None", False: "set"}
            raise AssertionError(f"{f.name}: actual is {state[a is None]}, expected is {state[e is None]}")
        if a is None:
            continue
        want_dtype = torch.int64 if f.name == "argmax" else torch.float32
        if a.dtype != want_dtype:
            raise AssertionError(f"{f.name}: dtype {a.dtype}, want {want_dtype}")
        if a.shape != e.shape:
            raise AssertionError(f"{f.name}: shape {tuple(a.shape)}, expected {tuple(e.shape)}")
        if a.is_floating_point() and torch.isnan(a).any():
            raise AssertionError(f"{f.name}: contains NaN")
        if f.name == "lse":
            masked = torch.isneginf(e)
            if not torch.equal(torch.isneginf(a), masked) or torch.isinf(a[~masked]).any():
                raise AssertionError("lse: -inf rows differ or +-inf elsewhere")
            torch.testing.assert_close(a[~masked], e[~masked], atol=atol, rtol=rtol, msg=lambda m: f"lse: {m}")
        elif f.name == "argmax":
            _check_argmax(a, e, actual.max_prob, atol, expected_probs)
        else:
            tol = (received_atol if received_atol is not None else 10 * atol) if f.name == "received" else atol
            if torch.isinf(a).any():
                raise AssertionError(f"{f.name}: contains inf")
            torch.testing.assert_close(a, e, atol=tol, rtol=rtol, msg=lambda m, n=f.name: f"{n}: {m}")


def _check_argmax(a: Tensor, e: Tensor, max_prob: Tensor, atol: float, probs: Tensor | None) -> None:
    differ = a != e
    if not differ.any():
        return
    if probs is None or ((a == -1) != (e == -1)).any():
        raise AssertionError(f"argmax differs at {differ.sum().item()} positions")
    prob_at_a = probs.to(a.device).gather(-1, a.clamp(min=0)[..., None])[..., 0]
    near_tie = (prob_at_a - max_prob).abs() <= atol
    if not near_tie[differ].all():
        raise AssertionError(f"argmax differs at {(differ & ~near_tie).sum().item()} positions (not near-ties)")
