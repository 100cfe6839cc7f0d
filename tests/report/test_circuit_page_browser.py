"""circuit.html and report.html in a real (headless) Chromium: no console errors, the slider redraws the graph.

The page's test hook (a URL fragment, see interp/report/circuit_report.py) moves the slider itself and
writes what it drew into ``<pre id="interp-test">``, read back with ``--dump-dom``; console output
comes from ``--enable-logging=stderr``. The drawn SVG (nodes, grid dots, column labels) and plotly's
tick labels are read from the same DOM. Skips only where no Chromium binary exists.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

import interp
from interp.cli.circuit import register_commands
from interp.report import write_report
from interp.report.circuit_report import DEFAULT_DRAWN_CAP

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
BROWSER = next((path for path in map(shutil.which, BROWSERS) if path), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium binary (apt-get install chromium)")


def load(page: Path, fragment: str = "") -> tuple[dict | None, str, list[str]]:
    """(the page's test-hook JSON or None, the DOM after scripts ran, console lines) for ``page#fragment``."""
    run = subprocess.run(
        [BROWSER, "--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=10000", "--dump-dom", page.resolve().as_uri() + fragment],
        capture_output=True, text=True, timeout=120,
    )
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    found = re.search(r'<pre id="interp-test"[^>]*>(.*?)</pre>', run.stdout, re.S)
    return (json.loads(html.unescape(found.group(1))) if found else None), run.stdout, console


@pytest.fixture(scope="module")
def gemma3_page(smollm, tmp_path_factory) -> Path:
    """circuit/ of a tiny Gemma 3 (post-norm blocks: one attention node a{l} per layer) with the shipped tokenizer."""
    from cli_apps import circuit_cli
    from tiny_models import save_tiny_folder

    folder = tmp_path_factory.mktemp("tiny-gemma3")
    save_tiny_folder("gemma3_text", folder / "model", smollm)
    run = CliRunner().invoke(circuit_cli(), ["circuit", str(folder / "model"), "--task", "ioi", "--n", "4", "--steps", "2",
                                             "--verify", "3", "--out", str(folder / "circuit"), "--device", "cpu"])
    assert run.exit_code == 0, run.output
    return folder / "circuit"


def drawn(dom: str) -> dict[str, dict[str, tuple[float, float]]]:
    """The graph's SVG read back from the DOM: {"node": circuit nodes, "dot": grid dots} -> name -> (x, y),
    and "column": the column labels under the graph -> (x, y)."""
    svg = re.search(r'<svg[^>]*class="ic-graph[^"]*".*?</svg>', dom, re.S).group(0)
    found: dict[str, dict[str, tuple[float, float]]] = {"node": {}, "dot": {}, "column": {}}
    for kind, name, x, y in re.findall(r'<circle class="ic-(node|dot)" data-node="([^"]+)" cx="([-\d.]+)" cy="([-\d.]+)"', svg):
        found[kind][name] = (float(x), float(y))
    for x, y, text in re.findall(r'<text class="ic-lab ic-col" x="([-\d.]+)" y="([-\d.]+)"[^>]*>([^<]*)</text>', svg):
        found["column"][text] = (float(x), float(y))
    return found


def x_ticks(dom: str, div_id: str) -> list[str]:
    """The x tick labels plotly drew in the figure ``div_id``."""
    start = dom.index(f'id="{div_id}"')
    end = dom.find('class="plotly-graph-div', dom.index(">", start))  # the next figure
    figure = dom[start:end if end > 0 else len(dom)]
    return [html.unescape(t) for t in re.findall(r'<g class="xtick"><text[^>]*>([^<]*)</text>', figure)]


def expected_ticks(folder: Path) -> list[str]:
    """1, 2, 5, 10, 20, ... within a factor 1.25 of the faithfulness curve's (and MIB grid's) positive edge counts."""
    counts = [n for n in pd.read_csv(folder / "faithfulness.csv")["n_edges"] if n > 0]
    lo, hi = min(counts) / 1.25, max(counts) * 1.25
    return [f"{t:,}" for t in (m * 10**k for k in range(8) for m in (1, 2, 5)) if lo <= t <= hi]


@pytest.fixture(scope="module")
def pages(tiny_folder, tmp_path_factory) -> Path:
    """A scan of the tiny model with `interp circuit --scan` written into its circuit/, and its report.html."""
    folder = tmp_path_factory.mktemp("browser") / "scan"
    model = interp.load(tiny_folder, device="cpu")
    result = interp.scan(model, analyses="previous_token,duplicate_token,induction",
                         settings=interp.ScanSettings(context_length=32, batch=1))
    interp.write_scan(result, folder)
    app = typer.Typer()
    register_commands(app)
    app.command("noop")(lambda: None)  # a second command keeps typer from collapsing the app into `circuit`
    run = CliRunner().invoke(app, ["circuit", tiny_folder, "--task", "ioi", "--n", "6", "--out", str(folder / "circuit"),
                                   "--method", "eap", "--verify", "5", "--scan", str(folder), "--device", "cpu"])
    assert run.exit_code == 0, run.output
    write_report(folder, model=None, formats=["csv"])
    return folder


def test_the_harness_sees_console_errors(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<html><body><script>undefinedFunction()</script></body></html>")
    _, _, console = load(page)
    assert any("undefinedFunction" in line for line in console), console


def test_circuit_page_draws_and_the_slider_redraws(pages):
    page = pages / "circuit" / "circuit.html"
    curve = pd.read_csv(pages / "circuit" / "faithfulness.csv")
    view, dom, console = load(page, "#test-curve&test-click")
    assert console == [] and view is not None and view["errors"] == [], (console, view)
    first = view["first"]
    assert 0 < first["edges"] <= DEFAULT_DRAWN_CAP
    assert len(re.findall(r'<path class="ic-edge[^"]*" data-i="\d+"', dom)) == first["drawn"]  # the hook counts the DOM
    assert 0 < view["click"]["edges"] <= first["drawn"]
    # the page's own pruning gives the pipeline's circuit sizes (interp.circuits.evaluation.prune) at every curve size
    expected = dict(zip(curve["n"], curve["n_edges"]))
    assert view["curve"] and all(expected[n] == edges for n, edges in view["curve"]), (view["curve"], expected)
    low, _, console_low = load(page, "#test-slider=0")
    high, _, console_high = load(page, "#test-slider=1000")
    assert console_low == console_high == [] and low["errors"] == high["errors"] == []
    assert low["after"]["n"] == 1 and high["after"]["n"] > first["n"]
    assert high["after"]["drawn"] > first["drawn"] >= low["after"]["drawn"]
    assert high["after"]["edges"] > first["edges"] >= low["after"]["edges"]
    if int(curve["n"].iloc[-1]) == high["after"]["n"]:  # every edge embedded: the full graph, pruned, as the curve's last row
        assert high["after"]["edges"] == int(curve["n_edges"].iloc[-1])
    assert "score" in high["tooltip"] and "rank" in high["tooltip"]
    # per-head layout: a dot per head and MLP, one column per head and one for the MLPs, no layer-node column
    summary = json.loads((pages / "circuit" / "circuit.json").read_text())
    n_layers, n_heads = summary["graph"]["n_layers"], summary["graph"]["n_heads"]
    svg = drawn(dom)
    assert set(svg["dot"]) == {f"a{l}.h{h}" for l in range(n_layers) for h in range(n_heads)} | {f"m{l}" for l in range(n_layers)}
    assert list(svg["column"]) == [f"h{h}" for h in range(n_heads)] + ["MLP"]
    assert all(svg["dot"][f"a0.h{h}"][0] == svg["column"][f"h{h}"][0] for h in range(n_heads))
    assert set(svg["node"]) <= set(svg["dot"]) | {"embed", "logits"}
    ticks = x_ticks(dom, "faithfulness-curve")
    assert ticks == expected_ticks(pages / "circuit") and len(ticks) >= 3, ticks


def test_layer_node_graph_has_no_head_columns(gemma3_page):
    """Gemma 3: an attention node a{l} per layer, drawn beside that layer's MLP; nothing per head."""
    summary = json.loads((gemma3_page / "circuit.json").read_text())
    assert summary["graph"]["attention_nodes"] == "layer"
    n_layers = summary["graph"]["n_layers"]
    graph_nodes = {"embed", "logits"} | set(pd.read_csv(gemma3_page / "edges.csv")["upstream"])
    assert graph_nodes == {"embed", "logits"} | {f"{k}{l}" for l in range(n_layers) for k in "am"}
    curve = pd.read_csv(gemma3_page / "faithfulness.csv")
    for fragment in ("#test-curve&test-click", "#test-slider=1000"):
        view, dom, console = load(gemma3_page / "circuit.html", fragment)
        assert console == [] and view is not None and view["errors"] == [], (console, view)
        if "curve" in view:  # the page prunes layer nodes as the pipeline does; a click follows a{l}'s paths
            expected = dict(zip(curve["n"], curve["n_edges"]))
            assert view["curve"] and all(expected[n] == edges for n, edges in view["curve"]), (view["curve"], expected)
            assert re.fullmatch(r"a\d+", view["click"]["node"]) and view["click"]["edges"] > 0
        svg = drawn(dom)
        assert svg["node"] and set(svg["node"]) <= graph_nodes, svg["node"]
        assert set(svg["dot"]) == graph_nodes - {"embed", "logits"}
        assert list(svg["column"]) == ["attention", "MLP"]
        assert not re.search(r">h\d+</text>", dom) and ".h" not in " ".join(svg["node"])
    # the whole graph drawn: each layer's attention node in the attention column, level with its MLP, left of it
    assert view["after"]["n"] == len(pd.read_csv(gemma3_page / "edges.csv"))
    dots, (attn_x, _), (mlp_x, _) = svg["dot"], svg["column"]["attention"], svg["column"]["MLP"]
    for l in range(n_layers):
        (ax, ay), (mx, my) = dots[f"a{l}"], dots[f"m{l}"]
        assert ax == attn_x and mx == mlp_x and ax < mx and 0 <= ay - my < 40
        assert l == 0 or ay < dots[f"a{l - 1}"][1]  # layers bottom to top
    assert svg["node"].keys() >= {"embed", "logits"} and svg["node"]["logits"][1] < min(y for _, y in dots.values())
    assert "attention" in dom and x_ticks(dom, "faithfulness-curve") == expected_ticks(gemma3_page)


def test_report_embeds_the_same_interactive_graph(pages):
    report = pages / "report.html"
    text = report.read_text()
    assert 'id="edge-circuit"' in text
    table = text[text.index("Direct logit attribution"):]
    assert ">m0<" in table and ">nan<" not in table  # nodes without roles (MLPs) read back from nodes.csv: empty cells
    low, _, console = load(report, "#test-slider=0")
    high, _, console_high = load(report, "#test-slider=1000")
    assert console == console_high == [] and low is not None and high is not None, (console, console_high)
    assert low["errors"] == high["errors"] == []
    assert high["after"]["drawn"] > low["after"]["drawn"]
