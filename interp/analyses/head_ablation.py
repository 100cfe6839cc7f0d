"""Head ablation importance: how much a metric changes when one head's output is removed.

Each head's output (``attn.hook_z``, all positions) is replaced by

- ``"mean"`` (default): its mean over the reference tokens (all rows and positions), as
  ``HookedModel.ablate_heads(method="mean")`` does;
- ``"zero"``: 0;
- ``"resample"``: its value on a different input of the same shape (default: natural text with
  another seed), position by position (Chan et al. 2022, causal scrubbing).

Mean ablation is the default because zero is off-distribution for heads whose output has a large
constant part (e.g. attention sinks), which inflates their importance. The metric defaults to the mean
next-token cross-entropy on natural text, so ``delta`` is the loss increase in nats. Heads are
batched: one group of rows per ablated head, ``batch_size`` rows per forward pass, each forward
starting at its first ablated layer from one recorded unablated run (:mod:`interp.hooks.replay`).

Scan entry ``head_ablation`` adds ``head_ablation_loss_delta`` (mean ablation) on the first
``ScanSettings.ablation_tokens`` (default 64) tokens of ``ScanSettings.ablation_batch`` (default 1)
natural-text probe rows; the mean is taken over the whole natural probe. Zero ablation is left to the
Python API to keep the scan's cost to one forward row per head.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import torch

from interp.causal.common import RowPatch, row_patch_hook
from interp.causal.metrics import Metric, grouped_metric, last_position_only, next_token_loss
from interp.analyses.head_stats import head_frame
from interp.analyses.registry import register
from interp.distributed import merge_owned, shard, world
from interp.errors import InterpError
from interp.hooks import HookedModel, hook_name
from interp.hooks.replay import Recording, check_reuse, plan_batches, record

METHODS = ("mean", "zero", "resample")
# Most logits one ablation forward may hold (float32 bytes): the metric needs every position's logits,
# and a 262K-token vocabulary (Gemma 3) makes 16 rows x 64 tokens 1 GB. SmolLM2's 49K fit 16 rows.
LOGITS_BUDGET_BYTES = 256 * 2**20


def _replacements(
    model: HookedModel, method: str, tokens: torch.Tensor, reference: torch.Tensor | None, layers: Iterable[int], seed: int
) -> dict[int, torch.Tensor]:
    """Per layer, the value written over head h's output: ``[head, d_head]`` (zero, mean) or ``[batch, pos, head, d_head]``."""
    layers = sorted(set(layers))
    names = [hook_name(layer, "attn.hook_z") for layer in layers]
    if method == "zero":
        shape = (model.cfg.n_heads, model.cfg.d_head)
        return {layer: torch.zeros(shape, device=model.device) for layer in layers}
    if method == "mean":
        _, cache = model.run_with_cache(tokens if reference is None else reference, names=names, logits_to_keep=1)
        return {layer: cache[name].mean(dim=(0, 1)) for layer, name in zip(layers, names)}
    if method == "resample":
        if reference is None:
            from interp.analyses.probes import natural_text_tokens

            reference = natural_text_tokens(model, tokens.shape[1], batch=tokens.shape[0], seed=seed + 1)
        if reference.shape != tokens.shape:
            raise InterpError(
                f"resample ablation needs reference tokens of the same shape as the input {tuple(tokens.shape)}, "
                f"got {tuple(reference.shape)}"
            )
        _, cache = model.run_with_cache(reference, names=names, logits_to_keep=1)
        return {layer: cache[name] for layer, name in zip(layers, names)}
    raise InterpError(f"unknown ablation method {method!r}; use one of {', '.join(METHODS)}")


def _patch(value: torch.Tensor, rows: slice, head: int) -> RowPatch:
    if value.ndim == 2:  # [head, d_head]: the same vector at every position
        return (rows, (slice(None), head), value[head])
    return (rows, (slice(None), head), value[:, :, head])


