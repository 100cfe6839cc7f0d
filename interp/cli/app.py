"""The ``interp`` Typer app: registers every command group (scan, causal, steer, report, circuit) and a few listings."""

from __future__ import annotations

from typing import Annotated

import typer

from interp.models.builtin import DEFAULT_MODEL
from interp.cli.common import APP_SETTINGS, DebugOption, fail, quiet_loading

# Nothing here imports torch or transformers at module level: `interp --help`, `interp analyses` and
# argument errors answer in well under a second; the model stack is imported once the arguments pass.
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Find out what every attention head of a causal LM does, and how much it matters.",
    **APP_SETTINGS,
)


from interp.cli.scan import register_commands as _register_scan_commands  # noqa: E402

_register_scan_commands(app)  # first, so `interp --help` lists scan first


@app.command("hooks")
def list_hooks(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="model reference, as for scan")] = DEFAULT_MODEL,
    debug: DebugOption = False,
) -> None:
    """Print every hook point name of MODEL (shapes: see `interp.hooks.points`)."""
    quiet_loading(debug)
    import interp

    try:
        hooked = interp.load(model, device="cpu")
    except Exception as error:  # noqa: BLE001
        fail(error, debug)
    print("\n".join(hooked.hook_names()))


@app.command("architectures")
def list_architectures(
    status: Annotated[str | None, typer.Option(help="show only this status: tested, partial, discovered, refused, unknown")] = None,
) -> None:
    """Every causal-LM model type of the installed transformers: tested, partial, refused (with the reason)."""
    from interp.models.coverage import architecture_table

    table = architecture_table()
    if status is not None:
        table = table[table.status == status]
    for row in table.itertuples():
        print(f"{row.model_type:<28} {row.status:<10} {row.note}".rstrip())


from interp.cli.causal import register_commands as _register_causal_commands  # noqa: E402
from interp.cli.report import register_commands as _register_report_commands  # noqa: E402
from interp.cli.circuit import register_commands as _register_circuit_commands  # noqa: E402
from interp.cli.steer import register_commands as _register_steer_commands  # noqa: E402

_register_causal_commands(app)
_register_steer_commands(app)
_register_report_commands(app)
_register_circuit_commands(app)


def main() -> None:
    app(prog_name="interp")

