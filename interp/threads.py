"""Choosing torch's CPU thread count on a shared machine.

torch runs one thread per core. When another process holds a core, every parallel op waits for its
slowest thread, so the default can be slower than one thread. :func:`faster_thread_count` times a
matrix product of the size a sweep's linear layers see with both counts and returns the faster.
Causal sweeps and the statistics forward use it on a CPU. Results can then differ between runs by
float rounding (summation order depends on the thread count): set ``INTERP_ADAPT_THREADS=0`` to
keep torch's count, for bit-for-bit repeatable runs.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

# The probe: [rows, d] @ [d, 4d], about 0.5 GFLOP (a few ms on one core), timed PROBE_REPEATS times per count.
PROBE_SHAPE = (256, 576)
PROBE_REPEATS = 5
# One thread must win by this factor to be chosen (the default keeps ties).
MARGIN = 1.2


def faster_thread_count(default: int | None = None) -> int:
    """``default`` (torch's current count) or 1, whichever runs the probe faster now; restores the count."""
    default = torch.get_num_threads() if default is None else default
    if default <= 1 or os.environ.get("INTERP_ADAPT_THREADS", "1") == "0":
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
