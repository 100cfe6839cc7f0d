"""circuit.html and report.html in a real (headless) Chromium: no console errors, the slider redraws the graph.

The page's test hook (a URL fragment, see interp/report/circuit_report.py) moves the slider itself and
writes what it drew into ``<pre id="interp-test">``, read back with ``--dump-dom``; console output
comes from ``--enable-logging=stderr``. Skips only where no Chromium binary exists.
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


def test_report_embeds_the_same_interactive_graph(pages):
    report = pages / "report.html"
    assert 'id="edge-circuit"' in report.read_text()
    low, _, console = load(report, "#test-slider=0")
    high, _, console_high = load(report, "#test-slider=1000")
    assert console == console_high == [] and low is not None and high is not None, (console, console_high)
    assert low["errors"] == high["errors"] == []
    assert high["after"]["drawn"] > low["after"]["drawn"]