def _ablated_metrics(
    model: HookedModel,
    recording: Recording,
    groups: list[list[tuple[int, int]]],
    values: dict[int, torch.Tensor],
    metric: Metric,
    batch_size: int,
) -> torch.Tensor:
    """``[groups]``: the metric with every head of each group ablated, one group of rows per entry.

    A group starts at its first ablated layer: the blocks before it are replayed from ``recording``.
    Up to ``batch_size`` rows per forward, fewer when their logits would pass ``LOGITS_BUDGET_BYTES``.
    """
    n_rows = recording.n_rows
    last_only = last_position_only(metric)
    needs = [(min(layer for layer, _ in group), 0) for group in groups]
    logits_per_row = (1 if last_only else recording.n_pos) * model.cfg.d_vocab * 4
    rows_per_forward = max(n_rows, min(batch_size, LOGITS_BUDGET_BYTES // logits_per_row))
    plan = plan_batches(recording, needs, rows_per_cell=n_rows, max_rows=rows_per_forward, last_only=last_only)
    out = torch.zeros(len(groups), dtype=torch.float64)
    for batch in recording.batches(plan):
        patches: dict[str, list[RowPatch]] = {}
        for row, i in enumerate(batch.cells):
            rows = slice(row * n_rows, (row + 1) * n_rows)
            for layer, head in groups[i]:
                patches.setdefault(hook_name(layer, "attn.hook_z"), []).append(_patch(values[layer], rows, head))
        logits = recording.run(
            len(batch.cells), starts=batch.starts, prefix=batch.prefix, last_only=last_only,
            fwd_hooks=[(name, row_patch_hook(p)) for name, p in patches.items()],
        )
        out[batch.cells] = grouped_metric(metric, logits, n_rows).cpu().double()
    return out


def _check_heads(model: HookedModel, heads: Iterable[tuple[int, int]] | None) -> list[tuple[int, int]]:
    if heads is None:
        return [(layer, head) for layer in range(model.cfg.n_layers) for head in range(model.cfg.n_heads)]
    chosen = [(int(layer), int(head)) for layer, head in heads]
    for layer, head in chosen:
        if not (0 <= layer < model.cfg.n_layers and 0 <= head < model.cfg.n_heads):
            raise InterpError(
                f"head ({layer}, {head}) does not exist: layers 0..{model.cfg.n_layers - 1}, heads 0..{model.cfg.n_heads - 1}"
            )
    return chosen


def _inputs(model: HookedModel, tokens: torch.Tensor | None, n_tokens: int, metric: Metric | None) -> tuple[torch.Tensor, Metric]:
    if tokens is None:
        from interp.analyses.probes import natural_text_tokens

        tokens = natural_text_tokens(model, n_tokens, batch=1)
    tokens = tokens[None] if tokens.ndim == 1 else tokens
    return tokens.to(model.device), metric or next_token_loss(tokens)


def head_ablation(
    model: HookedModel,
    tokens: torch.Tensor | None = None,
    *,
    method: str = "mean",
    metric: Metric | None = None,
    reference: torch.Tensor | None = None,
    heads: Iterable[tuple[int, int]] | None = None,
    n_tokens: int = 64,
    batch_size: int = 16,
    seed: int = 0,
    reuse: str = "auto",
) -> pd.DataFrame:
    """Ablate each head alone and measure ``metric``; one row per head.

    Args:
        tokens: input ids ``[batch, pos]``; default ``n_tokens`` of the bundled natural text.
        method: ``"mean"`` (default), ``"zero"`` or ``"resample"``.
        metric: ``fn(logits [batch, pos, vocab]) -> [batch]``, averaged over rows; default mean
            next-token cross-entropy on ``tokens``.
        reference: ids to take the mean over (default ``tokens``) or to resample from (same shape
            as ``tokens``; default natural text with seed ``seed + 1``).
        heads: ``(layer, head)`` pairs (default all).
        batch_size: rows per forward pass (each head takes one row per input row).
        reuse: ``"auto"``/``"layers"``: each batch starts at its first ablated layer, replaying the
            blocks before it from one recorded run; ``"none"``: full forwards (:mod:`interp.hooks.replay`).

    Returns:
        DataFrame ``layer, head, kv_head, metric, baseline, delta`` (delta = metric - baseline, so a
        positive delta is a loss increase); ``attrs`` has ``method`` and ``baseline``.
    """
    reuse = check_reuse(reuse)
    chosen = _check_heads(model, heads)
    tokens, metric = _inputs(model, tokens, n_tokens, metric)
    with torch.no_grad():
        recording, _ = record(model, tokens, reuse=reuse)
        baseline = float(metric(recording.logits).float().mean())
        values = _replacements(model, method, tokens, reference, (layer for layer, _ in chosen), seed)
        ablated = _ablated_metrics(model, recording, [[h] for h in chosen], values, metric, batch_size)
    frame = pd.DataFrame(
        {
            "layer": [layer for layer, _ in chosen],
            "head": [head for _, head in chosen],
            "kv_head": [head // model.cfg.n_groups for _, head in chosen],
            "metric": ablated.double().numpy(),
        }
    )
    frame["baseline"] = baseline
    frame["delta"] = frame["metric"] - baseline
    frame.attrs.update(method=method, baseline=baseline)
    return frame


def joint_ablation(
    model: HookedModel,
    ranking: pd.DataFrame | Sequence[tuple[int, int]],
    *,
    top_k: int = 10,
    tokens: torch.Tensor | None = None,
    method: str = "mean",
    metric: Metric | None = None,
    reference: torch.Tensor | None = None,
    n_tokens: int = 64,
    batch_size: int = 16,
    seed: int = 0,
    reuse: str = "auto",
) -> pd.DataFrame:
    """Ablate the top 1, 2, ..., ``top_k`` heads together (ranked by ``delta`` of a ``head_ablation`` frame, or in the given order).

    Returns one row per k: ``k, heads`` ("layer.head" list), ``metric``, ``baseline``, ``delta``.
    """
    if isinstance(ranking, pd.DataFrame):
        ordered = ranking.sort_values("delta", ascending=False)
        ranked = list(zip(ordered["layer"].astype(int), ordered["head"].astype(int)))
    else:
        ranked = list(ranking)
    ranked = _check_heads(model, ranked[:top_k])
    tokens, metric = _inputs(model, tokens, n_tokens, metric)
    groups = [ranked[: k + 1] for k in range(len(ranked))]
    reuse = check_reuse(reuse)
    with torch.no_grad():
        recording, _ = record(model, tokens, reuse=reuse)
        baseline = float(metric(recording.logits).float().mean())
        values = _replacements(model, method, tokens, reference, (layer for layer, _ in ranked), seed)
        ablated = _ablated_metrics(model, recording, groups, values, metric, batch_size)
    frame = pd.DataFrame(
        {
            "k": [len(g) for g in groups],
            "heads": [" ".join(f"{layer}.{head}" for layer, head in g) for g in groups],
            "metric": ablated.double().numpy(),
        }
    )
    frame["baseline"] = baseline
    frame["delta"] = frame["metric"] - baseline
    frame.attrs.update(method=method, baseline=baseline)
    return frame


def plot_head_ablation(frame: pd.DataFrame, *, value: str = "delta", title: str | None = None) -> go.Figure:
    """Layer x head heatmap of ``value`` (default the metric change)."""
    grid = frame.pivot_table(index="layer", columns="head", values=value, aggfunc="first")
    fig = px.imshow(
        grid.to_numpy(), x=list(grid.columns), y=list(grid.index), labels=dict(x="head", y="layer", color=value),
        color_continuous_scale="RdBu_r", color_continuous_midpoint=0.0, aspect="auto",
    )
    fig.update_layout(title=title or f"head ablation ({frame.attrs.get('method', 'mean')}): {value}")
    return fig


@register("head_ablation")
def _scan_head_ablation(ctx) -> pd.DataFrame:
    natural = ctx.probes["natural"].tokens
    n_tokens, n_rows = ctx.settings.ablation_tokens, ctx.settings.ablation_batch
    tokens = natural[:n_rows, :n_tokens]
    if not world().parallel:
        mean = head_ablation(ctx.model, tokens, method="mean", reference=natural)
        return mean[["layer", "head", "kv_head", "delta"]].rename(columns={"delta": "head_ablation_loss_delta"})
    # Under torchrun each rank ablates every N-th head (the baseline and the means are every rank's own).
    n_heads = ctx.model.cfg.n_heads
    owned = shard(range(ctx.model.cfg.n_layers * n_heads), strided=True)
    delta = torch.zeros(ctx.model.cfg.n_layers * n_heads, dtype=torch.float64)
    if owned:
        mine = head_ablation(ctx.model, tokens, method="mean", reference=natural, heads=[divmod(cell, n_heads) for cell in owned])
        delta[owned] = torch.tensor(mine["delta"].tolist(), dtype=torch.float64)
    delta = merge_owned(delta, owned).reshape(ctx.model.cfg.n_layers, n_heads)
    return head_frame(ctx.model, {"head_ablation_loss_delta": delta})
