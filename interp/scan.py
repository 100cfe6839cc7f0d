"""``interp.scan``: run analyses over a model's heads and write ``heads.csv`` + ``scan.json``.

Output folder layout (``SCHEMA_VERSION`` 1):

- ``heads.csv``: one row per (layer, head): ``layer, head, kv_head`` then each analysis's columns,
  which start with the analysis name (documented in README "heads.csv columns");
- ``scan.json``: model, settings (seed included), analyses, column meanings, model-level summaries
  (e.g. the sink rate), versions, timings;
- ``<table>.csv``: extra tables some analyses produce (e.g. ``secondary_sinks.csv``).

Files are staged in a hidden folder beside the output and moved in only when complete, so an error
or Ctrl-C never leaves a half-written table.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import types
import uuid
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch

from interp.analyses import resolve_analyses
from interp.analyses.context import ScanContext, ScanSettings
from interp.analyses.head_stats import stats_progress
from interp.errors import BeyondContextWarning, InterpError
from interp.hooks import HookedModel
from interp.kernels import chunk_budget
from interp.memory import parse_size, plan_scan
from interp.numerics import raise_if_nonfinite
from interp.output import SCAN_FILES, check_output_dir, check_writable, make_dirs
from interp.probes import check_probe_length, default_probes
from interp.settings import check_backend
from interp.threads import run_threads, thread_setting

SCHEMA_VERSION = 1
KEY_COLUMNS = ("layer", "head", "kv_head")


@dataclass
class ScanResult:
    """A finished scan: the per-head table and the metadata written to ``scan.json``."""

    heads: pd.DataFrame
    metadata: dict = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


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


def settings_fingerprint(model: HookedModel, settings: ScanSettings) -> str:
    """Identifies a (model, settings, interp version) combination; checkpoints are reused only on a match."""
    import interp

    key = json.dumps({"model": asdict(model.cfg), "settings": asdict(settings), "interp": interp.__version__}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _atomic_write_text(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


class Checkpoints:
    """Per-analysis results in ``<out>/analyses/``, each written atomically as the analysis finishes.

    ``<name>.csv`` (its head table), ``<name>.<table>.csv`` (extra tables) and ``<name>.json``
    (fingerprint, summary, timing) — the JSON is written last, so an analysis counts as done only
    when all its files are complete. ``interp scan --resume`` reuses those whose fingerprint matches.
    """

    def __init__(self, folder: Path, fingerprint: str, settings: dict | None = None) -> None:
        self.folder = folder
        self.fingerprint = fingerprint
        self.settings = settings or {}

    def why_not(self, name: str) -> str | None:
        """None when ``name``'s checkpoint can be reused, else why not (missing, or what changed)."""
        meta_path = self.folder / f"{name}.json"
        if not meta_path.exists():
            return "no finished checkpoint"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            return "its checkpoint is unreadable"
        if meta.get("fingerprint") == self.fingerprint:
            return None
        old = meta.get("settings") or {}
        changed = [f"{k} {old[k]!r} -> {v!r}" for k, v in self.settings.items() if k in old and old[k] != v]
        if changed:
            return "settings changed: " + ", ".join(changed)
        return "made with another model, interp version or settings"

    def load(self, name: str) -> tuple[pd.DataFrame, float] | None:
        meta_path = self.folder / f"{name}.json"
        if not meta_path.exists():
            return None
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") != self.fingerprint:
            return None
        table = pd.read_csv(self.folder / f"{name}.csv")
        table.attrs["tables"] = {t: pd.read_csv(self.folder / f"{name}.{t}.csv") for t in meta.get("tables", [])}
        table.attrs["summary"] = meta.get("summary", {})
        return table, meta.get("seconds", 0.0)

    def save(self, name: str, table: pd.DataFrame, seconds: float) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        extra = table.attrs.get("tables", {})
        clean = table.copy()
        clean.attrs = {}
        _atomic_write_text(self.folder / f"{name}.csv", clean.to_csv(index=False))
        for table_name, extra_table in extra.items():
            _atomic_write_text(self.folder / f"{name}.{table_name}.csv", extra_table.to_csv(index=False))
        meta = {"fingerprint": self.fingerprint, "tables": sorted(extra), "summary": table.attrs.get("summary", {}),
                "seconds": seconds, "settings": self.settings}
        _atomic_write_text(self.folder / f"{name}.json", json.dumps(meta, indent=2, default=float))


REUSED = "reused"


def resume_plan(checkpoints: Checkpoints | None, names: list[str], settings: ScanSettings) -> dict[str, str]:
    """``{analysis: "reused" or why it is recomputed}`` for a resumed scan."""
    if checkpoints is None:
        return {name: "no checkpoint folder" for name in names}
    return {name: checkpoints.why_not(name) or REUSED for name in names}


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
    checkpoints = None
    if checkpoint_dir is not None:
        checkpoint_dir = Path(checkpoint_dir)
        if checkpoint_dir.exists() and not checkpoint_dir.is_dir():
            raise InterpError(f"checkpoint_dir {checkpoint_dir} is a file; give a folder path")
        check_writable(checkpoint_dir, flag="checkpoint_dir")
        checkpoints = Checkpoints(checkpoint_dir, fingerprint, asdict(settings))
    reuse = resume_plan(checkpoints, [a.name for a in chosen], settings) if checkpoints and resume else {}
    if on_resume and checkpoints and resume:
        on_resume(reuse)
    torch.manual_seed(settings.seed)
    with warnings.catch_warnings(), run_threads(threads, model.device) as n_threads:
        if settings.beyond_context:
            warnings.simplefilter("ignore", BeyondContextWarning)
        result = _run_scan(model, chosen, settings, plan, checkpoints, reuse, fingerprint, on_progress, on_step)
    result.metadata["threads"] = n_threads
    return result


