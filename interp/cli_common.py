"""What every ``interp`` command shares: the stderr console and the one-line error exit."""

from __future__ import annotations

from typing import Annotated

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


def quiet_loading(debug: bool) -> None:
    """Hide transformers' / huggingface_hub's tqdm bars (``Loading weights``) beside interp's own bars.

    Must run before transformers is imported (it reads the variable once); ``--debug`` keeps them.
    """
    if debug:
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
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
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)
