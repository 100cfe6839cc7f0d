"""MIB's MCQA and arithmetic tasks: the generators, MIB's dataset files read from disk, and `interp circuit` on them."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import typer
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cli_apps import circuit_cli  # noqa: E402

from interp.causal.pairs import read_pairs  # noqa: E402
from interp.circuits.tasks import (  # noqa: E402
    ARITHMETIC_COUNTERFACTUALS,
    IOI_COUNTERFACTUALS,
    MCQA_COUNTERFACTUALS,
    arithmetic_task,
    make_task,
    mcqa_prompt,
    mcqa_task,
)
from interp.errors import InterpError  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def app():
    return circuit_cli()


# ------------------------------------------------------------------------------------------ MCQA generator
def _lines(prompt: str) -> list[tuple[str, str]]:
    """The ``(letter, colour)`` choice lines of an MCQA prompt."""
    return re.findall(r"\n([A-Z])\. (\w+)", prompt)


def test_mcqa_prompt_is_mibs_template():
    expected = ("Question: Bananas are yellow. What color are bananas?\n"
                "A. red\nB. yellow\nC. blue\nD. grey\nAnswer:")
    assert mcqa_prompt("Bananas", "are", "yellow", "ABCD", ["red", "yellow", "blue", "grey"]) == expected
    assert mcqa_prompt("Snow", "is", "white", "AB", ["white", "pink"]) == (
        "Question: Snow is white. What color is snow?\nA. white\nB. pink\nAnswer:")


@pytest.mark.parametrize("counterfactual", MCQA_COUNTERFACTUALS)
def test_mcqa_rows_answer_with_the_letter_of_the_stated_colour(counterfactual):
    pairs = mcqa_task(24, seed=3, counterfactual=counterfactual)
    assert pairs.meta == {"counterfactual": counterfactual} and len(pairs) == 24
    for row in pairs.frame.itertuples(index=False):
        fact = re.match(r"Question: (\w+) (is|are) (\w+)\. What color (is|are) (\w+)\?", row.clean)
        assert fact and fact.group(3) == row.color and fact.group(5) == row.subject.lower()
        assert row.corrupted.split("\n")[0] == row.clean.split("\n")[0]  # same question
        clean, corrupted = _lines(row.clean), _lines(row.corrupted)
        assert [s for s, _ in clean] == list("ABCD") and len(corrupted) == 4
        assert row.answer == " " + dict((c, s) for s, c in clean)[row.color]
        assert row.wrong == " " + dict((c, s) for s, c in corrupted)[row.color]
        assert row.answer != row.wrong
        colours, letters = [c for _, c in clean], [s for s, _ in corrupted]
        moved = [c for _, c in corrupted] != colours
        if counterfactual == "symbol":
            assert not moved and sorted(letters) == list("ABCD")
        if counterfactual == "answerPosition":
            assert letters == list("ABCD") and moved
            assert sorted(c for _, c in corrupted) == sorted(colours)
        if counterfactual == "randomLetter":
            assert not moved and not set(letters) & set("ABCD") and len(set(letters)) == 4
        if counterfactual == "answerPosition_randomLetter":
            assert moved and not set(letters) & set("ABCD")
    assert mcqa_task(6, seed=9).frame.equals(mcqa_task(6, seed=9).frame)
    with pytest.raises(InterpError, match="unknown MCQA counterfactual 'letters'"):
        mcqa_task(2, counterfactual="letters")


# ------------------------------------------------------------------------------------ arithmetic generator
def _operands(prompt: str, word: str) -> tuple[int, int]:
    match = re.fullmatch(rf"Q: How much is (\d+) {word} (\d+)\? A: ", prompt)
    assert match, prompt
    return int(match.group(1)), int(match.group(2))


@pytest.mark.parametrize("operator, word", [("+", "plus"), ("-", "minus")])
@pytest.mark.parametrize("counterfactual", ARITHMETIC_COUNTERFACTUALS)
def test_arithmetic_rows_follow_mibs_template_and_counterfactuals(operator, word, counterfactual):
    pairs = arithmetic_task(20, seed=2, operator=operator, counterfactual=counterfactual)  # no tokenizer: 2 digits
    for row in pairs.frame.itertuples(index=False):
        (x, y), (cx, cy) = _operands(row.clean, word), _operands(row.corrupted, word)
        assert all(10 <= v <= 99 for v in (x, y, cx, cy))
        value = x + y if operator == "+" else x - y
        other = cx + cy if operator == "+" else cx - cy
        assert (row.answer, row.wrong) == (str(value), str(other)) and value != other and min(value, other) >= 0
        if counterfactual != "random":
            place, operand = counterfactual.split("_")
            kept, changed = ((y, cy), (x, cx)) if operand == "op1" else ((x, cx), (y, cy))
            assert kept[0] == kept[1] and changed[0] != changed[1]
            digit = (lambda v: v % 10) if place == "ones" else (lambda v: v // 10)
            other_digit = (lambda v: v // 10) if place == "ones" else (lambda v: v % 10)
            assert digit(changed[0]) != digit(changed[1]) and other_digit(changed[0]) == other_digit(changed[1])


def test_arithmetic_by_name_and_refusals():
    add = make_task("arithmetic", 3, seed=1)
    assert add.name == "arithmetic" and all(" plus " in p for p in add.frame["clean"])
    sub = make_task("arithmetic_subtraction", 3, seed=1)
    assert sub.name == "arithmetic_subtraction" and all(" minus " in p for p in sub.frame["clean"])
    with pytest.raises(InterpError, match="needs digits=2"):
        arithmetic_task(2, digits=1, counterfactual="tens_op1")
    with pytest.raises(InterpError, match="unknown arithmetic operator"):
        arithmetic_task(2, operator="*")


def test_catalog_counterfactuals_match_the_generators():
    from interp.catalog import TASK_COUNTERFACTUALS

    assert TASK_COUNTERFACTUALS == {"ioi": IOI_COUNTERFACTUALS, "mcqa": MCQA_COUNTERFACTUALS,
                                    "arithmetic": ARITHMETIC_COUNTERFACTUALS,
                                    "arithmetic_subtraction": ARITHMETIC_COUNTERFACTUALS}


def test_smollm2_tokenizer_gets_single_token_answers_or_a_clear_refusal(smollm):
    tok = smollm.tokenizer
    one = lambda text: len(tok(text, add_special_tokens=False)["input_ids"]) == 1  # noqa: E731
    assert not one("93")  # SmolLM2 writes numbers digit by digit: MIB's 2-digit sums are two tokens
    pairs = arithmetic_task(16, model=smollm, seed=0)
    for row in pairs.frame.itertuples(index=False):
        x, y = _operands(row.clean, "plus")
        assert x < 10 and y < 10 and one(row.answer) and one(row.wrong)  # 1-digit operands, 1-digit sums
    assert sum(b.size for b in pairs.encode(smollm)) == 16
    with pytest.raises(InterpError, match=r"no 2-digit sum is a single token .*splits numbers into digits\); use digits=1"):
        arithmetic_task(4, model=smollm, digits=2)
    for counterfactual in MCQA_COUNTERFACTUALS:
        mcqa = mcqa_task(8, model=smollm, counterfactual=counterfactual)
        assert sum(b.size for b in mcqa.encode(smollm)) == 8
        assert all(one(a) and one(w) for a, w in zip(mcqa.frame["answer"], mcqa.frame["wrong"]))


# ------------------------------------------------------------------------------------- MIB files on disk
MCQA_PROMPT = "Question: Creams are white. What color are creams?\nA. yellow\nB. white\nC. black\nD. green\nAnswer:"
MCQA_ROWS = [
    {
        "id": "/m/08p92x", "question": "Creams are white. What color are creams?", "prompt": MCQA_PROMPT,
        "choices": {"label": [" A", " B", " C", " D"], "text": ["yellow", "white", "black", "green"]}, "answerKey": 1,
        "symbol_counterfactual": {
            "prompt": MCQA_PROMPT.replace("A. yellow\nB. white\nC. black\nD. green",
                                          "C. yellow\nD. white\nA. black\nB. green"),
            "choices": {"label": [" C", " D", " A", " B"], "text": ["yellow", "white", "black", "green"]}, "answerKey": 1},
        "answerPosition_counterfactual": {
            "prompt": MCQA_PROMPT.replace("A. yellow\nB. white", "A. white\nB. yellow"),
            "choices": {"label": [" A", " B", " C", " D"], "text": ["white", "yellow", "black", "green"]}, "answerKey": 0},
    },
    {
        "id": "53", "question": "Rainclouds are grey. What color are rainclouds?",
        "prompt": "Question: Rainclouds are grey. What color are rainclouds?\nA. grey\nB. pink\nC. blue\nD. red\nAnswer:",
        "choices": {"label": [" A", " B", " C", " D"], "text": ["grey", "pink", "blue", "red"]}, "answerKey": 0,
        "symbol_counterfactual": {
            "prompt": "Question: Rainclouds are grey. What color are rainclouds?\nB. grey\nA. pink\nD. blue\nC. red\nAnswer:",
            "choices": {"label": [" B", " A", " D", " C"], "text": ["grey", "pink", "blue", "red"]}, "answerKey": 0},
        "answerPosition_counterfactual": {
            "prompt": "Question: Rainclouds are grey. What color are rainclouds?\nA. red\nB. pink\nC. blue\nD. grey\nAnswer:",
            "choices": {"label": [" A", " B", " C", " D"], "text": ["red", "pink", "blue", "grey"]}, "answerKey": 3},
    },
]
ARITHMETIC_ROWS = [  # mib-bench/arithmetic_addition's layout (row idx 1000 of its train split), and a 1-digit row
    {"idx": 1000, "template": "Q: How much is {x} plus {y}? A: ", "prompt": "Q: How much is 82 plus 38? A: ", "label": "120",
     "operator": "+", "num_digit": 2,
     "random_counterfactual": {"label": 142, "operand1": 68, "operand2": 74, "prompt": "Q: How much is 68 plus 74? A: "},
     "ones_op1_counterfactual": {"label": 126, "operand1": 88, "operand2": 38, "prompt": "Q: How much is 88 plus 38? A: "},
     "operand1": 82, "operand2": 38},
    {"idx": 7, "template": "Q: How much is {x} plus {y}? A: ", "prompt": "Q: How much is 5 plus 3? A: ", "label": "8",
     "operator": "+", "num_digit": 1,
     "random_counterfactual": {"label": 6, "operand1": 2, "operand2": 4, "prompt": "Q: How much is 2 plus 4? A: "},
     "ones_op1_counterfactual": {"label": 4, "operand1": 1, "operand2": 3, "prompt": "Q: How much is 1 plus 3? A: "},
     "operand1": 5, "operand2": 3},
    {"idx": 8, "template": "Q: How much is {x} plus {y}? A: ", "prompt": "Q: How much is 1 plus 1? A: ", "label": "2",
     "operator": "+", "num_digit": 1, "random_counterfactual": None,
     "ones_op1_counterfactual": {"label": 4, "operand1": 3, "operand2": 1, "prompt": "Q: How much is 3 plus 1? A: "},
     "operand1": 1, "operand2": 1},
]
IOI_ROWS = [
    {"prompt": "Then, Mary and John went to the store. John gave a drink to",
     "metadata": {"indirect_object": "Mary", "subject": "John", "random_c": "Anna"},
     "s2_io_flip_counterfactual": {"prompt": "Then, Mary and John went to the store. Mary gave a drink to"},
     "abc_counterfactual": {"prompt": "Then, Anna and Paul went to the store. John gave a drink to"}},
]


def _write(rows: list[dict], path: Path) -> Path:
    """A MIB file as MIB's loaders and ``datasets`` write them: JSONL, a JSON array, Parquet, or CSV of literal cells."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    else:
        pd.DataFrame(rows).to_csv(path, index=False)  # nested cells become Python literals
    return path


