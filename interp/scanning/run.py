"""``interp.scan``: run the registered analyses over a model's heads and merge their tables into one.

Writing and reading the result: :mod:`interp.scanning.files`; checkpoints and resuming:
:mod:`interp.scanning.checkpoints`.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import time
import uuid
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from interp.analyses import resolve_analyses
from interp.analyses.context import ScanContext
from interp.analyses.head_stats import head_frame, stats_progress
from interp.analyses.probes import check_probe_length, default_probes
from interp.distributed import all_reduce_sum, alone, is_writer, world
from interp.errors import BeyondContextWarning, InterpError
from interp.hooks import HookedModel
from interp.kernels import chunk_budget
from interp.kernels.native import loaded as native_loaded
from interp.memory import parse_size, plan_scan
from interp.numerics import raise_if_nonfinite
from interp.output import check_writable
from interp.scanning.checkpoints import REUSED, Checkpoints, resume_plan, settings_fingerprint
from interp.scanning.result import KEY_COLUMNS, SCHEMA_VERSION, ScanResult
from interp.settings import ScanSettings, check_backend
from interp.threads import run_threads, thread_setting


def _versions() -> dict[str, str]:
    import transformers

    import interp

    return {
        "interp": interp.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "pandas": pd.__version__,
        "python": platform.python_version(),
    }


def _check_finite(model: HookedModel, ctx: ScanContext, name: str, table: pd.DataFrame, columns: dict) -> None:
    """A score that is NaN/inf where the analysis promises a number points at the model's numerics."""
    values = table[[c for c in columns if c in table and pd.api.types.is_float_dtype(table[c])]]
    optional = [c for c in values if "NaN unless" in columns[c]]
    values = values.drop(columns=optional)
    if values.size and not bool(values.apply(lambda col: col.map(math.isfinite)).all().all()):
        raise_if_nonfinite(model, ctx.probes["natural"].tokens, f"analysis {name}")
        raise InterpError(f"analysis {name} produced NaN/inf scores from finite activations; rerun with --debug and report it")


def scan(
    model: HookedModel,
    *,
    analyses: str | list[str] | None = None,
    settings: ScanSettings | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
    on_step: Callable[[str, int, int], None] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    max_memory: int | str | None = None,
    on_resume: Callable[[dict[str, str]], None] | None = None,
    threads: int | str | None = None,
) -> ScanResult:
    """Run ``analyses`` (names; None = all) on ``model`` and merge their tables on ``layer, head``.

    ``on_progress(analysis_name, done, total)`` is called before each analysis and once at the end;
    ``on_step(analysis_name, done, total)`` as a long analysis advances (samples, layers). With
    ``checkpoint_dir`` each analysis's result is saved there as it finishes; ``resume=True`` reuses
    saved results made with the same model and settings instead of recomputing them.

    ``max_memory`` (bytes, or a size like ``"8GB"``; default: the device's free memory) bounds what
    the scan may use beyond the weights: it fails before any work if the estimate does not fit, and
    otherwise sizes the attention kernel's query chunks to fit (see :func:`interp.memory.plan_scan`).

    With ``resume``, ``on_resume({analysis: reason})`` is called before any work with what
    :func:`resume_plan` decided (``"reused"``, or why the analysis is recomputed); the same dict is
    ``metadata["resume"]``.

    ``threads``: torch's CPU thread count for the whole scan (default ``$INTERP_THREADS``, else torch's
    own), or ``"auto"`` to probe the load once; recorded as ``metadata["threads"]``. The same model,
    settings and thread count give bit-identical tables (see :mod:`interp.threads`). Bad settings, a length past the model's window, a scan that cannot fit
    and an unusable ``checkpoint_dir`` all fail before any probe is built.

    Under torchrun every rank calls this with the same arguments: each analysis runs on every rank,
    each taking its share of the work (:mod:`interp.analyses.split`); one registered with
    ``splits=False`` then runs on rank 0 alone. Rank 0 alone keeps checkpoints and returns every
    analysis; another rank's result holds the analyses it shared (docs/distributed.md).
    """
    settings = settings or ScanSettings()
    if not isinstance(settings, ScanSettings):
        raise InterpError(f"settings must be an interp.ScanSettings, got {type(settings).__name__}")
    chosen = resolve_analyses(analyses)
    thread_setting(threads)
    # Every check that can fail runs before any probe is tokenized or any analysis starts.
    check_backend(settings.backend, model.device.type)
    check_probe_length(model, settings.context_length, beyond_context=settings.beyond_context)
    plan = plan_scan(model, settings, max_bytes=parse_size(max_memory) if isinstance(max_memory, str) else max_memory)
    fingerprint = settings_fingerprint(model, settings)
    ranks = world()  # under torchrun: joins the group; the analyses that split share their work
    checkpoints = None
    if checkpoint_dir is not None and ranks.rank == 0:  # rank 0 alone writes and reads checkpoints
        checkpoint_dir = Path(checkpoint_dir)
        if checkpoint_dir.exists() and not checkpoint_dir.is_dir():
            raise InterpError(f"checkpoint_dir {checkpoint_dir} is a file; give a folder path")
        check_writable(checkpoint_dir, flag="checkpoint_dir")
        checkpoints = Checkpoints(checkpoint_dir, fingerprint, asdict(settings))
    reuse = resume_plan(checkpoints, [a.name for a in chosen], settings) if checkpoints and resume else {}
    if on_resume and checkpoints and resume:
        on_resume(reuse)
    rank0_only = _rank0_only(chosen, reuse, resume) if ranks.parallel else set()
    torch.manual_seed(settings.seed)
    with warnings.catch_warnings(), run_threads(threads, model.device) as n_threads:
        if settings.beyond_context:
            warnings.simplefilter("ignore", BeyondContextWarning)
        result = _run_scan(model, chosen, settings, plan, checkpoints, reuse, fingerprint, on_progress, on_step, rank0_only)
    result.metadata["threads"] = n_threads
    if ranks.parallel:
        result.metadata["ranks"] = {"world_size": ranks.size, "rank_0_only": [a.name for a in chosen if not a.splits]}
    return result


