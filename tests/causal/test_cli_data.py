"""`interp patch` / `interp trace` on datasets (--data FILE) and built-in tasks (--task NAME --n N)."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

import interp
from interp.analyses import activation_patching, causal_trace
from interp.circuits import ioi_task

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tiny_folder):
    return interp.load(tiny_folder, device="cpu")


PAIRS = [
    {"clean": "When Mary and John went out, John thanked", "corrupted": "When John and Mary went out, Mary thanked",
     "answer": " Mary", "wrong": " John"},
    {"clean": "When Anna and Paul went out, Paul thanked", "corrupted": "When Paul and Anna went out, Anna thanked",
     "answer": " Anna", "wrong": " Paul"},
]


def test_patch_data_equals_activation_patching_on_the_same_pairs(app, tiny, tiny_folder, tmp_path):
    data = tmp_path / "pairs.jsonl"
    pd.DataFrame(PAIRS).to_json(data, orient="records", lines=True)
    out = tmp_path / "patch"
    result = runner.invoke(app, ["patch", tiny_folder, "--data", str(data), "--sites", "resid_pre,head_out",
                                 "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "note:" not in result.output  # both rows have one length: nothing skipped
    got = pd.read_csv(out / "patching.csv")
    want = activation_patching(tiny, [p["clean"] for p in PAIRS], [p["corrupted"] for p in PAIRS],
                               answers=[(p["answer"], p["wrong"]) for p in PAIRS], sites=["resid_pre", "head_out"])
    assert len(got) == len(want) and list(got["site"]) == list(want["site"])
    assert (got["metric"] - want["metric"]).abs().max() < 1e-5
    assert (got["normalized"] - want["normalized"]).abs().max() < 1e-4
    assert [r["row"] for r in map(json.loads, (out / "pairs.jsonl").read_text().splitlines())] == [0, 1]


def test_patch_task_is_seeded_and_patches_the_largest_equal_length_group(app, tiny, tiny_folder, tmp_path):
    def run(seed: int, name: str):
        out = tmp_path / name
        result = runner.invoke(app, ["patch", tiny_folder, "--task", "ioi", "--n", "8", "--seed", str(seed),
                                     "--sites", "head_out", "--layers", "0", "--out", str(out), "--device", "cpu"])
        assert result.exit_code == 0, result.output
        return result.output, pd.read_csv(out / "patching.csv"), pd.read_json(out / "pairs.jsonl", lines=True)

    output, first, rows = run(3, "a")
    _, again, rows_again = run(3, "b")
    pd.testing.assert_frame_equal(first, again)
    pd.testing.assert_frame_equal(rows, rows_again)
    batches = ioi_task(8, model=tiny, seed=3).encode(tiny)
    largest = max(batches, key=lambda b: b.size)
    assert list(rows["row"]) == largest.rows
    assert ("note:" in output) == (len(batches) > 1)
    _, _, other = run(4, "c")
    assert list(other["clean"]) != list(rows["clean"])


@pytest.mark.parametrize("make_args, message", [
    (lambda d: ["patch", "--task", "ioi", "--data", str(d / "pairs.jsonl")], "give exactly one of"),
    (lambda d: ["patch", "--task", "ioi", "--clean", "a b", "--corrupt", "b a", "--answers", " Mary, John"],
     "give exactly one of"),
    (lambda d: ["patch", "--data", str(d / "multi_token.jsonl")], "row 1: answer"),
    (lambda d: ["patch", "--data", str(d / "no_wrong.csv")], "lacks column(s) wrong"),
    (lambda d: ["trace", "--data", str(d / "pairs.jsonl"), "--prompt", "The Eiffel Tower is in"], "give exactly one of"),
    (lambda d: ["trace", "--data", str(d / "no_wrong.csv")], "lacks column(s) subject"),
    (lambda d: ["trace", "--data", str(d / "trace_multi.jsonl"), "--samples", "2"], "row 1: answer"),
    (lambda d: ["trace", "--task", "ioi"], "has no subject"),
    (lambda d: ["trace", "--task", "nope"], "unknown task"),
])
def test_bad_sources_are_one_error_line_and_write_nothing(app, tiny_folder, tmp_path, make_args, message):
    d = tmp_path / "data"
    d.mkdir()
    pd.DataFrame(PAIRS).to_json(d / "pairs.jsonl", orient="records", lines=True)
    pd.DataFrame([PAIRS[0], {**PAIRS[1], "answer": " Maryellen Johnsonville"}]).to_json(
        d / "multi_token.jsonl", orient="records", lines=True)
    pd.DataFrame(PAIRS).drop(columns="wrong").to_csv(d / "no_wrong.csv", index=False)
    pd.DataFrame([{"prompt": "The Eiffel Tower is in", "subject": "Eiffel Tower", "answer": " Paris"},
                  {"prompt": "The Colosseum is in", "subject": "Colosseum", "answer": " Parisienne Frenchness"}]).to_json(
        d / "trace_multi.jsonl", orient="records", lines=True)
    command, *rest = make_args(d)
    out = tmp_path / "out"
    result = runner.invoke(app, [command, tiny_folder, *rest, "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no --out, no staging folder


def test_trace_data_writes_each_row_and_the_token_group_mean(app, tiny, tiny_folder, tmp_path):
    rows = [{"prompt": "The Eiffel Tower is in", "subject": "Eiffel Tower", "answer": " Paris"},
            {"prompt": "The Colosseum is in the city of", "subject": "Colosseum", "answer": ""}]  # "": top prediction
    data = tmp_path / "rows.csv"
    pd.DataFrame(rows).to_csv(data, index=False)
    out = tmp_path / "trace"
    result = runner.invoke(app, ["trace", tiny_folder, "--data", str(data), "--samples", "2", "--kinds", "resid,mlp",
                                 "--window", "2", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    got = pd.read_csv(out / "trace.csv")
    direct = [causal_trace(tiny, r["prompt"], r["subject"], r["answer"] or None, samples=2, kinds=["resid", "mlp"],
                           window=2) for r in rows]
    for i, frame in enumerate(direct):
        part = got[got["row"] == i].reset_index(drop=True)
        assert len(part) == len(frame) and list(part["position"]) == list(frame["position"])
        assert (part["prob"] - frame["prob"]).abs().max() < 1e-6
    summary = json.loads((out / "trace.json").read_text())
    assert [r["answer"] for r in summary["rows"]] == [f.attrs["answer"] for f in direct]
    mean = pd.read_csv(out / "trace_mean.csv")
    for group, position in (("last token", lambda f: len(f.attrs["input_tokens"]) - 1),
                            ("first subject token", lambda f: f.attrs["subject_range"][0])):
        for kind in ("resid", "mlp"):
            want = sum(f[(f["position"] == position(f)) & (f["kind"] == kind)].set_index("layer")["prob"]
                       for f in direct) / 2
            have = mean[(mean["token"] == group) & (mean["kind"] == kind)].set_index("layer")["prob"]
            assert (have - want).abs().max() < 1e-6, (group, kind)
    assert set(mean["rows"]) <= {1, 2} and (mean[mean["token"] == "last token"]["rows"] == 2).all()
    assert abs(mean["clean_prob"].iloc[0] - sum(f.attrs["high_score"] for f in direct) / 2) < 1e-9
    assert "plotly" in (out / "trace.html").read_text()


def test_trace_task_factual_traces_n_rows(app, tiny_folder, tmp_path):
    out = tmp_path / "trace"
    result = runner.invoke(app, ["trace", tiny_folder, "--task", "factual", "--n", "2", "--samples", "2", "--kinds",
                                 "resid", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert set(pd.read_csv(out / "trace.csv")["row"]) == {0, 1}
    assert (out / "trace_mean.csv").is_file() and "tracing rows" in result.output
