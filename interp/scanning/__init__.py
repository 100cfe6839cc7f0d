"""A scan: run the registered per-head analyses, write their merged table, read it back.

- :mod:`~interp.scanning.run`: :func:`~interp.scanning.run.scan` (``interp.scan``);
- :mod:`~interp.scanning.result`: :class:`~interp.scanning.result.ScanResult`;
- :mod:`~interp.scanning.checkpoints`: per-analysis checkpoints and ``--resume``;
- :mod:`~interp.scanning.table`: the head-importance table (roles, importance, rank);
- :mod:`~interp.scanning.files`: the scan folder and the CSV / Parquet / JSON exports.

Named ``scanning`` so that the package never shadows the function ``interp.scan``.
"""

from interp.scanning.checkpoints import REUSED, Checkpoints, resume_plan, settings_fingerprint
from interp.scanning.files import (
    FORMATS,
    export_run_id,
    load_heads,
    load_scan,
    previous_scan_files,
    remove_previous_scan,
    scan_run_id,
    write_exports,
    write_scan,
)
from interp.scanning.result import KEY_COLUMNS, SCHEMA_VERSION, ScanResult
from interp.scanning.run import scan
from interp.scanning.table import DERIVED_COLUMNS, ROLE_RULES, RoleRule, column_meanings, head_roles, head_table, importance

__all__ = [
    "DERIVED_COLUMNS", "FORMATS", "KEY_COLUMNS", "REUSED", "ROLE_RULES", "SCHEMA_VERSION", "Checkpoints", "RoleRule",
    "ScanResult", "column_meanings", "export_run_id", "head_roles", "head_table", "importance", "load_heads",
    "load_scan", "previous_scan_files", "remove_previous_scan", "resume_plan", "scan", "scan_run_id",
    "settings_fingerprint", "write_exports", "write_scan",
]
