"""``interp report``: build report.html and the heads exports from a scan folder (argument parsing only)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from interp.cli_common import DebugOption


def register_commands(app: typer.Typer) -> None:
    """Add ``interp report`` to ``app``."""

    @app.command("report")
    def report(
        folder: Annotated[Path, typer.Argument(help="scan folder (holds heads.csv and scan.json)")],
        model: Annotated[str | None, typer.Option(help="model to load for attention patterns and composition scores [default: none]")] = None,
        format: Annotated[str, typer.Option("--format", help="exports to write: comma-separated csv,parquet,json; '' for none")] = "csv,parquet,json",
        overwrite: Annotated[bool, typer.Option(help="replace an existing report.html and exports")] = False,
        device: Annotated[str, typer.Option(help="device for --model: cpu, cuda, cuda:N or auto")] = "auto",
        debug: DebugOption = False,
    ) -> None:
        """Write FOLDER/report.html (one offline HTML file) and FOLDER/heads.{csv,parquet,json}."""
        from interp.cli_common import console, fail
        from interp.errors import InterpError
        from interp.report import FORMATS, REPORT_FILE, write_report

        try:
            formats = [f.strip().lower() for f in format.split(",") if f.strip()]
            unknown = [f for f in formats if f not in FORMATS]
            if unknown:
                raise InterpError(f"unknown --format {', '.join(unknown)}; choose from: {', '.join(FORMATS)}")
            if not (folder / "heads.csv").exists() or not (folder / "scan.json").exists():
                raise InterpError(f"{folder} holds no scan (heads.csv and scan.json); run interp scan MODEL --out {folder}")
            if (folder / REPORT_FILE).exists() and not overwrite:
                raise InterpError(f"{folder / REPORT_FILE} already exists; pass --overwrite to replace it")
            hooked = None
            if model is not None:
                import interp

                hooked = interp.load(model, device=device)
            path = write_report(folder, model=hooked, formats=formats, overwrite=overwrite)
        except KeyboardInterrupt:
            console.print("interrupted: the report was not written")
            raise typer.Exit(130)
        except Exception as error:  # noqa: BLE001 - every failure becomes one line unless --debug
            fail(error, debug)
        written = ", ".join(f"heads.{f}" for f in formats)
        console.print(f"wrote {path}" + (f" and {written}" if written else ""))
        print(path)
