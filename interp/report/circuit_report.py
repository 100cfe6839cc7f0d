"""``circuit.html``: the circuit as an interactive plotly graph, its faithfulness curve, DLA and logit lens.

One self-contained file (plotly inlined, nothing fetched). Layers run bottom (embeddings) to top
(logits); each head sits in its layer's row, each MLP just above; node colour = role (from a scan's
``roles`` when given, else the node kind); edge width = |score|, colour = sign, dash = q/k/v kind.
:func:`report_section` renders the same graph as a section for ``interp report`` when a scan folder
holds a ``circuit/`` (or ``circuit.json``) written by ``interp circuit``.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.offline

_ROLE_COLOURS = {
    "embed": "#7f7f7f", "logits": "#222222", "mlp": "#2ca02c", "head": "#1f77b4", "induction": "#d62728",
    "previous_token": "#ff7f0e", "duplicate_token": "#9467bd", "retrieval": "#8c564b", "sink": "#bcbd22",
    "dormant": "#c7c7c7", "long_range": "#17becf",
}
_KIND_DASH = {"q": "solid", "k": "dash", "v": "dot", "mlp": "solid", "logits": "solid"}


def _node_xy(nodes: list[str], n_layers: int) -> dict[str, tuple[float, float]]:
    by_row: dict[float, list[str]] = {}
    for name in nodes:
        if name == "embed":
            row = -1.0
        elif name == "logits":
            row = float(n_layers)
        elif name.startswith("m"):
            row = int(name[1:]) + 0.5
        else:
            row = float(int(name[1:].split(".")[0]))
        by_row.setdefault(row, []).append(name)
    xy = {}
    for row, names in by_row.items():
        names.sort(key=lambda s: int(s.split(".h")[1]) if ".h" in s else 0)
        for i, name in enumerate(names):
            xy[name] = (i - (len(names) - 1) / 2, row)
    return xy


def _role_of(name: str, roles: dict[str, str]) -> str:
    if name in ("embed", "logits"):
        return name
    if name.startswith("m"):
        return "mlp"
    labels = [r for r in roles.get(name, "").split(";") if r]
    for preferred in ("induction", "previous_token", "duplicate_token", "retrieval", "long_range", "sink", "dormant"):
        if preferred in labels:
            return preferred
    return "head"


def _drawn_edges(summary: dict[str, Any], edges: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    """(from, to, edge): a k/v edge into KV head g is drawn to each circuit head that reads g."""
    shape = summary.get("graph", {})
    per = max(1, int(shape.get("n_heads", 1)) // max(1, int(shape.get("n_kv_heads", 1))))
    heads = set(summary["circuit"]["nodes"])
    out = []
    for e in edges:
        target = e["downstream"]
        if ".kv" in target:
            layer, group = target[1:].split(".kv")
            readers = [f"a{layer}.h{h}" for h in range(int(group) * per, (int(group) + 1) * per)]
            readers = [r for r in readers if r in heads] or [target]
            out += [(e["upstream"], r, e) for r in readers]
        else:
            out.append((e["upstream"], target, e))
    return out


def graph_figure(summary: dict[str, Any], nodes: pd.DataFrame | None = None, *, max_edges: int = 300) -> go.Figure:
    """The circuit in ``summary`` (a ``circuit.json`` document) as a plotly figure."""
    circuit = summary["circuit"]
    drawn = _drawn_edges(summary, circuit["edges"][:max_edges])
    n_layers = int(summary.get("graph", {}).get("n_layers", 0)) or int(
        max([0] + [int(n[1:].split(".")[0]) for n in circuit["nodes"] if n[0] in "am"]) + 1)
    names = sorted({a for a, _, _ in drawn} | {b for _, b, _ in drawn} | {"embed", "logits"})
    xy = _node_xy(names, n_layers)
    roles: dict[str, str] = {}
    info: dict[str, str] = {}
    if nodes is not None:
        for row in nodes.itertuples(index=False):
            roles[row.node] = str(getattr(row, "roles", "") or "")
            if roles[row.node] == "nan":
                roles[row.node] = ""
            dla = getattr(row, "dla", float("nan"))
            info[row.node] = f"DLA {dla:.3f}" if pd.notna(dla) else ""
    top = max([abs(e["score"]) for _, _, e in drawn] or [1.0]) or 1.0
    figure = go.Figure()
    for a_name, b_name, e in drawn:
        a, b = xy[a_name], xy[b_name]
        figure.add_trace(go.Scatter(
            x=[a[0], b[0]], y=[a[1], b[1]], mode="lines", hoverinfo="text",
            text=f"{e['upstream']} -> {e['downstream']} ({e['kind']}): {e['score']:.4f}",
            line=dict(width=0.5 + 6 * abs(e["score"]) / top, color="#1f77b4" if e["score"] >= 0 else "#d62728",
                      dash=_KIND_DASH.get(e["kind"], "solid")),
            opacity=0.7, showlegend=False,
        ))
    by_role: dict[str, list[str]] = {}
    for name in names:
        by_role.setdefault(_role_of(name, roles), []).append(name)
    for role, members in by_role.items():
        figure.add_trace(go.Scatter(
            x=[xy[m][0] for m in members], y=[xy[m][1] for m in members], mode="markers+text", name=role,
            text=members, textposition="top center",
            hovertext=[f"{m} {roles.get(m, '')} {info.get(m, '')}" for m in members], hoverinfo="text",
            marker=dict(size=14, color=_ROLE_COLOURS.get(role, "#1f77b4"), line=dict(width=1, color="#fff")),
        ))
    faith = circuit.get("faithfulness")
    figure.update_layout(
        title=f"Circuit: {circuit['n_edges']} edges" + (f", faithfulness {faith:.3f}" if faith is not None else "")
        + " (edge width = |score|; blue +, red -; solid q/mlp/logits, dashed k, dotted v)",
        template="plotly_white", height=max(420, 28 * (n_layers + 2)),
        yaxis=dict(title="layer (embeddings at the bottom, logits on top)", zeroline=False),
        xaxis=dict(showticklabels=False, zeroline=False, showgrid=False), legend_title="node colour = role",
        margin=dict(l=60, r=20, t=50, b=30),
    )
    return figure


def curve_figure(summary: dict[str, Any]) -> go.Figure:
    curve = pd.DataFrame(summary["faithfulness_curve"])
    figure = go.Figure(go.Scatter(x=curve["n_edges"], y=curve["faithfulness"], mode="lines+markers",
                                  text=[f"top {n} selected" for n in curve["n"]], name="sizes"))
    grid = pd.DataFrame(summary.get("mib_curve") or [])
    if len(grid):
        figure.add_trace(go.Scatter(x=grid["n_edges"], y=grid["faithfulness"], mode="markers", name="MIB grid",
                                    marker=dict(symbol="diamond", size=9),
                                    text=[f"{100 * f:g}% of the edges: top {n} selected" for f, n in zip(grid["fraction"], grid["n"])]))
    figure.update_layout(title="Faithfulness of the top-n circuit (exact evaluation)", xaxis_type="log",
                         xaxis_title="edges in the circuit (after pruning)", yaxis_title="faithfulness",
                         template="plotly_white", height=360)
    return figure


def _dla_table(nodes: pd.DataFrame, k: int = 20) -> str:
    top = nodes[nodes["kind"].isin(["head", "mlp", "embed"])].copy()
    top = top.reindex(top["dla"].abs().sort_values(ascending=False).index).head(k)
    rows = "".join(
        f"<tr><td>{html.escape(r.node)}</td><td>{r.dla:.4f}</td><td>{r.eap:.4f}</td>"
        f"<td>{'yes' if r.in_circuit else ''}</td><td>{html.escape(str(getattr(r, 'roles', '') or ''))}</td></tr>"
        for r in top.itertuples(index=False)
    )
    return ("<table><thead><tr><th>node</th><th>DLA</th><th>EAP (node)</th><th>in circuit</th><th>roles</th>"
            f"</tr></thead><tbody>{rows}</tbody></table>")


def _lens_figure(lens: pd.DataFrame) -> go.Figure:
    figure = go.Figure(go.Scatter(x=lens["layer"], y=lens["logit_diff"], mode="lines+markers"))
    figure.update_layout(title="Logit lens: logit difference read from the residual stream after each block",
                         xaxis_title="layer (-1 = embeddings)", yaxis_title="logit difference",
                         template="plotly_white", height=320)
    return figure


def _div(figure: go.Figure, div_id: str) -> str:
    return figure.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config={"displaylogo": False})


def _script(code: str) -> str:
    return "<script>\n" + code.replace("</script", "<\\/script") + "\n</script>"


def _body(summary: dict[str, Any], nodes: pd.DataFrame | None, lens: pd.DataFrame | None, verification: pd.DataFrame | None) -> str:
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
        _div(graph_figure(s, nodes), "circuit-graph"),
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
    body = _body(summary, result.nodes(), result.lens, result.verification)
    title = html.escape(f"{summary['model']}: {summary['task']} circuit")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>interp circuit: {title}</title>
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
        summary = json.loads((folder / "circuit.json").read_text(encoding="utf-8"))
        nodes = pd.read_csv(folder / "nodes.csv", keep_default_na=False, na_values=[""]) if (folder / "nodes.csv").is_file() else None
        lens = pd.read_csv(folder / "logit_lens.csv") if (folder / "logit_lens.csv").is_file() else None
        body = _body(summary, nodes, lens, None)
    except (OSError, ValueError, KeyError) as error:
        return f'<section id="edge-circuit"><h2>Circuit</h2><p>{html.escape(str(folder))} could not be read: {html.escape(str(error))}</p></section>'
    return f'<section id="edge-circuit"><h2>Circuit ({html.escape(str(summary["task"]))}, edge attribution)</h2>{body}</section>'
