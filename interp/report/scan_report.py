"""``ScanReport``: one self-contained HTML file per scan (``report.html``) that opens offline.

Sections: model card and settings; a layer x head heatmap per score column (plotly); the ranked head
table (click a header to sort); attention patterns of the top heads on the probe prompts (circuitsvis);
a circuit summary (previous-token heads feeding induction heads through K-composition). The plotly and
circuitsvis JavaScript bundles are inlined once each; the page loads nothing from the network.
Attention patterns and the circuit summary need the model (``model=``); without it the report says so.
"""

from __future__ import annotations

import html
import os
import re
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.offline
import torch

from interp.errors import InterpError
from interp.hooks import HookedModel, hook_name
from interp.output import write_text_atomic
from interp.scanning.files import load_scan
from interp.scanning.result import KEY_COLUMNS, ScanResult
from interp.scanning.table import ROLE_RULES, column_meanings, head_table

SKIP_HEATMAP = ("importance_rank",)
PATTERN_PROBES = ("natural", "repeated")
# The summary's roles: (role label, the score it is ranked by, the probe its small pattern is drawn on).
ROLE_SUMMARY = (
    ("sink", "sink_mass", "natural"),
    ("previous_token", "previous_token_score", "repeated"),
    ("induction", "induction_score", "repeated"),
    ("retrieval", "retrieval_score", "natural"),
    ("long_range", "streaming_score_kv", "natural"),
)
ROLE_NAMES = {"sink": "sink", "previous_token": "previous-token", "induction": "induction", "retrieval": "retrieval",
              "long_range": "long-range"}
BOOL_COLORS = ("#d9d9d9", "#d62728")  # False, True


def _circuitsvis_bundle() -> str:
    """circuitsvis' own browser build (``dist/cdn/iife.js``, defines the global ``CircuitsVis``)."""
    import circuitsvis

    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    if not path.exists():
        raise InterpError(f"circuitsvis' JavaScript bundle is missing ({path}); reinstall circuitsvis")
    return path.read_text(encoding="utf-8")


def _inline_script(code: str) -> str:
    # A literal "</script" inside inline code would end the element early.
    return "<script>\n" + code.replace("</script", "<\\/script") + "\n</script>"


