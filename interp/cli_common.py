"""What every ``interp`` command shares: the stderr console and the one-line error exit."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from interp.errors import InterpError

console = Console(stderr=True)

# Options several commands take, with the same meaning and help.
DebugOption = Annotated[bool, typer.Option(help="show tracebacks")]
DtypeOption = Annotated[str, typer.Option(help="float32, bfloat16 or float16")]


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
