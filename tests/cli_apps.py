"""Typer apps holding one interp command, for CliRunner tests."""

from __future__ import annotations


def circuit_cli():
    """A Typer app with ``interp circuit`` (and a no-op second command, which keeps typer from
    collapsing the app into ``circuit``), for CliRunner tests."""
    import typer

    from interp.cli.circuit import register_commands

    app = typer.Typer()
    register_commands(app)

    @app.command("noop")
    def noop() -> None:
        pass

    return app
