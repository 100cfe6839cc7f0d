"""``interp report``: build report.html and the heads exports from a scan folder (argument parsing only)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from interp.cli.common import DebugOption, quiet_loading


def register_commands(app: typer.Typer) -> None:
    """Add ``interp report`` to ``app``."""

    @app.command("report")
    def report(
        folder: Annotated[Path, typer.Argument(metavar="DIR", help="scan folder (holds heads.csv and scan.json)")],
        model: Annotated[
            str | None, typer.Option(metavar="MODEL", help="model to load for attention patterns and composition scores", show_default="none")
        ] = None,
        format: Annotated[str, typer.Option("--format", metavar="FORMATS", help="exports to write: comma-separated csv,parquet,json; '' for none")] = "csv,parquet,json",
        overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing report.html and exports")] = False,
        device: Annotated[str, typer.Option(metavar="DEVICE", help="device for --model: cpu, cuda, cuda:N or auto")] = "auto",
        debug: DebugOption = False,
    ) -> None:
        """Write DIR/report.html (one offline HTML file) and DIR/heads.{csv,parquet,json}."""
        from interp.cli.common import console, one_line_errors
        from interp.errors import InterpError
        from interp.output import EXPORT_FORMATS, REPORT_FILE, check_writable, folder_lock

        quiet_loading(debug)
        with one_line_errors(debug, interrupted="the report was not written"):
            formats = [f.strip().lower() for f in format.split(",") if f.strip()]
            unknown = [f for f in formats if f not in EXPORT_FORMATS]
            if unknown:
                raise InterpError(f"unknown --format {', '.join(unknown)}; choose from: {', '.join(EXPORT_FORMATS)}")
            if not (folder / "heads.csv").exists() or not (folder / "scan.json").exists():
                raise InterpError(f"{folder} holds no scan (heads.csv and scan.json); run interp scan MODEL --out {folder}")
            if (folder / REPORT_FILE).exists() and not overwrite:
                raise InterpError(f"{folder / REPORT_FILE} already exists; pass --overwrite to replace it")
            check_writable(folder, flag="DIR")
            with folder_lock(folder, what="report"):
                from interp.report import load_heads, write_report

                load_heads(folder)  # a damaged or truncated table fails before the model loads
                hooked = None
                if model is not None:
                    import interp

                    hooked = interp.load(model, device=device)
                path = write_report(folder, model=hooked, formats=formats, overwrite=overwrite)
        written = ", ".join(f"heads.{f}" for f in formats)
        console.print(f"wrote {path}" + (f" and {written}" if written else ""))
        print(path)
