"""User-facing errors.

Every error a user can cause (bad model name, bad option, unwritable folder) is raised as an
:class:`InterpError` whose message is one line naming the problem and the fix. The CLI prints
that line and exits non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class InterpError(Exception):
    """A problem with the user's input, reported as one line: what is wrong and how to fix it."""


class UnsupportedArchitectureError(InterpError):
    """The model's architecture has no adapter in :mod:`interp.models.architectures`."""


class BeyondContextWarning(UserWarning):
    """Tokens past the model's trained context window: positions there are extrapolation."""
