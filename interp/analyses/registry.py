"""The analysis registry: one name per analysis, used by the CLI (``--analyses``), the table and the report.

A new score is one entry in :data:`interp.catalog.CATALOG` (name, columns, description) and
one module in :mod:`interp.analyses` that decorates its scan entry with :func:`register`; the first
use of :data:`ANALYSES` imports every such module, which fills the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from interp.catalog import CATALOG, analysis_names

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
        splits: whether ``run`` shares its work over torch.distributed ranks (each rank runs it and
            gets the whole result); one that does not runs on rank 0 alone, after the others.
    """

    name: str
    run: ScanFn
    columns: dict[str, str]
    description: str
    splits: bool = True


ANALYSES: dict[str, Analysis] = {}


def register(name: str, *, splits: bool = True) -> Callable[[ScanFn], ScanFn]:
    """Decorator: register ``fn(ctx) -> DataFrame`` as the scan entry of analysis ``name`` (declared in the catalog).

    ``splits=False``: under torchrun the analysis runs on rank 0 alone (see :attr:`Analysis.splits`).
    """

    def decorate(fn: ScanFn) -> ScanFn:
        if name not in CATALOG:
            raise RuntimeError(f"analysis {name!r} is not declared in interp/catalog.py")
        if name in ANALYSES:
            raise RuntimeError(f"analysis {name!r} registered twice")
        ANALYSES[name] = Analysis(name, fn, CATALOG[name]["columns"], CATALOG[name]["description"], splits)
        return fn

    return decorate


def resolve_analyses(names: str | list[str] | None) -> list[Analysis]:
    """Analyses by name (comma-separated string or list; None = all), with a clear error for unknown names."""
    return [ANALYSES[n] for n in analysis_names(names)]
