"""``CircuitReport``: one self-contained HTML file per scan that opens offline.

Sections: model card and settings; a layer x head heatmap per score column (plotly); the ranked head
table (click a header to sort); attention patterns of the top heads on the probe prompts (circuitsvis);
a circuit summary (previous-token heads feeding induction heads through K-composition). The plotly and
circuitsvis JavaScript bundles are inlined once each; the page loads nothing from the network.
Attention patterns and the circuit summary need the model (``model=``); without it the report says so.
"""

from __future__ import annotations

import html
import os
import tempfile
from functools import cached_property
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import plotly.offline
import torch

from interp.errors import InterpError
from interp.hooks import HookedModel
from interp.report.export import ROLE_RULES, _umask, column_meanings, head_table
from interp.scan import KEY_COLUMNS, ScanResult, load_scan

SKIP_HEATMAP = ("importance_rank",)
PATTERN_PROBES = ("natural", "repeated")


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


def write_text_atomic(path: str | os.PathLike, text: str, *, overwrite: bool = False) -> Path:
    """Write ``text`` to a temporary file beside ``path`` and move it in; never clobbers without ``overwrite``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not overwrite:
        raise InterpError(f"{path} already exists; pass --overwrite (overwrite=True) to replace it")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual file mode
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic "create only if absent"
            except FileExistsError:
                raise InterpError(f"{path} already exists; pass --overwrite (overwrite=True) to replace it") from None
            except OSError:  # filesystems without hard links
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class CircuitReport:
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
        """The head-importance table (:func:`interp.report.export.head_table`)."""
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

    def attention_patterns(self) -> dict[str, tuple[list[str], torch.Tensor, list[tuple[int, int]]]]:
        """Per probe: ``(token strings, patterns [head, query, key], heads)`` of :meth:`top_heads`."""
        from interp.probes import default_probes

        if self.model is None:
            return {}
        seed = int(self.result.metadata.get("settings", {}).get("seed", 0))
        length = self.pattern_tokens
        if self.model.cfg.n_ctx is not None:
            length = min(length, self.model.cfg.n_ctx)
        probes = default_probes(self.model, context_length=length, batch=1, seed=seed)
        heads = self.top_heads()
        names = sorted({f"blocks.{layer}.attn.hook_pattern" for layer, _ in heads})
        out = {}
        for name in PATTERN_PROBES:
            if name not in probes:
                continue
            tokens = probes[name].tokens[:, :length]
            with torch.no_grad():
                _, cache = self.model.run_with_cache(tokens, names=names)
            patterns = torch.stack([cache[f"blocks.{l}.attn.hook_pattern"][0, h] for l, h in heads]).float().cpu()
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
            grid = self.table.pivot(index="layer", columns="head", values=column).reindex(
                index=range(n_layers), columns=range(n_heads)
            )
            figure = go.Figure(
                go.Heatmap(
                    z=grid.to_numpy(dtype=float), x=list(grid.columns), y=list(grid.index), colorscale="Viridis",
                    hovertemplate="layer %{y} head %{x}<br>" + column + " = %{z:.3f}<extra></extra>",
                )
            )
            figure.update_layout(
                title=dict(text=column, font=dict(size=14)), width=330, height=420, margin=dict(l=40, r=10, t=40, b=35),
                xaxis_title="head", yaxis_title="layer", template="plotly_white",
            )
            div = figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"heatmap-{column}",
                                 config={"displaylogo": False, "displayModeBar": False})
            parts.append(f'<figure class="heatmap" data-column="{column}" title="{html.escape(meanings.get(column, ""))}">{div}</figure>')
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
                    "<code>CircuitReport(scan, model=interp.load(...))</code> or <code>interp report DIR --model MODEL</code> "
                    "to include the attention patterns of the top heads.</p></section>")
        from circuitsvis.utils.convert_props import convert_props

        parts = []
        for name, (tokens, patterns, heads) in self.attention_patterns().items():
            props = convert_props({
                "attention": patterns, "tokens": tokens,
                "attentionHeadNames": [f"L{l}H{h}" for l, h in heads], "maskUpperTri": True,
            })
            element, props = f"attention-{name}", props.replace("</", "<\\/")
            parts.append(
                f'<h3>{html.escape(name)} probe (first {len(tokens)} tokens)</h3><div class="attention-view" id="{element}"></div>'
                f'<script>CircuitsVis.render("{element}", CircuitsVis.AttentionHeads, {props});</script>'
            )
        heads = ", ".join(f"L{l}H{h}" for l, h in self.top_heads())
        return f'<section id="attention"><h2>Attention patterns of the top heads ({heads})</h2>{"".join(parts)}</section>'

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
        from interp.circuits.report import report_section

        name = html.escape(str(self.result.metadata.get("model", {}).get("name", "model")))
        scripts = _inline_script(plotly.offline.get_plotlyjs())
        if self.model is not None:
            scripts += _inline_script(_circuitsvis_bundle())
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>interp circuit report: {name}</title>
<style>{_CSS}</style>
{scripts}
<script>{_SORT_JS}</script>
</head><body>
<h1>Circuit report: {name}</h1>
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


_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 12px; }
th, td { padding: 2px 8px; border-bottom: 1px solid #eee; text-align: left; }
table.card th { color: #555; font-weight: normal; }
table.sortable th { cursor: pointer; background: #f6f6f6; position: sticky; top: 0; }
.grid { display: flex; flex-wrap: wrap; gap: 4px; } figure.heatmap { margin: 0; }
.scroll { max-height: 420px; overflow: auto; } tr.composes td { background: #e8f5e9; }
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
