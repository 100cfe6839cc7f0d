"""Streaming heads (DuoAttention, Xiao et al. 2024; StreamingLLM, Xiao et al. 2023).

A head *can stream* when it loses nothing by seeing only the first ``n_sink`` tokens plus the most
recent ``window`` tokens ("Lambda-shaped" attention). Two scores:

- ``streaming_mass_outside`` (cheap proxy, from the statistics kernel): mean over queries
  ``p >= n_sink + window`` of the attention mass *outside* sink + window, on natural text;
- ``streaming_score`` (causal): on needle-in-a-haystack prompts whose needle lies outside the window,
  the increase of the answer's cross-entropy (nats/token) when that head alone is restricted to
  Lambda attention. High = the head needs full context. ``streaming_score_kv`` restricts all query
  heads of the KV group together, the granularity DuoAttention decides at (one value per KV head,
  repeated on its query heads). The scan computes the KV-group score by default; the per-query-head
  pass costs ``n_heads / n_kv_heads`` times more and runs with ``ScanSettings(streaming_per_head=True)``.

``streaming_kv_heads.csv`` (extra table) is the DuoAttention-style layer x KV-head table, with
``streaming_full_attention``: True for the KV heads that keep full attention when the fraction
``sparsity`` (default 0.5) with the lowest ``streaming_score_kv`` is made to stream; see
:func:`streaming_head_mask` for the ``[layer, kv_head]`` mask.

The causal score runs one batched forward per layer (a row per KV group, or per head), replayed from
that layer and from position ``n_sink + window`` of one recorded plain run, with the restricted layer's
pattern materialized; the scan therefore keeps its needle prompt at
``2 x window`` tokens (512 by default) whatever ``--context-length`` is, while the proxy runs through
the O(N) statistics kernel at the full context length.
"""

from __future__ import annotations

import pandas as pd
import torch

from interp.analyses.head_stats import head_frame, head_stat_means
from interp.analyses.registry import register
from interp.analyses.split import split_rows
from interp.distributed import merge_owned, shard
from interp.hooks import HookedModel
from interp.hooks.replay import record
from interp.kernels import StatsConfig
from interp.analyses.needles import NeedleSample, needle_sample
from interp.analyses.probes import natural_text_tokens


