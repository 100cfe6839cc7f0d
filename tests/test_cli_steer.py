"""`interp steer`: end to end on a tiny model folder and once on the shipped model; bad arguments refused before loading."""

import json

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import interp
from interp.cli.app import app

runner = CliRunner()
NAME = "blocks.1.hook_resid_post"


@pytest.fixture
def files(tmp_path):
    positive = tmp_path / "pos.txt"
    positive.write_text("I love this movie\n\nWhat a wonderful day\n")
    negative = tmp_path / "neg.jsonl"
    negative.write_text(json.dumps({"prompt": "I hate this movie"}) + "\n" + json.dumps({"prompt": "What an awful day"}) + "\n")
    return positive, negative


def test_steer_writes_csv_html_and_matches_the_python_api(tiny_folder, files, tmp_path):
    positive, negative = files
    out = tmp_path / "steer"
    args = ["steer", tiny_folder, "--name", NAME, "--positive", str(positive), "--negative", str(negative),
            "--prompt", "The weather today is", "--coeffs", "-8,0,8", "--max-new-tokens", "5", "--answer", " nice",
            "--out", str(out), "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out / "steering.csv", keep_default_na=False)
    assert list(frame.columns) == ["coeff", "continuation", "answer_logprob"] and list(frame.coeff) == [-8.0, 0.0, 8.0]
    page = (out / "steering.html").read_text()
    assert page.count("class='card'") == 3 and "The weather today is" in page
    assert json.loads((out / "steering.json").read_text())["n_positive"] == 2

    model = interp.load(tiny_folder, device="cpu")
    vector = interp.steering_vector(model, ["I love this movie", "What a wonderful day"], ["I hate this movie", "What an awful day"], NAME)
    tokens = model.to_tokens("The weather today is")
    answer = model.tokenizer(" nice", add_special_tokens=False)["input_ids"][0]
    for row in frame.itertuples():
        with model.steer(NAME, vector, coeff=row.coeff):
            ids = model.generate(tokens, max_new_tokens=5, do_sample=False)
            logits = model(tokens)[0, -1].detach()  # a plain forward: the first generated position's distribution
        assert row.continuation == model.tokenizer.decode(ids[0, tokens.shape[1]:], skip_special_tokens=True)
        assert row.answer_logprob == pytest.approx(float(torch.log_softmax(logits.double(), -1)[answer]), abs=1e-4)
    assert len(set(frame.continuation)) > 1 or len(set(frame.answer_logprob.round(4))) == 3  # the vector acts

    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "--overwrite" in again.output.splitlines()[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["neg.jsonl", "pos.txt", "steer"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--positive": "missing.txt"}, "does not exist"),
        ({"--negative": "empty.txt"}, "holds no prompts"),
        ({"--negative": "bad.jsonl"}, "no non-empty \"prompt\""),
        ({"--positive": "wrong.csv"}, "unknown file type"),
        ({"--coeffs": "1,x"}, "--coeffs"),
        ({"--coeffs": ","}, "--coeffs"),
        ({"--coeffs": "1,inf"}, "--coeffs"),
        ({"--name": "layer3.resid"}, "not a hook point"),
        ({"--name": "blocks.1.attn.hook_pattern"}, "steering adds to"),
        ({"--max-new-tokens": "0"}, "--max-new-tokens"),
        ({"--prompt": "  "}, "--prompt is empty"),
    ],
)
def test_steer_refuses_bad_arguments_in_one_line_before_loading(files, tmp_path, change, message):
    positive, negative = files
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "no prompt field"}) + "\n")
    (tmp_path / "wrong.csv").write_text("prompt\nhello\n")
    options = {"--name": NAME, "--positive": str(positive), "--negative": str(negative), "--prompt": "Hi",
               "--out": str(tmp_path / "o")}
    options.update({k: v if k not in ("--positive", "--negative") else str(tmp_path / v) for k, v in change.items()})
    # A model that does not exist: the argument error must come first.
    result = runner.invoke(app, ["steer", "no-such-model-anywhere", *[x for kv in options.items() for x in kv]])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error:") and message in result.output and "no-such-model" not in result.output
    assert not (tmp_path / "o").exists()


def test_steer_on_the_shipped_model(smollm, files, tmp_path):
    positive, negative = files
    out = tmp_path / "smol"
    result = runner.invoke(app, ["steer", "smollm2-135m", "--name", "blocks.10.hook_resid_post", "--positive", str(positive),
                                 "--negative", str(negative), "--prompt", "I think the movie was", "--coeffs", "-8,0",
                                 "--max-new-tokens", "4", "--answer", " great", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out / "steering.csv", keep_default_na=False)
    assert len(frame) == 2 and frame.answer_logprob.notna().all() and (frame.answer_logprob < 0).all()
    assert frame.continuation[0] != frame.continuation[1]
