"""The HTML circuit report and `interp report`: one offline file, one heatmap per score column, attention views."""

import re

import plotly.offline
import pytest
import typer
from typer.testing import CliRunner

import interp
from interp.cli.report import register_commands
from interp.errors import InterpError
from interp.report import CircuitReport, load_heads, write_report
from interp.report.scan_report import _circuitsvis_bundle


@pytest.fixture(scope="module")
def report_html(small_scan, smollm):
    report = CircuitReport(small_scan, smollm, top_k=4)
    return report, report.html()


def _score_columns(scan) -> list[str]:
    """Worked out independently of the report: every column the analyses documented, plus `importance`."""
    return [c for c in scan.metadata["columns"] if c in scan.heads.columns] + ["importance"]


def test_report_loads_nothing_from_the_network(report_html):
    _, text = report_html
    sources = re.findall(r"<script[^>]*\ssrc\s*=\s*[\"']?([^\"'> ]+)", text, flags=re.I)
    links = re.findall(r"<link[^>]*\shref\s*=\s*[\"']?([^\"'> ]+)", text, flags=re.I)
    assert sources == [] and links == []
    # Outside the two inlined library bundles (which mention URLs in strings, e.g. plotly's unused
    # topojson default) the page holds no URL at all, so nothing else can be fetched either.
    bundles = [plotly.offline.get_plotlyjs(), _circuitsvis_bundle().replace("</script", "<\\/script")]
    assert all(text.count(bundle) == 1 for bundle in bundles)
    rest = text
    for bundle in bundles:
        rest = rest.replace(bundle, "")
    assert "http" not in rest and "unpkg" not in text
    assert rest.count("<script") == rest.count("</script>")  # the inlined bundles did not break the markup
    assert text.count("Plotly.newPlot") == len(_score_columns(report_html[0].result))


def test_one_heatmap_per_score_column(report_html, small_scan):
    _, text = report_html
    columns = _score_columns(small_scan)
    assert re.findall(r'<figure class="heatmap" data-column="([^"]+)"', text) == columns
    for column in columns:
        assert f'id="heatmap-{column}"' in text


def test_attention_views_show_the_top_heads_on_both_probes(report_html, smollm):
    report, text = report_html
    assert text.count("CircuitsVis.AttentionHeads") == 2
    assert 'id="attention-natural"' in text and 'id="attention-repeated"' in text
    patterns = report.attention_patterns()
    tokens, pattern, heads = patterns["repeated"]
    assert heads == report.top_heads() and len(heads) == 4 and pattern.shape == (4, 48, 48)
    # Each row of an attention pattern is a distribution over the visible keys.
    assert pattern.sum(-1).sub(1).abs().max() < 1e-4 and pattern.triu(1).abs().max() == 0
    assert report.table.sort_values("importance_rank").iloc[0][["layer", "head"]].tolist() == list(heads[0])


def test_circuit_summary_finds_previous_token_heads_feeding_induction_heads(report_html):
    report, text = report_html
    circuit = report.circuit()
    roles = report.table.set_index(["layer", "head"])["roles"]
    assert not circuit.empty and (circuit["layer_from"] < circuit["layer_to"]).all()
    for row in circuit.itertuples():
        assert "previous_token" in roles[(row.layer_from, row.head_from)] and "induction" in roles[(row.layer_to, row.head_to)]
    # On SmolLM2 the strongest pair composes far above the random baseline.
    assert circuit["ratio"].max() > 3
    assert 'id="circuit-table"' in text and 'id="head-table"' in text


def test_save_is_atomic_and_does_not_overwrite(small_scan, tmp_path):
    report = CircuitReport(small_scan)  # no model: tables and heatmaps only
    path = report.save(tmp_path / "report.html")
    assert "No model was given" in path.read_text()
    path.write_text("keep me")
    with pytest.raises(InterpError, match="overwrite"):
        report.save(path)
    assert path.read_text() == "keep me"
    report.save(path, overwrite=True)
    assert path.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temp files left behind


def test_cli_report_writes_report_and_exports(small_scan, tmp_path):
    folder = tmp_path / "scan"
    interp.write_scan(small_scan, folder)
    app = typer.Typer()
    register_commands(app)

    @app.command("noop")  # a second command so typer keeps `report` as a subcommand
    def noop() -> None: ...

    runner = CliRunner()
    ok = runner.invoke(app, ["report", str(folder), "--format", "csv,json"])
    assert ok.exit_code == 0, ok.output
    assert (folder / "report.html").exists() and (folder / "heads.json").exists() and not (folder / "heads.parquet").exists()
    assert load_heads(folder / "heads.csv").equals(load_heads(folder / "heads.json"))
    again = runner.invoke(app, ["report", str(folder)])
    assert again.exit_code == 1 and "error:" in again.output and "--overwrite" in again.output
    assert "Traceback" not in again.output
    bad = runner.invoke(app, ["report", str(folder), "--format", "xlsx", "--overwrite"])
    assert bad.exit_code == 1 and "unknown --format xlsx" in bad.output
    missing = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert missing.exit_code == 1 and "holds no scan" in missing.output


def test_write_report_refuses_before_writing_anything(small_scan, tmp_path):
    interp.write_scan(small_scan, tmp_path)
    (tmp_path / "report.html").write_text("old")
    with pytest.raises(InterpError):
        write_report(tmp_path, formats=["parquet"])
    assert not (tmp_path / "heads.parquet").exists()