def _rank0_only(chosen, reuse: dict[str, str], resume: bool) -> set[str]:
    """Under torchrun: the analyses rank 0 runs alone (they do not split) or reuses from its checkpoints
    (rank 0 tells the others which, in one ``all_reduce``); the other ranks skip them."""
    only = {a.name for a in chosen if not a.splits}
    if resume:
        mine = np.array([float(reuse.get(a.name) == REUSED) for a in chosen]) if is_writer() else np.zeros(len(chosen))
        only |= {a.name for a, reused in zip(chosen, all_reduce_sum(mine)) if reused > 0}
    return only


def _run_scan(model, chosen, settings, plan, checkpoints, reuse, fingerprint, on_progress, on_step, rank0_only=frozenset()) -> ScanResult:
    probes = default_probes(
        model, context_length=settings.context_length, batch=settings.batch, seed=settings.seed,
        beyond_context=settings.beyond_context,
    )
    ctx = ScanContext(model=model, probes=probes, settings=settings)
    heads = None
    timings: dict[str, float] = {}
    columns: dict[str, str] = {}
    tables: dict[str, pd.DataFrame] = {}
    summary: dict[str, dict] = {}
    resumed: list[str] = []
    # Under torchrun the analyses that split run first, on every rank; then rank 0 runs the rest alone.
    order = [a for a in chosen if a.name not in rank0_only] + [a for a in chosen if a.name in rank0_only]
    writer = is_writer()
    finished: dict[str, tuple[pd.DataFrame, float]] = {}
    for index, analysis in enumerate(order):
        if analysis.name in rank0_only and not writer:
            break
        if on_progress:
            on_progress(analysis.name, index, len(chosen))
        if on_step:
            ctx.progress = lambda done, total, name=analysis.name: on_step(name, done, total)
        saved = checkpoints.load(analysis.name) if reuse.get(analysis.name) == REUSED else None
        if saved is not None:
            table, seconds = saved
            resumed.append(analysis.name)
        else:
            start = time.perf_counter()
            with chunk_budget(plan.chunk_bytes), stats_progress(ctx.progress if on_step else None), \
                    alone() if analysis.name in rank0_only else nullcontext():
                table = analysis.run(ctx)
            seconds = round(time.perf_counter() - start, 3)
            if checkpoints:
                checkpoints.save(analysis.name, table, seconds)
        _check_finite(model, ctx, analysis.name, table, analysis.columns)
        finished[analysis.name] = table, seconds
    ran = [a for a in chosen if a.name in finished]  # the table's columns keep the requested order
    resumed = [a.name for a in ran if a.name in resumed]
    for analysis in ran:
        table, seconds = finished[analysis.name]
        timings[analysis.name] = seconds
        columns.update(analysis.columns)
        tables.update(table.attrs.get("tables", {}))
        if table.attrs.get("summary"):
            summary[analysis.name] = table.attrs["summary"]
        table = table[[c for c in table.columns if c in KEY_COLUMNS or c in analysis.columns]]
        heads = table if heads is None else heads.merge(table, on=list(KEY_COLUMNS), validate="one_to_one")
    if heads is None:  # a rank other than 0 with nothing to share
        heads = head_frame(model, {})
    if on_progress and writer:
        on_progress("done", len(chosen), len(chosen))
    metadata = {
        "schema_version": SCHEMA_VERSION,
        "model": asdict(model.cfg),
        "settings": asdict(settings),
        "analyses": [a.name for a in ran],
        "columns": columns,
        "summary": summary,
        "tables": sorted(tables),
        "probes": {name: {"shape": list(p.tokens.shape), "description": p.description} for name, p in probes.items()},
        "versions": _versions(),
        # Whether the chunked backend's per-row work ran in C here (False: a GPU scan, no C compiler, or turned off).
        "native_kernels": native_loaded(),
        "timings_s": timings,
        "memory_plan": plan.to_dict(),
        "resumed": resumed,
        "resume": reuse,
        "fingerprint": fingerprint,
        "run_id": uuid.uuid4().hex[:16],
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    heads.attrs = {}
    return ScanResult(heads=heads, metadata=metadata, tables=tables)


