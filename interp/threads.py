"""torch's CPU thread count: fixed for a run by default, so that the same command gives the same bits.

Summation order in some of torch's CPU kernels depends on the thread count, so two runs of the same
command on different counts differ by float rounding (1e-5 relative in a SmolLM2 forward). interp
therefore keeps one count for a whole run: torch's own (one per core) unless ``INTERP_THREADS`` says
otherwise:

- ``INTERP_THREADS=N``: N threads;
- ``INTERP_THREADS=auto``: adapt to the load. On a shared CPU torch's default can be several times
  slower than one thread when another process holds a core, because every parallel op waits for its
  slowest thread. :func:`faster_thread_count` times a matrix product with both counts and keeps the
  faster. A scan probes once and records the count in ``scan.json``; causal sweeps may also switch
  between batches. Faster under load, but no longer repeatable bit for bit.

:func:`run_threads` fixes the count for a run (``interp scan`` records it); code inside it never
changes the count, whatever the setting.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

from interp.settings import thread_setting

# The probe: [rows, d] @ [d, 4d], about 0.5 GFLOP (a few ms on one core), timed PROBE_REPEATS times per count.
PROBE_SHAPE = (256, 576)
PROBE_REPEATS = 5
# One thread must win by this factor to be chosen (the default keeps ties).
MARGIN = 1.2

# True inside run_threads: the count is fixed for the run, so nothing inside may adapt it.
_fixed_for_run: ContextVar[bool] = ContextVar("interp_threads_fixed", default=False)


def adaptive() -> bool:
    """Whether the thread count may adapt to the load here (``INTERP_THREADS=auto``, outside a fixed run)."""
    return not _fixed_for_run.get() and thread_setting() == "auto"


def probe_thread_count(default: int | None = None) -> int:
    """``default`` (torch's current count) or 1, whichever runs the probe faster now; restores the count."""
    default = torch.get_num_threads() if default is None else default
    if default <= 1:
        return default
    rows, d = PROBE_SHAPE
    a, b = torch.randn(rows, d), torch.randn(d, 4 * d)
    times: dict[int, float] = {}
    previous = torch.get_num_threads()
    try:
        for threads in (default, 1, default, 1):  # interleaved, so a burst of load hits both
            torch.set_num_threads(threads)
            runs = []
            for _ in range(PROBE_REPEATS):
                began = time.perf_counter()
                a @ b
                runs.append(time.perf_counter() - began)
            times[threads] = min(times.get(threads, float("inf")), statistics.median(runs))
    finally:
        torch.set_num_threads(previous)
    return 1 if times[1] * MARGIN < times[default] else default


def faster_thread_count(default: int | None = None) -> int:
    """:func:`probe_thread_count` where the count may adapt (:func:`adaptive`), else ``default`` (torch's count)."""
    default = torch.get_num_threads() if default is None else default
    return probe_thread_count(default) if adaptive() else default


@contextmanager
def faster_threads(device: torch.device | str = "cpu") -> Iterator[int]:
    """For the ``with`` block, run torch on :func:`faster_thread_count` threads (CPU only); restores the count."""
    previous = torch.get_num_threads()
    chosen = faster_thread_count(previous) if torch.device(device).type == "cpu" else previous
    torch.set_num_threads(chosen)
    try:
        yield chosen
    finally:
        torch.set_num_threads(previous)


@contextmanager
def run_threads(threads: int | str | None = None, device: torch.device | str = "cpu") -> Iterator[int]:
    """Fix torch's thread count for the ``with`` block (one run) and yield it; restores the count after.

    ``threads``: a count, ``"auto"`` (probe once now) or None (``$INTERP_THREADS``, else torch's count).
    Nothing inside the block adapts the count, so the run repeats bit for bit on the count it yields.
    """
    setting = thread_setting(threads)
    previous = torch.get_num_threads()
    if torch.device(device).type != "cpu" or setting is None:
        chosen = previous
    elif setting == "auto":
        chosen = probe_thread_count(previous)
    else:
        chosen = setting
    torch.set_num_threads(chosen)
    token = _fixed_for_run.set(True)
    try:
        yield chosen
    finally:
        _fixed_for_run.reset(token)
        torch.set_num_threads(previous)
