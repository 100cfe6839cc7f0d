"""The ``interp`` command line. It only parses arguments and calls the Python API."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from interp.builtin_models import DEFAULT_MODEL
from interp.cli_common import DebugOption, DtypeOption, console, fail
from interp.errors import InterpError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Find out what every attention head of a causal LM does, and how much it matters.",
)
def _default_out(model: str) -> Path:
    slug = Path(model).stem if Path(model).suffix else Path(model).name or model
    return Path("interp-out") / slug.replace("/", "--")


@app.command()
def scan(
    model: Annotated[str, typer.Argument(help=f"alias ({DEFAULT_MODEL}), local HF folder, .gguf file, or hub id")] = DEFAULT_MODEL,
    out: Annotated[Path | None, typer.Option(help="output folder [default: interp-out/<model>]")] = None,
    analyses: Annotated[str | None, typer.Option(help="comma-separated analyses [default: all; see `interp analyses`]")] = None,
    context_length: Annotated[int, typer.Option(help="tokens per probe sequence")] = 256,
    beyond_context: Annotated[
        bool, typer.Option(help="allow --context-length past the model's trained window (positions there extrapolate)")
    ] = False,
    batch: Annotated[int, typer.Option(help="probe sequences per probe kind")] = 2,
    seed: Annotated[int, typer.Option(help="seed for the probes")] = 0,
    needle_samples: Annotated[int, typer.Option(help="needle-in-a-haystack prompts for the retrieval analysis")] = 6,
    streaming_per_head: Annotated[
        bool, typer.Option(help="also score streaming per query head (costs n_heads/n_kv_heads more)")
    ] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N, auto, or 'map' to spread layers over GPUs (accelerate)")] = "auto",
    dtype: DtypeOption = "float32",
    backend: Annotated[str, typer.Option(help="attention-statistics backend: auto, triton, chunked, reference")] = "auto",
    max_memory: Annotated[
        str | None, typer.Option(help="memory the scan may use beyond the weights, e.g. 8GB [default: what is free]")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing scan in --out")] = False,
    resume: Annotated[bool, typer.Option(help="reuse analyses already finished in --out with the same settings")] = False,
    report: Annotated[
        bool, typer.Option("--report/--no-report", help="also write report.html and heads.parquet/heads.json")
    ] = True,
    debug: DebugOption = False,
) -> None:
    """Scan every head of MODEL and write heads.csv and scan.json into --out.

    Each analysis is saved under --out/analyses/ as it finishes, so an interrupted scan continues
    with --resume.
    """
    import interp
    from interp.analyses import resolve_analyses
    from interp.kernels import BACKENDS
    from interp.memory import parse_size
    from interp.scan import check_output_dir

    out = out or _default_out(model)
    try:
        chosen = resolve_analyses(analyses)
        if backend not in BACKENDS:
            raise InterpError(f"unknown --backend {backend!r}; use one of {', '.join(BACKENDS)}")
        if batch < 1:
            raise InterpError(f"--batch must be at least 1, got {batch}")
        if needle_samples < 1:
            raise InterpError(f"--needle-samples must be at least 1, got {needle_samples}")
        check_output_dir(out, overwrite=overwrite, resume=resume)
        if max_memory:
            parse_size(max_memory)  # a malformed size fails before the model loads
        settings = interp.ScanSettings(
            context_length=context_length, beyond_context=beyond_context, batch=batch, seed=seed, backend=backend,
            needle_samples=needle_samples, streaming_per_head=streaming_per_head,
        )
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(), console=console, transient=False,
        ) as progress:
            loading = progress.add_task(f"loading {model}", total=1)
            start = time.perf_counter()
            if device == "map":
                hooked = interp.load(model, dtype=dtype, device_map="auto")
            else:
                hooked = interp.load(model, device=device, dtype=dtype)
            progress.update(loading, completed=1, description=f"loaded {hooked.cfg.name} ({time.perf_counter() - start:.1f}s)")
            task = progress.add_task("analyses", total=len(chosen))
            step = progress.add_task("", total=None, visible=False)

            def on_progress(name: str, done: int, total: int) -> None:
                progress.update(task, completed=done, description=f"analysis: {name}")
                progress.update(step, visible=False)

            def on_step(name: str, done: int, total: int) -> None:
                progress.update(step, completed=done, total=total, description=f"  {name}", visible=True)

            result = interp.scan(
                hooked, analyses=[a.name for a in chosen], settings=settings, on_progress=on_progress,
                on_step=on_step, checkpoint_dir=out / "analyses", resume=resume, max_memory=max_memory,
            )
        interp.write_scan(result, out, overwrite=overwrite, resume=resume)
        if report:
            from interp.report import write_report

            write_report(result, out, model=hooked, overwrite=overwrite or resume)
    except KeyboardInterrupt:
        console.print(f"interrupted: finished analyses are saved in {out / 'analyses'}; continue with --resume")
        raise typer.Exit(130)
    except Exception as error:  # noqa: BLE001 - every failure becomes one line unless --debug
        fail(error, debug)
    rows = len(result.heads)
    written = "heads.csv, scan.json" + (", report.html, heads.parquet, heads.json" if report else "")
    console.print(f"scanned {rows} heads of {hooked.cfg.name}; wrote {written} into {out}")
    print(out)


@app.command("analyses")
def list_analyses() -> None:
    """List the analyses `interp scan --analyses` accepts, with their columns."""
    from interp.analyses import ANALYSES

    for analysis in ANALYSES.values():
        print(f"{analysis.name}: {analysis.description}")
        for column, meaning in analysis.columns.items():
            print(f"    {column}: {meaning}")


@app.command("hooks")
def list_hooks(
    model: Annotated[str, typer.Argument(help="model reference, as for scan")] = DEFAULT_MODEL,
    debug: DebugOption = False,
) -> None:
    """Print every hook point name of MODEL (shapes: see `interp.hooks.points`)."""
    import interp

    try:
        hooked = interp.load(model, device="cpu")
    except Exception as error:  # noqa: BLE001
        fail(error, debug)
    print("\n".join(hooked.hook_names()))


from interp.cli_causal import register_commands as _register_causal_commands  # noqa: E402
from interp.cli_report import register_commands as _register_report_commands  # noqa: E402
from interp.cli_circuit import register_commands as _register_circuit_commands  # noqa: E402

_register_causal_commands(app)
_register_report_commands(app)
_register_circuit_commands(app)


def main() -> None:
    app(prog_name="interp")


if __name__ == "__main__":
    sys.exit(main())