@pytest.mark.parametrize("ext", ["jsonl", "json", "parquet", "csv"])
def test_mib_mcqa_file_reads_to_mibs_answers(tmp_path, ext):
    pairs = read_pairs(_write(MCQA_ROWS, tmp_path / f"mcqa.{ext}"))
    assert pairs.meta["mib"] == "mcqa" and pairs.meta["counterfactual"] == "symbol"  # MIB's circuit-track default
    frame = pairs.frame
    assert list(frame["clean"]) == [r["prompt"] for r in MCQA_ROWS]
    assert list(frame["corrupted"]) == [r["symbol_counterfactual"]["prompt"] for r in MCQA_ROWS]
    assert list(frame["answer"]) == [" B", " A"] and list(frame["wrong"]) == [" D", " B"]
    assert list(frame["id"]) == ["/m/08p92x", "53"]  # scalar columns ride along
    other = read_pairs(tmp_path / f"mcqa.{ext}", counterfactual="answerPosition_counterfactual")
    assert list(other.frame["wrong"]) == [" A", " D"] and other.meta["counterfactual"] == "answerPosition"


@pytest.mark.parametrize("ext", ["jsonl", "parquet", "csv"])
def test_mib_arithmetic_and_ioi_files_read_to_mibs_answers(tmp_path, ext):
    pairs = read_pairs(_write(ARITHMETIC_ROWS, tmp_path / f"add.{ext}"))
    assert pairs.meta["mib"] == "arithmetic" and pairs.meta["skipped"] == 1  # an empty counterfactual is skipped
    expected = pd.DataFrame({"clean": ["Q: How much is 82 plus 38? A: ", "Q: How much is 5 plus 3? A: "],
                             "corrupted": ["Q: How much is 68 plus 74? A: ", "Q: How much is 2 plus 4? A: "],
                             "answer": ["120", "8"], "wrong": ["142", "6"]})
    pd.testing.assert_frame_equal(pairs.frame[["clean", "corrupted", "answer", "wrong"]], expected)
    assert [int(v) for v in pairs.frame["operand1"]] == [82, 5]  # CSV cells come back as text
    ones = read_pairs(tmp_path / f"add.{ext}", counterfactual="ones_op1")
    assert list(ones.frame["wrong"]) == ["126", "4", "4"] and ones.meta["skipped"] == 0
    ioi = read_pairs(_write(IOI_ROWS, tmp_path / f"ioi.{ext}"))
    assert ioi.meta["counterfactual"] == "s2_io_flip"
    assert ioi.frame.loc[0, ["corrupted", "answer", "wrong"]].tolist() == [
        IOI_ROWS[0]["s2_io_flip_counterfactual"]["prompt"], " Mary", " John"]
    assert read_pairs(tmp_path / f"ioi.{ext}", counterfactual="abc").frame.loc[0, "corrupted"].startswith("Then, Anna and Paul")


