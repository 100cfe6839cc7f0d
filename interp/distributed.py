"""Data parallel over ``torch.distributed``: which rows this process takes, and the sums that combine them.

interp has no scheduler of its own. Launch any script or ``interp`` command under ``torchrun
--nproc-per-node N`` (or ``accelerate launch``): every process runs the same code, and the dataset
sweeps (:func:`~interp.circuits.edge_attribution`, ``evaluate_circuits``, ``faithfulness_curve``,
``patch_edges``, ``activation_patching``, ``causal_trace``, and the analyses of ``interp.scan`` through
:mod:`interp.analyses.split`) each take their share of the work and add the shares up with one
``all_reduce`` at the end, so every rank returns the one-process result.

- :func:`world` reads ``RANK`` / ``WORLD_SIZE`` (or an already initialized process group) and, under
  a launcher with no group yet, initializes one: ``gloo`` for CPU tensors, plus ``nccl`` on the local
  rank's GPU when CUDA is available. Collectives time out after ``INTERP_DIST_TIMEOUT`` seconds (600).
- :func:`shard` / :func:`shard_batches`: this rank's deterministic share (contiguous rows, or strided
  cells for the patching grids, whose later layers cost less under replay).
- :func:`all_reduce_sum` packs tensors, arrays and numbers into one float64 ``all_reduce``;
  :func:`merge_owned` combines a grid whose cells each rank computed a share of (no sums: exact).
- :func:`is_writer`: rank 0, the only process that writes output folders or prints progress.
- :func:`alone`: a block where interp ignores the group (a call made on one rank only).

A collective that fails (another rank died, or hung past the timeout) raises a one-line
:class:`~interp.errors.InterpError`; nothing has been written by then.
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch

from interp.errors import InterpError

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class World:
    """This process's place in the group: ``rank`` of ``size`` (``local_rank`` on its machine)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def parallel(self) -> bool:
        return self.size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value.strip() else default
    except ValueError:
        raise InterpError(f"{name}={value!r} is not an integer; unset it or launch with torchrun") from None


def timeout_s() -> float:
    """Seconds a collective waits for the other ranks (``INTERP_DIST_TIMEOUT``, default 600)."""
    value = os.environ.get("INTERP_DIST_TIMEOUT", "")
    try:
        seconds = float(value) if value.strip() else DEFAULT_TIMEOUT_S
    except ValueError:
        raise InterpError(f"INTERP_DIST_TIMEOUT={value!r} is not a number of seconds") from None
    if seconds <= 0:
        raise InterpError(f"INTERP_DIST_TIMEOUT must be positive, got {value}")
    return seconds


def launched() -> bool:
    """Whether a launcher (torchrun, accelerate) started this process as one of several, without touching torch.distributed."""
    return _env_int("WORLD_SIZE", 1) > 1


_alone: ContextVar[bool] = ContextVar("interp_distributed_alone", default=False)


@contextmanager
def alone() -> Iterator[None]:
    """Inside this block interp's functions run every row in this process and call no collective.

    For a call on one rank only (e.g. a quick check on rank 0 of your own DDP job), which would
    otherwise wait for the other ranks to join its ``all_reduce``.
    """
    token = _alone.set(True)
    try:
        yield
    finally:
        _alone.reset(token)


def world() -> World:
    """This process's rank and the group size; initializes the process group on first use under a launcher."""
    if _alone.get():
        return World()
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    if not launched():
        return World()
    if not dist.is_available():
        raise InterpError("WORLD_SIZE > 1 but this torch has no torch.distributed; run one process or install a full torch")
    local = _env_int("LOCAL_RANK", 0)
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(local % torch.cuda.device_count())
        backend = "cpu:gloo,cuda:nccl"  # interp's sums travel on CPU; nccl for the user's own GPU collectives
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s()))
    except (RuntimeError, ValueError) as error:
        raise InterpError(f"cannot join the process group ({_first_line(error)}); check MASTER_ADDR/MASTER_PORT "
                          f"and that every rank started") from None
    atexit.register(_leave)
    _stop_on_sigterm()
    return World(dist.get_rank(), dist.get_world_size(), local)


def _stop_on_sigterm() -> None:
    """torchrun stops the surviving ranks with SIGTERM when one fails: make that a one-line error that cleans up.

    Only when nothing else handles SIGTERM (a default handler would kill the process mid-write).
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def stop(signum: int, frame: Any) -> None:
        _stopping()
        raise InterpError(f"rank {_env_int('RANK', 0)}: stopped by the launcher (another process failed); nothing was written")

    signal.signal(signal.SIGTERM, stop)


def _stopping() -> None:
    """This rank is already on its way out with one error line: a later SIGTERM from the launcher must not interrupt it."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _leave() -> None:
    try:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    except Exception:  # noqa: BLE001 - at exit, a broken group has nothing left to release
        pass


def _first_line(error: BaseException) -> str:
    """The error's first line without gloo's ``[path/file.cc:123]`` location prefix."""
    text = str(error).strip().splitlines()
    line = re.sub(r"^\[[^\]]*\]\s*:?\s*", "", text[0]) if text else ""
    return line.split(". ")[0][:200] or type(error).__name__  # gloo adds advice sentences


def rank_device(device: str) -> str:
    """``"auto"`` under a launcher with CUDA: this rank's own GPU (``cuda:LOCAL_RANK``); anything else unchanged."""
    if device != "auto" or not launched() or not torch.cuda.is_available():
        return device
    return f"cuda:{_env_int('LOCAL_RANK', 0) % torch.cuda.device_count()}"


