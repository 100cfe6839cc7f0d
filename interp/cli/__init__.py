"""The ``interp`` command line: :mod:`~interp.cli.app` holds the Typer app, one module per group of commands.

Each command parses its arguments, checks everything it can before a model loads (nothing here imports
torch at module level, so errors answer in well under a second), then calls the Python API.
"""

from interp.cli.app import app, main

__all__ = ["app", "main"]