def _bad(rows: list[dict], **change) -> list[dict]:
    """``rows`` with each ``key=value`` set in every row (``None``: the column removed)."""
    out = [dict(r) for r in rows]
    for row in out:
        for key, value in change.items():
            if value is None:
                row.pop(key)
            else:
                row[key] = value
    return out


@pytest.mark.parametrize("rows, counterfactual, message", [
    (lambda: _bad(MCQA_ROWS, answerKey=None), None, "lacks column(s) answerKey"),
    (lambda: _bad(MCQA_ROWS, answerKey=7), None, "row 0: answerKey 7 is not an index into its 4 choice labels"),
    (lambda: _bad(MCQA_ROWS, symbol_counterfactual={"prompt": "x", "answerKey": 0}), None,
     "row 0: symbol_counterfactual.choices needs a 'label' list"),
    (lambda: MCQA_ROWS, "noun", "has no counterfactual 'noun'; it has: symbol, answerPosition"),
    (lambda: [{k: v for k, v in r.items() if k != "symbol_counterfactual"} for r in MCQA_ROWS], None,
     "has no counterfactual 'symbol' (the default); choose one with --counterfactual NAME"),
    (lambda: _bad(ARITHMETIC_ROWS, label=None), None, "MIB arithmetic file 'bad.jsonl' lacks column(s) label"),
    (lambda: _bad(ARITHMETIC_ROWS, label=None, operator=None), None, "has counterfactual columns but no answers"),
    (lambda: [dict(r, random_counterfactual=None) for r in ARITHMETIC_ROWS], None, "every row's random_counterfactual is empty"),
    (lambda: _bad(IOI_ROWS, metadata={"subject": "John"}), None, "row 0: metadata has no indirect_object"),
])
def test_bad_mib_files_are_refused_in_one_line(tmp_path, rows, counterfactual, message):
    path = _write(rows(), tmp_path / "bad.jsonl")
    with pytest.raises(InterpError) as error:
        read_pairs(path, counterfactual=counterfactual)
    assert message in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_counterfactual_on_a_plain_pairs_file_is_refused(tmp_path):
    pd.DataFrame({"clean": ["a b"], "corrupted": ["c d"], "answer": [" x"], "wrong": [" y"]}).to_json(
        tmp_path / "plain.jsonl", orient="records", lines=True)
    with pytest.raises(InterpError, match="picks a column of a MIB file"):
        read_pairs(tmp_path / "plain.jsonl", counterfactual="symbol")


