"""``interp circuit``: edge-attribution circuit discovery from the command line.

Hook it into the main app with ``register_commands(app)``. Writes edges.csv/parquet, nodes.csv,
circuit.json and circuit.html (plus logit_lens.csv, faithfulness.csv, verification.csv) into
``--out``, staged in a temporary folder next to it and renamed into place only when complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from interp.builtin_models import DEFAULT_MODEL
from interp.cli_common import DebugOption, DtypeOption, console, fail
from interp.errors import InterpError


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InterpError(f"--out {out} is a file; choose a folder path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InterpError(f"{out} exists and is not empty; pass --overwrite or choose another --out")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise InterpError(f"cannot write to {parent}; choose an --out folder you can write to")


def _write_staged(out: Path, write: Callable[[Path], None]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        write(staging)
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(staging, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def register_commands(app: typer.Typer) -> None:
    @app.command("circuit")
    def circuit(
        model: Annotated[str, typer.Argument(help=f"alias ({DEFAULT_MODEL}), local HF folder, .gguf file, or hub id")] = DEFAULT_MODEL,
        task: Annotated[str | None, typer.Option(help="built-in task: ioi, greater_than, induction, factual")] = None,
        data: Annotated[Path | None, typer.Option(help="prompt-pair dataset (.jsonl, .csv, .parquet) instead of --task")] = None,
        n: Annotated[int, typer.Option(help="prompt pairs to generate (or the first N rows of --data)")] = 64,
        out: Annotated[Path, typer.Option(help="output folder")] = Path("interp-out/circuit"),
        method: Annotated[str, typer.Option(help="eap or eap-ig")] = "eap-ig",
        steps: Annotated[int, typer.Option(help="EAP-IG interpolation steps")] = 5,
        metric: Annotated[str, typer.Option(help="logit_diff, prob or kl")] = "logit_diff",
        edges: Annotated[int | None, typer.Option(help="circuit size (top edges before pruning) [default: smallest reaching 0.8 faithfulness]")] = None,
        verify: Annotated[int, typer.Option(help="top edges to check by exact single-edge patching")] = 20,
        scan: Annotated[Path | None, typer.Option(help="scan folder whose head roles and scores go into nodes.csv")] = None,
        seed: Annotated[int, typer.Option(help="seed for generated tasks")] = 0,
        batch: Annotated[int, typer.Option(help="prompt pairs per forward pass")] = 16,
        device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto")] = "auto",
        dtype: DtypeOption = "float32",
        overwrite: Annotated[bool, typer.Option(help="replace a non-empty --out")] = False,
        debug: DebugOption = False,
    ) -> None:
        """Find the circuit behind a task: score every edge (EAP / EAP-IG), evaluate top-n circuits exactly, write files."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        try:
            if (task is None) == (data is None):
                raise InterpError("give exactly one of --task NAME or --data FILE")
            if n < 1 or batch < 1 or steps < 1:
                raise InterpError("--n, --batch and --steps must be at least 1")
            if method.lower().replace("_", "-") not in ("eap", "eap-ig"):
                raise InterpError(f"unknown --method {method!r}; use eap or eap-ig")
            from interp.circuits.metrics import METRICS
            from interp.circuits.tasks import TASKS

            if metric not in METRICS:
                raise InterpError(f"unknown --metric {metric!r}; use one of {', '.join(METRICS)}")
            if task is not None and task.replace("-", "_") not in TASKS:
                raise InterpError(f"unknown task {task!r}; built-in tasks: {', '.join(TASKS)} (or --data FILE)")
            if scan is not None and not scan.is_dir():
                raise InterpError(f"--scan {scan} is not a folder")
            _check_out(out, overwrite)
            from interp.circuits.pipeline import discover_circuit, scan_roles
            from interp.circuits.tasks import make_task, read_pairs

            pairs = read_pairs(data) if data is not None else None
            roles = scan_roles(scan) if scan is not None else None
            import interp

            with console.status(f"loading {model}"):
                hooked = interp.load(model, device=device, dtype=dtype)
            pairs = pairs.head(n) if pairs is not None else make_task(task, n, model=hooked, seed=seed)
            pairs.encode(hooked)  # one error line naming the row, before any long step
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=console, transient=False) as bars:

                def step(description: str, total: int | None):
                    handle = bars.add_task(description, total=total)
                    return lambda k: bars.advance(handle, k)

                result = discover_circuit(hooked, pairs, method=method, steps=steps, metric=metric, n_edges=edges,
                                          verify=verify, batch_size=batch, roles=roles, progress=step)
            _write_staged(out, result.save)
        except InterpError as error:
            fail(error, debug)
        except Exception as error:  # noqa: BLE001 - one line unless --debug
            fail(error, debug)
        summary = result.summary()
        c = summary["circuit"]
        console.print(
            f"clean {summary['clean_metric']:.3f}, corrupted {summary['corrupted_metric']:.3f}; circuit of {c['n_edges']} "
            f"edges ({c['n_edges'] / summary['n_graph_edges']:.2%} of {summary['n_graph_edges']}), faithfulness "
            f"{c['faithfulness']:.3f}"
        )
        typer.echo(str(out))
