"""Issue #14's report defects: role summary first, role patterns, not-computed columns, boolean colours,
column meanings, and the trace figure's layout."""

import html
import re

import numpy as np
import pandas as pd
import pytest

from interp.report import CircuitReport
from interp.scanning import ScanResult


def _fake_scan() -> ScanResult:
    """A 2-layer x 3-head scan without a model: one boolean column and one never-computed column."""
    heads = pd.DataFrame({
        "layer": [0, 0, 0, 1, 1, 1], "head": [0, 1, 2, 0, 1, 2], "kv_head": [0, 0, 0, 0, 0, 0],
        "sink_mass": [0.9, 0.2, 0.6, 0.1, 0.95, 0.3],
        "sink_has_sink": [True, False, True, False, True, False],
        "induction_score": [0.0, 0.1, 0.05, 0.8, 0.0, 0.4],
        "streaming_score": [np.nan] * 6,
    })
    columns = {
        "sink_mass": "mean attention probability on the first token",
        "sink_has_sink": "sink_alpha0 > 0.3",
        "induction_score": "mass on the token after an earlier occurrence of the current token",
        "streaming_score": "answer-loss increase (NaN unless --streaming-per-head)",
    }
    metadata = {"schema_version": 1, "model": {"name": "fake", "n_layers": 2, "n_heads": 3}, "columns": columns,
                "settings": {"seed": 0}, "analyses": ["sink", "induction", "streaming"]}
    return ScanResult(heads=heads, metadata=metadata)


@pytest.fixture(scope="module")
def fake_html():
    report = CircuitReport(_fake_scan())
    return report, report.html()


def test_the_report_opens_with_the_top_heads_of_each_role(fake_html):
    report, text = fake_html
    assert text.index('id="roles"') < text.index('id="card"') < text.index('id="heatmaps"')
    roles = report.role_heads()
    assert roles["sink"][["layer", "head"]].values.tolist() == [[1, 1], [0, 0], [0, 2]]
    assert roles["induction"][["layer", "head"]].values.tolist() == [[1, 0], [1, 2]]
    summary = text[text.index('id="roles"'):text.index('id="card"')]
    assert 'data-role="sink"' in summary and 'data-role="induction"' in summary
    assert "L1H0" in summary and "induction_score: 0.800" in summary and "importance 0.8" in summary


def test_not_computed_columns_say_so_instead_of_an_empty_heatmap(fake_html):
    _, text = fake_html
    box = re.search(r'<figure class="heatmap missing" data-column="streaming_score".*?</figure>', text, flags=re.S)
    assert box and "not computed (--streaming-per-head)" in box.group(0)
    assert 'id="heatmap-streaming_score"' not in text


def test_boolean_columns_get_two_colours_and_every_heatmap_its_meaning(fake_html):
    _, text = fake_html
    figure = re.search(r'<figure class="heatmap" data-column="sink_has_sink".*?</figure>', text, flags=re.S).group(0)
    assert '"ticktext":["False","True"]' in figure and "3 of 6 heads True" in figure
    assert '"colorscale":[[0,"#d9d9d9"],[0.5,"#d9d9d9"],[0.5,"#d62728"],[1,"#d62728"]]' in figure
    for column, meaning in _fake_scan().metadata["columns"].items():
        assert re.search(rf'data-column="{column}".*?<figcaption>{re.escape(html.escape(meaning))}</figcaption>', text, flags=re.S)


def test_attention_section_shows_the_top_head_of_each_role(small_scan, smollm):
    report = CircuitReport(small_scan, smollm, top_k=4)
    text = report.html()
    labels = dict(report.pattern_heads())
    top_induction = report.role_heads()["induction"].iloc[0]
    key = (int(top_induction["layer"]), int(top_induction["head"]))
    assert "induction" in labels[key]
    attention = text[text.index('id="attention"'):]
    assert f"L{key[0]}H{key[1]} induction" in attention
    summary = text[text.index('id="roles"'):text.index('id="card"')]
    assert summary.count('<svg class="pattern"') >= 3  # small patterns next to the role heads


def test_trace_figure_colour_bars_sit_right_of_the_panels_and_rows_are_tall_enough():
    from interp.causal.tracing import plot_causal_trace

    tokens = [f"t{i}" for i in range(12)]
    rows = [(kind, layer, pos) for kind in ("resid", "attn", "mlp") for pos in range(12) for layer in range(6)]
    frame = pd.DataFrame(rows, columns=["kind", "layer", "position"])
    frame["token"] = [tokens[p] for p in frame["position"]]
    frame["subject"] = frame["position"] < 2
    frame["prob"] = np.linspace(0.1, 0.9, len(frame))
    frame.attrs.update(low_score=0.1, high_score=0.9, subject_range=(0, 2), input_tokens=tokens, answer=" x", n_layers=6,
                       input_ids=list(range(12)), window=3)
    figure = plot_causal_trace(frame)
    panels = [figure.layout[name].domain for name in ("yaxis", "yaxis2", "yaxis3")]
    plot_height = figure.layout.height - figure.layout.margin.t - figure.layout.margin.b
    for trace, domain in zip(figure.data, panels):
        assert trace.colorbar.x >= 1.0  # outside every panel, so it covers no token labels
        assert abs(trace.colorbar.y - (domain[0] + domain[1]) / 2) < 1e-6
        assert (domain[1] - domain[0]) * plot_height >= 20 * len(tokens)  # at least 20 px per token row
    assert len({round(d[0], 3) for d in panels}) == 3  # stacked, not side by side
