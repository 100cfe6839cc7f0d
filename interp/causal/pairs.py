"""Prompt pairs: the one dataset type of every causal method and circuit (:class:`PromptPairs`).

A :class:`PromptPairs` is a table with one row per pair:

=============  ==============================================================================
column         meaning
=============  ==============================================================================
``clean``      the prompt the model should solve (text, or a list of token ids)
``corrupted``  the same prompt with the information the task needs removed; same token length
``answer``     the correct next token (text such as ``" Mary"``, or a token id); a list = several
``wrong``      the wrong answer(s): one token, or a list of tokens
(anything)     metadata (template, names, ...), kept and written out with the results
=============  ==============================================================================

Read one with :func:`read_pairs` (JSONL, CSV, Parquet) or generate one (:mod:`interp.circuits.tasks`). ``pairs.encode(model)``
tokenizes and checks every row (same token length, single-token answers) and groups the rows into
:class:`TaskBatch` es of equal length, so no padding is ever needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from interp.causal.common import answer_token
from interp.causal.mib_data import is_mib_table, mib_frame
from interp.errors import InterpError


REQUIRED = ("clean", "corrupted", "answer", "wrong")


_ALIASES = {
    "clean": ("clean", "clean_prompt", "prompt"),
    "corrupted": ("corrupted", "corrupt", "corrupted_prompt", "corrupt_prompt"),
    "answer": ("answer", "correct", "correct_answer", "answers"),
    "wrong": ("wrong", "wrong_answer", "wrong_answers", "incorrect"),
}


@dataclass
class TaskBatch:
    """Rows of a task, tokenized: ``clean`` and ``corrupted`` are ``[batch, pos]``.

    ``answers`` and ``wrong`` are ``[batch, k]`` token ids padded with -1 (rows may have several).
    ``lengths`` (``[batch]``) is set when rows of different token lengths were right-padded to one
    width: row ``i``'s prompt is its first ``lengths[i]`` tokens. Under causal attention the pads
    never reach a real position, so reading each row at :meth:`last` is exact.
    """

    clean: torch.Tensor
    corrupted: torch.Tensor
    answers: torch.Tensor
    wrong: torch.Tensor
    rows: list[int]
    lengths: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.clean.shape[0])

    def last(self, values: torch.Tensor) -> torch.Tensor:
        """``values [batch, pos, ...]`` at each row's last prompt token: ``[batch, ...]``."""
        if self.lengths is None:
            return values[:, -1]
        index = (self.lengths - 1).to(values.device)
        return values[torch.arange(values.shape[0], device=values.device), index]

    def real(self) -> torch.Tensor | None:
        """``[batch, pos]`` bool, True on prompt tokens (None when nothing is padded)."""
        if self.lengths is None:
            return None
        return torch.arange(self.clean.shape[1], device=self.clean.device)[None] < self.lengths.to(self.clean.device)[:, None]

    def repeat(self, groups: int) -> TaskBatch:
        """``groups`` copies of the rows, group-major."""
        return TaskBatch(self.clean.repeat(groups, 1), self.corrupted.repeat(groups, 1), self.answers.repeat(groups, 1),
                         self.wrong.repeat(groups, 1), self.rows * groups,
                         None if self.lengths is None else self.lengths.repeat(groups))

    def to(self, device: torch.device | str) -> TaskBatch:
        return TaskBatch(self.clean.to(device), self.corrupted.to(device), self.answers.to(device),
                         self.wrong.to(device), self.rows, None if self.lengths is None else self.lengths.to(device))

    def take(self, start: int, stop: int) -> TaskBatch:
        """Rows ``start:stop`` (same padding width)."""
        s = slice(start, stop)
        return TaskBatch(self.clean[s], self.corrupted[s], self.answers[s], self.wrong[s], self.rows[s],
                         None if self.lengths is None else self.lengths[s])

    def split(self, size: int) -> list[TaskBatch]:
        """Pieces of at most ``size`` rows."""
        out = []
        for start in range(0, self.size, max(1, size)):
            s = slice(start, start + size)
            out.append(TaskBatch(self.clean[s], self.corrupted[s], self.answers[s], self.wrong[s], self.rows[s],
                                 None if self.lengths is None else self.lengths[s]))
        return out


