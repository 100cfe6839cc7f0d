"""Activation patching: which activations carry the difference between a clean and a corrupted prompt.

Run the corrupted prompt with one clean activation patched in ("denoise", the default) or the clean
prompt with one corrupted activation patched in ("noise"), and measure a metric on the logits
(default: logit difference between a correct and a wrong answer at the last position). Reported as

    normalized = (patched - corrupted) / (clean - corrupted)      (1 = clean behaviour, 0 = corrupted)

in both directions. The sweep is batched: the base input is replicated along the batch axis, one
group of rows per cell (a group holds every prompt), and one hook per layer writes each cell's
source slice into its own rows. The base run is recorded once and each forward starts at its cells'
first patched layer and position (``reuse="auto"``, :mod:`interp.hooks.replay`): a patch cannot change
earlier layers, nor, under causal attention, earlier positions (Meng et al. 2022; Wang et al. 2022;
Heimersheim & Nanda 2024).

Sites (``site`` column; ``head`` is the query head, or the key/value head for ``head_k``/``head_v``):

=================  ==================  ======================================================
site               hook                one cell per
=================  ==================  ======================================================
``resid_pre``      ``hook_resid_pre``  (layer, position)
``attn_out``       ``hook_attn_out``   (layer, position)
``mlp_out``        ``hook_mlp_out``    (layer, position)
``head_out``       ``attn.hook_z``     (layer, head), all positions
``head_out_pos``   ``attn.hook_z``     (layer, head, position)
``head_q``         ``attn.hook_q``     (layer, head), all positions
``head_k``         ``attn.hook_k``     (layer, kv_head), all positions
``head_v``         ``attn.hook_v``     (layer, kv_head), all positions
=================  ==================  ======================================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import torch

from interp.causal.common import (
    Prompts,
    RowPatch,
    answer_pairs,
    check_layers,
    check_positions,
    paired_tokens,
    row_patch_hook,
    sweep_rows,
    token_strings,
)
from interp.causal.metrics import Metric, grouped_metric, last_position_only, logit_diff_metric
from interp.errors import InterpError
from interp.causal.checks import check_patching
from interp.distributed import merge_owned, shard
from interp.hooks import HookedModel, hook_name
from interp.hooks.replay import check_reuse, plan_batches, record


@dataclass(frozen=True)
class PatchSite:
    """A patchable site: its hook (without the layer) and the axes it is swept over besides layer."""

    name: str
    hook: str
    axes: tuple[str, ...]


SITES: dict[str, PatchSite] = {
    site.name: site
    for site in (
        PatchSite("resid_pre", "hook_resid_pre", ("pos",)),
        PatchSite("attn_out", "hook_attn_out", ("pos",)),
        PatchSite("mlp_out", "hook_mlp_out", ("pos",)),
        PatchSite("head_out", "attn.hook_z", ("head",)),
        PatchSite("head_out_pos", "attn.hook_z", ("pos", "head")),
        PatchSite("head_q", "attn.hook_q", ("head",)),
        PatchSite("head_k", "attn.hook_k", ("kv_head",)),
        PatchSite("head_v", "attn.hook_v", ("kv_head",)),
    )
}
DIRECTIONS = ("denoise", "noise")


@dataclass(frozen=True)
class Cell:
    """One patch: ``site`` at ``layer`` (and ``position`` / ``head`` when the site has that axis)."""

    site: str
    layer: int
    position: int | None
    head: int | None

    @property
    def hook(self) -> str:
        return hook_name(self.layer, SITES[self.site].hook)

    @property
    def index(self) -> tuple:
        """Index into the activation after the batch axis: ``[pos]``, ``[:, head]`` or ``[pos, head]``."""
        if self.head is None:
            return (self.position,)
        return (slice(None) if self.position is None else self.position, self.head)

    def shifted_index(self, prefix: int) -> tuple:
        """:attr:`index` in a run that starts at position ``prefix`` (cells without a position need ``prefix == 0``)."""
        if self.position is None:
            assert prefix == 0, "a cell over all positions cannot skip a prefix"
            return self.index
        return (self.position - prefix,) if self.head is None else (self.position - prefix, self.head)


def check_sites(sites: str | Sequence[str]) -> list[str]:
    """Site names (comma-separated string or list), validated."""
    names = [s.strip() for s in (sites.split(",") if isinstance(sites, str) else sites) if s.strip()]
    unknown = [s for s in names if s not in SITES]
    if unknown or not names:
        raise InterpError(f"unknown patching site(s) {unknown or names}; choose from: {', '.join(SITES)}")
    return list(dict.fromkeys(names))


def patching_cells(
    model: HookedModel,
    n_pos: int,
    *,
    sites: str | Sequence[str] = ("resid_pre",),
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
) -> list[Cell]:
    """Every cell of ``sites`` over ``layers`` x ``positions`` x ``heads`` (defaults: all), in sweep order."""
    chosen_layers = check_layers(model, layers)
    chosen_positions = check_positions(n_pos, positions)
    cells = []
    for name in check_sites(sites):
        axes = SITES[name].axes
        n_heads = model.cfg.n_kv_heads if "kv_head" in axes else model.cfg.n_heads
        head_list = list(range(n_heads)) if heads is None else [h for h in heads if 0 <= h < n_heads]
        for layer in chosen_layers:
            pos_list = chosen_positions if "pos" in axes else [None]
            head_list_here = head_list if axes != ("pos",) else [None]
            cells += [Cell(name, layer, p, h) for p in pos_list for h in head_list_here]
    return cells


def resolve_metric(model: HookedModel, metric: Metric | None, answers: Any, n_prompts: int) -> Metric:
    """The metric to use: ``metric`` if given, else the logit difference of ``answers``."""
    if metric is not None:
        return metric
    if answers is None:
        raise InterpError("give answers=(correct, wrong) for the default logit-difference metric, or a metric callable")
    return logit_diff_metric(answer_pairs(model, answers, n_prompts))


@dataclass(frozen=True)
class PatchingSweep:
    """The checked inputs of a patching sweep, shared by activation and attribution patching."""

    clean_tokens: torch.Tensor  # [prompt, pos]
    corrupted_tokens: torch.Tensor  # [prompt, pos]
    metric: Metric
    cells: list[Cell]
    names: list[str]  # the hook points the cells read, sorted


def patching_sweep(
    model: HookedModel,
    clean: Prompts,
    corrupted: Prompts,
    *,
    answers: Any,
    metric: Metric | None,
    sites: str | Sequence[str],
    direction: str,
    layers: Sequence[int] | None,
    positions: Sequence[int] | None,
    heads: Sequence[int] | None,
) -> PatchingSweep:
    """Validate the arguments both patching methods take and list the cells to patch."""
    if direction not in DIRECTIONS:
        raise InterpError(f"unknown direction {direction!r}; use 'denoise' (clean into corrupted) or 'noise'")
    clean_tokens, corrupted_tokens = paired_tokens(model, clean, corrupted)
    n_prompts, n_pos = clean_tokens.shape
    cells = patching_cells(model, n_pos, sites=sites, layers=layers, positions=positions, heads=heads)
    return PatchingSweep(
        clean_tokens, corrupted_tokens, resolve_metric(model, metric, answers, n_prompts), cells,
        sorted({cell.hook for cell in cells}),
    )


def finish_patching_frame(
    frame: pd.DataFrame, model: HookedModel, sweep: PatchingSweep, *, clean_value: float, corrupted_value: float,
    direction: str,
) -> pd.DataFrame:
    """Add ``normalized`` and the ``attrs`` both patching methods document."""
    frame["normalized"] = normalize(frame["metric"], clean_value, corrupted_value)
    frame.attrs.update(
        clean_metric=clean_value,
        corrupted_metric=corrupted_value,
        direction=direction,
        tokens=token_strings(model, sweep.clean_tokens[0]),
    )
    return frame


def activation_patching(
    model: HookedModel,
    clean: Prompts,
    corrupted: Prompts,
    *,
    answers: Any = None,
    metric: Metric | None = None,
    sites: str | Sequence[str] = ("resid_pre",),
    direction: str = "denoise",
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    batch_size: int | None = None,
    reuse: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Patch every cell of ``sites`` and measure ``metric``; one row per cell.

    Args:
        clean, corrupted: prompts (text, list of texts, or ids ``[batch, pos]``); same token length.
        answers: ``(correct, wrong)`` single-token texts or ids, or one pair per prompt; used for the
            default metric, the logit difference at the last position.
        metric: ``fn(logits [batch, pos, vocab]) -> [batch]``; averaged over prompts.
        sites: names from :data:`SITES` (default ``resid_pre``).
        direction: ``"denoise"`` (clean into corrupted run) or ``"noise"`` (corrupted into clean run).
        layers, positions, heads: restrict the sweep (default: all).
        batch_size: rows per forward pass (each cell takes one row per prompt); default: 32 with
            ``reuse="none"``, else as many as free memory allows (up to 256).
        reuse: ``"auto"`` (default) starts each cell at its patched layer and, where attention is
            causal without a shorter window, skips the positions before the patch (their keys and
            values come from the base run); ``"layers"`` reuses layers only; ``"none"`` runs one full
            forward per batch of cells (the plain path). Results agree to float rounding
            (:mod:`interp.hooks.replay`).
        progress: ``fn(cells_done, cells_total)`` after each batch of cells.

    Returns:
        DataFrame ``site, layer, position, head, token, metric, delta, normalized`` where ``delta`` is
        ``metric`` minus the unpatched base run; ``attrs`` holds ``clean_metric``, ``corrupted_metric``,
        ``direction`` and ``tokens``. ``position``/``head`` are ``<NA>`` where the site has no such axis.
    """
    reuse = check_reuse(reuse)
    check_patching(model, clean, corrupted, answers, metric, batch_size)  # interp.causal.checks
    sweep = patching_sweep(
        model, clean, corrupted, answers=answers, metric=metric, sites=sites, direction=direction,
        layers=layers, positions=positions, heads=heads,
    )
    clean_tokens, corrupted_tokens, metric, cells, names = (
        sweep.clean_tokens, sweep.corrupted_tokens, sweep.metric, sweep.cells, sweep.names
    )
    n_prompts = clean_tokens.shape[0]
    base_tokens, source_tokens = (corrupted_tokens, clean_tokens) if direction == "denoise" else (clean_tokens, corrupted_tokens)
    last_only = last_position_only(metric)
    batch_size = sweep_rows(model, clean_tokens.shape[1], batch_size, reuse=reuse, plain=32, last_only=last_only)
    with torch.no_grad():
        source_logits, source = model.run_with_cache(source_tokens, names=names)
        recording, base = record(model, base_tokens, names=names if reuse != "none" else (), reuse=reuse)
        source_value = float(metric(source_logits).float().mean())
        base_value = float(metric(recording.logits).float().mean())
        clean_value, corrupted_value = (source_value, base_value) if direction == "denoise" else (base_value, source_value)
        patched_values = torch.full((len(cells),), base_value, dtype=torch.float64)
        # A cell whose source value equals the base run's (a position before the prompts first differ, a
        # layer-0 token both prompts share) cannot change anything: it keeps the base metric, unrun.
        live = [i for i, cell in enumerate(cells) if reuse == "none" or not torch.equal(
            source[cell.hook][(slice(None), *cell.index)], base[cell.hook][(slice(None), *cell.index)])]
        live = shard(live, strided=True)  # under torchrun: this rank's cells, merged after the loop
        # A patch at (layer, position) leaves blocks < layer and positions < position as in the base run.
        needs = [(cells[i].layer, cells[i].position if cells[i].position is not None else 0) for i in live]
        plan = plan_batches(recording, needs, rows_per_cell=n_prompts, max_rows=batch_size, last_only=last_only)
        done = len(cells) - len(live)
        for batch in recording.batches(plan):
            patches: dict[str, list[RowPatch]] = {}
            batch_cells = [live[j] for j in batch.cells]
            for row, i in enumerate(batch_cells):
                cell = cells[i]
                rows = slice(row * n_prompts, (row + 1) * n_prompts)
                value = source[cell.hook][(slice(None), *cell.index)]
                patches.setdefault(cell.hook, []).append((rows, cell.shifted_index(batch.prefix), value))
            logits = recording.run(
                len(batch.cells), starts=batch.starts, prefix=batch.prefix, last_only=last_only,
                fwd_hooks=[(name, row_patch_hook(p)) for name, p in patches.items()],
            )
            patched_values[batch_cells] = grouped_metric(metric, logits, n_prompts).cpu().double()
            done += len(batch.cells)
            if progress:
                progress(done, len(cells))
        patched_values = merge_owned(patched_values, live)
    frame = cells_frame(model, cells, clean_tokens[0])
    frame["metric"] = patched_values.numpy()
    frame["delta"] = frame["metric"] - base_value
    return finish_patching_frame(
        frame, model, sweep, clean_value=clean_value, corrupted_value=corrupted_value, direction=direction
    )


