"""Per-analysis checkpoints of a scan (``<out>/analyses/``), and which of them a resumed scan may reuse."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from interp.hooks import HookedModel
from interp.output import write_text_atomic
from interp.settings import ScanSettings


def settings_fingerprint(model: HookedModel, settings: ScanSettings) -> str:
    """Identifies a (model, settings, interp version) combination; checkpoints are reused only on a match."""
    import interp

    key = json.dumps({"model": asdict(model.cfg), "settings": asdict(settings), "interp": interp.__version__}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class Checkpoints:
    """Per-analysis results in ``<out>/analyses/``, each written atomically as the analysis finishes.

    ``<name>.csv`` (its head table), ``<name>.<table>.csv`` (extra tables) and ``<name>.json``
    (fingerprint, summary, timing) — the JSON is written last, so an analysis counts as done only
    when all its files are complete. ``interp scan --resume`` reuses those whose fingerprint matches.
    """

    def __init__(self, folder: Path, fingerprint: str, settings: dict | None = None) -> None:
        self.folder = folder
        self.fingerprint = fingerprint
        self.settings = settings or {}

    def why_not(self, name: str) -> str | None:
        """None when ``name``'s checkpoint can be reused, else why not (missing, or what changed)."""
        meta_path = self.folder / f"{name}.json"
        if not meta_path.exists():
            return "no finished checkpoint"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            return "its checkpoint is unreadable"
        if meta.get("fingerprint") == self.fingerprint:
            return None
        old = meta.get("settings") or {}
        changed = [f"{k} {old[k]!r} -> {v!r}" for k, v in self.settings.items() if k in old and old[k] != v]
        if changed:
            return "settings changed: " + ", ".join(changed)
        return "made with another model, interp version or settings"

    def load(self, name: str) -> tuple[pd.DataFrame, float] | None:
        meta_path = self.folder / f"{name}.json"
        if not meta_path.exists():
            return None
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") != self.fingerprint:
            return None
        table = pd.read_csv(self.folder / f"{name}.csv")
        table.attrs["tables"] = {t: pd.read_csv(self.folder / f"{name}.{t}.csv") for t in meta.get("tables", [])}
        table.attrs["summary"] = meta.get("summary", {})
        return table, meta.get("seconds", 0.0)

    def save(self, name: str, table: pd.DataFrame, seconds: float) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        extra = table.attrs.get("tables", {})
        clean = table.copy()
        clean.attrs = {}
        write_text_atomic(self.folder / f"{name}.csv", clean.to_csv(index=False), overwrite=True)
        for table_name, extra_table in extra.items():
            write_text_atomic(self.folder / f"{name}.{table_name}.csv", extra_table.to_csv(index=False), overwrite=True)
        meta = {"fingerprint": self.fingerprint, "tables": sorted(extra), "summary": table.attrs.get("summary", {}),
                "seconds": seconds, "settings": self.settings}
        write_text_atomic(self.folder / f"{name}.json", json.dumps(meta, indent=2, default=float), overwrite=True)


REUSED = "reused"


def resume_plan(checkpoints: Checkpoints | None, names: list[str], settings: ScanSettings) -> dict[str, str]:
    """``{analysis: "reused" or why it is recomputed}`` for a resumed scan."""
    if checkpoints is None:
        return {name: "no checkpoint folder" for name in names}
    return {name: checkpoints.why_not(name) or REUSED for name in names}
