"""A finished scan in memory: the per-head table, its metadata (``scan.json``) and extra tables."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


SCHEMA_VERSION = 1


KEY_COLUMNS = ("layer", "head", "kv_head")


@dataclass
class ScanResult:
    """A finished scan: the per-head table and the metadata written to ``scan.json``."""

    heads: pd.DataFrame
    metadata: dict = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
