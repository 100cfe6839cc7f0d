"""MIB's dataset files as prompt-pair tables (IOI, MCQA, ARC, arithmetic), read from disk.

MIB (Mueller et al. 2025; the circuit track's ``HFEAPDataset``) ships each task as rows with a
``prompt`` and one column per counterfactual, ``NAME_counterfactual``, holding the corrupted
``prompt`` and its own answer. The correct and wrong answers are read as MIB's circuit track reads them:

=============  ==========================================================  =====================================
task           clean answer                                                wrong answer (from the counterfactual)
=============  ==========================================================  =====================================
MCQA, ARC      ``choices["label"][answerKey]`` (MIB's labels: ``" A"``)    its ``choices["label"][answerKey]``
arithmetic     ``label`` (``"93"``)                                        its ``label``
IOI            ``" " + metadata["indirect_object"]``                       ``" " + metadata["subject"]``
=============  ==========================================================  =====================================

The default counterfactual is the circuit track's: ``symbol`` (MCQA, ARC), ``random`` (arithmetic),
``s2_io_flip`` (IOI). Files: MIB's ``.jsonl`` / ``.json``, a Parquet export, or a CSV whose nested
cells are JSON or Python literals. Kept free of torch: the CLI checks a file before the model loads.
"""

from __future__ import annotations

import ast
import json
from typing import Any

import pandas as pd

from interp.errors import InterpError

SUFFIX = "_counterfactual"
DEFAULT_COUNTERFACTUAL = {"mcqa": "symbol", "arithmetic": "random", "ioi": "s2_io_flip"}
_NEEDS = {
    "mcqa": ("prompt", "choices", "answerKey"),
    "arithmetic": ("prompt", "label"),
    "ioi": ("prompt", "metadata"),
}
_CONSUMED = {"prompt", "choices", "answerKey", "label", "metadata"}


def is_mib_table(frame: pd.DataFrame) -> bool:
    """True for a table in MIB's layout: ``NAME_counterfactual`` columns and no ``corrupted`` column."""
    columns = set(map(str, frame.columns))
    has_counterfactual = any(c.endswith(SUFFIX) for c in columns)
    return has_counterfactual and not columns & {"corrupted", "corrupt", "corrupted_prompt", "corrupt_prompt"}


def mib_counterfactuals(frame: pd.DataFrame) -> list[str]:
    """The counterfactual names a MIB table offers (its ``NAME_counterfactual`` columns, without the suffix)."""
    return [str(c)[: -len(SUFFIX)] for c in frame.columns if str(c).endswith(SUFFIX)]


def mib_task(frame: pd.DataFrame, name: str) -> str:
    """``"mcqa"`` (also ARC), ``"arithmetic"`` or ``"ioi"``, told by the columns; one line naming what is missing otherwise."""
    columns = set(map(str, frame.columns))
    if "choices" in columns or "answerKey" in columns:
        kind = "mcqa"
    elif "label" in columns or "operator" in columns:
        kind = "arithmetic"
    elif "metadata" in columns:
        kind = "ioi"
    else:
        raise InterpError(
            f"MIB file {name!r} has counterfactual columns but no answers: MCQA/ARC rows need prompt, choices, answerKey; "
            f"arithmetic rows prompt, label; IOI rows prompt, metadata (has: {', '.join(sorted(columns))})"
        )
    missing = [c for c in _NEEDS[kind] if c not in columns]
    if missing:
        raise InterpError(f"MIB {kind} file {name!r} lacks column(s) {', '.join(missing)}; {kind} rows need "
                          f"{', '.join(_NEEDS[kind])} and NAME_counterfactual columns (has: {', '.join(sorted(columns))})")
    return kind


