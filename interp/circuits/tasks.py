"""Tasks as data: prompt pairs (clean, corrupted, correct answer, wrong answers) and seeded generators.

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

Read one with :func:`read_pairs` (JSONL, CSV, Parquet) or generate one: :func:`ioi_task` (Wang et
al. 2022), :func:`greater_than_task` (Hanna et al. 2023), :func:`induction_task` (repeated random
tokens), :func:`factual_task` (a small bundled subject -> attribute set). ``pairs.encode(model)``
tokenizes and checks every row (same token length, single-token answers) and groups the rows into
:class:`TaskBatch` es of equal length, so no padding is ever needed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from interp.analyses.causal_common import answer_token
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
            groups.setdefault(len(clean), []).append((i, clean, corrupted, answers, wrong))
        if pad:
            rows = [r for length in sorted(groups) for r in groups[length]]  # shortest first
            size = batch_size or len(rows)
            return [_padded_batch(rows[i:i + size], _pad_id(model)) for i in range(0, len(rows), size)]
        batches = []
        for length in sorted(groups):
            batch = _padded_batch(groups[length], pad_id=0)  # one length: nothing is padded
            batches.extend(batch.split(batch_size) if batch_size else [batch])
        return batches

    def to_jsonl(self, path: str | Path) -> None:
        self.frame.to_json(path, orient="records", lines=True, force_ascii=False)


def read_pairs(path: str | Path, *, name: str | None = None) -> PromptPairs:
    """Read a prompt-pair dataset from ``.jsonl``/``.json``, ``.csv`` or ``.parquet``.

    Columns: ``clean, corrupted, answer, wrong`` (aliases: ``clean_prompt``, ``corrupt``,
    ``correct``, ``wrong_answers``, ...); list-valued answers in CSV are JSON lists or ``|``-separated.
    """
    path = Path(path)
    return PromptPairs(read_table(path), name=name or path.stem)


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


# ---------------------------------------------------------------------------------------------- generators
IOI_TEMPLATES: tuple[str, ...] = (
    # Wang et al. (2022) BABA templates; the final " [A]" is the answer.
    "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] were working at the [PLACE]. [B] decided to give a [OBJECT] to",
    "Then, [B] and [A] were thinking about going to the [PLACE]. [B] wanted to give a [OBJECT] to",
    "Then, [B] and [A] had a long argument, and afterwards [B] said to",
    "After [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give it to",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give the [OBJECT] to",
    "While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to",
    "While [B] and [A] were commuting to the [PLACE], [B] gave a [OBJECT] to",
    "After the lunch, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Afterwards, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] had a long argument. Afterwards [B] said to",
    "The [PLACE] [B] and [A] went to had a [OBJECT]. [B] gave it to",
    "Friends [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to",
)
IOI_NAMES: tuple[str, ...] = (
    "Mary", "John", "Alice", "Bob", "Sarah", "James", "Emma", "David", "Laura", "Michael", "Anna", "Robert",
    "Linda", "William", "Kate", "Thomas", "Susan", "Daniel", "Rachel", "Paul", "Lisa", "Mark", "Emily", "Peter",
    "Grace", "George", "Helen", "Richard", "Jessica", "Steven", "Karen", "Kevin", "Amy", "Brian", "Nancy", "Eric",
    "Sophie", "Jack", "Lucy", "Adam", "Claire", "Ryan", "Julia", "Tom", "Rose", "Sam", "Jane", "Matt", "Amber",
    "Andrew", "Kelly", "Scott", "Alex", "Chris", "Joe", "Ben", "Dan", "Tim", "Max", "Ann",
)
IOI_PLACES: tuple[str, ...] = ("store", "garden", "restaurant", "school", "hospital", "office", "station", "park")
IOI_OBJECTS: tuple[str, ...] = ("drink", "ring", "kiss", "bone", "basketball", "computer", "necklace", "snack")


def single_token_words(model: Any, words: Sequence[str], *, prefix: str = " ") -> list[str]:
    """The words that ``model``'s tokenizer encodes as one token with ``prefix`` (SmolLM2: ``" Mary"``)."""
    if model is None or getattr(model, "tokenizer", None) is None:
        return list(words)
    keep = []
    for word in words:
        if len(model.tokenizer(prefix + word, add_special_tokens=False)["input_ids"]) == 1:
            keep.append(word)
    return keep


