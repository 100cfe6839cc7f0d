"""Attention knockout: block attention edges and measure what the output loses (Geva et al. 2023,
"Dissecting Recall of Factual Associations in Auto-Regressive Language Models").

Edges are blocked before the softmax with :meth:`HookedModel.knockout` (``edges[query, key] = True``
removes that edge; the rest of the row renormalizes). :func:`subject_knockout_sweep` blocks the last
token from attending to the subject's tokens in a window of ``window`` layers starting at each layer
``l`` (``l .. min(l + window, n_layers) - 1``). Windows share forward passes, each knocking out
edges in its own rows only; a forward starts at its first window's layer and at the query token.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import pandas as pd
import torch

from interp.causal.common import Prompts, answer_token, check_layers, prompt_tokens, sweep_rows, token_strings
from interp.causal.metrics import Metric, answer_prob_metric, grouped_metric, last_position_only
from interp.causal.tracing import find_subject
from interp.errors import InterpError
from interp.hooks import HookedModel
from interp.hooks.replay import check_reuse, plan_batches, record


def _default_metric(model: HookedModel, tokens: torch.Tensor, answer: str | int | None) -> tuple[Metric, int | None]:
    if answer is not None:
        answer_id = answer_token(model, answer)
    else:
        with torch.no_grad():
            answer_id = int(model(tokens[:1])[0, -1].argmax())
    return answer_prob_metric(answer_id), answer_id


def _run(model: HookedModel, tokens: torch.Tensor, metric: Metric, edges: torch.Tensor, layers: list[int], heads) -> float:
    with torch.no_grad():
        if not bool(edges.any()) or not layers or (heads is not None and len(heads) == 0):
            # Nothing to block: the plain run (a knockout with an empty mask would only change float rounding).
            return float(metric(model(tokens)).float().mean())
        with model.knockout(edges, layers=layers, heads=heads):
            return float(metric(model(tokens)).float().mean())


def attention_knockout(
    model: HookedModel,
    prompts: Prompts,
    edges: torch.Tensor,
    *,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    metric: Metric | None = None,
    answer: str | int | None = None,
) -> pd.DataFrame:
    """Block ``edges [query, key]`` in ``layers`` (default all) and ``heads`` (default all); one row.

    ``metric(logits [batch, pos, vocab]) -> [batch]`` is averaged over prompts; default: P(``answer``)
    at the last position (``answer`` default: the top prediction on the first prompt).
    Columns ``layers, heads, metric, baseline, delta, relative_change`` (delta / baseline).
    """
    tokens = prompt_tokens(model, prompts)
    n_pos = tokens.shape[1]
    if edges.dtype != torch.bool or edges.ndim != 2 or edges.shape[0] != n_pos or edges.shape[1] != n_pos:
        raise InterpError(f"edges must be a boolean [query, key] tensor of shape ({n_pos}, {n_pos}) for this prompt")
    if metric is None:
        metric, _ = _default_metric(model, tokens, answer)
    chosen = check_layers(model, layers)
    baseline = _run(model, tokens, metric, edges & False, chosen, heads)
    value = _run(model, tokens, metric, edges.to(model.device), chosen, heads)
    return pd.DataFrame(
        {
            "layers": [",".join(map(str, chosen))],
            "heads": ["all" if heads is None else ",".join(map(str, heads))],
            "metric": [value],
            "baseline": [baseline],
            "delta": [value - baseline],
            "relative_change": [(value - baseline) / baseline if baseline != 0 else float("nan")],
        }
    )


def subject_knockout_sweep(
    model: HookedModel,
    prompt: str | torch.Tensor,
    subject: str | tuple[int, int],
    answer: str | int | None = None,
    *,
    window: int = 9,
    query: int = -1,
    heads: Sequence[int] | None = None,
    metric: Metric | None = None,
    batch_size: int | None = None,
    reuse: str = "auto",
) -> pd.DataFrame:
    """Block ``query`` (default: the last token) from attending to the subject in layers ``l .. l + window - 1``, for every ``l``.

    Returns one row per start layer: ``start_layer, end_layer`` (inclusive, clipped at the last
    layer), ``metric``, ``baseline`` (nothing blocked), ``delta``, ``relative_change``. ``attrs`` has
    ``subject_range``, ``answer`` and ``tokens``. Default metric: P(answer) at the last position.

    Windows are batched (``batch_size`` rows per forward, one knockout per window on its own rows),
    and each forward starts at its windows' first layer and at the query token (``reuse="auto"``;
    ``"layers"``: first layer only; ``"none"``: full forwards; see :mod:`interp.hooks.replay`).
    """
    reuse = check_reuse(reuse)
    if window < 1:
        raise InterpError(f"window must be at least 1 layer, got {window}")
    tokens = prompt_tokens(model, prompt if isinstance(prompt, torch.Tensor) else [prompt])
    n_pos, n_layers = tokens.shape[1], model.cfg.n_layers
    start, end = find_subject(model, tokens[0], subject) if isinstance(subject, str) else (int(subject[0]), int(subject[1]))
    query = query + n_pos if query < 0 else query
    if not 0 <= start < end <= n_pos or not 0 <= query < n_pos:
        raise InterpError(f"subject range ({start}, {end}) or query {query} is outside the prompt's {n_pos} tokens")
    answer_id = None
    if metric is None:
        metric, answer_id = _default_metric(model, tokens, answer)
    recording, _ = record(model, tokens, reuse=reuse)
    baseline = float(metric(recording.logits).float().mean())
    windows = [list(range(layer, min(n_layers, layer + window))) for layer in range(n_layers)]
    values = torch.full((n_layers,), baseline, dtype=torch.float64)
    if heads is None or len(heads) > 0:
        n_rows, last_only = tokens.shape[0], last_position_only(metric)
        # Blocking query -> subject in layers l.. leaves blocks < l and positions < query as they were.
        rows = sweep_rows(model, n_pos, batch_size, reuse=reuse, plain=n_rows, last_only=last_only)
        plan = plan_batches(
            recording, [(w[0], query) for w in windows], rows_per_cell=n_rows, max_rows=rows, last_only=last_only,
            staggered=False,  # model.knockout's edges cover every row of the batch at each layer
        )
        with torch.no_grad():
            for batch in recording.batches(plan):
                with ExitStack() as stack:
                    for row, i in enumerate(batch.cells):
                        # One knockout per window, on its own rows only ([batch, query, key] edges).
                        edges = torch.zeros(len(batch.cells) * n_rows, n_pos, n_pos, dtype=torch.bool, device=model.device)
                        edges[row * n_rows : (row + 1) * n_rows, query, start:end] = True
                        stack.enter_context(model.knockout(edges, layers=windows[i], heads=heads))
                    logits = recording.run(len(batch.cells), start=batch.start, prefix=batch.prefix, last_only=last_only)
                values[batch.cells] = grouped_metric(metric, logits, n_rows).cpu().double()
    rows = [dict(start_layer=w[0], end_layer=w[-1], metric=float(v)) for w, v in zip(windows, values)]
    frame = pd.DataFrame(rows)
    frame["baseline"] = baseline
    frame["delta"] = frame["metric"] - baseline
    frame["relative_change"] = frame["delta"] / baseline if baseline != 0 else float("nan")
    frame.attrs.update(
        subject_range=(start, end),
        answer=None if answer_id is None else token_strings(model, torch.tensor([answer_id]))[0],
        tokens=token_strings(model, tokens[0]),
        window=window,
    )
    return frame


def plot_knockout_sweep(frame: pd.DataFrame, *, value: str = "relative_change", title: str | None = None) -> Any:
    """Line plot of ``value`` against the window's start layer."""
    import plotly.express as px

    fig = px.line(frame, x="start_layer", y=value, markers=True)
    fig.update_layout(title=title or f"blocking last token -> subject, window {frame.attrs.get('window')}: {value}")
    return fig
