"""``interp scan`` and ``interp analyses``: parse the arguments, check them before any model loads, call :func:`interp.scan`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from interp.cli.common import DebugOption, DtypeOption, console, launch_rank, one_line_errors, quiet_loading
from interp.errors import InterpError
from interp.models.builtin import DEFAULT_MODEL


def _default_out(model: str) -> Path:
    slug = Path(model).stem if Path(model).suffix else Path(model).name or model
    return Path("interp-out") / slug.replace("/", "--")


def _device_type(device: str) -> str:
    """``cpu`` / ``cuda`` for ``--device`` (``auto`` and ``map`` ask torch whether a GPU is there)."""
    if device == "cpu" or device.startswith("cuda"):
        return device.split(":")[0]
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _rank_note(chosen: list[str]) -> None:
    """Under torchrun, rank 0's one line on how the ranks share the scan (the analyses that do not split run on rank 0 only)."""
    from interp.analyses import ANALYSES
    from interp.distributed import world

    only = [name for name in chosen if not ANALYSES[name].splits]
    size = world().size
    if only:
        console.print(f"note: {size} processes share the scan; on rank 0 only (they do not split): {', '.join(only)}",
                      highlight=False, soft_wrap=True)
    else:
        console.print(f"note: {size} processes share every analysis of the scan", highlight=False, soft_wrap=True)


def _print_resume(plan: dict[str, str]) -> None:
    reused = [name for name, why in plan.items() if why == "reused"]
    console.print(f"resume: reusing {', '.join(reused) if reused else 'nothing (no checkpoint matches these settings)'}")
    for name, why in plan.items():
        if why != "reused":
            console.print(f"resume: recomputing {name}: {why}", highlight=False)


class _LogLines:
    """Progress for a log file or CI (stdout/stderr not a terminal): one plain line per finished step."""

    def __init__(self) -> None:
        import time

        self._clock = time.perf_counter
        self._current: tuple[str, float] | None = None

    def line(self, text: str) -> None:
        console.print(text, highlight=False, soft_wrap=True)

    def on_progress(self, name: str, done: int, total: int) -> None:
        now = self._clock()
        if self._current is not None:
            finished, began = self._current
            self.line(f"analysis {done}/{total} {finished}: {now - began:.1f}s")
        self._current = None if name == "done" else (name, now)

    def on_step(self, name: str, done: int, total: int) -> None:
        """Sub-steps stay silent: a log gets one line per analysis."""


def _load(model: str, device: str, dtype: str):
    import interp
    from interp.distributed import rank_device

    if device == "map":
        return interp.load(model, dtype=dtype, device_map="auto")
    return interp.load(model, device=rank_device(device), dtype=dtype)  # under torchrun: auto = this rank's GPU


def _share_scan(model, chosen, settings, max_bytes, device, dtype, resume, threads) -> None:
    """A rank other than 0 under torchrun: its share of the analyses that split; silent, writes nothing."""
    import warnings

    import interp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rank 0 shows the same warnings once
        interp.scan(_load(model, device, dtype), analyses=chosen, settings=settings, resume=resume, max_memory=max_bytes,
                    threads=threads)


def _run_scan(model, out, chosen, settings, max_bytes, device, dtype, overwrite, resume, report, threads):
    import time

    import interp
    from interp.distributed import alone, launched

    if launched():
        _rank_note(chosen)

    def load():
        return _load(model, device, dtype)

    def run(hooked, on_progress, on_step):
        return interp.scan(
            hooked, analyses=chosen, settings=settings, on_progress=on_progress, on_step=on_step,
            checkpoint_dir=out / "analyses", resume=resume, max_memory=max_bytes, on_resume=_print_resume, threads=threads,
        )

    start = time.perf_counter()
    if not console.is_terminal:
        log = _LogLines()
        hooked = load()
        log.line(f"loaded {hooked.cfg.name} ({time.perf_counter() - start:.1f}s)")
        result = run(hooked, log.on_progress, log.on_step)
    else:
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(), console=console, transient=False,
        ) as progress:
            loading = progress.add_task(f"loading {model}", total=1)
            hooked = load()
            progress.update(loading, completed=1, description=f"loaded {hooked.cfg.name} ({time.perf_counter() - start:.1f}s)")
            task = progress.add_task("analyses", total=len(chosen))
            step = progress.add_task("", total=None, visible=False)

            def on_progress(name: str, done: int, total: int) -> None:
                progress.update(task, completed=done, description=f"analysis: {name}")
                progress.update(step, visible=False)

            def on_step(name: str, done: int, total: int) -> None:
                progress.update(step, completed=done, total=total, description=f"  {name}", visible=True)

            result = run(hooked, on_progress, on_step)
    with alone():  # rank 0 alone writes (and runs the report's few forwards); the other ranks are done
        interp.write_scan(result, out, overwrite=overwrite, resume=resume)
        if report:
            from interp.report import write_report

            write_report(result, out, model=hooked, overwrite=True)  # write_scan removed the previous run's report
    return result, hooked


