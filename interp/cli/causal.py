"""``interp trace`` and ``interp patch``: causal tracing and activation patching from the command line.

Hook them into the main app with ``register_commands(app)``. Each writes a CSV and a self-contained
HTML figure into ``--out``, staged in a temporary folder next to it and renamed into place only when
complete; an existing non-empty ``--out`` is replaced only with ``--overwrite``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from interp.models.builtin import DEFAULT_MODEL
from interp.cli.common import DebugOption, DtypeOption, check_source, console, one_line_errors, quiet_loading, task_or_data
from interp.errors import InterpError
from interp.output import check_writable, replace_dir

if TYPE_CHECKING:
    import pandas as pd

    from interp.causal.pairs import PromptPairs, TaskBatch
    from interp.hooks import HookedModel

DeviceOption = Annotated[str, typer.Option(metavar="DEVICE", help="cpu, cuda, cuda:N or auto")]
OverwriteOption = Annotated[bool, typer.Option("--overwrite", help="replace a non-empty --out")]
ReuseOption = Annotated[
    str, typer.Option(metavar="MODE", help="auto: start each cell at its patched layer and token; layers: layer only; none: full forwards")
]
MaxMemoryOption = Annotated[
    str | None, typer.Option(metavar="SIZE", help="memory for the sweep beyond the weights, e.g. 4GB; sizes the batches [default: free memory]")
]
BatchOption = Annotated[int | None, typer.Option(metavar="ROWS", help="rows per forward pass [default: as many as --max-memory allows, up to 256]")]
TaskOption = Annotated[str | None, typer.Option(metavar="NAME", help="built-in task instead of single prompts: ioi, greater_than, induction, factual, mcqa, arithmetic, arithmetic_subtraction")]


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
    replace_dir(out, write)


def _ints(text: str | None, what: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InterpError(f"--{what} must be comma-separated integers, got {text!r}") from None


def _bars():
    from interp.cli.progress import bars
    from interp.distributed import is_writer

    return bars(console, enabled=is_writer(), remaining=True)  # under torchrun: rank 0's bars only


@contextmanager
def _cell_progress(what: str) -> Iterator[Callable[[int, int], None]]:
    """A rich bar on stderr advanced by the sweep's ``progress(cells_done, cells_total)`` callback."""
    with _bars() as bar:
        task = bar.add_task(f"{what} cells", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance


@contextmanager
def _row_progress(what: str, n_rows: int) -> Iterator[Callable[[int], Callable[[int, int], None]]]:
    """Two bars on stderr, rows and the current row's cells: ``start(row)`` returns that row's cell callback."""
    with _bars() as bar:
        rows = bar.add_task(f"{what} rows", total=n_rows)
        cells = bar.add_task(f"{what} cells", total=None, log=False)  # a log gets a line per row, not per cell

        def start(row: int) -> Callable[[int, int], None]:
            bar.update(rows, completed=row)
            bar.reset(cells, total=None)
            return lambda done, total: bar.update(cells, completed=done, total=total)

        yield start
        bar.update(rows, completed=n_rows)


def _n(n: int | None) -> None:
    if n is not None and n < 1:
        raise InterpError(f"--n must be at least 1, got {n}")


def _trace_source(task: str | None, data: Path | None) -> pd.DataFrame | None:
    """``--data`` read as tracing rows (None for ``--task``); refuses a task without a ``subject`` column. Model-free."""
    from interp.causal.pairs import read_table, trace_rows
    from interp.circuits.tasks import make_task

    if data is not None:
        return trace_rows(read_table(data), data.stem)
    sample = make_task(task, 1)  # without a model: only to see the columns
    if "subject" not in sample.frame.columns:
        raise InterpError(f"task {task!r} has no subject to corrupt; trace --task factual, or --data FILE with prompt, subject columns")
    return None


def _patch_rows(pairs: PromptPairs, hooked: HookedModel) -> tuple[TaskBatch, str | None]:
    """The largest group of ``pairs``' rows with one token length (ties: the shorter), checked; and a note if rows were left out."""
    from interp.causal.checks import check_pair_rows

    batches = pairs.encode(hooked)  # one error line naming the row: lengths, multi-token answers
    batch = max(batches, key=lambda b: b.size)
    check_pair_rows(batch)
    note = None
    if len(batches) > 1:
        lengths = ", ".join(f"{b.size} of {b.clean.shape[1]}" for b in batches)
        note = (f"rows tokenize to {len(batches)} lengths (rows of tokens: {lengths}); patching the {batch.size} rows of "
                f"{batch.clean.shape[1]} tokens (positions are a sweep axis), skipping {len(pairs) - batch.size}; "
                f"pairs.jsonl lists the rows patched")
    return batch.to(hooked.device), note


def register_commands(app: typer.Typer) -> None:
    """Add ``trace`` and ``patch`` to ``app``."""

    @app.command("trace")
    def trace(
        model: Annotated[str, typer.Argument(metavar="MODEL", help=f"alias ({DEFAULT_MODEL}), local HF folder, .gguf file, or hub id")],
        out: Annotated[Path, typer.Option(metavar="DIR", help="output folder (trace.csv, trace.html, trace.json; trace_mean.csv with --task/--data)")],
        prompt: Annotated[str | None, typer.Option(metavar="TEXT", help="the clean prompt")] = None,
        subject: Annotated[str | None, typer.Option(metavar="TEXT", help="text inside the prompt whose token embeddings are corrupted")] = None,
        answer: Annotated[
            str | None, typer.Option(metavar="TEXT", help="single-token answer", show_default="the model's top prediction")
        ] = None,
        task: Annotated[str | None, typer.Option(metavar="NAME", help="built-in task with a subject per prompt (factual) instead of --prompt")] = None,
        data: Annotated[Path | None, typer.Option(
            metavar="FILE", help="rows to trace (.jsonl, .csv, .parquet) instead of --prompt: columns prompt (or clean), subject, "
                                 "optional answer (empty: the top prediction)")] = None,
        n: Annotated[int | None, typer.Option("--n", "-n", metavar="N", help="prompts to generate with --task, or the first N rows of --data",
                                              show_default="8 for --task, every row of --data")] = None,
        samples: Annotated[int, typer.Option(metavar="N", help="corrupted runs per cell")] = 10,
        noise: Annotated[float, typer.Option(metavar="X", help="noise std as a multiple of the token-embedding std")] = 3.0,
        window: Annotated[int, typer.Option(metavar="LAYERS", help="layers restored together for attn/mlp")] = 10,
        kinds: Annotated[str, typer.Option(metavar="KINDS", help="comma-separated: resid, attn, mlp")] = "resid,attn,mlp",
        layers: Annotated[str | None, typer.Option(metavar="LIST", help="comma-separated layers", show_default="all")] = None,
        seed: Annotated[int, typer.Option(metavar="SEED", help="noise seed (and --task's generator seed)")] = 0,
        batch_size: BatchOption = None,
        max_memory: MaxMemoryOption = None,
        reuse: ReuseOption = "auto",
        device: DeviceOption = "auto",
        dtype: DtypeOption = "float32",
        overwrite: OverwriteOption = False,
        debug: DebugOption = False,
    ) -> None:
        """Causal tracing (ROME): corrupt the subject, restore clean states per (token, layer); writes trace.csv, trace.html, trace.json.

        With --task or --data every row is traced on its own: trace.csv has a `row` column (the row
        of the dataset), trace_mean.csv the mean over rows by ROME's token groups (first / middle /
        last subject token, first subsequent token, further tokens, last token; prompts differ in
        length, so positions are not averaged), and trace.html draws that mean.
        """
        import json

        from interp.causal.checks import check_trace_args

        quiet_loading(debug)
        with one_line_errors(debug):
            single = prompt is not None or subject is not None or answer is not None
            check_source(task, data, single="--prompt/--subject/--answer", single_given=single)
            if single and (prompt is None or subject is None):
                raise InterpError("--prompt and --subject go together: give both (or --task NAME / --data FILE)")
            _n(n)
            check_trace_args(window=window, noise=noise, samples=samples, batch_size=batch_size)
            chosen_layers = _ints(layers, "layers")
            chosen_kinds = [k.strip() for k in kinds.split(",") if k.strip()]
            check_out(out, overwrite=overwrite)
            rows = None if single else _trace_source(task, data)
            import interp
            from interp.causal.common import answer_token
            from interp.causal.tracing import average_traces, causal_trace, find_subject, plot_causal_trace

            from interp.distributed import is_writer, rank_device

            hooked = interp.load(model, device=rank_device(device), dtype=dtype)

            def run(text: str, subject_text: str, answer_text, progress) -> pd.DataFrame:
                n_rows = _batch_rows(hooked, hooked.to_tokens(text).shape[1], batch_size, max_memory)
                return causal_trace(
                    hooked, text, subject_text, answer_text, samples=samples, noise=noise, seed=seed, window=window,
                    kinds=chosen_kinds, layers=chosen_layers, batch_size=max(n_rows, samples), reuse=reuse,
                    progress=progress,
                )

            if single:
                with _cell_progress("tracing") as progress:
                    frame = run(prompt, subject, answer, progress)
                traces, shown = [frame], frame
            else:
                import pandas as pd
                from interp.causal.pairs import trace_rows

                table = task_or_data(task, rows, n, model=hooked, seed=seed, default_n=8)
                table = table if rows is not None else trace_rows(table.frame, table.name)
                for i, row in enumerate(table.itertuples(index=False)):  # every row's error before any long step
                    try:
                        find_subject(hooked, hooked.to_tokens(row.prompt)[0], row.subject)
                        if row.answer is not None:
                            answer_token(hooked, row.answer)
                    except InterpError as error:
                        raise InterpError(f"row {i}: {error}") from None
                traces = []
                with _row_progress("tracing", len(table)) as start:
                    for i, row in enumerate(table.itertuples(index=False)):
                        try:
                            traces.append(run(row.prompt, row.subject, row.answer, start(i)))
                        except InterpError as error:
                            raise InterpError(f"row {i}: {error}") from None
                shown = average_traces(traces)
                frame = pd.concat([t.assign(row=i) for i, t in enumerate(traces)], ignore_index=True)
                frame = frame[["row", *[c for c in frame.columns if c != "row"]]]
            title = None if single else (
                f"causal trace, mean of {len(traces)} prompts by token group: p(answer) clean "
                f"{shown.attrs['high_score']:.3f}, corrupted {shown.attrs['low_score']:.3f}"
            )
            figure = plot_causal_trace(shown, title=title)

            def summary(attrs: dict) -> dict:
                attrs = dict(attrs)
                attrs["subject_range"] = list(attrs["subject_range"])
                return attrs

            def write(folder: Path) -> None:
                frame.to_csv(folder / "trace.csv", index=False)
                figure.write_html(folder / "trace.html", include_plotlyjs=True)
                if single:
                    info = summary(frame.attrs)
                else:
                    shown.to_csv(folder / "trace_mean.csv", index=False)
                    info = {"mean": summary(shown.attrs), "rows": [summary(t.attrs) for t in traces]}
                (folder / "trace.json").write_text(json.dumps(info, indent=2) + "\n")

            if is_writer():  # under torchrun every rank holds the merged traces; rank 0 writes them
                write_atomically(out, write, overwrite=overwrite)
        if not is_writer():
            return
        what = f"p({shown.attrs['answer']!r})" if single else f"{len(traces)} prompts, mean p(answer)"
        files = f"{out / 'trace.csv'}" + ("" if single else f", {out / 'trace_mean.csv'}")
        console.print(
            f"traced {what}: clean {shown.attrs['high_score']:.4f}, corrupted {shown.attrs['low_score']:.4f}; "
            f"wrote {files} and {out / 'trace.html'}"
        )
        print(out)

    @app.command("patch")
    def patch(
        model: Annotated[str, typer.Argument(metavar="MODEL", help=f"alias ({DEFAULT_MODEL}), local HF folder, .gguf file, or hub id")],
        out: Annotated[Path, typer.Option(metavar="DIR", help="output folder (patching.csv, patching.html; pairs.jsonl with --task/--data)")],
        clean: Annotated[list[str] | None, typer.Option(metavar="TEXT", help="clean prompt (repeat for several)")] = None,
        corrupt: Annotated[list[str] | None, typer.Option(metavar="TEXT", help="corrupted prompt, same token length (one per --clean)")] = None,
        answers: Annotated[list[str] | None, typer.Option(
            metavar="TEXT", help="'correct,wrong' single-token answers, e.g. ' Mary, John' (one, or one per prompt)")] = None,
        task: TaskOption = None,
        data: Annotated[Path | None, typer.Option(
            metavar="FILE", help="prompt pairs (.jsonl, .csv, .parquet: clean, corrupted, answer, wrong) instead of --clean")] = None,
        n: Annotated[int | None, typer.Option("--n", "-n", metavar="N", help="pairs to generate with --task, or the first N rows of --data",
                                              show_default="16 for --task, every row of --data")] = None,
        seed: Annotated[int, typer.Option(metavar="SEED", help="--task's generator seed")] = 0,
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
        """Activation patching of the logit difference; writes patching.csv + patching.html (one heatmap per site).

        With --task or --data the metric is the mean logit of each row's correct answer(s) minus the
        mean of its wrong one(s), averaged over rows. Positions are a sweep axis, so the rows patched
        must share one token length: when they do not, the largest group of equal length is patched
        (a note on stderr says how many rows were skipped; pairs.jsonl lists the rows patched, with
        their `row` in the dataset). For all rows, use rows of one length (e.g. one template).
        """
        from interp.causal.checks import check_answer_texts, check_batch_size

        quiet_loading(debug)
        with one_line_errors(debug):
            single = bool(clean or corrupt or answers)
            check_source(task, data, single="--clean/--corrupt/--answers", single_given=single)
            _n(n)
            pairs = []
            if single:
                missing = [name for name, given in (("--clean", clean), ("--corrupt", corrupt), ("--answers", answers)) if not given]
                if missing:
                    raise InterpError(f"--clean, --corrupt and --answers go together; missing {', '.join(missing)}")
                for text in answers:
                    parts = text.split(",")
                    if len(parts) != 2:
                        raise InterpError(f"--answers {text!r} must be two answers separated by one comma, e.g. ' Mary, John'")
                    pairs.append((parts[0], parts[1]))
                check_answer_texts(pairs)
                if len(clean) != len(corrupt):
                    raise InterpError(f"give one --corrupt per --clean ({len(clean)} clean, {len(corrupt)} corrupted)")
                if any(a == b for a, b in zip(clean, corrupt)):
                    raise InterpError("a --corrupt prompt equals its --clean prompt: there is nothing to patch; change the corrupted prompt")
            check_batch_size(batch_size)
            if direction not in ("denoise", "noise"):
                raise InterpError(f"unknown --direction {direction!r}; use 'denoise' (clean into corrupted) or 'noise'")
            chosen_layers = _ints(layers, "layers")
            check_out(out, overwrite=overwrite)
            from interp.causal.patching import activation_patching, check_sites, plot_patching

            chosen_sites = check_sites(sites)
            rows = None
            if data is not None:
                from interp.causal.pairs import read_pairs

                rows = read_pairs(data)
            import interp

            from interp.distributed import is_writer, rank_device

            hooked = interp.load(model, device=rank_device(device), dtype=dtype)
            if rows is not None and rows.meta.get("mib"):  # MIB's filter: the rows this tokenizer can score
                rows = rows.keep_usable(hooked, limit=n)[0]
            used = None
            if single:
                prompts, corrupted, how = clean, corrupt, {"answers": pairs if len(pairs) > 1 else pairs[0]}
            else:
                from interp.causal.metrics import reads_last_position
                from interp.causal.metrics import logit_diff

                dataset = task_or_data(task, rows, n, model=hooked, seed=seed, default_n=16)
                batch, note = _patch_rows(dataset, hooked)
                if note:
                    if is_writer():
                        console.print(f"note: {note}", highlight=False, soft_wrap=True)
                prompts, corrupted = batch.clean, batch.corrupted
                how = {"metric": reads_last_position(lambda logits: logit_diff(logits[:, -1], batch))}
                used = dataset.frame.iloc[batch.rows].assign(row=batch.rows)
            n_prompts = len(prompts)
            n_rows = _batch_rows(hooked, hooked.to_tokens(clean[0]).shape[1] if single else prompts.shape[1], batch_size, max_memory)
            with _cell_progress("patching") as progress:
                frame = activation_patching(
                    hooked, prompts, corrupted, **how, sites=chosen_sites, direction=direction, layers=chosen_layers,
                    batch_size=max(n_rows, n_prompts), reuse=reuse, progress=progress,
                )
            figures = [plot_patching(frame, site=site) for site in chosen_sites]

            def write(folder: Path) -> None:
                frame.to_csv(folder / "patching.csv", index=False)
                html = [figures[0].to_html(full_html=False, include_plotlyjs=True)]
                html += [fig.to_html(full_html=False, include_plotlyjs=False) for fig in figures[1:]]
                page = "<html><head><meta charset='utf-8'><title>interp patch</title></head><body>{}</body></html>"
                (folder / "patching.html").write_text(page.format("\n".join(html)), encoding="utf-8")
                if used is not None:
                    used[["row", *[c for c in used.columns if c != "row"]]].to_json(
                        folder / "pairs.jsonl", orient="records", lines=True, force_ascii=False)

            if is_writer():  # under torchrun every rank holds the merged grid; rank 0 writes it
                write_atomically(out, write, overwrite=overwrite)
        if not is_writer():
            return
        console.print(
            f"patched {len(frame)} cells over {n_prompts} prompt pair{'s' if n_prompts > 1 else ''}: clean metric "
            f"{frame.attrs['clean_metric']:.4f}, corrupted {frame.attrs['corrupted_metric']:.4f}; wrote "
            f"{out / 'patching.csv'} and {out / 'patching.html'}"
        )
        print(out)
