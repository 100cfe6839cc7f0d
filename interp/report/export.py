"""The head-importance table of a scan and its CSV / Parquet / JSON exports.

:func:`head_table` turns a :class:`~interp.scan.ScanResult` into one tidy row per (layer, head): the
scan's columns plus three derived ones (:data:`DERIVED_COLUMNS`):

- ``roles``: semicolon-separated role labels, from :data:`ROLE_RULES` (``score > threshold`` on
  columns that exist; a head may carry several, ``""`` for none);
- ``importance``: the value heads are ranked by: ``head_ablation_loss_delta`` when the scan has it
  (loss increase when the head is ablated), else the largest of the role scores that exist
  (:data:`IMPORTANCE_SCORES`), else ``max_attention_mean``;
- ``importance_rank``: 1 = most important; ties keep (layer, head) order, NaN ranks last.

Exports are ``heads.csv``, ``heads.parquet`` and ``heads.json`` in the scan folder; each reads back
through :func:`load_heads` into the same DataFrame, dtypes included. ``schema_version`` lives in
``scan.json`` (CSV), in the Parquet key-value metadata (``interp.schema_version``, plus
``interp.columns`` with each column's meaning), and at the top of the JSON document
(``{"schema_version", "columns", "dtypes", "rows"}``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from interp.errors import InterpError
from interp.output import EXPORT_FORMATS
from interp.scan import KEY_COLUMNS, SCHEMA_VERSION, ScanResult

FORMATS = EXPORT_FORMATS
DERIVED_COLUMNS = {
    "roles": "semicolon-separated role labels (see interp.report.export.ROLE_RULES); empty when none applies",
    "importance": "value the heads are ranked by (head_ablation_loss_delta, else the largest role score)",
    "importance_rank": "1 = most important head by `importance`; ties keep (layer, head) order",
}
PARQUET_KEYS = {"schema_version": b"interp.schema_version", "columns": b"interp.columns", "run_id": b"interp.run_id"}


@dataclass(frozen=True)
class RoleRule:
    """``role`` applies to a head when ``column > threshold`` (skipped when the scan lacks ``column``).

    ``only_if_inactive``: apply only to heads that carry no role besides ``sink``/``dormant``/``long_range``.
    """

    role: str
    column: str
    threshold: float
    only_if_inactive: bool = False


ROLE_RULES: tuple[RoleRule, ...] = (
    # Xiao et al. 2023: most of the head's attention parks on the first token.
    RoleRule("sink", "sink_mass", 0.5),
    # Guo et al. 2024 ("active-dormant" heads): almost all attention on the first token of natural text,
    # i.e. the head is off. Induction heads also park on the sink when nothing repeats, so a head with
    # an active role is not called dormant.
    RoleRule("dormant", "sink_mass", 0.9, only_if_inactive=True),
    # The token-role scores are means over queries that have a target, so 1 = a perfect head.
    RoleRule("previous_token", "previous_token_score", 0.5),
    RoleRule("duplicate_token", "duplicate_token_score", 0.3),
    RoleRule("induction", "induction_score", 0.3),
    # Wu et al. 2024's threshold, the same as the retrieval_head column.
    RoleRule("retrieval", "retrieval_score", 0.1),
    # Restricting the head's KV group to sink + recent window costs the needle answer > 0.5 nats/token:
    # DuoAttention would keep it on full attention (it cannot stream). Per KV group, so every query
    # head of the group carries it; streaming_score itself is NaN unless --streaming-per-head.
    RoleRule("long_range", "streaming_score_kv", 0.5),
)
ABLATION_COLUMN = "head_ablation_loss_delta"
IMPORTANCE_SCORES = ("previous_token_score", "duplicate_token_score", "induction_score", "retrieval_score")


def head_roles(heads: pd.DataFrame, *, rules: Iterable[RoleRule] = ROLE_RULES) -> pd.Series:
    """Per row, the roles whose rule holds, joined by ``;`` in rule order (``""`` for none)."""
    rules = list(rules)
    labels: list[list[str]] = [[] for _ in range(len(heads))]
    for rule in rules:
        if rule.column in heads:
            for i in np.flatnonzero(heads[rule.column].to_numpy(dtype=float) > rule.threshold):
                labels[i].append(rule.role)
    # long_range is decided per KV group, so it says nothing about whether this query head is active.
    passive = {"sink", "long_range"} | {r.role for r in rules if r.only_if_inactive}
    conditional = {r.role for r in rules if r.only_if_inactive}
    for roles in labels:
        if any(r not in passive for r in roles):
            roles[:] = [r for r in roles if r not in conditional]
    return pd.Series([";".join(roles) for roles in labels], index=heads.index, dtype="str", name="roles")


def importance(heads: pd.DataFrame) -> tuple[pd.Series, str]:
    """``(importance per row, basis)`` where basis names the column(s) used (see module docstring)."""
    if ABLATION_COLUMN in heads:
        return heads[ABLATION_COLUMN].astype("float64"), ABLATION_COLUMN
    scores = [c for c in IMPORTANCE_SCORES if c in heads]
    if scores:
        return heads[scores].astype("float64").max(axis=1, skipna=True), f"max({', '.join(scores)})"
    if "max_attention_mean" in heads:
        return heads["max_attention_mean"].astype("float64"), "max_attention_mean"
    return pd.Series(np.nan, index=heads.index, dtype="float64"), "none"


def head_table(result: ScanResult, *, rules: Iterable[RoleRule] = ROLE_RULES) -> pd.DataFrame:
    """The scan's per-head table plus ``roles``, ``importance`` and ``importance_rank``.

    Idempotent: derived columns already present are recomputed. ``attrs["importance_basis"]`` says
    what ``importance`` is.
    """
    table = result.heads.drop(columns=[c for c in DERIVED_COLUMNS if c in result.heads]).reset_index(drop=True)
    table["roles"] = head_roles(table, rules=rules)
    table["importance"], basis = importance(table)
    rank = table["importance"].rank(method="first", ascending=False, na_option="bottom")
    table["importance_rank"] = rank.astype("int64")
    table.attrs["importance_basis"] = basis
    return table


def column_meanings(result: ScanResult) -> dict[str, str]:
    """Every column of :func:`head_table` with its one-line meaning."""
    keys = {"layer": "0-based layer", "head": "0-based query head", "kv_head": "key/value head it reads"}
    return {**keys, **result.metadata.get("columns", {}), **DERIVED_COLUMNS}


# ---------------------------------------------------------------------------------------------- writing
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
            _write_atomic(path, lambda p: table.to_csv(p, index=False))
        elif fmt == "parquet":
            arrow = pa.Table.from_pandas(table, preserve_index=False)
            metadata = {
                **(arrow.schema.metadata or {}),
                PARQUET_KEYS["schema_version"]: str(SCHEMA_VERSION).encode(),
                PARQUET_KEYS["columns"]: json.dumps(meanings).encode(),
                **({PARQUET_KEYS["run_id"]: run_id.encode()} if run_id else {}),
            }
            _write_atomic(path, lambda p: pq.write_table(arrow.replace_schema_metadata(metadata), p))
        else:
            text = json.dumps(_json_document(table, meanings, run_id), indent=1, allow_nan=False) + "\n"
            _write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))
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


def export_schema_version(path: str | os.PathLike) -> int | None:
    """The ``schema_version`` a Parquet or JSON export records (None for CSV: see ``scan.json``)."""
    path = Path(path)
    if path.suffix == ".parquet":
        value = (pq.read_schema(path).metadata or {}).get(PARQUET_KEYS["schema_version"])
        return None if value is None else int(value)
    if path.suffix == ".json":
        return json.loads(path.read_text(encoding="utf-8")).get("schema_version")
    return None
