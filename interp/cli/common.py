"""What every ``interp`` command shares: the stderr console and the one-line error exit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import os
import sys

import typer
from rich.console import Console

from interp.errors import InterpError

console = Console(stderr=True)

# Options several commands take, with the same meaning and help.
DebugOption = Annotated[bool, typer.Option("--debug", help="show tracebacks and transformers' own loading bars")]
DtypeOption = Annotated[str, typer.Option(metavar="DTYPE", help="float32, bfloat16 or float16")]

# Help text is plain click formatting: rich markup would eat "[default: ...]" and wrap at ~20 columns.
APP_SETTINGS = {"rich_markup_mode": None, "context_settings": {"max_content_width": 100, "help_option_names": ["-h", "--help"]}}


def launch_rank() -> tuple[int, int]:
    """``(RANK, WORLD_SIZE)`` that torchrun / accelerate set (``(0, 1)`` for a plain run), read without importing torch."""

    def number(name: str, default: int) -> int:
        value = os.environ.get(name, "").strip()
        return int(value) if value.isdigit() else default

    return number("RANK", 0), number("WORLD_SIZE", 1)


def quiet_loading(debug: bool) -> None:
    """Hide transformers' / huggingface_hub's tqdm bars (``Loading weights``, the GGUF conversion) beside interp's own.

    Every command calls it first: it must run before transformers is imported (it reads the variable
    once). ``--debug`` keeps the bars, on rank 0 only: under torchrun the other ranks never draw them.
    """
    if debug and launch_rank()[0] == 0:
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # transformers' GGUF conversion draws a bare tqdm bar; tqdm reads TQDM_* defaults when it is imported.
    os.environ.setdefault("TQDM_DISABLE", "1")
    if "transformers" in sys.modules:  # already imported (e.g. the CLI called from Python)
        sys.modules["transformers"].utils.logging.disable_progress_bar()


def fail(error: BaseException, debug: bool) -> None:
    """One ``error:`` line on stderr and exit 1; the traceback only with --debug."""
    if debug:
        raise error
    if isinstance(error, InterpError):
        message = str(error)
    else:
        message = f"{type(error).__name__}: {error}".splitlines()[0] + " (run with --debug for the traceback)"
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # messages may hold [...]
    raise typer.Exit(1)


@contextmanager
def one_line_errors(debug: bool, interrupted: str | None = "nothing was written") -> Iterator[None]:
    """A command's body: any failure becomes one ``error:`` line (:func:`fail`); Ctrl-C prints
    ``interrupted: {interrupted}`` and exits 130 (``interrupted=None``: Ctrl-C is not caught)."""
    try:
        yield
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        console.print(f"interrupted: {interrupted}")
        raise typer.Exit(130)
    except Exception as error:  # noqa: BLE001 - every failure becomes one line unless --debug
        fail(error, debug)


def check_source(task: str | None, data: Any, *, single: str | None = None, single_given: bool = False) -> None:
    """Refuse anything but exactly one input: ``--task``, ``--data`` or (where a command has them) ``single``'s options.

    Also refuses an unknown task name, all before the model loads.
    """
    choices = ([single] if single else []) + ["--task NAME", "--data FILE"]
    given = [name for name, on in zip(choices, ([single_given] if single else []) + [task is not None, data is not None]) if on]
    if len(given) != 1:
        mixed = f" (got {' and '.join(given)})" if given else ""
        raise InterpError(f"give exactly one of {', '.join(choices[:-1])} or {choices[-1]}{mixed}")
    if task is not None:
        from interp.catalog import TASK_NAMES  # torch-free: answers before anything heavy is imported

        if task.replace("-", "_") not in TASK_NAMES:
            raise InterpError(f"unknown task {task!r}; built-in tasks: {', '.join(TASK_NAMES)} (or --data FILE)")


def task_or_data(task: str | None, rows: Any, n: int | None, *, model: Any, seed: int, default_n: int,
                 **task_kwargs: Any) -> Any:
    """The built-in ``task`` generated for ``model`` (``n`` rows, default ``default_n``), else the first ``n`` of ``rows``.

    ``rows`` is the ``--data`` file, read before the model loaded (a PromptPairs or a DataFrame).
    """
    if rows is not None:
        return rows if n is None else rows.head(n)
    from interp.circuits.tasks import make_task

    return make_task(task, default_n if n is None else n, model=model, seed=seed, **task_kwargs)