def rank_gpus(per_rank: int | None = None) -> list[int]:
    """The GPUs of this machine that this rank may spread one model over (``device_map``), without sharing.

    The node's visible GPUs split into ``LOCAL_WORLD_SIZE`` equal groups (or groups of ``per_rank``);
    :func:`rank_max_memory` turns them into accelerate's ``max_memory``.
    """
    count = torch.cuda.device_count()
    local, local_size = _env_int("LOCAL_RANK", 0), max(1, _env_int("LOCAL_WORLD_SIZE", 1))
    per = per_rank or count // local_size
    if per < 1 or per * local_size > count:
        raise InterpError(f"{local_size} ranks on this machine cannot each have {per or 1} of its {count} GPUs; "
                          f"launch fewer processes per node")
    return list(range(local * per, (local + 1) * per))


def rank_max_memory(fraction: float = 0.9) -> dict[int, int]:
    """``max_memory`` for ``from_pretrained(..., device_map="auto")``: ``fraction`` of each of :func:`rank_gpus`, nothing else.

    accelerate then spreads this rank's copy of the model over its own GPUs only.
    """
    return {i: int(torch.cuda.get_device_properties(i).total_memory * fraction) for i in rank_gpus()}


def is_writer() -> bool:
    """True on rank 0 (and in a single process): the one process that writes files and prints progress."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return _env_int("RANK", 0) == 0


def shard_range(n: int, w: World | None = None) -> range:
    """This rank's contiguous share of ``n`` rows (sizes differ by at most one; ranks in order)."""
    w = w or world()
    return range(n * w.rank // w.size, n * (w.rank + 1) // w.size)


def shard(items: Sequence[T], *, strided: bool = False) -> list[T]:
    """This rank's share of ``items``: a contiguous block, or every ``size``-th item from ``rank`` (``strided``)."""
    w = world()
    if not w.parallel:
        return list(items)
    if strided:
        return list(items[w.rank::w.size])
    part = shard_range(len(items), w)
    return list(items[part.start:part.stop])


def shard_batches(batches: Sequence[T]) -> list[T]:
    """This rank's contiguous share of the rows of ``batches`` (objects with ``.size`` and ``.take(start, stop)``).

    Each batch keeps its padding width, so a row is computed as in one process; a batch that straddles
    two shares is cut between them.
    """
    w = world()
    if not w.parallel:
        return list(batches)
    mine = shard_range(sum(b.size for b in batches), w)
    out, first = [], 0
    for batch in batches:
        start, stop = max(mine.start - first, 0), min(mine.stop - first, batch.size)
        if start < stop:
            out.append(batch if (start, stop) == (0, batch.size) else batch.take(start, stop))
        first += batch.size
    return out


def _collective(op: str, tensor: torch.Tensor) -> torch.Tensor:
    dist = torch.distributed
    if "gloo" not in str(dist.get_backend()):  # a user's nccl-only group: the sum travels on this rank's GPU
        tensor = tensor.to(torch.device("cuda", torch.cuda.current_device()))
    try:
        dist.all_reduce(tensor, op=getattr(dist.ReduceOp, op))
    except (RuntimeError, ValueError) as error:
        _stopping()
        w = world()
        raise InterpError(
            f"rank {w.rank} of {w.size}: another process stopped or did not answer within {timeout_s():g} s "
            f"({_first_line(error)}); nothing was written"
        ) from None
    return tensor.cpu()


def all_reduce_sum(*values: Any) -> Any:
    """Each value summed over the ranks, in float64: tensors, numpy arrays, floats and ints (returned as given).

    One ``all_reduce`` for all of them. In one process the values come back unchanged. With one
    value, returns it; with several, a tuple.
    """
    if not world().parallel:
        return values[0] if len(values) == 1 else values
    flat = [torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v.detach().cpu(), dtype=torch.float64).reshape(-1)
            for v in values]
    total = _collective("SUM", torch.cat(flat) if flat else torch.zeros(0, dtype=torch.float64))
    out, at = [], 0
    for value, part in zip(values, flat):
        piece = total[at:at + part.numel()]
        at += part.numel()
        if isinstance(value, torch.Tensor):
            out.append(piece.reshape(value.shape).to(value.dtype))
        elif isinstance(value, np.ndarray):
            out.append(piece.numpy().reshape(value.shape).astype(value.dtype))
        elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            out.append(int(round(float(piece[0]))))
        else:
            out.append(float(piece[0]))
    return out[0] if len(out) == 1 else tuple(out)


def merge_owned(values: torch.Tensor, owned: Sequence[int]) -> torch.Tensor:
    """``values [cells]`` where each rank computed the cells in ``owned``: every cell from the rank that owns it.

    Cells no rank owns keep this rank's value (the same on every rank). Exact: values are moved, not added.
    """
    if not world().parallel:
        return values
    index = torch.as_tensor(list(owned), dtype=torch.long)
    mine = torch.zeros(2, values.shape[0], dtype=torch.float64)
    mine[0, index] = values[index].double().cpu()
    mine[1, index] = 1.0
    both = _collective("SUM", mine.reshape(-1)).reshape(2, -1)
    merged = torch.where(both[1] > 0, both[0], values.double().cpu())
    return merged.to(values.dtype)


def barrier() -> None:
    """Wait for every rank (one-line :class:`InterpError` if one is gone); nothing in one process."""
    if world().parallel:
        _collective("SUM", torch.zeros(1, dtype=torch.float64))