def ioi_task(n: int = 64, *, model: Any = None, seed: int = 0, templates: Sequence[str] = IOI_TEMPLATES,
             names: Sequence[str] = IOI_NAMES, abba: bool = True) -> PromptPairs:
    """Indirect object identification (Wang et al. 2022): "... [B] gave a drink to" -> " [A]" (not " [B]").

    The corrupted prompt replaces the two first names by two unrelated names (Wang et al.'s ABC
    distribution), so nothing in it says who the indirect object is. Half the rows (``abba``) put
    the indirect object first. Names are filtered to single tokens (with a leading space) for
    ``model``'s tokenizer.
    """
    pool = single_token_words(model, names)
    if len(pool) < 4:
        raise InterpError("fewer than 4 IOI names are single tokens for this tokenizer; pass names=")
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        template = templates[i % len(templates)]
        a, b, c, d = rng.sample(pool, 4)
        place, obj = rng.choice(IOI_PLACES), rng.choice(IOI_OBJECTS)
        order = "ABBA" if abba and i % 2 else "BABA"
        first = template.replace("[B] and [A]", "[A] and [B]", 1) if order == "ABBA" else template

        def fill(text: str, x: str, y: str, s2: str) -> str:
            text = text.replace("[PLACE]", place).replace("[OBJECT]", obj)
            head, sep, tail = text.rpartition("[B]")  # the second mention of the subject
            head = head.replace("[A]", x).replace("[B]", y)
            return head + s2 + tail

        clean = fill(first, a, b, b)
        corrupted = fill(first, c, d, b)
        rows.append({"clean": clean, "corrupted": corrupted, "answer": " " + a, "wrong": " " + b,
                     "template": i % len(templates), "order": order, "io": a, "s": b})
    return PromptPairs(pd.DataFrame(rows), name="ioi",
                       description="indirect object identification (Wang et al. 2022), ABC corruption")


_GT_NOUNS = ("war", "expedition", "drought", "reign", "project", "strike", "trial", "voyage")


def greater_than_task(n: int = 64, *, model: Any = None, seed: int = 0) -> PromptPairs:
    """Greater-than (Hanna et al. 2023): "The war lasted from the year 1732 to the year 17" -> a later year.

    Correct answers are the two-digit years after YY, wrong ones YY and before; the corrupted prompt
    uses YY = 01. If the tokenizer splits digits (SmolLM2 does), the answer is the tens digit:
    digits above YY's tens digit are correct, digits below it wrong.
    """
    rng = random.Random(seed)
    two_digit = model is None or getattr(model, "tokenizer", None) is None or len(
        model.tokenizer("45", add_special_tokens=False)["input_ids"]) == 1
    rows = []
    for i in range(n):
        noun = rng.choice(_GT_NOUNS)
        century = rng.choice(range(11, 19))
        yy = rng.randint(12, 88)
        clean = f"The {noun} lasted from the year {century}{yy:02d} to the year {century}"
        corrupted = f"The {noun} lasted from the year {century}01 to the year {century}"
        if two_digit:
            answer = [f"{y:02d}" for y in range(yy + 1, 100)]
            wrong = [f"{y:02d}" for y in range(0, yy + 1)]
        else:
            tens = yy // 10
            answer = [str(t) for t in range(tens + 1, 10)]
            wrong = [str(t) for t in range(0, tens)]
        rows.append({"clean": clean, "corrupted": corrupted, "answer": answer, "wrong": wrong, "yy": yy})
    return PromptPairs(pd.DataFrame(rows), name="greater_than",
                       description="greater-than (Hanna et al. 2023), corrupted with YY=01")


def induction_task(n: int = 64, *, model: Any = None, seed: int = 0, block: int = 12, repeat: int = 6,
                   vocab: tuple[int, int] | None = None, prefix: Sequence[int] = (), corrupt: str = "match") -> PromptPairs:
    """Induction/copy on random tokens: ``X[0:block] X[0:repeat]`` -> ``X[repeat]``.

    ``corrupt="match"`` (default) replaces only ``X[repeat - 1]`` in the first block, the token the
    last position looks for, so nothing earlier says what comes next (the information flows
    embed -> previous-token head -> induction head's key -> logits); the wrong answer is a token
    absent from the prompt. ``corrupt="block"`` draws a whole fresh first block ``Y`` (wrong answer
    ``Y[repeat]``, what copying would give there). Tokens are ids drawn from ``vocab = (low, high)``
    (default: the model's vocabulary, skipping the first 100 ids for models with a tokenizer, which
    often hold special tokens).
    """
    if not 0 < repeat < block:
        raise InterpError(f"induction_task needs 0 < repeat < block, got repeat={repeat}, block={block}")
    if corrupt not in ("match", "block"):
        raise InterpError(f"induction_task corrupt= must be 'match' or 'block', got {corrupt!r}")
    if vocab is None:
        size = model.cfg.d_vocab if model is not None else 50_000
        low = 100 if model is not None and getattr(model, "tokenizer", None) is not None and size > 1000 else 0
        vocab = (low, min(size, 20_000) if low else size)
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        x = _distinct(vocab, block, generator)
        if corrupt == "block":
            y = _distinct(vocab, block, generator, avoid=set(x))
            corrupted, wrong = y + x[:repeat], y[repeat]
        else:
            z, wrong = _distinct(vocab, 2, generator, avoid=set(x))
            corrupted = x[:repeat - 1] + [z] + x[repeat:] + x[:repeat]
        rows.append({"clean": list(prefix) + x + x[:repeat], "corrupted": list(prefix) + corrupted,
                     "answer": x[repeat], "wrong": wrong})
    return PromptPairs(pd.DataFrame(rows), name="induction",
                       description=f"induction on random tokens: block of {block}, then its first {repeat} again "
                                   f"(corrupted: {corrupt})")