class ScanReport:
    """The HTML circuit report of a scan.

    Args:
        source: a :class:`ScanResult` or a scan folder (read with :func:`interp.load_scan`).
        model: the scanned model, for attention patterns and composition scores (None = tables only).
        top_k: heads shown in the attention views (by ``importance_rank``).
        pattern_tokens: probe length for the attention views (both probes regenerated with the scan's
            seed at this length, so the repeated probe shows its repeat).
        min_ratio: K-composition / random baseline at which a previous-token -> induction pair is
            reported as composing.
    """

    def __init__(
        self,
        source: ScanResult | str | os.PathLike,
        model: HookedModel | None = None,
        *,
        top_k: int = 6,
        pattern_tokens: int = 48,
        min_ratio: float = 2.0,
    ) -> None:
        self.result = source if isinstance(source, ScanResult) else load_scan(source)
        self.scan_dir = None if isinstance(source, ScanResult) else Path(source)  # an `interp circuit` there is embedded
        self.model = model
        self.top_k = top_k
        self.pattern_tokens = pattern_tokens
        self.min_ratio = min_ratio
        if model is not None and "model" in self.result.metadata:
            scanned = self.result.metadata["model"]
            for key in ("n_layers", "n_heads", "d_model"):
                if scanned.get(key) is not None and scanned[key] != getattr(model.cfg, key):
                    raise InterpError(
                        f"model {model.cfg.name} does not match the scan ({key} {getattr(model.cfg, key)} vs {scanned[key]})"
                    )

    # ------------------------------------------------------------------ data
    @cached_property
    def table(self) -> pd.DataFrame:
        """The head-importance table (:func:`interp.scanning.files.head_table`)."""
        return head_table(self.result)

    @property
    def score_columns(self) -> list[str]:
        """Columns that get a heatmap: the scan's score columns, then ``importance``."""
        derived = {"roles", "importance_rank", *KEY_COLUMNS}
        scores = [c for c in self.table.columns if c not in derived and pd.api.types.is_numeric_dtype(self.table[c])]
        return [c for c in scores if c not in SKIP_HEATMAP]

    def top_heads(self) -> list[tuple[int, int]]:
        top = self.table.sort_values("importance_rank").head(self.top_k)
        return [(int(l), int(h)) for l, h in zip(top["layer"], top["head"])]

    def not_computed(self, column: str) -> str | None:
        """Why ``column`` has no values (``"not computed (--flag)"``), or None when it has some."""
        if column in self.table and self.table[column].notna().any():
            return None
        meaning = column_meanings(self.result).get(column, "")
        flag = re.search(r"NaN unless (--[a-z0-9-]+)", meaning)
        return f"not computed ({flag.group(1)})" if flag else "not computed"

    def role_heads(self, per_role: int = 3) -> dict[str, pd.DataFrame]:
        """Per summary role: its heads (label from :data:`ROLE_RULES`) with the highest score, at most
        ``per_role``; empty when no head carries the role. Roles whose score the scan lacks are left out."""
        roles = self.table["roles"].str.split(";")
        out = {}
        for role, column, _ in ROLE_SUMMARY:
            if column not in self.table:
                continue
            labelled = self.table[[role in r for r in roles]]
            out[role] = labelled.sort_values([column, "importance_rank"], ascending=[False, True]).head(per_role)
        return out

    def pattern_heads(self) -> list[tuple[tuple[int, int], str]]:
        """Heads the attention section shows: the top head of each role, then the most important heads."""
        chosen: dict[tuple[int, int], str] = {}
        for role, heads in self.role_heads(1).items():
            for l, h in zip(heads["layer"], heads["head"]):
                key = (int(l), int(h))
                chosen[key] = (chosen[key] + ", " if key in chosen else "") + ROLE_NAMES[role]
        for key in self.top_heads():
            if len(chosen) >= self.top_k:
                break
            chosen.setdefault(key, f"importance #{self._rank(key)}")
        return list(chosen.items())

    def _rank(self, key: tuple[int, int]) -> int:
        row = self.table[(self.table["layer"] == key[0]) & (self.table["head"] == key[1])]
        return int(row["importance_rank"].iloc[0])

    @cached_property
    def _patterns(self) -> dict[str, tuple[list[str], torch.Tensor, list[tuple[int, int]]]]:
        heads = list(dict.fromkeys([key for key, _ in self.pattern_heads()]
                                   + [(int(l), int(h)) for t in self.role_heads().values() for l, h in zip(t["layer"], t["head"])]))
        return self.attention_patterns(heads)

    def attention_patterns(
        self, heads: list[tuple[int, int]] | None = None
    ) -> dict[str, tuple[list[str], torch.Tensor, list[tuple[int, int]]]]:
        """Per probe: ``(token strings, patterns [head, query, key], heads)`` of ``heads`` (default :meth:`top_heads`)."""
        from interp.analyses.probes import default_probes

        if self.model is None:
            return {}
        seed = int(self.result.metadata.get("settings", {}).get("seed", 0))
        length = self.pattern_tokens
        if self.model.cfg.n_ctx is not None:
            length = min(length, self.model.cfg.n_ctx)
        probes = default_probes(self.model, context_length=length, batch=1, seed=seed)
        heads = self.top_heads() if heads is None else list(heads)
        names = sorted({hook_name(layer, "attn.hook_pattern") for layer, _ in heads})
        out = {}
        for name in PATTERN_PROBES:
            if name not in probes:
                continue
            tokens = probes[name].tokens[:, :length]
            with torch.no_grad():
                _, cache = self.model.run_with_cache(tokens, names=names, logits_to_keep=1)
            patterns = torch.stack([cache[hook_name(l, "attn.hook_pattern")][0, h] for l, h in heads]).float().cpu()
            strings = [self.model.tokenizer.decode([t]) if self.model.tokenizer else str(t) for t in tokens[0].tolist()]
            out[name] = (strings, patterns, heads)
        return out

    def circuit(self) -> pd.DataFrame:
        """K-composition of every previous-token head into every later induction head, by ratio."""
        from interp.analyses.composition import composition_scores

        columns = ["layer_from", "head_from", "layer_to", "head_to", "kind", "score", "ratio"]
        if self.model is None:
            return pd.DataFrame(columns=columns)
        roles = self.table["roles"].str.split(";")
        has = lambda role: [(int(l), int(h)) for l, h, r in zip(self.table["layer"], self.table["head"], roles) if role in r]  # noqa: E731
        sources, targets = has("previous_token"), has("induction")
        if not sources or not targets:
            return pd.DataFrame(columns=columns)
        scores = composition_scores(self.model, kinds=["k"], sources=sources, targets=targets)
        return scores.sort_values("ratio", ascending=False).reset_index(drop=True)

    # ------------------------------------------------------------------ html pieces
    def _card(self) -> str:
        meta = self.result.metadata
        rows = [("model", meta.get("model", {}).get("name", "?"))]
        rows += [(k, v) for k, v in meta.get("model", {}).items() if k != "name"]
        rows += [(f"settings.{k}", v) for k, v in meta.get("settings", {}).items()]
        rows += [("analyses", ", ".join(meta.get("analyses", []))), ("schema_version", meta.get("schema_version"))]
        rows += [("importance", self.table.attrs.get("importance_basis", "")), ("created", meta.get("created", ""))]
        rows += [(f"versions.{k}", v) for k, v in meta.get("versions", {}).items()]
        body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
        rules = "".join(
            f"<li><b>{r.role}</b>: <code>{r.column} &gt; {r.threshold}</code>"
            f"{' (only without an active role)' if r.only_if_inactive else ''}</li>"
            for r in ROLE_RULES if r.column in self.table
        )
        return f'<section id="card"><h2>Model and settings</h2><table class="card">{body}</table><p>Role labels:</p><ul>{rules}</ul></section>'

    def _heatmaps(self) -> str:
        meanings = column_meanings(self.result)
        cfg = self.result.metadata.get("model", {})
        n_layers = int(cfg.get("n_layers") or self.table["layer"].max() + 1)
        n_heads = int(cfg.get("n_heads") or self.table["head"].max() + 1)
        parts = []
        for column in self.score_columns:
            meaning = html.escape(meanings.get(column, ""))
            missing = self.not_computed(column)
            if missing:
                parts.append(
                    f'<figure class="heatmap missing" data-column="{column}" title="{meaning}"><div class="missing-box">'
                    f"<b>{html.escape(column)}</b><span>{html.escape(missing)}</span></div>"
                    f"<figcaption>{meaning}</figcaption></figure>"
                )
                continue
            grid = self.table.pivot(index="layer", columns="head", values=column).reindex(
                index=range(n_layers), columns=range(n_heads)
            )
            z = grid.to_numpy(dtype=float)
            if pd.api.types.is_bool_dtype(self.table[column]):
                # Two categories, two colours: a continuous 0-1 bar would suggest values in between.
                heatmap = go.Heatmap(
                    z=z, x=list(grid.columns), y=list(grid.index), zmin=0, zmax=1, xgap=1, ygap=1,
                    colorscale=[[0, BOOL_COLORS[0]], [0.5, BOOL_COLORS[0]], [0.5, BOOL_COLORS[1]], [1, BOOL_COLORS[1]]],
                    colorbar=dict(tickvals=[0.25, 0.75], ticktext=["False", "True"], len=0.5, thickness=12),
                    customdata=grid.map(lambda v: "True" if v == 1 else "False" if v == 0 else "").to_numpy(),
                    hovertemplate="layer %{y} head %{x}<br>" + column + " = %{customdata}<extra></extra>",
                )
                count = int(np.nansum(z))
                label = f"{column} ({count} of {int(np.isfinite(z).sum())} heads True)"
            else:
                heatmap = go.Heatmap(
                    z=z, x=list(grid.columns), y=list(grid.index), colorscale="Viridis",
                    hovertemplate="layer %{y} head %{x}<br>" + column + " = %{z:.3f}<extra></extra>",
                )
                label = column
            figure = go.Figure(heatmap)
            figure.update_layout(
                title=dict(text=label, font=dict(size=13)), width=330, height=420, margin=dict(l=40, r=10, t=40, b=35),
                xaxis_title="head", yaxis_title="layer", template="plotly_white",
            )
            div = figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"heatmap-{column}",
                                 config={"displaylogo": False, "displayModeBar": False})
            parts.append(f'<figure class="heatmap" data-column="{column}" title="{meaning}">{div}<figcaption>{meaning}</figcaption></figure>')
        return f'<section id="heatmaps"><h2>Scores per head (layer x head)</h2><div class="grid">{"".join(parts)}</div></section>'

    def _table(self) -> str:
        table = self.table.sort_values("importance_rank")
        columns = ["importance_rank", "layer", "head", "roles", "importance"]
        columns += [c for c in self.score_columns if c not in columns]
        head = "".join(f'<th onclick="sortTable(this)">{html.escape(c)}</th>' for c in columns)
        body = []
        for _, row in table[columns].iterrows():
            cells = []
            for c in columns:
                value = row[c]
                text = f"{value:.4f}" if isinstance(value, float) else str(value)
                cells.append(f"<td>{html.escape(text)}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        return (
            '<section id="ranking"><h2>Heads ranked by importance</h2><p>Click a column header to sort.</p>'
            f'<div class="scroll"><table id="head-table" class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div></section>'
        )

    def _attention(self) -> str:
        if self.model is None:
            return ('<section id="attention"><h2>Attention patterns</h2><p>No model was given: rebuild with '
                    "<code>ScanReport(scan, model=interp.load(...))</code> or <code>interp report DIR --model MODEL</code> "
                    "to include the attention patterns of the top heads.</p></section>")
        from circuitsvis.utils.convert_props import convert_props

        labels = dict(self.pattern_heads())
        parts = []
        for name, (tokens, patterns, heads) in self._patterns.items():
            index = [heads.index(key) for key in labels]
            props = convert_props({
                "attention": patterns[index], "tokens": tokens,
                "attentionHeadNames": [f"L{l}H{h} {labels[(l, h)]}" for l, h in labels], "maskUpperTri": True,
            })
            element, props = f"attention-{name}", props.replace("</", "<\\/")
            parts.append(
                f'<h3>{html.escape(name)} probe (first {len(tokens)} tokens)</h3><div class="attention-view" id="{element}"></div>'
                f'<script>CircuitsVis.render("{element}", CircuitsVis.AttentionHeads, {props});</script>'
            )
        heads = ", ".join(f"L{l}H{h} ({role})" for (l, h), role in labels.items())
        return (f'<section id="attention"><h2>Attention patterns: the top head of each role, then the most important</h2>'
                f'<p>{html.escape(heads)}</p>{"".join(parts)}</section>')

    def _roles(self) -> str:
        """The opening summary: per role, its top heads with score, importance and a small pattern."""
        meanings = column_meanings(self.result)
        basis = self.table.attrs.get("importance_basis", "")
        patterns = self._patterns
        cards = []
        for role, column, probe in ROLE_SUMMARY:
            if column not in self.table:
                continue
            heads = self.role_heads().get(role)
            rule = next((r for r in ROLE_RULES if r.role == role), None)
            missing = self.not_computed(column)
            head = (f'<div class="role-card" data-role="{role}"><h3>{ROLE_NAMES[role]} heads</h3>'
                    f'<p class="rule" title="{html.escape(meanings.get(column, ""))}">{html.escape(column)}'
                    f"{f' &gt; {rule.threshold:g}' if rule else ''}</p>")
            if missing:
                cards.append(head + f'<p class="none">{html.escape(missing)}</p></div>')
                continue
            if heads is None or heads.empty:
                best = self.table.sort_values(column, ascending=False).iloc[0]
                cards.append(head + f'<p class="none">no head passes; the highest is L{int(best.layer)}H{int(best["head"])} '
                             f"({best[column]:.3f})</p></div>")
                continue
            rows = []
            for _, r in heads.iterrows():
                key = (int(r["layer"]), int(r["head"]))
                svg = ""
                if probe in patterns and key in patterns[probe][2]:
                    svg = _pattern_svg(patterns[probe][1][patterns[probe][2].index(key)], title=f"L{key[0]}H{key[1]} on the {probe} probe")
                rows.append(
                    f'<div class="role-head">{svg}<div><b>L{key[0]}H{key[1]}</b><br>{column}: '
                    f'{r[column]:.3f}<br><span title="{html.escape(basis)}">importance {r["importance"]:.3g} '
                    f'(#{int(r["importance_rank"])})</span></div></div>'
                )
            cards.append(head + "".join(rows) + "</div>")
        note = "" if self.model is not None else "<p>Patterns need the model (<code>interp report DIR --model MODEL</code>).</p>"
        return (
            '<section id="roles"><h2>What the notable heads do</h2><p>The top heads of each role (label rules under '
            f'"Model and settings"), with their score, their importance ({html.escape(basis)}) and their attention '
            f'pattern on the first {self.pattern_tokens} tokens of the probe the score is measured on.</p>{note}'
            f'<div class="roles">{"".join(cards)}</div></section>'
        )

    def _summary(self) -> str:
        title = '<section id="circuit"><h2>Circuit summary: previous-token -> induction (K-composition)</h2>'
        if self.model is None:
            return title + "<p>No model was given: composition scores need the weights.</p></section>"
        circuit = self.circuit()
        if circuit.empty:
            return title + "<p>No previous-token head precedes an induction head in this scan.</p></section>"
        baseline = circuit.attrs.get("baseline", {}).get("k", float("nan"))
        rows = []
        for _, r in circuit.iterrows():
            composes = r["ratio"] >= self.min_ratio
            rows.append(
                f'<tr class="{"composes" if composes else ""}"><td>L{r.layer_from}H{r.head_from}</td>'
                f"<td>L{r.layer_to}H{r.head_to}</td><td>{r.score:.4f}</td><td>{r.ratio:.2f}</td>"
                f"<td>{'yes' if composes else ''}</td></tr>"
            )
        n = int((circuit["ratio"] >= self.min_ratio).sum())
        return (
            title + f"<p>{n} of {len(circuit)} pairs compose (K-composition at least {self.min_ratio:g} x the random "
            f"baseline {baseline:.4f}; Elhage et al. 2021).</p><div class=\"scroll\"><table id=\"circuit-table\">"
            "<thead><tr><th>previous-token head</th><th>induction head</th><th>K-composition</th><th>ratio</th>"
            f"<th>composes</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div></section>"
        )

    def html(self) -> str:
        """The whole report as one HTML document."""
        from interp.report.circuit_report import report_section

        name = html.escape(str(self.result.metadata.get("model", {}).get("name", "model")))
        scripts = _inline_script(plotly.offline.get_plotlyjs())
        if self.model is not None:
            scripts += _inline_script(_circuitsvis_bundle())
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>interp scan report: {name}</title>
<style>{_CSS}</style>
{scripts}
<script>{_SORT_JS}</script>
</head><body>
<h1>Scan report: {name}</h1>
{self._roles()}
{self._card()}
{self._heatmaps()}
{self._summary()}
{report_section(self.scan_dir)}
{self._table()}
{self._attention()}
</body></html>
"""

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the report to ``path`` atomically (temp file, then rename); refuses to replace an
        existing file unless ``overwrite``."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise InterpError(f"{path} already exists; pass --overwrite (overwrite=True) to replace it")
        return write_text_atomic(path, self.html(), overwrite=overwrite)


def _pattern_svg(pattern: torch.Tensor, *, title: str, size: int = 96) -> str:
    """A small inline SVG of one head's attention pattern ``[query, key]`` (darker = more attention)."""
    n = pattern.shape[0]
    cell = size / n
    rects = []
    for q, k in (pattern > 0.03).nonzero().tolist():
        rects.append(f'<rect x="{k * cell:.1f}" y="{q * cell:.1f}" width="{cell:.1f}" height="{cell:.1f}" '
                     f'fill-opacity="{min(1.0, float(pattern[q, k])):.2f}"/>')
    return (f'<svg class="pattern" width="{size}" height="{size}" viewBox="0 0 {size} {size}" role="img">'
            f"<title>{html.escape(title)}: query down, key across</title>"
            f'<rect width="{size}" height="{size}" fill="#fafafa" stroke="#ccc"/><g fill="#1f3b8c">{"".join(rects)}</g></svg>')


