"""A scan's files: the scan folder (``heads.csv``, ``scan.json``, extra tables) and the head-table exports.

Output folder layout (``SCHEMA_VERSION`` 1):

- ``heads.csv``: one row per (layer, head): ``layer, head, kv_head`` then each analysis's columns,
  which start with the analysis name (documented in docs/analyses.md);
- ``scan.json``: model, settings (seed included), thread count, analyses, column meanings,
  model-level summaries (e.g. the sink rate), versions, timings;
- ``<table>.csv``: extra tables some analyses produce (e.g. ``secondary_sinks.csv``);
- ``heads.parquet`` and ``heads.json``: the exports of :func:`~interp.scanning.table.head_table`. Each
  reads back through :func:`load_heads` into the same DataFrame, dtypes included. ``schema_version``
  lives in ``scan.json`` (CSV), in the Parquet key-value metadata (``interp.schema_version``, plus
  ``interp.columns`` with each column's meaning), and at the top of the JSON document
  (``{"schema_version", "columns", "dtypes", "rows"}``).

Files are staged in a hidden folder beside the output and moved in only when complete, so an error
or Ctrl-C never leaves a half-written table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from interp.errors import InterpError
from interp.output import EXPORT_FORMATS, SCAN_FILES, atomic_file, check_output_dir, make_dirs, staging_dir
from interp.scanning.result import KEY_COLUMNS, SCHEMA_VERSION, ScanResult
from interp.scanning.table import column_meanings, head_table

FORMATS = EXPORT_FORMATS
PARQUET_KEYS = {"schema_version": b"interp.schema_version", "columns": b"interp.columns", "run_id": b"interp.run_id"}


def _replaceable(path: Path, table: pd.DataFrame) -> bool:
    """An existing export may be refreshed without ``overwrite`` when it holds a subset of ``table``'s
    columns with equal values (the same scan before derived columns were added)."""
    try:
        old = load_heads(path)
    except Exception:  # noqa: BLE001 - unreadable means "not ours to replace"
        return False
    return set(old.columns) <= set(table.columns) and old.equals(table[list(old.columns)])


def _json_document(table: pd.DataFrame, columns: dict[str, str], run_id: str | None = None) -> dict:
    rows = table.astype(object).where(table.notna(), None).to_dict(orient="records")
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "columns": {c: columns.get(c, "") for c in table.columns},
        "dtypes": {c: str(t) for c, t in table.dtypes.items()},
        "rows": rows,
    }


def write_exports(
    result: ScanResult | pd.DataFrame,
    folder: str | os.PathLike,
    *,
    formats: Iterable[str] = FORMATS,
    overwrite: bool = False,
    columns: dict[str, str] | None = None,
) -> list[Path]:
    """Write ``heads.<format>`` for each of ``formats`` into ``folder``; returns the paths written.

    ``result`` is a scan (its :func:`head_table` is written) or an already built table. Each file is
    written to a temporary name and renamed. An existing file is only replaced with ``overwrite=True``,
    or when it holds the same scan with fewer columns (the plain ``heads.csv`` that ``write_scan`` wrote).
    """
    formats = list(dict.fromkeys(f.strip().lower() for f in formats if f.strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise InterpError(f"unknown export format {', '.join(unknown)}; choose from: {', '.join(FORMATS)}")
    run_id = None
    if isinstance(result, ScanResult):
        table, columns = head_table(result), {**column_meanings(result), **(columns or {})}
        run_id = result.metadata.get("run_id")
    else:
        table, columns = result, columns or {}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"heads.{fmt}" for fmt in formats]
    blocked = [p for p in paths if p.exists() and not overwrite and not _replaceable(p, table)]
    if blocked:
        raise InterpError(f"{blocked[0]} already exists and holds other data; pass --overwrite to replace it")
    meanings = {c: columns.get(c, "") for c in table.columns}
    for fmt, path in zip(formats, paths):
        if fmt == "csv":
            with atomic_file(path, overwrite=True) as tmp:
                table.to_csv(tmp, index=False)
        elif fmt == "parquet":
            arrow = pa.Table.from_pandas(table, preserve_index=False)
            metadata = {
                **(arrow.schema.metadata or {}),
                PARQUET_KEYS["schema_version"]: str(SCHEMA_VERSION).encode(),
                PARQUET_KEYS["columns"]: json.dumps(meanings).encode(),
                **({PARQUET_KEYS["run_id"]: run_id.encode()} if run_id else {}),
            }
            with atomic_file(path, overwrite=True) as tmp:
                pq.write_table(arrow.replace_schema_metadata(metadata), tmp)
        else:
            text = json.dumps(_json_document(table, meanings, run_id), indent=1, allow_nan=False) + "\n"
            with atomic_file(path, overwrite=True) as tmp:
                tmp.write_text(text, encoding="utf-8")
    return paths


# ---------------------------------------------------------------------------------------------- reading
def _canonical(table: pd.DataFrame, path: Path | None = None) -> pd.DataFrame:
    """Key and rank columns int64, ``roles`` str, other numeric columns float64/int64 as stored."""
    missing = [c for c in ("layer", "head") if c not in table]
    if missing:
        raise InterpError(f"{path or 'the heads table'} has no {', '.join(missing)} column; it is not an interp heads table")
    for column in (*KEY_COLUMNS, "importance_rank"):
        if column in table and table[column].isna().any():
            raise InterpError(
                f"{path or 'the heads table'}: column {column} has empty cells (row {int(table[column].isna().argmax()) + 1}); "
                f"the file is truncated or damaged; rerun the scan or interp report --overwrite"
            )
    for column in (*KEY_COLUMNS, "importance_rank"):
        if column in table:
            table[column] = table[column].astype("int64")
    if "roles" in table:
        table["roles"] = table["roles"].fillna("").astype("str")
    return table


def _read_csv(path: Path) -> pd.DataFrame:
    header = pd.read_csv(path, nrows=0).columns
    # Only `roles` may legitimately be empty text; everywhere else an empty cell is a missing number.
    na = {c: ["", "NaN", "nan"] for c in header if c != "roles"}
    return pd.read_csv(path, keep_default_na=False, na_values=na, dtype={"roles": "str"}, float_precision="round_trip")


def _read_json(path: Path) -> pd.DataFrame:
    document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or "rows" not in document:
        raise InterpError(f"{path} is not an interp heads export (expected keys schema_version, columns, rows)")
    columns = list(document.get("columns") or (document["rows"][0] if document["rows"] else []))
    table = pd.DataFrame.from_records(document["rows"], columns=columns)
    for column, dtype in document.get("dtypes", {}).items():
        if column in table:
            table[column] = table[column].astype("float64" if dtype.startswith("float") else dtype)
    return table


def load_heads(path: str | os.PathLike, *, prefer: Iterable[str] = ("parquet", "json", "csv")) -> pd.DataFrame:
    """Read a heads export (``.csv``, ``.parquet`` or ``.json``), or the first of ``prefer`` found in a folder."""
    path = Path(path)
    if path.is_dir():
        found = [path / f"heads.{fmt}" for fmt in prefer if (path / f"heads.{fmt}").exists()]
        if not found:
            raise InterpError(f"{path} holds no heads table (heads.csv, heads.parquet or heads.json)")
        expected = scan_run_id(path)
        if expected is not None:
            # Never mix runs: an export left by an earlier scan of this folder is skipped. heads.csv is
            # written together with scan.json, so it belongs to the recorded run.
            matching = [p for p in found if p.suffix == ".csv" or export_run_id(p) == expected]
            if not matching:
                raise InterpError(
                    f"{path}: {', '.join(p.name for p in found)} come from another run than scan.json (run {expected}); "
                    f"rerun interp report {path} --overwrite"
                )
            found = matching
        path = found[0]
    if not path.exists():
        raise InterpError(f"{path} does not exist")
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise InterpError(f"{path}: unknown heads format {suffix!r}; use one of {', '.join(FORMATS)}")
    try:
        if suffix == "csv":
            table = _read_csv(path)
        elif suffix == "parquet":
            table = pq.read_table(path).to_pandas()
        else:
            table = _read_json(path)
        return _canonical(table, path)
    except InterpError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, pd.errors.ParserError, pa.ArrowException) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InterpError(f"{path} is damaged or truncated ({reason}); rerun the scan or interp report --overwrite") from None


def scan_run_id(folder: str | os.PathLike) -> str | None:
    """The ``run_id`` a scan folder's ``scan.json`` records (None when absent or unreadable)."""
    try:
        return json.loads((Path(folder) / "scan.json").read_text(encoding="utf-8")).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


def export_run_id(path: str | os.PathLike) -> str | None:
    """The ``run_id`` a Parquet or JSON export records (None for CSV, whose run is scan.json's)."""
    path = Path(path)
    try:
        if path.suffix == ".parquet":
            value = (pq.read_schema(path).metadata or {}).get(PARQUET_KEYS["run_id"])
            return None if value is None else value.decode()
        if path.suffix == ".json":
            return json.loads(path.read_text(encoding="utf-8")).get("run_id")
    except (OSError, ValueError, AttributeError, pa.ArrowException):
        return None
    return None


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
    with staging_dir(out) as staging:
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
    folder = Path(folder)
    if not (folder / "scan.json").exists() or not any((folder / f"heads.{f}").exists() for f in ("csv", "parquet", "json")):
        raise InterpError(f"{folder} holds no scan (heads.csv and scan.json); run interp scan MODEL --out {folder}")
    metadata = json.loads((folder / "scan.json").read_text())
    tables = {name: pd.read_csv(folder / f"{name}.csv") for name in metadata.get("tables", []) if (folder / f"{name}.csv").exists()}
    return ScanResult(heads=load_heads(folder, prefer=("csv", "parquet", "json")), metadata=metadata, tables=tables)