def _distinct(vocab: tuple[int, int], k: int, generator: torch.Generator, avoid: set[int] = frozenset()) -> list[int]:
    out: list[int] = []
    while len(out) < k:
        t = int(torch.randint(vocab[0], vocab[1], (), generator=generator))
        if t not in out and t not in avoid:
            out.append(t)
    return out


FACTS: tuple[tuple[str, str, str], ...] = (
    # (template, subject, attribute): the prompt is template.format(subject), the answer " attribute".
    ("The {} is located in the city of", "Eiffel Tower", "Paris"),
    ("The {} is located in the city of", "Colosseum", "Rome"),
    ("The {} is located in the city of", "Brandenburg Gate", "Berlin"),
    ("The {} is located in the city of", "Big Ben", "London"),
    ("The {} is located in the city of", "Statue of Liberty", "New"),
    ("The {} is located in the city of", "Kremlin", "Moscow"),
    ("The {} is located in the city of", "Sagrada Familia", "Barcelona"),
    ("The {} is located in the city of", "Acropolis", "Athens"),
    ("The capital of {} is", "France", "Paris"),
    ("The capital of {} is", "Italy", "Rome"),
    ("The capital of {} is", "Germany", "Berlin"),
    ("The capital of {} is", "Japan", "Tokyo"),
    ("The capital of {} is", "Spain", "Madrid"),
    ("The capital of {} is", "Russia", "Moscow"),
    ("The capital of {} is", "Egypt", "Cairo"),
    ("The capital of {} is", "Greece", "Athens"),
    ("The capital of {} is", "England", "London"),
    ("The capital of {} is", "China", "Beijing"),
    ("The official language of {} is", "France", "French"),
    ("The official language of {} is", "Germany", "German"),
    ("The official language of {} is", "Italy", "Italian"),
    ("The official language of {} is", "Spain", "Spanish"),
    ("The official language of {} is", "Japan", "Japanese"),
    ("The official language of {} is", "Russia", "Russian"),
)


def factual_task(n: int = 64, *, model: Any = None, seed: int = 0,
                 facts: Sequence[tuple[str, str, str]] = FACTS) -> PromptPairs:
    """Factual recall from a small bundled set: corrupted by swapping the subject for another one.

    Each pair uses two facts of the same template whose subjects tokenize to the same length and
    whose attributes differ: clean ``"The capital of France is"`` -> ``" Paris"``, corrupted
    ``"The capital of Italy is"``, wrong answer ``" Rome"``.
    """
    def length(text: str) -> int:
        if model is None or getattr(model, "tokenizer", None) is None:
            return len(text.split())
        return len(model.tokenizer(text, add_special_tokens=False)["input_ids"])

    usable = [f for f in facts if single_token_words(model, [f[2]])]
    pairs = [(a, b) for a in usable for b in usable
             if a is not b and a[0] == b[0] and a[2] != b[2] and length(a[0].format(a[1])) == length(b[0].format(b[1]))]
    if not pairs:
        raise InterpError("no two bundled facts tokenize to the same length with single-token answers")
    rng = random.Random(seed)
    rng.shuffle(pairs)
    rows = []
    for i in range(n):
        a, b = pairs[i % len(pairs)]
        rows.append({"clean": a[0].format(a[1]), "corrupted": b[0].format(b[1]), "answer": " " + a[2],
                     "wrong": " " + b[2], "subject": a[1], "corrupted_subject": b[1]})
    return PromptPairs(pd.DataFrame(rows), name="factual", description="factual recall, subject swapped")


TASKS: dict[str, Callable[..., PromptPairs]] = {
    "ioi": ioi_task,
    "greater_than": greater_than_task,
    "induction": induction_task,
    "factual": factual_task,
}


def make_task(name: str, n: int = 64, *, model: Any = None, seed: int = 0, **kwargs: Any) -> PromptPairs:
    """A built-in task by name (``ioi``, ``greater_than``, ``induction``, ``factual``)."""
    key = name.replace("-", "_")
    if key not in TASKS:
        raise InterpError(f"unknown task {name!r}; built-in tasks: {', '.join(TASKS)} (or pass a dataset file)")
    return TASKS[key](n, model=model, seed=seed, **kwargs)