def normalize(values: pd.Series, clean: float, corrupted: float) -> pd.Series:
    """``(values - corrupted) / (clean - corrupted)``; NaN when clean and corrupted are equal."""
    span = clean - corrupted
    return (values - corrupted) / span if span != 0 else values * float("nan")


def cells_frame(model: HookedModel, cells: list[Cell], tokens: torch.Tensor) -> pd.DataFrame:
    """Index columns ``site, layer, position, head, token`` for ``cells`` (token text of the first prompt)."""
    texts = token_strings(model, tokens)
    return pd.DataFrame(
        {
            "site": [c.site for c in cells],
            "layer": [c.layer for c in cells],
            "position": pd.array([c.position for c in cells], dtype="Int64"),
            "head": pd.array([c.head for c in cells], dtype="Int64"),
            "token": [texts[c.position] if c.position is not None else None for c in cells],
        }
    )


def plot_patching(frame: pd.DataFrame, *, site: str | None = None, value: str = "normalized", title: str | None = None) -> go.Figure:
    """Heatmap of ``value`` for one ``site`` (default: the first in ``frame``): layer x position or layer x head.

    ``head_out_pos`` is drawn as one layer x head panel per position.
    """
    site = site or str(frame["site"].iloc[0])
    part = frame[frame["site"] == site]
    if part.empty:
        raise InterpError(f"no rows for site {site!r}; sites in this frame: {', '.join(frame['site'].unique())}")
    axes = SITES[site].axes if site in SITES else ("pos",)
    title = title or f"{site}: {value} ({frame.attrs.get('direction', 'denoise')})"
    scale = dict(color_continuous_scale="RdBu", color_continuous_midpoint=0.0, aspect="auto")
    if axes == ("pos",):
        grid = part.pivot_table(index="layer", columns="position", values=value, aggfunc="first")
        tokens = frame.attrs.get("tokens")
        labels = [f"{p}: {tokens[p]!r}" if tokens else str(p) for p in grid.columns]
        fig = px.imshow(grid.to_numpy(), x=labels, y=list(grid.index), labels=dict(x="position", y="layer", color=value), **scale)
    elif len(axes) == 1:
        grid = part.pivot_table(index="layer", columns="head", values=value, aggfunc="first")
        fig = px.imshow(grid.to_numpy(), x=list(grid.columns), y=list(grid.index), labels=dict(x=axes[0], y="layer", color=value), **scale)
    else:
        positions = sorted(part["position"].unique())
        grids = [part[part["position"] == p].pivot_table(index="layer", columns="head", values=value, aggfunc="first") for p in positions]
        stacked = np.stack([g.to_numpy() for g in grids])
        fig = px.imshow(stacked, facet_col=0, facet_col_wrap=min(4, len(positions)), labels=dict(x="head", y="layer", color=value), **scale)
        for annotation, p in zip(fig.layout.annotations, positions):
            annotation.text = f"position {p}"
    fig.update_layout(title=title)
    return fig