def _run_scan(model, chosen, settings, plan, checkpoints, reuse, fingerprint, on_progress, on_step) -> ScanResult:
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
    for index, analysis in enumerate(chosen):
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
            with chunk_budget(plan.chunk_bytes), stats_progress(ctx.progress if on_step else None):
                table = analysis.run(ctx)
            seconds = round(time.perf_counter() - start, 3)
            if checkpoints:
                checkpoints.save(analysis.name, table, seconds)
        _check_finite(model, ctx, analysis.name, table, analysis.columns)
        timings[analysis.name] = seconds
        columns.update(analysis.columns)
        tables.update(table.attrs.get("tables", {}))
        if table.attrs.get("summary"):
            summary[analysis.name] = table.attrs["summary"]
        table = table[[c for c in table.columns if c in KEY_COLUMNS or c in analysis.columns]]
        heads = table if heads is None else heads.merge(table, on=list(KEY_COLUMNS), validate="one_to_one")
    if on_progress:
        on_progress("done", len(chosen), len(chosen))
    metadata = {
        "schema_version": SCHEMA_VERSION,
        "model": asdict(model.cfg),
        "settings": asdict(settings),
        "analyses": [a.name for a in chosen],
        "columns": columns,
        "summary": summary,
        "tables": sorted(tables),
        "probes": {name: {"shape": list(p.tokens.shape), "description": p.description} for name, p in probes.items()},
        "versions": _versions(),
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


def write_scan(
    result: ScanResult,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    resume: bool = False,
    extra: dict[str, str] | None = None,
) -> Path:
    """Write ``heads.csv``, ``scan.json`` (and ``extra`` files: name -> text) into ``out``, all or nothing."""
    out = Path(out)
    check_output_dir(out, overwrite=overwrite, resume=resume)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        result.heads.to_csv(staging / "heads.csv", index=False)
        for name, table in result.tables.items():
            table.to_csv(staging / f"{name}.csv", index=False)
        (staging / "scan.json").write_text(json.dumps(result.metadata, indent=2) + "\n")
        for name, text in (extra or {}).items():
            (staging / name).write_text(text, encoding="utf-8")
        make_dirs(out)
        remove_previous_scan(out, keep_fingerprint=result.metadata.get("fingerprint"))
        for item in staging.iterdir():
            os.replace(item, out / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def previous_scan_files(out: Path, *, keep_fingerprint: str | None = None) -> list[Path]:
    """Every file an earlier scan (or report) wrote into ``out``: the heads table and its exports, scan.json,
    report.html, the extra tables scan.json lists, and the checkpoints in ``analyses/`` not made with
    ``keep_fingerprint`` (those of the scan being written stay: ``--resume`` may reuse them later)."""
    out = Path(out)
    found = [out / name for name in SCAN_FILES]
    try:
        tables = json.loads((out / "scan.json").read_text()).get("tables", [])
    except (OSError, ValueError, AttributeError):
        tables = []
    found += [out / f"{name}.csv" for name in tables if isinstance(name, str) and "/" not in name]
    checkpoints = out / "analyses"
    if checkpoints.is_dir():
        for meta_path in checkpoints.glob("*.json"):
            try:
                fingerprint = json.loads(meta_path.read_text()).get("fingerprint")
            except (OSError, ValueError, AttributeError):
                fingerprint = None
            if keep_fingerprint is None or fingerprint != keep_fingerprint:
                name = meta_path.stem
                found += [meta_path, checkpoints / f"{name}.csv", *checkpoints.glob(f"{name}.*.csv")]
    return [path for path in dict.fromkeys(found) if path.is_file()]


def remove_previous_scan(out: Path, *, keep_fingerprint: str | None = None) -> list[Path]:
    """Delete :func:`previous_scan_files` so that no file of an older run survives next to the new one."""
    removed = previous_scan_files(out, keep_fingerprint=keep_fingerprint)
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def load_scan(folder: str | os.PathLike) -> ScanResult:
    """Read a scan folder written by :func:`write_scan` (heads from CSV, Parquet or JSON) into a :class:`ScanResult`."""
    from interp.report.export import load_heads

    folder = Path(folder)
    if not (folder / "scan.json").exists() or not any((folder / f"heads.{f}").exists() for f in ("csv", "parquet", "json")):
        raise InterpError(f"{folder} holds no scan (heads.csv and scan.json); run interp scan MODEL --out {folder}")
    metadata = json.loads((folder / "scan.json").read_text())
    tables = {name: pd.read_csv(folder / f"{name}.csv") for name in metadata.get("tables", []) if (folder / f"{name}.csv").exists()}
    return ScanResult(heads=load_heads(folder, prefer=("csv", "parquet", "json")), metadata=metadata, tables=tables)


class _CallableModule(types.ModuleType):
    """``interp.scan(model)`` calls :func:`scan` even after ``import interp.scan`` bound the module to
    that name (``interp`` imports its public names lazily, so the submodule can win the attribute)."""

    def __call__(self, *args, **kwargs):
        return scan(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