def test_keep_usable_drops_what_the_tokenizer_cannot_score_as_mib_does(smollm, tmp_path):
    pairs = read_pairs(_write(ARITHMETIC_ROWS, tmp_path / "add.jsonl"))
    kept, dropped, reason = pairs.keep_usable(smollm)
    assert dropped == 1 and "row 0: answer '120' is 3 tokens" in reason  # SmolLM2 splits digits
    assert list(kept.frame["answer"]) == ["8"] and kept.meta == pairs.meta
    with pytest.raises(InterpError, match="no row of 'add' is usable"):
        pairs.head(1).keep_usable(smollm)
    mcqa = read_pairs(_write(MCQA_ROWS, tmp_path / "mcqa.jsonl"))
    assert mcqa.keep_usable(smollm, limit=1)[0].frame.equals(mcqa.head(1).frame)


# ------------------------------------------------------------------------------------------------- the CLI
@pytest.mark.parametrize("args, rows", [
    (["--task", "mcqa", "--counterfactual", "answerPosition"], 4),
    (["--task", "arithmetic"], 4),
    (["--task", "arithmetic_subtraction", "--counterfactual", "ones_op2"], 4),
    (["--data", "MCQA", "--counterfactual", "answerPosition"], 2),
    (["--data", "ARITHMETIC"], 1),  # SmolLM2's tokenizer cannot score '120': MIB's filter keeps one row
])
def test_circuit_runs_on_mib_tasks_and_files(app, tiny_folder, tmp_path, args, rows):
    files = {"MCQA": _write(MCQA_ROWS, tmp_path / "mcqa.jsonl"), "ARITHMETIC": _write(ARITHMETIC_ROWS, tmp_path / "add.jsonl")}
    out = tmp_path / "out"
    result = runner.invoke(app, ["circuit", tiny_folder, *[str(files.get(a, a)) for a in args], "--n", "4", "--out", str(out),
                                 "--method", "eap", "--verify", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "circuit.json").read_text())["settings"]
    assert settings["n_prompts"] == rows
    assert settings["counterfactual"] == (args[args.index("--counterfactual") + 1] if "--counterfactual" in args else "random")
    if "ARITHMETIC" in args:
        assert "kept 1 rows of add.jsonl; dropped 1" in result.output