_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 12px; }
th, td { padding: 2px 8px; border-bottom: 1px solid #eee; text-align: left; }
table.card th { color: #555; font-weight: normal; }
table.sortable th { cursor: pointer; background: #f6f6f6; position: sticky; top: 0; }
.grid { display: flex; flex-wrap: wrap; gap: 4px; } figure.heatmap { margin: 0; }
.scroll { max-height: 420px; overflow: auto; } tr.composes td { background: #e8f5e9; }
figure.heatmap figcaption { width: 330px; box-sizing: border-box; font-size: 11px; color: #555; padding: 0 6px 8px; }
.missing-box { width: 330px; height: 420px; display: flex; flex-direction: column; align-items: center;
  justify-content: center; gap: 8px; background: #f6f6f6; color: #777; font-size: 13px; }
.roles { display: flex; flex-wrap: wrap; gap: 12px; }
.role-card { border: 1px solid #ddd; border-radius: 6px; padding: 6px 10px; min-width: 220px; }
.role-card h3 { margin: 2px 0; font-size: 15px; } .role-card .rule { margin: 0 0 6px; color: #666; font-size: 11px; }
.role-head { display: flex; gap: 8px; align-items: center; margin: 4px 0; font-size: 12px; }
.role-card .none { color: #777; font-size: 12px; }
"""

_SORT_JS = """
function sortTable(th) {
  const table = th.closest('table'), body = table.tBodies[0], index = th.cellIndex;
  const ascending = th.dataset.order !== 'asc';
  th.dataset.order = ascending ? 'asc' : 'desc';
  const key = (row) => { const t = row.cells[index].textContent, n = parseFloat(t); return isNaN(n) ? t : n; };
  const rows = Array.from(body.rows).sort((a, b) => {
    const x = key(a), y = key(b);
    return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
  });
  rows.forEach((row) => body.appendChild(row));
}
"""


# The scan report's name in interp <= 0.1 (it never was a circuit report; that is interp.report.circuit_report).
CircuitReport = ScanReport