@dataclass
class PromptPairs:
    """A prompt-pair dataset; ``frame`` has the columns ``clean, corrupted, answer, wrong`` plus metadata."""

    frame: pd.DataFrame
    name: str = "custom"
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.frame = _normalize_columns(self.frame, self.name)

    def __len__(self) -> int:
        return len(self.frame)

    def head(self, n: int) -> PromptPairs:
        return PromptPairs(self.frame.head(n).reset_index(drop=True), self.name, self.description, dict(self.meta))

    def encode(self, model: Any, *, batch_size: int | None = None, pad: bool = False) -> list[TaskBatch]:
        """Tokenize every row with ``model``'s tokenizer and group rows of equal length.

        ``pad``: instead, sort the rows by length and right-pad each batch of ``batch_size`` to its
        longest row (:attr:`TaskBatch.lengths`), so a dataset of many lengths still runs in full
        batches. Only for computations that read each row at its own last token under causal attention.

        Raises :class:`~interp.errors.InterpError` naming the first bad row: clean and corrupted of
        different token lengths, an empty prompt, or an answer that is not exactly one token.
        """
        if len(self.frame) == 0:
            raise InterpError(f"task {self.name!r} has no rows")
        groups: dict[int, list[tuple[int, list[int], list[int], list[int], list[int]]]] = {}
        for i, row in enumerate(self.frame.itertuples(index=False)):
            encoded = _encode_row(model, row, i)
            groups.setdefault(len(encoded[1]), []).append(encoded)
        if pad:
            rows = [r for length in sorted(groups) for r in groups[length]]  # shortest first
            size = batch_size or len(rows)
            return [_padded_batch(rows[i:i + size], _pad_id(model)) for i in range(0, len(rows), size)]
        batches = []
        for length in sorted(groups):
            batch = _padded_batch(groups[length], pad_id=0)  # one length: nothing is padded
            batches.extend(batch.split(batch_size) if batch_size else [batch])
        return batches

    def keep_usable(self, model: Any, *, limit: int | None = None) -> tuple[PromptPairs, int, str | None]:
        """The rows ``model`` can score (single-token answers, clean and corrupted of equal token length).

        MIB's loaders filter their files the same way for each tokenizer. Returns the kept rows (at
        most ``limit``, in order), how many rows were dropped on the way, and the first dropped row's
        reason; refuses in one line when no row is usable.
        """
        kept: list[int] = []
        dropped, reason = 0, None
        for i, row in enumerate(self.frame.itertuples(index=False)):
            if limit is not None and len(kept) >= limit:
                break
            try:
                _encode_row(model, row, i)
            except InterpError as error:
                dropped += 1
                reason = reason or str(error)
                continue
            kept.append(i)
        if not kept:
            raise InterpError(f"no row of {self.name!r} is usable with this tokenizer ({dropped} dropped; first: {reason})")
        rows = self.frame.iloc[kept].reset_index(drop=True)
        return PromptPairs(rows, self.name, self.description, dict(self.meta)), dropped, reason

    def to_jsonl(self, path: str | Path) -> None:
        self.frame.to_json(path, orient="records", lines=True, force_ascii=False)


def read_pairs(path: str | Path, *, name: str | None = None, counterfactual: str | None = None) -> PromptPairs:
    """Read a prompt-pair dataset from ``.jsonl``/``.json``, ``.csv`` or ``.parquet``.

    Columns: ``clean, corrupted, answer, wrong`` (aliases: ``clean_prompt``, ``corrupt``,
    ``correct``, ``wrong_answers``, ...); list-valued answers in CSV are JSON lists or ``|``-separated.
    A file in MIB's layout (``prompt`` plus ``NAME_counterfactual`` columns: MIB's IOI, MCQA, ARC and
    arithmetic files) is read by :func:`~interp.causal.mib_data.mib_frame`, with ``counterfactual``
    choosing the column (default: MIB's circuit-track choice); ``meta["mib"]`` names its task.
    Filter its rows for a model with :meth:`PromptPairs.keep_usable`, as MIB does.
    """
    path = Path(path)
    frame = read_table(path)
    if is_mib_table(frame):
        rows, meta = mib_frame(frame, name=path.name, counterfactual=counterfactual)
        return PromptPairs(rows, name=name or path.stem, meta={**meta, "source": str(path)},
                           description=f"MIB {meta['mib']} file {path.name}, {meta['counterfactual']} counterfactual")
    if counterfactual is not None:
        raise InterpError(f"--counterfactual {counterfactual} picks a column of a MIB file (NAME_counterfactual); "
                          f"{path.name} is a prompt-pair table with its own corrupted column")
    return PromptPairs(frame, name=name or path.stem)


