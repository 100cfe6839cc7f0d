"""The chunked kernel's per-row passes in C, compiled on first use (CPU, float32, no gradients).

After the product ``q @ k^T`` of a chunk, eager torch ops walk its ``[rows, span]`` score block
about eight times (causal mask, row max, argmax, softmax, shift, entropy dot, column sums) and then
make a dozen small ops per statistic. ``rowstats.c``'s ``attention_rows`` does all of it in three
passes over each row while the row is in cache, and writes every statistic in place:

1. the row maximum ``m`` and its first index (keys after the query are skipped: causality);
2. ``s -> exp(s - m)`` in place, with ``z = sum exp(s - m)`` and ``t = sum exp(s - m) (s - m)``, so that
   ``lse = m + log z``, ``max_prob = 1 / z`` and ``entropy = log z - t / z`` (a learned sink rescales them);
3. ``s -> s / z`` (the pattern, for the product with ``v``), added into its head's ``received``;

then it reads the diagonal, previous, window and sink keys off the normalized row.

The library is built with the system's C compiler (``$CC``, else Python's, else ``cc``) for this
CPU (``-march=native``) into ``$INTERP_CACHE/kernels/`` (a fraction of a second, once per machine
and source). Without a compiler, or with ``INTERP_NATIVE_KERNELS=0``, :func:`row_kernels` returns
None and the chunked kernel uses torch's ops: the same results within float32 rounding, in about
1.5x the time.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
import functools
import hashlib
import logging
import os
from pathlib import Path
import platform
import shlex
import subprocess
import sysconfig
import tempfile

import torch
from torch import Tensor

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("rowstats.c")
_FLAG_SETS = (["-O3", "-march=native"], ["-O3"])  # -march=native is refused by some compilers (e.g. older clang on arm64)
_allowed: ContextVar[bool] = ContextVar("interp_native_kernels", default=True)

_VOID, _I64 = ctypes.c_void_p, ctypes.c_int64
_FLOAT_OUTPUTS = ("lse", "entropy", "max_prob", "diag_mass", "prev_mass", "window_mass", "sink_mass", "learned_sink")


class _Outputs(ctypes.Structure):
    """rowstats.c's ``Outputs``: where each statistic goes (NULL: not computed)."""

    _fields_ = [(name, _VOID) for name in _FLOAT_OUTPUTS] + [("argmax", _VOID), ("sink_logits", _VOID)]


@dataclass(frozen=True)
class RowOutputs:
    """Where :meth:`RowKernels.attention_rows` writes, checked once per kernel call.

    Holds the arrays themselves too, so that the raw pointers in ``pointers`` stay valid.
    """

    pointers: _Outputs
    heads: int
    n_query: int
    n_sink: int
    n_heads: int  # length of sink_logits (row r's head is (r // rows_per_head) % n_heads)
    arrays: tuple[Tensor, ...]