def register_commands(app: typer.Typer) -> None:
    """Add ``interp scan`` and ``interp analyses`` to ``app``."""

    @app.command()
    def scan(
        model: Annotated[str, typer.Argument(metavar="MODEL", help=f"alias ({DEFAULT_MODEL}), local HF folder, .gguf file, or hub id")] = DEFAULT_MODEL,
        out: Annotated[Path | None, typer.Option(metavar="DIR", help="output folder", show_default="interp-out/<model>")] = None,
        analyses: Annotated[
            str | None, typer.Option(metavar="NAMES", help="comma-separated analyses (see `interp analyses`)", show_default="all")
        ] = None,
        context_length: Annotated[int, typer.Option("--context-length", "-c", metavar="TOKENS", help="tokens per probe sequence")] = 256,
        beyond_context: Annotated[
            bool, typer.Option("--beyond-context", help="allow --context-length past the model's trained window (positions there extrapolate)")
        ] = False,
        batch: Annotated[int, typer.Option(metavar="N", help="probe sequences per probe kind")] = 2,
        seed: Annotated[int, typer.Option(metavar="SEED", help="seed for the probes")] = 0,
        needle_samples: Annotated[int, typer.Option(metavar="N", help="needle-in-a-haystack prompts for the retrieval analysis")] = 6,
        streaming_per_head: Annotated[
            bool, typer.Option("--streaming-per-head", help="also score streaming per query head (costs n_heads/n_kv_heads more)")
        ] = False,
        device: Annotated[str, typer.Option(metavar="DEVICE", help="cpu, cuda, cuda:N, auto, or 'map' to spread layers over GPUs (accelerate)")] = "auto",
        dtype: DtypeOption = "float32",
        backend: Annotated[str, typer.Option(metavar="NAME", help="attention-statistics backend: auto, triton (CUDA), chunked, reference")] = "auto",
        max_memory: Annotated[
            str | None, typer.Option(metavar="SIZE", help="memory the scan may use beyond the weights, e.g. 8GB", show_default="what is free")
        ] = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing scan in --out (every file it wrote)")] = False,
        resume: Annotated[bool, typer.Option("--resume", help="reuse analyses already finished in --out with the same settings")] = False,
        report: Annotated[
            bool, typer.Option("--report/--no-report", help="also write report.html and heads.parquet/heads.json")
        ] = True,
        threads: Annotated[
            str | None, typer.Option(metavar="N|auto", help="CPU threads for the whole scan; 'auto' probes the load once (recorded in scan.json; "
                                     "rerun with --threads N to repeat it bit for bit)", show_default="$INTERP_THREADS, else auto")
        ] = None,
        debug: DebugOption = False,
    ) -> None:
        """Scan every head of MODEL and write heads.csv and scan.json into --out.

        Each analysis is saved under --out/analyses/ as it finishes, so an interrupted scan continues
        with --resume. The folder is locked (--out/.interp.lock) while the scan runs.
        """
        from interp.catalog import analysis_names
        from interp.output import check_output_dir, folder_lock
        from interp.settings import ScanSettings, check_backend, parse_size, thread_setting

        quiet_loading(debug)
        out = out or _default_out(model)
        with one_line_errors(debug, interrupted=f"finished analyses are saved in {out / 'analyses'}; continue with --resume"):
            # Everything that can be checked without the model, before anything is imported or loaded.
            chosen = analysis_names(analyses)
            settings = ScanSettings(
                context_length=context_length, beyond_context=beyond_context, batch=batch, seed=seed, backend=backend,
                needle_samples=needle_samples, streaming_per_head=streaming_per_head,
            )
            max_bytes = parse_size(max_memory) if max_memory else None
            # auto: on a CPU shared with another job one thread is several times faster than one per core.
            threads = thread_setting(threads) or "auto"
            rank, size = launch_rank()  # under torchrun: rank 0 checks and writes --out, the others take their share
            if size > 1 and device == "map":
                raise InterpError("--device map spreads one process over every GPU; under torchrun use --device auto "
                                  "(each rank its own GPU)")
            if rank == 0:
                check_output_dir(out, overwrite=overwrite, resume=resume)
            if backend == "triton":
                check_backend(backend, _device_type(device))
            if rank != 0:
                _share_scan(model, chosen, settings, max_bytes, device, dtype, resume, threads)
                return
            with folder_lock(out, what="scan"):
                result, hooked = _run_scan(model, out, chosen, settings, max_bytes, device, dtype, overwrite, resume, report, threads)
        rows = len(result.heads)
        written = "heads.csv, scan.json" + (", report.html, heads.parquet, heads.json" if report else "")
        console.print(f"scanned {rows} heads of {hooked.cfg.name}; wrote {written} into {out}")
        print(out)


    @app.command("analyses")
    def list_analyses() -> None:
        """List the analyses `interp scan --analyses` accepts, with their columns."""
        from interp.catalog import CATALOG  # the registry's names and columns, without importing torch

        for name, analysis in CATALOG.items():
            print(f"{name}: {analysis['description']}")
            for column, meaning in analysis["columns"].items():
                print(f"    {column}: {meaning}")