def lambda_blocked(n: int, *, n_sink: int, window: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[query, key]`` True where Lambda attention drops the edge: keys that are neither sinks nor recent."""
    query = torch.arange(n, device=device)[:, None]
    key = torch.arange(n, device=device)[None, :]
    return ~((key < n_sink) | (key > query - window))


def mass_outside(model: HookedModel, tokens: torch.Tensor, *, n_sink: int, window: int, backend: str = "auto") -> torch.Tensor:
    """``[layer, head]`` mean attention mass outside sink + window over queries ``p >= n_sink + window``.

    From those positions on the sink keys and the window do not overlap, so the mass outside is
    ``1 - sink_mass - window_mass`` exactly.
    """
    return _outside(_sink_window_means(model, tokens, range(len(tokens)), n_sink=n_sink, window=window, backend=backend))


def _sink_window_means(model: HookedModel, tokens: torch.Tensor, rows: range, *, n_sink: int, window: int,
                       backend: str) -> dict[str, torch.Tensor]:
    """``sink_mass`` and ``window_mass`` ``[layer, head]`` of ``rows``, mean over queries ``p >= n_sink + window``."""
    skip = n_sink + window
    if tokens.shape[1] <= skip:
        raise ValueError(f"streaming proxy needs more than n_sink + window = {skip} tokens, got {tokens.shape[1]}")
    means = head_stat_means(model, tokens[rows.start:rows.stop], StatsConfig(n_sink=n_sink, window=window, received=False),
                            skip_queries=skip, backend=backend)
    return {"sink_mass": means["sink_mass"], "window_mass": means["window_mass"]}


def _outside(means: dict[str, torch.Tensor]) -> torch.Tensor:
    return (1 - means["sink_mass"] - means["window_mass"]).clamp_min(0)


def _answer_tokens(model: HookedModel, sample: NeedleSample) -> tuple[torch.Tensor, torch.Tensor]:
    """``(prompt + answer [1, n], answer [answer])``: the sequence whose answer positions are scored."""
    answer = torch.tensor(sample.answer_ids, device=model.device)
    return torch.cat([sample.tokens[0], answer])[None], answer


def _answer_losses(logits: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    """``[rows]`` answer cross-entropy (nats/token) from the logits of the last ``len(answer) + 1`` positions."""
    logits = logits[:, -len(answer) - 1 : -1]
    return torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), answer[None].expand(logits.shape[0], -1), reduction="none"
    ).mean(dim=1)


def _full_forward_losses(model: HookedModel, tokens: torch.Tensor, answer: torch.Tensor, rows: int) -> torch.Tensor:
    """Answer losses of ``rows`` copies of ``tokens`` from one plain forward (whatever hooks are active)."""
    # Only the positions that predict answer tokens: skips the [pos, vocab] logits of the rest.
    return _answer_losses(model(tokens.repeat(rows, 1), logits_to_keep=len(answer) + 1), answer)


@torch.no_grad()
def streaming_scores(
    model: HookedModel,
    samples: list[NeedleSample],
    *,
    n_sink: int = 4,
    window: int = 256,
    layers: list[int] | None = None,
    per_head: bool = True,
    on_layer=None,
    reuse_prefix: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(per query head, per KV group)`` answer-loss increase under Lambda attention, each ``[layer, head]``.

    ``per_head=False`` skips the per-query-head pass (its result is then NaN): the KV-group pass costs
    ``n_kv_heads`` rows per layer, the per-head pass ``n_heads``. Layers not in ``layers`` stay NaN.
    ``reuse_prefix`` records one plain run and replays each restricted forward from it
    (:mod:`interp.hooks.replay`): the restriction at layer ``l`` changes neither the blocks before
    ``l`` nor the first ``n_sink + window`` positions (those queries see every key anyway), so each
    forward runs only blocks ``>= l`` on the later positions (same result, about a quarter of the
    work at the default 2 x window prompt). It is skipped while other hooks or knockouts are active:
    replayed blocks would not rerun them.
    """
    cfg = model.cfg
    head_scores = torch.full((cfg.n_layers, cfg.n_heads), float("nan"))
    group_scores = torch.full((cfg.n_layers, cfg.n_heads), float("nan"))
    chosen = list(range(cfg.n_layers)) if layers is None else layers
    if per_head:
        head_scores[chosen] = 0.0
    group_scores[chosen] = 0.0
    for sample in samples:
        tokens, answer = _answer_tokens(model, sample)
        n, keep = tokens.shape[1], len(answer) + 1
        drop = lambda_blocked(n, n_sink=n_sink, window=window, device=model.device)
        recording = None
        if reuse_prefix and not model.intervening():
            recording, _ = record(model, tokens)
            baseline = _answer_losses(recording.logits, answer)[0]
        else:
            baseline = _full_forward_losses(model, tokens, answer, 1)[0]

        def losses(layer: int, rows: int) -> torch.Tensor:
            if recording is None:
                return _full_forward_losses(model, tokens, answer, rows)
            # Queries before n_sink + window see every key: Lambda attention changes nothing there.
            logits = recording.run(rows, start=layer, prefix=n_sink + window, logits_to_keep=keep)
            return _answer_losses(logits, answer)

        head_edges = torch.zeros(cfg.n_heads, cfg.n_heads, n, n, dtype=torch.bool, device=model.device)
        group_edges = torch.zeros(cfg.n_kv_heads, cfg.n_heads, n, n, dtype=torch.bool, device=model.device)
        for head in range(cfg.n_heads):
            head_edges[head, head] = drop
            group_edges[head // cfg.n_groups, head] = drop
        for index, layer in enumerate(chosen):
            if per_head:
                with model.knockout(head_edges, layers=[layer]):
                    head_scores[layer] += (losses(layer, cfg.n_heads) - baseline).cpu() / len(samples)
            with model.knockout(group_edges, layers=[layer]):
                group = (losses(layer, cfg.n_kv_heads) - baseline).cpu() / len(samples)
            group_scores[layer] += group.repeat_interleave(cfg.n_groups)
            if on_layer:
                on_layer(index + 1, len(chosen))
    return head_scores, group_scores


def streaming_head_mask(kv_table: pd.DataFrame, *, sparsity: float = 0.5) -> torch.Tensor:
    """DuoAttention head mask ``[layer, kv_head]``: 1 = keep full attention, 0 = stream (sink + window).

    Rows are the layers present in ``kv_table`` in increasing order (all layers for a scan's table).
    The ``sparsity`` fraction of KV heads with the lowest ``streaming_score_kv`` streams.
    """
    grid = kv_table.pivot(index="layer", columns="kv_head", values="streaming_score_kv").sort_index()
    scores = torch.tensor(grid.to_numpy(copy=True), dtype=torch.float64)
    if torch.isnan(scores).any():
        raise ValueError("streaming_score_kv has NaN (unscored layers); drop those rows first")
    n_stream = int(round(sparsity * scores.numel()))
    mask = torch.ones_like(scores, dtype=torch.int64)
    if n_stream:
        mask.view(-1)[scores.flatten().argsort()[:n_stream]] = 0
    return mask


def kv_head_table(frame: pd.DataFrame, *, sparsity: float = 0.5) -> pd.DataFrame:
    """Layer x KV-head table (DuoAttention granularity) from a per-query-head streaming frame.

    Layers whose KV score was not computed (NaN) are left out.
    """
    table = (
        frame.dropna(subset=["streaming_score_kv"])
        .groupby(["layer", "kv_head"], as_index=False)
        .agg(streaming_score_kv=("streaming_score_kv", "first"), streaming_mass_outside=("streaming_mass_outside", "mean"))
    )
    mask = streaming_head_mask(table, sparsity=sparsity)
    layer_row = {layer: row for row, layer in enumerate(sorted(table.layer.unique()))}
    rows = torch.tensor([layer_row[layer] for layer in table.layer])
    table["streaming_full_attention"] = mask[rows, torch.tensor(table.kv_head.to_numpy(copy=True))].bool().numpy()
    return table


@register("streaming")
def _scan_streaming(ctx) -> pd.DataFrame:
    settings = ctx.settings
    n_sink, window = settings.streaming_sink, settings.streaming_window
    # The proxy runs through the statistics kernel (O(N) memory) at the scan's context length; the
    # causal pass materializes one layer's pattern, so its prompt stays at 2 x window tokens.
    proxy_length = max(settings.context_length, 2 * window)
    causal_length = 2 * window
    tokens = natural_text_tokens(ctx.model, proxy_length, batch=settings.batch, seed=settings.seed)
    # Under torchrun each rank runs its share of the proxy's rows and every N-th layer of the causal pass.
    outside = _outside(split_rows(len(tokens), lambda rows: _sink_window_means(
        ctx.model, tokens, rows, n_sink=n_sink, window=window, backend=settings.backend)))
    samples = [needle_sample(ctx.model, causal_length, 0.2, seed=settings.seed)]
    layers = shard(range(ctx.model.cfg.n_layers), strided=True)  # a later layer replays fewer blocks
    per_head, per_group = streaming_scores(
        ctx.model, samples, n_sink=n_sink, window=window, per_head=settings.streaming_per_head, on_layer=ctx.progress,
        layers=layers,
    )
    owned = [layer * ctx.model.cfg.n_heads + head for layer in layers for head in range(ctx.model.cfg.n_heads)]
    per_head, per_group = (merge_owned(scores.reshape(-1), owned).reshape(scores.shape) for scores in (per_head, per_group))
    frame = head_frame(
        ctx.model, {"streaming_mass_outside": outside, "streaming_score": per_head, "streaming_score_kv": per_group}
    )
    frame.attrs["tables"] = {"streaming_kv_heads": kv_head_table(frame)}
    frame.attrs["settings"] = {"n_sink": n_sink, "window": window, "proxy_tokens": proxy_length,
                               "causal_prompt_tokens": causal_length}
    return frame