def mib_frame(frame: pd.DataFrame, *, name: str = "mib", counterfactual: str | None = None) -> tuple[pd.DataFrame, dict]:
    """MIB rows as a ``clean, corrupted, answer, wrong`` table plus its scalar metadata columns, and the meta dict.

    ``counterfactual``: a name from :func:`mib_counterfactuals` (``NAME`` or ``NAME_counterfactual``);
    default: the circuit track's for the task. Rows whose counterfactual is empty are skipped (MIB
    skips them too); the meta dict counts them under ``"skipped"``.
    """
    kind = mib_task(frame, name)
    offered = mib_counterfactuals(frame)
    chosen = (counterfactual or DEFAULT_COUNTERFACTUAL[kind]).removesuffix(SUFFIX)
    if chosen not in offered:
        how = "" if counterfactual else " (the default); choose one with --counterfactual NAME"
        raise InterpError(f"MIB file {name!r} has no counterfactual {chosen!r}{how}; it has: {', '.join(offered)}")
    column = chosen + SUFFIX
    keep = [c for c in frame.columns if str(c) not in _CONSUMED and not str(c).endswith(SUFFIX)]
    rows, skipped = [], 0
    for i, record in enumerate(frame.to_dict("records")):
        target = _cell(record[column], i, column)
        if not target or _missing(target.get("prompt")):
            skipped += 1
            continue
        clean, corrupted = _text(record["prompt"], i, "prompt"), _text(target["prompt"], i, f"{column}.prompt")
        if kind == "mcqa":
            answer = _choice(_cell(record["choices"], i, "choices"), record["answerKey"], i, "")
            wrong = _choice(_cell(target.get("choices"), i, f"{column}.choices"), target.get("answerKey"), i, column + ".")
        elif kind == "arithmetic":
            answer, wrong = _number(record["label"], i, "label"), _number(target.get("label"), i, f"{column}.label")
        else:
            meta = _cell(record["metadata"], i, "metadata") or {}
            for key in ("indirect_object", "subject"):
                if not isinstance(meta.get(key), str) or not meta[key]:
                    raise InterpError(f"row {i}: metadata has no {key} (MIB's IOI rows name indirect_object and subject)")
            answer, wrong = " " + meta["indirect_object"], " " + meta["subject"]
        row = {"clean": clean, "corrupted": corrupted, "answer": answer, "wrong": wrong}
        row.update({str(c): record[c] for c in keep if str(c) not in row and _scalar(record[c])})
        rows.append(row)
    if not rows:
        raise InterpError(f"MIB file {name!r}: every row's {column} is empty; choose another with --counterfactual NAME "
                          f"({', '.join(offered)})")
    return pd.DataFrame(rows), {"mib": kind, "counterfactual": chosen, "skipped": skipped}


def _cell(value: Any, row: int, column: str) -> Any:
    """A nested cell as plain Python: JSON/literal text (CSV) parsed, numpy arrays (Parquet) as lists, null as None."""
    if _missing(value):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text or text in ("None", "null"):  # an empty CSV cell
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                raise InterpError(f"row {row}: {column} is not a dict or list ({text[:60]!r}); MIB cells hold JSON objects") from None
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _cell(v, row, f"{column}.{k}") if isinstance(v, dict) or hasattr(v, "tolist") else v
                for k, v in value.items()}
    return value


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) or (hasattr(value, "item") and getattr(value, "ndim", 1) == 0)


def _text(value: Any, row: int, column: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InterpError(f"row {row}: {column} is empty or not text ({str(value)[:60]!r})")
    return value


def _number(value: Any, row: int, column: str) -> str:
    """An arithmetic label as text: ``93``, ``"93"`` and ``93.0`` all give ``"93"``."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | str) or str(value).strip() == "":
        raise InterpError(f"row {row}: {column} is missing or not a number ({value!r})")
    return str(value).strip()


def _choice(choices: Any, key: Any, row: int, prefix: str) -> str:
    """``choices["label"][answerKey]``; ``answerKey`` an index (MIB) or one of the labels (ARC's original ``"B"``)."""
    if not isinstance(choices, dict) or not isinstance(choices.get("label"), list) or not choices["label"]:
        raise InterpError(f"row {row}: {prefix}choices needs a 'label' list (MIB: {{'label': [' A', ' B', ...], 'text': [...]}})")
    labels = [str(label) for label in choices["label"]]
    if _missing(key):
        raise InterpError(f"row {row}: {prefix}answerKey is missing (MIB: the index of the right label)")
    if hasattr(key, "item") and not isinstance(key, str):
        key = key.item()
    if isinstance(key, float) and key.is_integer():
        key = int(key)
    if isinstance(key, str) and key.strip().lstrip("-").isdigit():
        key = int(key.strip())
    if isinstance(key, str):
        stripped = [label.strip() for label in labels]
        if key.strip() in stripped:
            return labels[stripped.index(key.strip())]
    if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < len(labels):
        raise InterpError(f"row {row}: {prefix}answerKey {key!r} is not an index into its {len(labels)} choice labels")
    return labels[key]