def test_patch_reads_a_mib_file_and_keeps_the_rows_the_tokenizer_can_score(tiny_folder, tmp_path):
    from interp.cli.causal import register_commands as register_causal

    causal = typer.Typer()
    register_causal(causal)
    out = tmp_path / "patch"
    result = runner.invoke(causal, ["patch", tiny_folder, "--data", str(_write(ARITHMETIC_ROWS, tmp_path / "add.jsonl")),
                                    "--sites", "head_out", "--layers", "0", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    rows = pd.read_json(out / "pairs.jsonl", lines=True, dtype=False)
    assert list(rows["clean"]) == ["Q: How much is 5 plus 3? A: "] and list(rows["answer"]) == ["8"]


@pytest.mark.parametrize("make_args, message", [
    (lambda d: ["--task", "mcqa", "--counterfactual", "random"], "unknown --counterfactual 'random' for --task mcqa"),
    (lambda d: ["--task", "factual", "--counterfactual", "random"], "applies to --task ioi, mcqa"),
    (lambda d: ["--data", str(d / "mcqa.jsonl"), "--counterfactual", "noun"], "has no counterfactual 'noun'"),
    (lambda d: ["--data", str(d / "bad.jsonl")], "lacks column(s) answerKey"),
])
def test_bad_mib_input_fails_before_the_model_loads(app, tmp_path, make_args, message):
    _write(MCQA_ROWS, tmp_path / "mcqa.jsonl")
    _write(_bad(MCQA_ROWS, answerKey=None), tmp_path / "bad.jsonl")
    out = tmp_path / "out"
    result = runner.invoke(app, ["circuit", "no-such-model", *make_args(tmp_path), "--out", str(out)])
    assert result.exit_code != 0 and message in result.output, result.output
    assert "no-such-model" not in result.output  # refused before the model was looked up
    assert not out.exists()


# --------------------------------------------------------------------------------------- the real model
def test_smollm2_metric_on_generated_mcqa_and_arithmetic(smollm):
    """The logit difference read by hand from each row's last-position logits (not through the task batches)."""
    def logit_diffs(pairs):
        tok = smollm.tokenizer
        rows = list(pairs.frame.itertuples(index=False))
        prompts = [torch.cat([smollm.to_tokens(r.clean), smollm.to_tokens(r.corrupted)]) for r in rows]  # [2, pos]
        lengths = [p.shape[1] for p in prompts]
        index = [i for i, n in enumerate(lengths) if n == max(lengths, key=lengths.count)]  # one forward: one length
        with torch.no_grad():
            logits = smollm.forward(torch.cat([prompts[i] for i in index]))[:, -1].reshape(len(index), 2, -1)
        out = torch.empty(len(index), 2)
        for k, i in enumerate(index):
            a, w = (tok(t, add_special_tokens=False)["input_ids"][0] for t in (rows[i].answer, rows[i].wrong))
            out[k] = logits[k, :, a] - logits[k, :, w]
        return out

    mcqa = logit_diffs(mcqa_task(16, model=smollm, seed=0))
    assert len(mcqa) >= 3 and torch.isfinite(mcqa).all()  # SmolLM2-135M answers MIB's MCQA at chance: no sign is asserted
    arithmetic = logit_diffs(arithmetic_task(24, model=smollm, seed=0))
    assert len(arithmetic) == 24 and torch.isfinite(arithmetic).all()  # 1-digit problems: all one length
    # it does prefer the right 1-digit sum on average, and the counterfactual's sum on the corrupted prompt
    assert arithmetic[:, 0].mean() > 0 > arithmetic[:, 1].mean()