def read_table(path: str | Path) -> pd.DataFrame:
    """A dataset file as a DataFrame: ``.jsonl``/``.json``/``.ndjson``, ``.csv``/``.tsv`` (all text) or ``.parquet``."""
    path = Path(path)
    if not path.is_file():
        raise InterpError(f"dataset {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".json", ".ndjson"):
            return pd.read_json(path, lines=suffix != ".json", dtype=False)
        if suffix in (".csv", ".tsv"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except Exception as error:  # noqa: BLE001 - any parse error is the user's file
        raise InterpError(f"cannot read dataset {path}: {str(error).splitlines()[0]}") from None
    raise InterpError(f"dataset {path}: unknown format {suffix!r}; use .jsonl, .csv or .parquet")


TRACE_COLUMNS = ("prompt", "subject", "answer")


def trace_rows(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """Causal-tracing rows ``prompt, subject, answer`` (``answer`` None where absent: the model's top prediction).

    ``prompt`` may be called ``clean`` (or ``clean_prompt``), so a prompt-pair dataset with a
    ``subject`` column, as :func:`factual_task` makes, traces its clean prompts.
    """
    frame = frame.rename(columns={alias: "prompt" for alias in ("clean", "clean_prompt") if "prompt" not in frame.columns})
    frame = frame.loc[:, ~frame.columns.duplicated()]
    missing = [c for c in ("prompt", "subject") if c not in frame.columns]
    if missing:
        raise InterpError(
            f"dataset {name!r} lacks column(s) {', '.join(missing)}; causal tracing needs prompt (or clean) and subject, "
            f"answer optional (has: {', '.join(map(str, frame.columns))})"
        )
    if len(frame) == 0:
        raise InterpError(f"dataset {name!r} has no rows")
    answers = frame["answer"] if "answer" in frame.columns else [None] * len(frame)
    rows = pd.DataFrame({"prompt": list(frame["prompt"]), "subject": list(frame["subject"]),
                         "answer": pd.Series([_trace_answer(a, i) for i, a in enumerate(answers)], dtype=object)})
    for i, row in enumerate(rows.itertuples(index=False)):
        for column in ("prompt", "subject"):
            value = getattr(row, column)
            if not isinstance(value, str) or not value.strip():
                raise InterpError(f"row {i}: {column} is empty or not text ({_show(value)})")
    return rows


def _trace_answer(value: Any, row: int) -> str | int | None:
    """One answer cell: text or a token id; empty / missing means "the model's top prediction"."""
    if hasattr(value, "tolist"):  # numpy scalars and arrays (Parquet lists)
        value = value.tolist()
    if isinstance(value, list | tuple):
        if len(value) != 1:
            raise InterpError(f"row {row}: causal tracing takes one answer per prompt, got {len(value)} ({_show(value)})")
        value = value[0]
    if value is None or value is pd.NA or value == "" or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, float) and value.is_integer():  # an id column with gaps reads as floats
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InterpError(f"row {row}: answer must be text or a token id, got {_show(value)}")
    return value


def _normalize_columns(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    frame = frame.copy()
    rename = {}
    for column, aliases in _ALIASES.items():
        if column in frame.columns:
            continue
        for alias in aliases:
            if alias in frame.columns and alias not in rename:
                rename[alias] = column
                break
    frame = frame.rename(columns=rename)
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise InterpError(
            f"dataset {name!r} lacks column(s) {', '.join(missing)}; it needs {', '.join(REQUIRED)} "
            f"(has: {', '.join(map(str, frame.columns)) or 'none'})"
        )
    for column in ("answer", "wrong"):
        frame[column] = [_parse_answers(v) for v in frame[column]]
    for column in ("clean", "corrupted"):
        frame[column] = [_parse_prompt(v) for v in frame[column]]
    return frame[list(REQUIRED) + [c for c in frame.columns if c not in REQUIRED]].reset_index(drop=True)


def _parse_answers(value: Any) -> Any:
    if isinstance(value, str):
        text = value
        if text.startswith("[") and text.endswith("]"):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                return text
        if "|" in text and len(text) > 1:
            return text.split("|")
        return text
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _parse_prompt(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        try:
            ids = json.loads(value)
            if isinstance(ids, list) and all(isinstance(t, int) for t in ids):
                return ids
        except json.JSONDecodeError:
            pass
    if hasattr(value, "tolist") and not isinstance(value, str):
        return [int(t) for t in value.tolist()]
    return value


def _encode_row(model: Any, row: Any, i: int) -> tuple[int, list[int], list[int], list[int], list[int]]:
    """Row ``i`` as ``(i, clean ids, corrupted ids, answer ids, wrong ids)``; one line naming the row if it is unusable."""
    clean = _prompt_ids(model, row.clean, i, "clean")
    corrupted = _prompt_ids(model, row.corrupted, i, "corrupted")
    if len(clean) != len(corrupted):
        raise InterpError(
            f"row {i}: clean prompt is {len(clean)} tokens but corrupted prompt is {len(corrupted)} "
            f"({_show(row.clean)} vs {_show(row.corrupted)}); every pair must tokenize to the same length"
        )
    answers = [_answer_id(model, a, i, "answer") for a in _as_list(row.answer)]
    wrong = [_answer_id(model, a, i, "wrong answer") for a in _as_list(row.wrong)]
    if not answers or not wrong:
        raise InterpError(f"row {i}: needs at least one answer and one wrong answer")
    return i, clean, corrupted, answers, wrong


def _as_list(value: Any) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _show(prompt: Any) -> str:
    text = repr(prompt)
    return text if len(text) < 90 else text[:87] + "..."


def _prompt_ids(model: Any, prompt: Any, row: int, what: str) -> list[int]:
    if isinstance(prompt, (list, tuple)):
        ids = [int(t) for t in prompt]
        if not ids:
            raise InterpError(f"row {row}: {what} prompt is empty")
        bad = [t for t in ids if not 0 <= t < model.cfg.d_vocab]
        if bad:
            raise InterpError(f"row {row}: {what} token id {bad[0]} is outside the vocabulary [0, {model.cfg.d_vocab})")
        return ids
    if not isinstance(prompt, str) or not prompt.strip():
        raise InterpError(f"row {row}: {what} prompt is empty or not text ({_show(prompt)})")
    if model.tokenizer is None:
        raise InterpError(f"row {row}: {what} prompt is text but the model has no tokenizer; give token ids")
    return [int(t) for t in model.to_tokens(prompt)[0].tolist()]


def _answer_id(model: Any, answer: Any, row: int, what: str) -> int:
    """A row's answer as one token id: table cells may hold numpy ints, or digits as text without a tokenizer."""
    if hasattr(answer, "item") and not isinstance(answer, str):
        answer = int(answer)
    elif isinstance(answer, str) and answer.lstrip("-").isdigit() and model.tokenizer is None:
        answer = int(answer)
    elif not isinstance(answer, (str, int)):
        answer = ""  # refused as empty below
    return answer_token(model, answer, what=f"row {row}: {what}")


def _pad_id(model: Any) -> int:
    """A token id to right-pad with (its value never matters under causal attention)."""
    tokenizer = getattr(model, "tokenizer", None)
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    return 0


def _padded_batch(rows: list[tuple[int, list[int], list[int], list[int], list[int]]], pad_id: int) -> TaskBatch:
    """Rows ``(index, clean, corrupted, answers, wrong)`` right-padded to the longest (``lengths`` None if all equal)."""
    lengths = [len(r[1]) for r in rows]
    width = max(lengths)
    return TaskBatch(
        clean=torch.tensor([r[1] + [pad_id] * (width - len(r[1])) for r in rows]),
        corrupted=torch.tensor([r[2] + [pad_id] * (width - len(r[2])) for r in rows]),
        answers=_padded([r[3] for r in rows]),
        wrong=_padded([r[4] for r in rows]),
        rows=[r[0] for r in rows],
        lengths=None if len(set(lengths)) == 1 else torch.tensor(lengths),
    )


def _padded(lists: list[list[int]]) -> torch.Tensor:
    width = max(len(x) for x in lists)
    return torch.tensor([x + [-1] * (width - len(x)) for x in lists], dtype=torch.long)
