"""Fixtures shared by the causal CLI tests."""

import pytest
import typer

from interp.cli.causal import register_commands


@pytest.fixture(scope="module")
def app():
    """A Typer app with just `interp trace` and `interp patch`."""
    app = typer.Typer()
    register_commands(app)
    return app
