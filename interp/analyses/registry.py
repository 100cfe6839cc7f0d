"""The analysis registry: one name per analysis, used by the CLI (``--analyses``), the table and the report.

A new score is one new module in :mod:`interp.analyses` that decorates its scan entry with
:func:`register`; importing :mod:`interp.analyses` imports every module, which fills the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from interp.errors import InterpError

if TYPE_CHECKING:
    from interp.analyses.context import ScanContext

ScanFn = Callable[["ScanContext"], pd.DataFrame]


@dataclass(frozen=True)
class Analysis:
    """One registered analysis.

    Attributes:
        name: the CLI name (``--analyses name``); its columns start with it.
        run: ``fn(ctx) -> DataFrame`` with columns ``layer, head`` plus :attr:`columns`.
        columns: every score column it adds, with a one-line meaning (documented schema).
        description: one sentence for ``interp analyses`` and the report.
    """

    name: str
    run: ScanFn
    columns: dict[str, str]
    description: str


ANALYSES: dict[str, Analysis] = {}


def register(name: str, *, columns: dict[str, str], description: str) -> Callable[[ScanFn], ScanFn]:
    """Decorator: register ``fn(ctx) -> DataFrame`` as the scan entry of analysis ``name``."""

    def decorate(fn: ScanFn) -> ScanFn:
        if name in ANALYSES:
            raise RuntimeError(f"analysis {name!r} registered twice")
        ANALYSES[name] = Analysis(name, fn, columns, description)
        return fn

    return decorate


def resolve_analyses(names: str | list[str] | None) -> list[Analysis]:
    """Analyses by name (comma-separated string or list; None = all), with a clear error for unknown names."""
    if names is None:
        return list(ANALYSES.values())
    wanted = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    if not wanted:
        raise InterpError(f"--analyses is empty; choose from: {', '.join(ANALYSES)}")
    unknown = [n for n in wanted if n not in ANALYSES]
    if unknown:
        raise InterpError(f"unknown analysis {', '.join(unknown)}; choose from: {', '.join(ANALYSES)}")
    return [ANALYSES[n] for n in dict.fromkeys(wanted)]
