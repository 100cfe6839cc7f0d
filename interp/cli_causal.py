"""``interp trace`` and ``interp patch``: causal tracing and activation patching from the command line.

Hook them into the main app with ``register_commands(app)``. Each writes a CSV and a self-contained
HTML figure into ``--out``, staged in a temporary folder next to it and renamed into place only when
complete; an existing non-empty ``--out`` is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from interp.builtin_models import DEFAULT_MODEL
from interp.cli_common import DebugOption, DtypeOption, console, fail, quiet_loading
from interp.errors import InterpError
from interp.output import check_writable, publish_dir

DeviceOption = Annotated[str, typer.Option(metavar="DEVICE", help="cpu, cuda, cuda:N or auto")]
OverwriteOption = Annotated[bool, typer.Option("--overwrite", help="replace a non-empty --out")]
ReuseOption = Annotated[
    str, typer.Option(metavar="MODE", help="auto: start each cell at its patched layer and token; layers: layer only; none: full forwards")
]
MaxMemoryOption = Annotated[
    str | None, typer.Option(metavar="SIZE", help="memory for the sweep beyond the weights, e.g. 4GB; sizes the batches [default: free memory]")
]
BatchOption = Annotated[int | None, typer.Option(metavar="ROWS", help="rows per forward pass [default: as many as --max-memory allows, up to 256]")]


def _batch_rows(hooked, n_pos: int, batch_size: int | None, max_memory: str | None) -> int:
    from interp.memory import parse_size, sweep_batch_rows

    if batch_size is not None:
        if batch_size < 1:
            raise InterpError(f"--batch-size must be at least 1, got {batch_size}")
        return batch_size
    return sweep_batch_rows(hooked, n_pos, max_bytes=parse_size(max_memory) if max_memory else None)


def check_out(out: Path, *, overwrite: bool) -> None:
    """Fail before any model work if ``out`` is a file, or a non-empty folder without ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise InterpError(f"--out {out} is a file; choose a folder path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InterpError(f"{out} exists and is not empty; pass --overwrite or choose another --out")
    check_writable(out)


def write_atomically(out: Path, write: Callable[[Path], None], *, overwrite: bool) -> None:
    """Call ``write(staging_dir)``, then move the staging folder to ``out`` (replacing it only with ``overwrite``)."""
    check_out(out, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        write(staging)
        publish_dir(staging)  # mkdtemp made it 0700; the output folder gets the user's umask
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


def _ints(text: str | None, what: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InterpError(f"--{what} must be comma-separated integers, got {text!r}") from None


@contextmanager
def _cell_progress(what: str) -> Iterator[Callable[[int, int], None]]:
    """A rich bar on stderr advanced by the sweep's ``progress(cells_done, cells_total)`` callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(
        TextColumn(f"{what} cells"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(what, total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance


def register_commands(app: typer.Typer) -> None:
    """Add ``trace`` and ``patch`` to ``app``."""

    @app.command("trace")
    def trace(
        model: Annotated[str, typer.Argument(metavar="MODEL", help=f"alias ({DEFAULT_MODEL}), local HF folder, .gguf file, or hub id")],
        prompt: Annotated[str, typer.Option(help="the clean prompt")],
        subject: Annotated[str, typer.Option(help="text inside the prompt whose token embeddings are corrupted")],
        out: Annotated[Path, typer.Option(metavar="DIR", help="output folder (trace.csv, trace.html)")],
        answer: Annotated[
            str | None, typer.Option(metavar="TEXT", help="single-token answer", show_default="the model's top prediction")
        ] = None,
        samples: Annotated[int, typer.Option(metavar="N", help="corrupted runs per cell")] = 10,
        noise: Annotated[float, typer.Option(metavar="X", help="noise std as a multiple of the token-embedding std")] = 3.0,
        window: Annotated[int, typer.Option(metavar="LAYERS", help="layers restored together for attn/mlp")] = 10,
        kinds: Annotated[str, typer.Option(metavar="KINDS", help="comma-separated: resid, attn, mlp")] = "resid,attn,mlp",
        layers: Annotated[str | None, typer.Option(metavar="LIST", help="comma-separated layers", show_default="all")] = None,
        seed: Annotated[int, typer.Option(metavar="SEED", help="noise seed")] = 0,
        batch_size: BatchOption = None,
        max_memory: MaxMemoryOption = None,
        reuse: ReuseOption = "auto",
        device: DeviceOption = "auto",
        dtype: DtypeOption = "float32",
        overwrite: OverwriteOption = False,
        debug: DebugOption = False,
    ) -> None:
        """Causal tracing (ROME): corrupt the subject, restore clean states per (token, layer); writes trace.csv, trace.html, trace.json."""
        import json

        from interp.validation import check_trace_args

        quiet_loading(debug)
        try:
            check_trace_args(window=window, noise=noise, samples=samples, batch_size=batch_size)
            chosen_layers = _ints(layers, "layers")
            check_out(out, overwrite=overwrite)
            import interp
            from interp.analyses.causal_tracing import causal_trace, plot_causal_trace

            hooked = interp.load(model, device=device, dtype=dtype)
            rows = _batch_rows(hooked, hooked.to_tokens(prompt).shape[1], batch_size, max_memory)
            with _cell_progress("tracing") as progress:
                frame = causal_trace(
                    hooked, prompt, subject, answer, samples=samples, noise=noise, seed=seed, window=window,
                    kinds=[k.strip() for k in kinds.split(",") if k.strip()], layers=chosen_layers,
                    batch_size=max(rows, samples), reuse=reuse, progress=progress,
                )
            figure = plot_causal_trace(frame)

            def write(folder: Path) -> None:
                frame.to_csv(folder / "trace.csv", index=False)
                figure.write_html(folder / "trace.html", include_plotlyjs=True)
                summary = dict(frame.attrs)
                summary["subject_range"] = list(summary["subject_range"])
                (folder / "trace.json").write_text(json.dumps(summary, indent=2) + "\n")

            write_atomically(out, write, overwrite=overwrite)
        except KeyboardInterrupt:
            console.print("interrupted: nothing was written")
            raise typer.Exit(130)
        except Exception as error:  # noqa: BLE001 - every failure becomes one line unless --debug
            fail(error, debug)
        console.print(
            f"traced p({frame.attrs['answer']!r}): clean {frame.attrs['high_score']:.4f}, corrupted "
            f"{frame.attrs['low_score']:.4f}; wrote {out / 'trace.csv'} and {out / 'trace.html'}"
        )
        print(out)

    @app.command("patch")
    def patch(
        model: Annotated[str, typer.Argument(metavar="MODEL", help=f"alias ({DEFAULT_MODEL}), local HF folder, .gguf file, or hub id")],
        clean: Annotated[list[str], typer.Option(help="clean prompt (repeat for several)")],
        corrupt: Annotated[list[str], typer.Option(help="corrupted prompt, same token length (one per --clean)")],
        answers: Annotated[list[str], typer.Option(help="'correct,wrong' single-token answers, e.g. ' Mary, John' (one, or one per prompt)")],
        out: Annotated[Path, typer.Option(metavar="DIR", help="output folder (patching.csv, patching.html)")],
        sites: Annotated[str, typer.Option(metavar="SITES", help="comma-separated sites: resid_pre, attn_out, mlp_out, head_out, head_out_pos, head_q, head_k, head_v")] = "resid_pre",
        direction: Annotated[str, typer.Option(metavar="DIRECTION", help="denoise (clean into corrupted) or noise")] = "denoise",
        layers: Annotated[str | None, typer.Option(metavar="LIST", help="comma-separated layers", show_default="all")] = None,
        batch_size: BatchOption = None,
        max_memory: MaxMemoryOption = None,
        reuse: ReuseOption = "auto",
        device: DeviceOption = "auto",
        dtype: DtypeOption = "float32",
        overwrite: OverwriteOption = False,
        debug: DebugOption = False,
    ) -> None:
        """Activation patching of the logit difference; writes patching.csv + patching.html (one heatmap per site)."""
        from interp.validation import check_answer_texts, check_batch_size

        quiet_loading(debug)
        try:
            pairs = []
            for text in answers:
                parts = text.split(",")
                if len(parts) != 2:
                    raise InterpError(f"--answers {text!r} must be two answers separated by one comma, e.g. ' Mary, John'")
                pairs.append((parts[0], parts[1]))
            check_answer_texts(pairs)
            check_batch_size(batch_size)
            if direction not in ("denoise", "noise"):
                raise InterpError(f"unknown --direction {direction!r}; use 'denoise' (clean into corrupted) or 'noise'")
            if len(clean) != len(corrupt):
                raise InterpError(f"give one --corrupt per --clean ({len(clean)} clean, {len(corrupt)} corrupted)")
            if any(a == b for a, b in zip(clean, corrupt)):
                raise InterpError("a --corrupt prompt equals its --clean prompt: there is nothing to patch; change the corrupted prompt")
            chosen_layers = _ints(layers, "layers")
            check_out(out, overwrite=overwrite)
            import interp
            from interp.analyses.activation_patching import activation_patching, check_sites, plot_patching

            chosen_sites = check_sites(sites)
            hooked = interp.load(model, device=device, dtype=dtype)
            rows = _batch_rows(hooked, hooked.to_tokens(clean[0]).shape[1], batch_size, max_memory)
            with _cell_progress("patching") as progress:
                frame = activation_patching(
                    hooked, clean, corrupt, answers=pairs if len(pairs) > 1 else pairs[0], sites=chosen_sites,
                    direction=direction, layers=chosen_layers, batch_size=max(rows, len(clean)), reuse=reuse,
                    progress=progress,
                )
            figures = [plot_patching(frame, site=site) for site in chosen_sites]

            def write(folder: Path) -> None:
                frame.to_csv(folder / "patching.csv", index=False)
                html = [figures[0].to_html(full_html=False, include_plotlyjs=True)]
                html += [fig.to_html(full_html=False, include_plotlyjs=False) for fig in figures[1:]]
                page = "<html><head><meta charset='utf-8'><title>interp patch</title></head><body>{}</body></html>"
                (folder / "patching.html").write_text(page.format("\n".join(html)), encoding="utf-8")

            write_atomically(out, write, overwrite=overwrite)
        except KeyboardInterrupt:
            console.print("interrupted: nothing was written")
            raise typer.Exit(130)
        except Exception as error:  # noqa: BLE001
            fail(error, debug)
        console.print(
            f"patched {len(frame)} cells: clean metric {frame.attrs['clean_metric']:.4f}, corrupted "
            f"{frame.attrs['corrupted_metric']:.4f}; wrote {out / 'patching.csv'} and {out / 'patching.html'}"
        )
        print(out)