class RowKernels:
    """Typed wrapper over the compiled library (``rowstats.c``)."""

    def __init__(self, library: ctypes.CDLL) -> None:
        # ctypes.CDLL releases the GIL during each call, so the chunked kernel's worker threads run it in parallel.
        self._attention_rows = library.attention_rows
        self._attention_rows.argtypes = [_VOID] + [_I64] * 11 + [_Outputs, _VOID]
        self._attention_rows.restype = None

    def outputs(self, *, argmax: Tensor, sink_logits: Tensor | None, n_sink: int, **arrays: Tensor | None) -> RowOutputs:
        """The statistics' arrays: ``[heads, n_query]`` each (``sink_mass`` ``[heads, n_query, n_sink]``),
        contiguous float32 (argmax int64) on the CPU; ``sink_logits`` one per query head. A wrong one would
        make the C code write out of bounds, so each is checked here."""
        unknown = set(arrays) - set(_FLOAT_OUTPUTS)
        if unknown:
            raise ValueError(f"unknown native row kernel outputs: {sorted(unknown)}")
        if argmax.dim() != 2 or n_sink < 0:
            raise ValueError("argmax must be [heads, n_query] and n_sink >= 0")
        heads, n_query = argmax.shape
        _check(argmax, torch.int64, (heads, n_query))
        missing = [name for name in ("lse", "entropy", "max_prob", "diag_mass", "prev_mass") if arrays.get(name) is None]
        if missing:  # the C code writes these for every row
            raise ValueError(f"native row kernels always write {', '.join(missing)}: pass arrays for them")
        for name, array in arrays.items():
            if array is not None:
                _check(array, torch.float32, (heads, n_query, n_sink) if name == "sink_mass" else (heads, n_query))
        if sink_logits is not None:
            _check(sink_logits, torch.float32, (sink_logits.numel(),))
            if sink_logits.numel() == 0 or (arrays.get("learned_sink") is None):
                raise ValueError("learned sinks need at least one logit and a learned_sink array")
        pointers = _Outputs(
            **{name: None if arrays.get(name) is None else arrays[name].data_ptr() for name in _FLOAT_OUTPUTS},
            argmax=argmax.data_ptr(), sink_logits=None if sink_logits is None else sink_logits.data_ptr(),
        )
        kept = tuple(t for t in [argmax, sink_logits, *arrays.values()] if t is not None)
        n_heads = heads if sink_logits is None else sink_logits.numel()
        return RowOutputs(pointers, heads, n_query, n_sink, n_heads, kept)

    def attention_rows(
        self, scores: Tensor, outputs: RowOutputs, received: Tensor | None, *, rows_per_head: int, diag0: int,
        start: int, key_lo: int, window: int,
    ) -> None:
        """One chunk's scores ``[rows, span]`` (contiguous; each head's ``rows_per_head`` queries in a row,
        the first at query ``start``, its own key at span column ``diag0``, the span starting at key
        ``key_lo``) become their attention pattern in place; every statistic is written into ``outputs``,
        the column sums are added to ``received`` (``[heads, n_key]``, contiguous). See ``rowstats.c``."""
        rows, span = scores.shape
        if scores.dtype != torch.float32 or not scores.is_contiguous() or scores.device.type != "cpu":
            raise ValueError("native row kernels take a contiguous float32 CPU score block")
        if rows_per_head < 1 or rows % rows_per_head or not 0 <= diag0 <= diag0 + rows_per_head - 1 < span:
            raise ValueError(f"a score block of {rows} x {span} does not hold {rows_per_head} queries per head ending at column {diag0}")
        if rows // rows_per_head != outputs.heads or not 0 <= start <= outputs.n_query - rows_per_head:
            raise ValueError(
                f"{rows // rows_per_head} heads of queries {start}..{start + rows_per_head} do not fit outputs of "
                f"{outputs.heads} heads x {outputs.n_query} queries"
            )
        if key_lo < 0 or window < 0:
            raise ValueError("key_lo and window must be >= 0")
        n_key = 0
        if received is not None:
            n_key = received.shape[-1]
            _check(received, torch.float32, (outputs.heads, n_key))
            if key_lo + span > n_key:
                raise ValueError(f"keys {key_lo}..{key_lo + span} do not fit received's {n_key}")
        self._attention_rows(
            scores.data_ptr(), rows, span, rows_per_head, diag0, start, outputs.n_query, key_lo, n_key,
            outputs.n_heads, window, outputs.n_sink, outputs.pointers, None if received is None else received.data_ptr(),
        )


def _check(array: Tensor, dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    if array.device.type != "cpu" or array.dtype != dtype or tuple(array.shape) != shape or not array.is_contiguous():
        raise ValueError(f"native row kernels take contiguous {dtype} CPU arrays of shape {shape}, got {tuple(array.shape)}")


@contextmanager
def native_kernels(enabled: bool) -> Iterator[None]:
    """Inside the block, :func:`row_kernels` returns None when ``enabled`` is False (tests, benchmarks)."""
    token = _allowed.set(enabled)
    try:
        yield
    finally:
        _allowed.reset(token)


def row_kernels() -> RowKernels | None:
    """The compiled row kernels, or None when disabled or when no C compiler could build them."""
    if not _allowed.get() or os.environ.get("INTERP_NATIVE_KERNELS", "1") == "0":
        return None
    return _load()


def loaded() -> bool:
    """Whether this process has loaded the row kernels, i.e. a chunked CPU call has used them (never builds)."""
    return _load.cache_info().currsize > 0 and _load() is not None


@functools.cache
def _load() -> RowKernels | None:
    try:
        return RowKernels(ctypes.CDLL(str(_build())))
    except (OSError, subprocess.SubprocessError, RuntimeError) as error:
        log.warning("interp: the native statistics passes could not be built (%s); using torch's ops instead", error)
        return None


def _compiler() -> list[str]:
    return shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")


def _cpu_identity() -> str:
    """What -march=native depends on: a library built for one CPU may not run on another sharing the cache."""
    try:
        with open("/proc/cpuinfo") as info:
            lines = [line for line in info if line.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


def _build() -> Path:
    """Compile rowstats.c into the cache (atomically, so concurrent processes may race) and return its path."""
    from interp.models.cache import cache_dir

    source = SOURCE.read_bytes()
    compiler = _compiler()
    key = hashlib.sha256(b"\0".join([source, " ".join(compiler).encode(), _cpu_identity().encode()])).hexdigest()[:16]
    target = cache_dir() / "kernels" / f"rowstats-{key}{sysconfig.get_config_var('SHLIB_SUFFIX') or '.so'}"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for flags in _FLAG_SETS:
        with tempfile.NamedTemporaryFile(dir=target.parent, suffix=target.suffix, delete=False) as tmp:
            partial = Path(tmp.name)
        command = [*compiler, *flags, "-shared", "-fPIC", str(SOURCE), "-o", str(partial)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
            if done.returncode == 0:
                os.replace(partial, target)
                return target
            errors.append(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
        except FileNotFoundError:
            errors.append(f"no C compiler {compiler[0]!r} (set CC)")
            break
        finally:
            partial.unlink(missing_ok=True)
    raise RuntimeError("; ".join(errors))
