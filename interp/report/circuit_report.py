"""``circuit.html``: the circuit as an interactive graph, its faithfulness curve, DLA and logit lens.

One self-contained file: plotly (for the curve and the logit lens) and a small SVG graph script are
inlined, nothing is fetched. The page embeds the top :data:`MAX_EMBEDDED_EDGES` edges by |score| as
JSON; the script selects the top ``n`` of them, prunes them the way
:func:`~interp.circuits.evaluation.prune` does, and draws the result:

* layers run bottom (``embed``) to top (``logits``); each layer's heads sit in one row, that layer's
  MLP beside them at the right (slightly above: it runs after the heads); graphs with one attention
  node ``a{l}`` per layer (``circuit.json``'s ``graph.attention_nodes == "layer"``) have no head
  columns: two columns, attention and MLP;
* an edge-count slider (log scale) redraws the graph; the curve's sizes (exact faithfulness, from the
  pipeline's faithfulness curve) are buttons, and the status line gives the exact faithfulness when
  ``n`` is one of them;
* hovering an edge shows its score, rank and exact single-edge effect (when verified); a node its
  roles (from ``--scan``), DLA and node score; clicking a node highlights its paths to the logits;
* the first view is the chosen circuit (the smallest reaching the target faithfulness), cut to at
  most :data:`DEFAULT_DRAWN_CAP` circuit edges, the rest behind the slider.

A URL fragment ``#test-slider=POS`` (POS in 0..1000) moves the slider after the first draw and
``#test-curve`` prunes at every curve size; both write JSON into ``<pre id="interp-test">`` (the
browser test reads it with ``chromium --dump-dom``). :func:`report_section` renders the same graph
as a section for ``interp report`` when a scan folder holds a ``circuit/`` written by ``interp circuit``.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.offline

MAX_EMBEDDED_EDGES = 5000
DEFAULT_DRAWN_CAP = 200

_ROLE_COLOURS = {
    "embed": "#7f7f7f", "logits": "#222222", "mlp": "#2ca02c", "head": "#1f77b4", "attention": "#1f77b4",
    "induction": "#d62728",
    "previous_token": "#ff7f0e", "duplicate_token": "#9467bd", "retrieval": "#8c564b", "sink": "#bcbd22",
    "dormant": "#c7c7c7", "long_range": "#17becf",
}
_ROLE_ORDER = ("induction", "previous_token", "duplicate_token", "retrieval", "long_range", "sink", "dormant")


def _role_of(name: str, roles: dict[str, str]) -> str:
    if name in ("embed", "logits"):
        return name
    if name.startswith("m"):
        return "mlp"
    if re.fullmatch(r"a\d+", name):  # a whole layer's attention: the scan's roles are per head
        return "attention"
    labels = [r for r in roles.get(name, "").split(";") if r]
    for preferred in _ROLE_ORDER:
        if preferred in labels:
            return preferred
    return "head"


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _feeds(down: str, kind: str, n_heads: int, n_kv_heads: int, layer_nodes: Collection[int] = ()) -> list[str]:
    """Upstream nodes whose output the input ``(down, kind)`` helps compute (the page's pruning and drawing).

    In ``layer_nodes`` (layers with one attention node ``a{l}``) every q/k/v input of layer ``l`` feeds ``a{l}``.
    """
    if kind == "logits":
        return []
    if kind in ("q", "k", "v") and int(down[1:].split(".")[0]) in layer_nodes:
        return [down.split(".")[0]]
    if kind in ("k", "v") and ".kv" in down:
        layer, group = down[1:].split(".kv")
        per = max(1, n_heads // max(1, n_kv_heads))
        return [f"a{layer}.h{h}" for h in range(int(group) * per, (int(group) + 1) * per)]
    return [down]


def _layer_nodes(granularity: str, n_layers: int, listed: list[list[Any]]) -> list[int]:
    """Layers whose attention is one node ``a{l}``: all of them for ``circuit.json``'s ``attention_nodes: "layer"``,
    else those whose ``a{l}`` appears among the edges (none in interp's own per-head graphs)."""
    if granularity == "layer":
        return list(range(n_layers))
    return sorted({int(u[1:]) for u, *_ in listed if re.fullmatch(r"a\d+", u)})


def page_data(summary: dict[str, Any], edges: pd.DataFrame | None = None, nodes: pd.DataFrame | None = None,
              verification: pd.DataFrame | None = None, *, max_edges: int = MAX_EMBEDDED_EDGES,
              cap: int = DEFAULT_DRAWN_CAP) -> dict[str, Any]:
    """What the page's script draws: the top ``max_edges`` edges by |score|, node info, the faithfulness curve.

    ``edges``: every edge (``edges.csv``); without it only the circuit's own edges from ``summary``.
    """
    shape = summary.get("graph", {})
    circuit = summary["circuit"]
    n_heads, n_kv = int(shape.get("n_heads", 1)), int(shape.get("n_kv_heads", shape.get("n_heads", 1)))
    n_layers = int(shape.get("n_layers", 0)) or 1 + max(
        [0] + [int(n[1:].split(".")[0]) for n in circuit["nodes"] if n[:1] in ("a", "m") and n[1:2].isdigit()])
    if edges is not None and len(edges):
        frame = edges.assign(_abs=edges["score"].abs()).sort_values("_abs", ascending=False, kind="stable")
        rows = frame.head(max_edges)[["upstream", "downstream", "kind", "score"]].itertuples(index=False)
        listed = [[str(u), str(d), str(k), float(s)] for u, d, k, s in rows]
    else:
        listed = [[e["upstream"], e["downstream"], e["kind"], float(e["score"])] for e in circuit["edges"]][:max_edges]
    layer_nodes = _layer_nodes(shape.get("attention_nodes", "head"), n_layers, listed)
    feeds = {f"{d}|{k}": _feeds(d, k, n_heads, n_kv, layer_nodes) for _, d, k, _ in listed}
    info: dict[str, dict[str, Any]] = {}
    roles: dict[str, str] = {}
    if nodes is not None:
        for row in nodes.to_dict(orient="records"):
            text = str(row.get("roles", "") or "")
            roles[str(row["node"])] = "" if text == "nan" else text
            info[str(row["node"])] = {"roles": roles[str(row["node"])], "dla": _finite(row.get("dla")),
                                      "eap": _finite(row.get("eap"))}
    names = {"embed", "logits"} | {u for u, *_ in listed} | {n for fed in feeds.values() for n in fed} | set(info)
    for name in names:
        info.setdefault(name, {"roles": "", "dla": None, "eap": None})["role"] = _role_of(name, roles)
    exact = {}
    if verification is not None and len(verification):
        for row in verification.to_dict(orient="records"):
            value = _finite(row.get("exact"))
            if value is not None:
                exact[f"{row['upstream']}->{row['downstream']}|{row['kind']}"] = value
    curve = [{"n": int(r["n"]), "n_edges": int(r["n_edges"]), "n_nodes": int(r.get("n_nodes", 0) or 0),
              "faithfulness": _finite(r.get("faithfulness"))} for r in summary.get("faithfulness_curve", [])]
    settings = summary.get("settings", {})
    return {
        "model": summary.get("model"), "task": summary.get("task"), "n_layers": n_layers, "n_heads": n_heads,
        "n_kv_heads": n_kv, "layer_nodes": layer_nodes, "n_graph_edges": int(summary.get("n_graph_edges", len(listed))),
        "selection": settings.get("selection", "top"), "target": settings.get("target_faithfulness"),
        "chosen_n": int(circuit.get("n_selected") or len(listed)), "chosen_edges": int(circuit.get("n_edges", 0)),
        "chosen_faithfulness": _finite(circuit.get("faithfulness")), "cap": int(cap),
        "edges": listed, "feeds": feeds, "nodes": info, "exact": exact, "curve": curve, "colours": _ROLE_COLOURS,
    }


_ASSETS = Path(__file__).resolve().parent
# Collects uncaught errors and console.error calls for the browser test (and anyone debugging the page).
_ERROR_HOOK = ("window.interpErrors=window.interpErrors||[];window.addEventListener('error',function(e){"
               "window.interpErrors.push(String(e.message))});(function(){var f=console.error;console.error=function(){"
               "window.interpErrors.push(Array.prototype.join.call(arguments,' '));return f.apply(console,arguments)}})();")


def _script(code: str) -> str:
    return "<script>\n" + code.replace("</script", "<\\/script") + "\n</script>"


def _asset(name: str) -> str:
    return (_ASSETS / name).read_text(encoding="utf-8")


def graph_html(data: dict[str, Any], root_id: str = "circuit-graph") -> str:
    """The interactive graph (controls, SVG, legend) for :func:`page_data`'s ``data``, with its CSS, script and data inline."""
    payload = json.dumps(data, allow_nan=False, separators=(",", ":")).replace("</", "<\\/")
    used = sorted({info["role"] for info in data["nodes"].values()})
    layout = ("each layer's attention (one node per layer) at the left, its MLP at the right"
              if len(data.get("layer_nodes", [])) == data["n_layers"] else "each layer's MLP at the right")
    legend = "".join(f'<span><i style="background:{data["colours"].get(r, "#1f77b4")}"></i>{html.escape(r)}</span>' for r in used)
    return f"""<style>{_asset("circuit_page.css")}</style>
<div class="ic-root" id="{root_id}">
<div class="ic-controls"><label>circuit size: top <input type="number" class="ic-n" min="1" value="1"> edges by |score|
<input type="range" class="ic-slider" min="0" max="1000" step="1" aria-label="circuit size (log scale)"></label></div>
<div class="ic-sizes" title="sizes evaluated exactly (faithfulness curve); the star marks the chosen circuit"><small>exact faithfulness at:</small> </div>
<span class="ic-status"></span><div class="ic-note"></div>
<div class="ic-legend">node colour = role: {legend} <span>edge width = |score|, blue +, red &minus;; solid q/mlp/logits, dashed k, dotted v;
layers bottom (embed) to top (logits), {layout}</span></div>
<div class="ic-svg"></div><div class="ic-tip"></div>
<script type="application/json" class="ic-data">{payload}</script>
</div>
{_script(_asset("circuit_page.js"))}
{_script(f"(function(){{var r=document.getElementById({json.dumps(root_id)});"
         "window.interpCircuit(r,JSON.parse(r.querySelector('.ic-data').textContent));})();")}"""


def _log_axis(values: list[Any]) -> dict[str, Any]:
    """A log axis over the positive ``values`` (padded by a factor 1.25 each side) with ticks at 1, 2, 5, 10, 20, ...
    written out in full (plotly's own minor log ticks label 20..50 as "2 ... 5"); every integer 1..9 per decade
    where that gives fewer than three ticks."""
    positive = [v for v in map(_finite, values) if v is not None and v > 0]
    if not positive:
        return {"type": "log"}
    lo, hi = min(positive) / 1.25, max(positive) * 1.25
    for mantissas in ((1, 2, 5), range(1, 10)):
        ticks = [m * 10**k for k in range(int(math.log10(hi)) + 1) for m in mantissas if lo <= m * 10**k <= hi]
        if len(ticks) >= 3:
            break
    return {"type": "log", "range": [math.log10(lo), math.log10(hi)], "tickvals": ticks,
            "ticktext": [f"{t:,}" for t in ticks]}


def curve_figure(summary: dict[str, Any]) -> go.Figure:
    curve = pd.DataFrame(summary["faithfulness_curve"])
    figure = go.Figure(go.Scatter(x=curve["n_edges"], y=curve["faithfulness"], mode="lines+markers",
                                  text=[f"top {n} selected" for n in curve["n"]], name="sizes"))
    grid = pd.DataFrame(summary.get("mib_curve") or [])
    if len(grid):
        figure.add_trace(go.Scatter(x=grid["n_edges"], y=grid["faithfulness"], mode="markers", name="MIB grid",
                                    marker=dict(symbol="diamond", size=9),
                                    text=[f"{100 * f:g}% of the edges: top {n} selected" for f, n in zip(grid["fraction"], grid["n"])]))
    figure.update_layout(title="Faithfulness of the top-n circuit (exact evaluation)",
                         xaxis=_log_axis(list(curve["n_edges"]) + list(grid.get("n_edges", []))),
                         xaxis_title="edges in the circuit (after pruning)", yaxis_title="faithfulness",
                         template="plotly_white", height=360)
    return figure


def _text(value: Any) -> str:
    """A table cell's text: "" for a missing value (nodes.csv read back has NaN where a node has no roles)."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _dla_table(nodes: pd.DataFrame, k: int = 20) -> str:
    top = nodes[nodes["kind"].isin(["head", "attn", "mlp", "embed"])].copy()
    top = top.reindex(top["dla"].abs().sort_values(ascending=False).index).head(k)
    rows = "".join(
        f"<tr><td>{html.escape(r.node)}</td><td>{r.dla:.4f}</td><td>{r.eap:.4f}</td>"
        f"<td>{'yes' if r.in_circuit else ''}</td><td>{html.escape(_text(getattr(r, 'roles', '')))}</td></tr>"
        for r in top.itertuples(index=False)
    )
    return ("<table><thead><tr><th>node</th><th>DLA</th><th>EAP (node)</th><th>in circuit</th><th>roles</th>"
            f"</tr></thead><tbody>{rows}</tbody></table>")


def _lens_figure(lens: pd.DataFrame) -> go.Figure:
    figure = go.Figure(go.Scatter(x=lens["layer"], y=lens["logit_diff"], mode="lines+markers"))
    figure.update_layout(title="Logit lens: logit difference read from the residual stream after each block",
                         xaxis_title="layer (-1 = embeddings)", yaxis_title="logit difference",
                         template="plotly_white", height=320)
    figure.update_xaxes(dtick=max(1, math.ceil(len(lens) / 30)))  # whole layers: no "0.5" ticks on small models
    return figure


def _div(figure: go.Figure, div_id: str) -> str:
    return figure.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config={"displaylogo": False})


def _body(summary: dict[str, Any], edges: pd.DataFrame | None, nodes: pd.DataFrame | None, lens: pd.DataFrame | None,
          verification: pd.DataFrame | None) -> str:
    s = summary
    c = s["circuit"]
    settings = s["settings"]
    faith = f"{c['faithfulness']:.3f}" if c.get("faithfulness") is not None else "n/a"
    parts = [
        f"<p>Task <b>{html.escape(str(s['task']))}</b>, {settings['n_prompts']} prompt pairs, "
        f"{html.escape(settings['method'].upper())}" + (f" ({settings['steps']} steps)" if settings.get("steps") else "")
        + f", metric {html.escape(settings['metric'])}: clean {s['clean_metric']:.3f}, corrupted {s['corrupted_metric']:.3f}. "
        f"Circuit: top {c['n_selected']} of {s['n_graph_edges']} edges by |score|, pruned to {c['n_edges']} edges and "
        f"{len(c['nodes'])} nodes; exact faithfulness {faith}.</p>",
        graph_html(page_data(s, edges, nodes, verification)),
        _div(curve_figure(s), "faithfulness-curve"),
    ]
    if s.get("cpr") is not None:
        parts.append(f"<p id=\"mib-scores\">MIB's yardstick: CPR {s['cpr']:.3f} (area under faithfulness), CMD {s['cmd']:.3f} "
                     "(area under |1 - faithfulness|) over the edge fractions "
                     + ", ".join(f"{100 * r['fraction']:g}%" for r in s["mib_curve"])
                     + " (top int(fraction x edges) by |score|, pruned; trapezoids over the fraction).</p>")
    v = s.get("verification") or {}
    if v:
        parts.append(f"<p>Exact check: the top {v['n_edges']} edges patched one at a time; Spearman correlation with "
                     f"their scores {v['spearman']:.3f} (Pearson {v['pearson']:.3f}).</p>")
    if nodes is not None:
        parts.append("<h3>Direct logit attribution (top 20 nodes by |DLA|)</h3>" + _dla_table(nodes))
    if lens is not None:
        parts.append(_div(_lens_figure(lens), "logit-lens"))
    return "\n".join(parts)


def circuit_html(result: Any) -> str:
    """The whole ``circuit.html`` document for a :class:`~interp.circuits.pipeline.CircuitResult`."""
    summary = json.loads(json.dumps(result.summary(), default=float))
    return page_html(summary, result.edges(), result.nodes(), result.lens, result.verification)


def page_html(summary: dict[str, Any], edges: pd.DataFrame | None = None, nodes: pd.DataFrame | None = None,
              lens: pd.DataFrame | None = None, verification: pd.DataFrame | None = None) -> str:
    """``circuit.html`` from a ``circuit.json`` document and the frames ``interp circuit`` writes beside it."""
    body = _body(summary, edges, nodes, lens, verification)
    title = html.escape(f"{summary['model']}: {summary['task']} circuit")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>interp circuit: {title}</title>
{_script(_ERROR_HOOK)}
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:1em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ddd;padding:2px 8px;text-align:right}}</style>
{_script(plotly.offline.get_plotlyjs())}
</head><body>
<h1>Circuit: {title}</h1>
{body}
</body></html>
"""


def find_circuit(scan_dir: str | Path) -> Path | None:
    """The folder holding ``circuit.json`` inside (or at) a scan folder, if any."""
    scan_dir = Path(scan_dir)
    for candidate in (scan_dir / "circuit", scan_dir):
        if (candidate / "circuit.json").is_file():
            return candidate
    return None


def read_circuit(folder: str | Path) -> tuple[dict[str, Any], pd.DataFrame | None, pd.DataFrame | None,
                                                pd.DataFrame | None, pd.DataFrame | None]:
    """(summary, edges, nodes, lens, verification) from a folder ``interp circuit`` wrote (missing files: None)."""
    folder = Path(folder)

    def csv(name: str, **kwargs: Any) -> pd.DataFrame | None:
        return pd.read_csv(folder / name, **kwargs) if (folder / name).is_file() else None

    summary = json.loads((folder / "circuit.json").read_text(encoding="utf-8"))
    edges = csv("edges.csv", usecols=["upstream", "downstream", "kind", "score"])
    return (summary, edges, csv("nodes.csv", keep_default_na=False, na_values=[""]), csv("logit_lens.csv"),
            csv("verification.csv"))


def report_section(scan_dir: str | Path | None) -> str:
    """An HTML ``<section>`` with the circuit graph for ``interp report`` ("" when the folder holds no circuit).

    The report must already include plotly's JavaScript (it does).
    """
    if scan_dir is None:
        return ""
    folder = find_circuit(scan_dir)
    if folder is None:
        return ""
    try:
        summary, edges, nodes, lens, verification = read_circuit(folder)
        body = _body(summary, edges, nodes, lens, verification)
    except (OSError, ValueError, KeyError) as error:
        return f'<section id="edge-circuit"><h2>Circuit</h2><p>{html.escape(str(folder))} could not be read: {html.escape(str(error))}</p></section>'
    return (f'<section id="edge-circuit"><h2>Circuit ({html.escape(str(summary["task"]))}, edge attribution)</h2>'
            f"{_script(_ERROR_HOOK)}{body}</section>")
