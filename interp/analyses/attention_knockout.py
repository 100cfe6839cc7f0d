"""Attention knockout: block attention edges and measure what the output loses (Geva et al. 2023,
"Dissecting Recall of Factual Associations in Auto-Regressive Language Models").

Edges are blocked before the softmax with :meth:`HookedModel.knockout` (``edges[query, key] = True``
removes that edge; the rest of the row renormalizes). :func:`subject_knockout_sweep` blocks the last
token from attending to the subject's tokens in a window of ``window`` layers starting at each layer
``l`` (``l .. min(l + window, n_layers) - 1``), one forward pass per window: the knockout mask is
shared by every row of a batch, so windows cannot share a forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from interp.analyses.causal_common import (
    Metric,
    Prompts,
    answer_prob_metric,
    answer_token,
    check_layers,
    prompt_tokens,
    token_strings,
)
from interp.analyses.causal_tracing import find_subject
from interp.errors import InterpError
from interp.hooks import HookedModel


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
) -> pd.DataFrame:
    """Block ``query`` (default: the last token) from attending to the subject in layers ``l .. l + window - 1``, for every ``l``.

    Returns one row per start layer: ``start_layer, end_layer`` (inclusive, clipped at the last
    layer), ``metric``, ``baseline`` (nothing blocked), ``delta``, ``relative_change``. ``attrs`` has
    ``subject_range``, ``answer`` and ``tokens``. Default metric: P(answer) at the last position.
    """
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
    edges = torch.zeros(n_pos, n_pos, dtype=torch.bool, device=model.device)
    edges[query, start:end] = True
    baseline = _run(model, tokens, metric, edges & False, [], heads)
    rows = []
    for layer in range(n_layers):
        chosen = list(range(layer, min(n_layers, layer + window)))
        value = _run(model, tokens, metric, edges, chosen, heads)
        rows.append(dict(start_layer=layer, end_layer=chosen[-1], metric=value))
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
