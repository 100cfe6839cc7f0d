"""Seeded task generators: each returns a :class:`~interp.causal.pairs.PromptPairs` dataset.

:func:`ioi_task` (Wang et al. 2022), :func:`greater_than_task` (Hanna et al. 2023),
:func:`induction_task` (repeated random tokens), :func:`factual_task` (a small bundled subject ->
attribute set), :func:`mcqa_task` and :func:`arithmetic_task` (MIB's MCQA and arithmetic); :func:`make_task` by name (:data:`TASKS`). Datasets on disk: :func:`~interp.causal.pairs.read_pairs`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import torch

from interp.causal.pairs import PromptPairs, read_pairs, read_table, trace_rows  # noqa: F401  (read_*: old home)
from interp.errors import InterpError


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


IOI_COUNTERFACTUALS = ("abc", "s2_io_flip")


def ioi_task(n: int = 64, *, model: Any = None, seed: int = 0, templates: Sequence[str] = IOI_TEMPLATES,
             names: Sequence[str] = IOI_NAMES, abba: bool = True, counterfactual: str = "abc") -> PromptPairs:
    """Indirect object identification (Wang et al. 2022): "... [B] gave a drink to" -> " [A]" (not " [B]").

    ``counterfactual="abc"`` (default): the corrupted prompt replaces the two first names by two
    unrelated names (Wang et al.'s ABC distribution), so nothing in it says who the indirect object
    is. ``"s2_io_flip"`` (MIB's IOI counterfactual): the corrupted prompt is the clean one with the
    second mention of the subject replaced by the indirect object, which makes the subject the
    expected answer; answers stay the clean ones (IO correct, S wrong), as in MIB. Half the rows
    (``abba``) put the indirect object first. Names are filtered to single tokens (with a leading
    space) for ``model``'s tokenizer.
    """
    if counterfactual not in IOI_COUNTERFACTUALS:
        raise InterpError(f"unknown IOI counterfactual {counterfactual!r}; use {' or '.join(IOI_COUNTERFACTUALS)}")
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
        corrupted = fill(first, c, d, b) if counterfactual == "abc" else fill(first, a, b, a)
        rows.append({"clean": clean, "corrupted": corrupted, "answer": " " + a, "wrong": " " + b,
                     "template": i % len(templates), "order": order, "io": a, "s": b})
    corruption = "ABC corruption" if counterfactual == "abc" else "S2 -> IO flip (MIB's s2_io_flip)"
    return PromptPairs(pd.DataFrame(rows), name="ioi", description=f"indirect object identification (Wang et al. 2022), {corruption}",
                       meta={"counterfactual": counterfactual})


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


# ---------------------------------------------------------------------------------------------- MIB tasks
# MIB's MCQA (mib-bench/copycolors_mcqa, 4_answer_choices): "Question: Bananas are yellow. What color are
# bananas?\nA. yellow\nB. red\nC. grey\nD. pink\nAnswer:" -> " A"; its labels carry the leading space.
MCQA_ITEMS: tuple[tuple[str, str, str], ...] = (
    # (subject, verb, color): "Bananas are yellow. What color are bananas?"
    ("Bananas", "are", "yellow"), ("Lemons", "are", "yellow"), ("Strawberries", "are", "red"), ("Cherries", "are", "red"),
    ("Tomatoes", "are", "red"), ("Blueberries", "are", "blue"), ("Grass", "is", "green"), ("Limes", "are", "green"),
    ("Carrots", "are", "orange"), ("Pumpkins", "are", "orange"), ("Coal", "is", "black"), ("Crows", "are", "black"),
    ("Snow", "is", "white"), ("Milk", "is", "white"), ("Salt", "is", "white"), ("Chocolate", "is", "brown"),
    ("Eggplants", "are", "purple"), ("Flamingos", "are", "pink"), ("Rainclouds", "are", "grey"), ("Elephants", "are", "grey"),
)
MCQA_COLORS: tuple[str, ...] = ("yellow", "red", "blue", "green", "orange", "black", "white", "brown", "purple", "pink", "grey")
MCQA_COUNTERFACTUALS = ("symbol", "answerPosition", "randomLetter", "answerPosition_randomLetter")
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def mcqa_prompt(subject: str, verb: str, color: str, symbols: Sequence[str], choices: Sequence[str]) -> str:
    """MIB's MCQA prompt: the fact, the question, one ``"X. color"`` line per choice, then ``"Answer:"``."""
    lines = "".join(f"\n{s}. {c}" for s, c in zip(symbols, choices))
    return f"Question: {subject} {verb} {color}. What color {verb} {subject.lower()}?{lines}\nAnswer:"


def mcqa_task(n: int = 64, *, model: Any = None, seed: int = 0, counterfactual: str = "symbol",
              n_choices: int = 4) -> PromptPairs:
    """Multiple-choice colour questions as in MIB's MCQA task (CopyColors; Wiegreffe et al. 2025).

    The clean prompt states an object's colour and asks for it among ``n_choices`` colours labelled
    A, B, C, D; the answer is ``" " + letter`` of the right colour. The corrupted prompt changes what
    the answer letter is, named as MIB's ``*_counterfactual`` columns: ``"symbol"`` (default, MIB's
    circuit-track choice) keeps the question and the colours' order and gives the letters A-D to the
    choices in another order, so the right colour carries another letter; ``"answerPosition"`` moves
    the right colour to another line (letters stay A-D); ``"randomLetter"`` relabels the lines with
    other letters; ``"answerPosition_randomLetter"`` does both. The wrong answer is the corrupted
    prompt's answer letter. Colours and letters are kept to single tokens (with a leading space) for
    ``model``'s tokenizer, and a pair whose prompts tokenize to different lengths is drawn again.
    """
    if counterfactual not in MCQA_COUNTERFACTUALS:
        raise InterpError(f"unknown MCQA counterfactual {counterfactual!r}; use {', '.join(MCQA_COUNTERFACTUALS)}")
    if not 2 <= n_choices <= 10:
        raise InterpError(f"mcqa_task needs 2 <= n_choices <= 10, got {n_choices}")
    colors = single_token_words(model, MCQA_COLORS)
    letters = "".join(single_token_words(model, list(_LETTERS)))
    items = [item for item in MCQA_ITEMS if item[2] in colors]
    if len(colors) < n_choices or len(letters) < 2 * n_choices or not items:
        raise InterpError(f"too few MCQA colours or letters are single tokens for this tokenizer to make {n_choices} choices")
    rng = random.Random(seed)
    base = _LETTERS[:n_choices]
    rows = []
    for _ in range(n):
        for _ in range(100):
            subject, verb, color = rng.choice(items)
            choices = [color] + rng.sample([c for c in colors if c != color], n_choices - 1)
            rng.shuffle(choices)
            position = choices.index(color)
            symbols, corrupted_choices = list(base), list(choices)
            corrupted_position = position
            if "answerPosition" in counterfactual:
                corrupted_position = rng.choice([p for p in range(n_choices) if p != position])
                corrupted_choices[position], corrupted_choices[corrupted_position] = (
                    corrupted_choices[corrupted_position], corrupted_choices[position])
            if counterfactual == "symbol":
                while symbols[position] == base[position]:
                    symbols = rng.sample(base, n_choices)
            elif "randomLetter" in counterfactual:
                symbols = rng.sample([s for s in letters if s not in base], n_choices)
            clean = mcqa_prompt(subject, verb, color, base, choices)
            corrupted = mcqa_prompt(subject, verb, color, symbols, corrupted_choices)
            if _token_length(model, clean) == _token_length(model, corrupted):
                break
        else:
            raise InterpError(f"no MCQA pair with equal token lengths found for counterfactual {counterfactual!r}")
        rows.append({"clean": clean, "corrupted": corrupted, "answer": " " + base[position],
                     "wrong": " " + symbols[corrupted_position], "subject": subject, "color": color,
                     "position": position, "corrupted_position": corrupted_position})
    return PromptPairs(pd.DataFrame(rows), name="mcqa", meta={"counterfactual": counterfactual},
                       description=f"multiple-choice colour questions (MIB's MCQA), {counterfactual} counterfactual")


# MIB's arithmetic (mib-bench/arithmetic_addition, arithmetic_subtraction): "Q: How much is 29 plus 64? A: " -> "93".
ARITHMETIC_TEMPLATES: dict[str, str] = {"+": "Q: How much is {x} plus {y}? A: ", "-": "Q: How much is {x} minus {y}? A: "}
ARITHMETIC_COUNTERFACTUALS = ("random", "ones_op1", "ones_op2", "tens_op1", "tens_op2")


def arithmetic_task(n: int = 64, *, model: Any = None, seed: int = 0, operator: str = "+", digits: int | None = None,
                    counterfactual: str = "random") -> PromptPairs:
    """Two-operand addition or subtraction in MIB's template: ``"Q: How much is 29 plus 64? A: "`` -> ``"93"``.

    ``counterfactual`` (MIB's column names): ``"random"`` (default, MIB's circuit-track choice) draws
    a new problem; ``"ones_op1"`` / ``"ones_op2"`` change the ones digit of the first / second
    operand, ``"tens_op1"`` / ``"tens_op2"`` its tens digit. The wrong answer is the corrupted
    problem's result, which always differs from the clean one. Operands have ``digits`` digits
    (default: 2, as in MIB, when the tokenizer writes two- and three-digit numbers as one token,
    else 1); subtraction keeps results non-negative. Like MIB, only problems whose clean and
    corrupted results are single tokens are drawn; if none exist (a tokenizer that splits numbers
    into digits, with 2-digit sums) the task is refused.
    """
    if operator not in ARITHMETIC_TEMPLATES:
        raise InterpError(f"unknown arithmetic operator {operator!r}; use + or -")
    if counterfactual not in ARITHMETIC_COUNTERFACTUALS:
        raise InterpError(f"unknown arithmetic counterfactual {counterfactual!r}; use {', '.join(ARITHMETIC_COUNTERFACTUALS)}")
    whole_numbers = _token_length(model, "93") == 1 and _token_length(model, "123") == 1
    digits = digits if digits is not None else 2 if whole_numbers else 1
    if digits not in (1, 2):
        raise InterpError(f"arithmetic_task takes digits=1 or 2, got {digits}")
    if counterfactual.startswith("tens") and digits < 2:
        raise InterpError(f"counterfactual {counterfactual!r} changes a tens digit: it needs digits=2 (this task has {digits})")
    low, high = (10, 99) if digits == 2 else (0, 9)
    single = {r for r in range(0, 2 * high + 1) if _token_length(model, str(r)) == 1}

    def result(x: int, y: int) -> int | None:
        r = x + y if operator == "+" else x - y
        return r if r in single else None

    problems = [(x, y) for x in range(low, high + 1) for y in range(low, high + 1) if result(x, y) is not None]
    if not problems:
        raise InterpError(f"no {digits}-digit {'sum' if operator == '+' else 'difference'} is a single token for this "
                          "tokenizer (it splits numbers into digits); use digits=1, or --data with single-token labels")

    def corrupt(x: int, y: int, rng: random.Random) -> tuple[int, int] | None:
        if counterfactual == "random":
            options = [p for p in problems if result(*p) != result(x, y)]
        else:
            place, operand = counterfactual.split("_")
            options = []
            for d in range(10):
                value = x if operand == "op1" else y
                changed = value - value % 10 + d if place == "ones" else value % 10 + 10 * d
                if changed == value or not low <= changed <= high:
                    continue
                pair = (changed, y) if operand == "op1" else (x, changed)
                if result(*pair) is not None:
                    options.append(pair)
        return rng.choice(options) if options else None

    rng = random.Random(seed)
    template = ARITHMETIC_TEMPLATES[operator]
    rows = []
    for _ in range(n):
        for _ in range(200):
            x, y = rng.choice(problems)
            other = corrupt(x, y, rng)
            if other is not None:
                break
        else:
            raise InterpError(f"no {counterfactual!r} counterfactual with a single-token result found for this tokenizer")
        rows.append({"clean": template.format(x=x, y=y), "corrupted": template.format(x=other[0], y=other[1]),
                     "answer": str(result(x, y)), "wrong": str(result(*other)), "operator": operator,
                     "operand1": x, "operand2": y, "corrupted_operand1": other[0], "corrupted_operand2": other[1]})
    name = "arithmetic" if operator == "+" else "arithmetic_subtraction"
    return PromptPairs(pd.DataFrame(rows), name=name, meta={"counterfactual": counterfactual},
                       description=f"{digits}-digit {'addition' if operator == '+' else 'subtraction'} (MIB's arithmetic), "
                                   f"{counterfactual} counterfactual")


def arithmetic_subtraction_task(n: int = 64, **kwargs: Any) -> PromptPairs:
    """:func:`arithmetic_task` with ``operator="-"`` (MIB's arithmetic_subtraction)."""
    return arithmetic_task(n, operator="-", **kwargs)


def _token_length(model: Any, text: str) -> int:
    """Tokens of ``text`` without special tokens (words, without a tokenizer)."""
    if model is None or getattr(model, "tokenizer", None) is None:
        return len(text.split()) if " " in text.strip() else 1
    return len(model.tokenizer(text, add_special_tokens=False)["input_ids"])


TASKS: dict[str, Callable[..., PromptPairs]] = {
    "ioi": ioi_task,
    "greater_than": greater_than_task,
    "induction": induction_task,
    "factual": factual_task,
    "mcqa": mcqa_task,
    "arithmetic": arithmetic_task,
    "arithmetic_subtraction": arithmetic_subtraction_task,
}


def make_task(name: str, n: int = 64, *, model: Any = None, seed: int = 0, **kwargs: Any) -> PromptPairs:
    """A built-in task by name (``ioi``, ``greater_than``, ``induction``, ``factual``, ``mcqa``, ``arithmetic``,
    ``arithmetic_subtraction``)."""
    key = name.replace("-", "_")
    if key not in TASKS:
        raise InterpError(f"unknown task {name!r}; built-in tasks: {', '.join(TASKS)} (or pass a dataset file)")
    return TASKS[key](n, model=model, seed=seed, **kwargs)
