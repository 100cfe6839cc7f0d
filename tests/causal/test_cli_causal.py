"""`interp trace` / `interp patch`: files written atomically, one-line errors."""

import pandas as pd
from typer.testing import CliRunner

runner = CliRunner()


def test_trace_writes_csv_and_html_and_refuses_to_overwrite(app, tiny_folder, tmp_path):
    out = tmp_path / "trace"
    args = ["trace", tiny_folder, "--prompt", "The Eiffel Tower is in", "--subject", "Eiffel Tower", "--answer", " Paris",
            "--out", str(out), "--samples", "2", "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out / "trace.csv")
    assert set(frame["kind"]) == {"resid", "attn", "mlp"} and len(frame) == 3 * 2 * len(set(frame["position"]))
    html = (out / "trace.html").read_text()
    assert "plotly" in html and len(html) > 1_000_000  # plotly.js inlined
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "error:" in again.output and "--overwrite" in again.output
    assert runner.invoke(app, args + ["--overwrite"]).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace"]  # no staging folders left behind


def test_trace_subject_not_found_is_one_error_line(app, tiny_folder, tmp_path):
    result = runner.invoke(app, ["trace", tiny_folder, "--prompt", "The Eiffel Tower is in", "--subject", "Louvre",
                                 "--answer", " Paris", "--out", str(tmp_path / "t"), "--device", "cpu"])
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error:") and "Louvre" in last
    assert "Traceback" not in result.output and not (tmp_path / "t").exists()


def test_patch_writes_csv_and_html(app, tiny_folder, tmp_path):
    out = tmp_path / "patch"
    result = runner.invoke(app, ["patch", tiny_folder, "--clean", "When Mary and John went out, John thanked",
                                 "--corrupt", "When John and Mary went out, Mary thanked", "--answers", " Mary, John",
                                 "--sites", "resid_pre,head_out", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out / "patching.csv")
    assert set(frame["site"]) == {"resid_pre", "head_out"}
    assert {"metric", "normalized", "layer", "position", "head"} <= set(frame.columns)
    assert "plotly" in (out / "patching.html").read_text()
    plain = tmp_path / "patch-plain"
    result = runner.invoke(app, ["patch", tiny_folder, "--clean", "When Mary and John went out, John thanked",
                                 "--corrupt", "When John and Mary went out, Mary thanked", "--answers", " Mary, John",
                                 "--sites", "resid_pre,head_out", "--out", str(plain), "--device", "cpu", "--reuse", "none",
                                 "--max-memory", "64MB"])
    assert result.exit_code == 0, result.output
    assert (pd.read_csv(plain / "patching.csv")["metric"] - frame["metric"]).abs().max() < 1e-5


def test_patch_length_mismatch_is_one_error_line(app, tiny_folder, tmp_path):
    result = runner.invoke(app, ["patch", tiny_folder, "--clean", "When Mary went out", "--corrupt",
                                 "When Mary and John went out", "--answers", " Mary, John", "--out", str(tmp_path / "p")])
    assert result.exit_code == 1 and "error:" in result.output and "same" in result.output
