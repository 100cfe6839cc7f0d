"""HTML reports: the scan report (``report.html``, :mod:`~interp.report.scan_report`) and the circuit page
(``circuit.html``, :mod:`~interp.report.circuit_report`), each one self-contained file.

    import interp
    from interp.report import ScanReport, write_report
    result = interp.scan(model)
    write_report(result, "interp-out/smollm2-135m", model=model)   # report.html + heads.{csv,parquet,json}
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from interp.errors import InterpError
from interp.hooks import HookedModel
from interp.output import REPORT_FILE, write_text_atomic
from interp.report.scan_report import CircuitReport, ScanReport
from interp.scanning.files import FORMATS, load_heads, load_scan, write_exports
from interp.scanning.result import ScanResult
from interp.scanning.table import DERIVED_COLUMNS, ROLE_RULES, RoleRule, head_roles, head_table


def write_report(
    source: ScanResult | str | os.PathLike,
    folder: str | os.PathLike | None = None,
    *,
    model: HookedModel | None = None,
    formats: Iterable[str] = FORMATS,
    overwrite: bool = False,
) -> Path:
    """Write ``report.html`` and the ``heads.<format>`` exports into ``folder`` (default: the scan
    folder ``source``); returns the report path. Fails before writing anything if the report exists
    and ``overwrite`` is False."""
    if folder is None:
        if isinstance(source, ScanResult):
            raise TypeError("write_report(ScanResult, folder): give the folder to write into")
        folder = source
    folder = Path(folder)
    result = source if isinstance(source, ScanResult) else load_scan(source)
    report = ScanReport(result, model)
    report.scan_dir = folder  # an `interp circuit` written into the folder (folder/circuit) goes into the report
    target = folder / REPORT_FILE
    if target.exists() and not overwrite:
        raise InterpError(f"{target} already exists; pass --overwrite (overwrite=True) to replace it")
    text = report.html()  # all model work before any file is written
    write_exports(result, folder, formats=formats, overwrite=overwrite)
    return write_text_atomic(target, text, overwrite=overwrite)


__all__ = [
    "DERIVED_COLUMNS",
    "FORMATS",
    "REPORT_FILE",
    "ROLE_RULES",
    "CircuitReport",
    "RoleRule",
    "ScanReport",
    "head_roles",
    "head_table",
    "load_heads",
    "write_exports",
    "write_report",
]
