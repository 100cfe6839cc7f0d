"""Causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT", ROME).

One clean run and ``samples`` corrupted runs in which Gaussian noise is added to the subject's token
embeddings (``hook_embed`` at the subject positions; std = ``noise`` x the std of the model's token
embedding matrix, seeded). Then, per cell, the clean activation is restored in every corrupted run:

- ``kind="resid"``: the hidden state after layer ``l`` (``blocks.{l}.hook_resid_post``) at one token,
  as ROME restores the output of block ``l``;
- ``kind="attn"`` / ``"mlp"``: the attention / MLP outputs at one token over a window of ``window``
  layers around ``l`` (ROME's ``range(max(0, l - window // 2), min(n_layers, l - (-window // 2)))``).

``prob`` is P(answer) at the last position averaged over the corrupted runs, ``corrupted_prob``
the same with nothing restored (ROME's ``low_score``), ``clean_prob`` the clean run's probability
(``high_score``), and ``indirect_effect = prob - corrupted_prob``. Every corrupted run uses the same
noise samples in every cell, as in ROME. Cells are batched: ``samples`` rows per cell, grouped so a
forward starts at its cells' first restored block and token (:mod:`interp.hooks.replay`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from interp.causal.common import (
    RowPatch,
    answer_token,
    check_layers,
    check_positions,
    prompt_tokens,
    row_patch_hook,
    sweep_rows,
    token_strings,
)
from interp.errors import InterpError
from interp.causal.checks import check_trace_args
from interp.distributed import merge_owned, shard
from interp.hooks import HookedModel, hook_name
from interp.hooks.points import HookPoint
from interp.hooks.replay import check_reuse, plan_batches, record

KINDS = ("resid", "attn", "mlp")
_KIND_SITE = {"resid": "hook_resid_post", "attn": "hook_attn_out", "mlp": "hook_mlp_out"}
_KIND_COLOR = {"resid": "Purples", "attn": "Reds", "mlp": "Greens"}


def find_subject(model: HookedModel, tokens: torch.Tensor, subject: str) -> tuple[int, int]:
    """Token range ``[start, end)`` of the first occurrence of ``subject`` in the decoded ``tokens [pos]`` (ROME's rule)."""
    if not subject or not subject.strip():
        raise InterpError("subject is empty: give the subject text as it appears in the prompt (e.g. 'The Eiffel Tower')")
    pieces = token_strings(model, tokens)
    text = "".join(pieces)
    char = text.find(subject)
    if char < 0:
        raise InterpError(f"subject {subject!r} does not occur in the prompt {text!r}; copy it exactly from the prompt")
    start = end = None
    loc = 0
    for i, piece in enumerate(pieces):
        loc += len(piece)
        if start is None and loc > char:
            start = i
        if end is None and loc >= char + len(subject):
            end = i + 1
            break
    assert start is not None and end is not None
    return start, end


def window_layers(layer: int, window: int, n_layers: int) -> list[int]:
    """Layers restored together for ``layer``: ``window`` layers centred on it, clipped at the ends (ROME)."""
    return list(range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2))))


def embedding_std(model: HookedModel) -> float:
    """Std of the token embeddings as ``hook_embed`` sees them: the embedding matrix's std (over all
    entries), times any scale the embedding module applies (Gemma multiplies by sqrt(d_model))."""
    embedding = model.model.get_input_embeddings()
    weight = embedding.weight.detach()
    ids = torch.linspace(0, weight.shape[0] - 1, min(weight.shape[0], 256)).long().to(weight.device)
    with torch.no_grad():
        scale = embedding(ids).float().norm() / weight[ids].float().norm()  # exactly 1 for a plain lookup
    return float(weight.float().std() * scale)


def causal_trace(
    model: HookedModel,
    prompt: str | torch.Tensor,
    subject: str | tuple[int, int],
    answer: str | int | None = None,
    *,
    samples: int = 10,
    noise: float = 3.0,
    seed: int = 0,
    window: int = 10,
    kinds: Sequence[str] = KINDS,
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    batch_size: int | None = None,
    reuse: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Trace where the clean computation of ``answer`` can be restored, per (kind, position, layer).

    Args:
        prompt: text (or ids ``[pos]`` / ``[1, pos]``).
        subject: text inside the prompt whose tokens are corrupted, or a token range ``(start, end)``.
        answer: single-token answer text or id; default: the clean run's top prediction.
        samples: corrupted runs (noise samples) per cell.
        noise: noise std as a multiple of the token-embedding matrix std.
        seed: seed of the noise.
        window: layers restored together for ``attn`` / ``mlp``.
        kinds: any of ``resid``, ``attn``, ``mlp``.
        layers, positions: restrict the sweep (default: all).
        batch_size: rows per forward pass (each cell takes ``samples`` rows); default: 64 with
            ``reuse="none"``, else as many as free memory allows (up to 256).
        reuse: ``"auto"`` (default): each cell starts from the recorded noised runs at its first
            restored block and token (positions before it keep their keys and values); ``"layers"``:
            blocks only; ``"none"``: one full forward per batch (the plain path). See
            :mod:`interp.hooks.replay`.
        progress: ``fn(cells_done, cells_total)`` after each batch of cells.

    Returns:
        DataFrame ``kind, layer, position, token, subject, prob, indirect_effect, corrupted_prob,
        clean_prob``; ``attrs`` has ``answer``, ``answer_id``, ``low_score``, ``high_score``,
        ``subject_range``, ``input_ids``, ``input_tokens``, ``samples``, ``noise_std``, ``window``.
    """
    check_trace_args(window=window, noise=noise, samples=samples, batch_size=batch_size)  # interp.causal.checks
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise InterpError(f"unknown trace kind(s) {unknown or list(kinds)}; choose from: {', '.join(KINDS)}")
    if samples < 1:
        raise InterpError(f"samples must be at least 1, got {samples}")
    reuse = check_reuse(reuse)
    tokens = prompt_tokens(model, prompt if isinstance(prompt, torch.Tensor) else [prompt])
    if tokens.shape[0] != 1:
        raise InterpError(f"causal tracing takes one prompt, got {tokens.shape[0]}")
    n_pos, n_layers = tokens.shape[1], model.cfg.n_layers
    if isinstance(subject, str):
        start, end = find_subject(model, tokens[0], subject)
    else:
        start, end = int(subject[0]), int(subject[1])
        if not 0 <= start < end <= n_pos:
            raise InterpError(f"subject range {subject} is not a non-empty range inside the prompt's {n_pos} tokens")
    chosen_layers = check_layers(model, layers)
    chosen_positions = check_positions(n_pos, positions)
    noise_std = noise * embedding_std(model)
    generator = torch.Generator().manual_seed(seed)
    sample_noise = (torch.randn(samples, end - start, model.cfg.d_model, generator=generator) * noise_std).to(model.device)

    def corrupt(activation: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        out = activation.clone()
        groups = out.shape[0] // samples
        out[:, start:end] = out[:, start:end] + sample_noise.repeat(groups, 1, 1).to(out.dtype)
        return out

    names = sorted({hook_name(layer, _KIND_SITE[kind]) for kind in kinds for layer in range(n_layers)})
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(tokens, names=names)
        clean_probs = torch.softmax(clean_logits[0, -1].float(), dim=-1)
        answer_id = int(clean_probs.argmax()) if answer is None else answer_token(model, answer)
        high = float(clean_probs[answer_id])

        def answer_prob(logits: torch.Tensor) -> torch.Tensor:
            """``[cells]``: P(answer) at the last position, averaged over each cell's samples."""
            probs = torch.softmax(logits[:, -1].float(), dim=-1)[:, answer_id]
            return probs.reshape(-1, samples).mean(dim=1)

        # The noised runs, recorded once: every cell replays them from its first restored block and token.
        recording, _ = record(model, tokens.repeat(samples, 1), fwd_hooks=[("hook_embed", corrupt)], reuse=reuse)
        low = float(answer_prob(recording.logits)[0])
        cells = [(kind, layer, pos) for kind in kinds for pos in chosen_positions for layer in chosen_layers]
        restored = [
            [layer] if kind == "resid" else window_layers(layer, window, n_layers) for kind, layer, _ in cells
        ]
        # Restoring the output of block l (resid) starts at block l + 1; a window starts at its first layer.
        needs = [
            (layers_here[0] + (1 if kind == "resid" else 0), pos) for (kind, _, pos), layers_here in zip(cells, restored)
        ]
        rows = sweep_rows(model, n_pos, batch_size, reuse=reuse, plain=64)
        mine = shard(range(len(cells)), strided=True)  # under torchrun: this rank's cells, merged after the loop
        plan = plan_batches(recording, [needs[i] for i in mine], rows_per_cell=samples, max_rows=rows, last_only=True)
        probs = torch.zeros(len(cells), dtype=torch.float64)
        done = len(cells) - len(mine)
        for batch in recording.batches(plan):
            patches: dict[str, list[RowPatch]] = {}
            owned = [mine[j] for j in batch.cells]
            for row, i in enumerate(owned):
                kind, layer, pos = cells[i]
                rows = slice(row * samples, (row + 1) * samples)
                for l_restore in restored[i]:
                    name = hook_name(l_restore, _KIND_SITE[kind])
                    patches.setdefault(name, []).append((rows, (pos - batch.prefix,), clean_cache[name][0, pos]))
            logits = recording.run(
                len(batch.cells), starts=batch.starts, prefix=batch.prefix, last_only=True,
                fwd_hooks=[(name, row_patch_hook(p)) for name, p in patches.items()],
            )
            probs[owned] = answer_prob(logits).cpu().double()
            done += len(batch.cells)
            if progress:
                progress(done, len(cells))
        probs = merge_owned(probs, mine)
    texts = token_strings(model, tokens[0])
    frame = pd.DataFrame(
        {
            "kind": [c[0] for c in cells],
            "layer": [c[1] for c in cells],
            "position": [c[2] for c in cells],
            "token": [texts[c[2]] for c in cells],
            "subject": [start <= c[2] < end for c in cells],
            "prob": probs.numpy(),
        }
    )
    frame["indirect_effect"] = frame["prob"] - low
    frame["corrupted_prob"] = low
    frame["clean_prob"] = high
    frame.attrs.update(
        answer=token_strings(model, torch.tensor([answer_id]))[0],
        answer_id=answer_id,
        low_score=low,
        high_score=high,
        subject_range=(start, end),
        input_ids=tokens[0].tolist(),
        input_tokens=texts,
        samples=samples,
        noise_std=noise_std,
        window=window,
        n_layers=n_layers,
    )
    return frame


TOKEN_GROUPS = (
    "before the subject", "first subject token", "middle subject tokens", "last subject token",
    "first subsequent token", "further tokens", "last token",
)


def token_group(position: int, subject_range: tuple[int, int], n_pos: int) -> str:
    """ROME's token category of ``position`` (the last token wins over any other), for averaging traces."""
    start, end = subject_range
    if position == n_pos - 1:
        return "last token"
    if position < start:
        return "before the subject"
    if position == start:
        return "first subject token"
    if position == end - 1:
        return "last subject token"
    if position < end:
        return "middle subject tokens"
    return "first subsequent token" if position == end else "further tokens"


def average_traces(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The mean of several prompts' traces by ROME's token groups (Meng et al. 2022, Figure 2).

    Prompts differ in length and subject position, so positions are first mapped to
    :data:`TOKEN_GROUPS` (first / middle / last subject token, first subsequent token, further
    tokens, last token, and tokens before the subject), averaged within each prompt, then averaged
    over the prompts that have that group. The result has :func:`causal_trace`'s columns with
    ``position`` = index of the group among those present, ``token`` = its name and ``rows`` = how
    many prompts it averages; ``corrupted_prob`` / ``clean_prob`` (and ``attrs`` ``low_score`` /
    ``high_score``) are means over all prompts, so :func:`plot_causal_trace` draws it.
    """
    if not frames:
        raise InterpError("average_traces needs at least one trace")
    parts = []
    for i, frame in enumerate(frames):
        n_pos = len(frame.attrs["input_tokens"])
        groups = [token_group(int(p), tuple(frame.attrs["subject_range"]), n_pos) for p in frame["position"]]
        per_row = frame.assign(group=groups).groupby(["kind", "layer", "group"], sort=False)[["prob", "indirect_effect"]].mean()
        parts.append(per_row.reset_index().assign(trace=i))
    both = pd.concat(parts, ignore_index=True)
    mean = both.groupby(["kind", "layer", "group"], sort=False).agg(
        prob=("prob", "mean"), indirect_effect=("indirect_effect", "mean"), rows=("trace", "nunique")
    ).reset_index()
    present = [g for g in TOKEN_GROUPS if g in set(mean["group"])]
    mean["position"] = [present.index(g) for g in mean["group"]]
    kinds = [k for k in KINDS if k in set(mean["kind"])]
    mean = mean.sort_values(["kind", "position", "layer"], key=lambda c: c.map(kinds.index) if c.name == "kind" else c)
    low = float(np.mean([f.attrs["low_score"] for f in frames]))
    high = float(np.mean([f.attrs["high_score"] for f in frames]))
    subject = [i for i, g in enumerate(present) if "subject token" in g]
    answers = {f.attrs["answer"] for f in frames}
    out = pd.DataFrame({
        "kind": mean["kind"], "layer": mean["layer"], "position": mean["position"], "token": mean["group"],
        "subject": [p in subject for p in mean["position"]], "prob": mean["prob"],
        "indirect_effect": mean["indirect_effect"], "corrupted_prob": low, "clean_prob": high, "rows": mean["rows"],
    }).reset_index(drop=True)
    out.attrs.update(
        answer=answers.pop() if len(answers) == 1 else "answer", low_score=low, high_score=high,
        subject_range=(subject[0], subject[-1] + 1) if subject else (0, 0), input_tokens=present, input_ids=[],
        n_layers=frames[0].attrs["n_layers"], window=frames[0].attrs["window"], samples=frames[0].attrs["samples"],
        traces=len(frames),
    )
    return out


def to_rome(frame: pd.DataFrame, kind: str = "resid") -> dict[str, Any]:
    """ROME's ``calculate_hidden_flow`` result for one ``kind``: ``scores [tokens, layers]`` (NaN where not traced), etc."""
    part = frame[frame["kind"] == kind]
    if part.empty:
        raise InterpError(f"no {kind!r} rows in this trace; kinds traced: {', '.join(frame['kind'].unique())}")
    attrs = frame.attrs
    scores = np.full((len(attrs["input_tokens"]), attrs["n_layers"]), np.nan)
    scores[part["position"].to_numpy(), part["layer"].to_numpy()] = part["prob"].to_numpy()
    return {
        "scores": scores,
        "low_score": attrs["low_score"],
        "high_score": attrs["high_score"],
        "input_ids": np.array(attrs["input_ids"]),
        "input_tokens": list(attrs["input_tokens"]),
        "subject_range": tuple(attrs["subject_range"]),
        "answer": attrs["answer"],
        "window": attrs["window"],
        "correct_prediction": True,
        "kind": "" if kind == "resid" else kind,
    }


def plot_causal_trace(frame: pd.DataFrame, *, kinds: Sequence[str] | None = None, title: str | None = None) -> go.Figure:
    """ROME-style heatmaps, one panel per kind: tokens down, layers across, P(answer) coloured from the corrupted baseline.

    Subject tokens are starred; the colour scale starts at ``low_score`` as in the paper's figures.
    """
    kinds = [k for k in (kinds or KINDS) if (frame["kind"] == k).any()]
    if not kinds:
        raise InterpError("this trace has no rows to plot")
    titles = {
        "resid": "restoring the hidden state after layer l",
        "attn": "restoring attention (window) around layer l",
        "mlp": "restoring MLP (window) around layer l",
    }
    # One panel per row, each with its colour bar to the right of the plot area: side by side, a colour
    # bar sat on the next panel's token labels, and the figure got ~370 px for everything.
    low, high = frame.attrs["low_score"], frame.attrs["high_score"]
    start, end = frame.attrs["subject_range"]
    labels = [f"{t!r}*" if start <= i < end else repr(t) for i, t in enumerate(frame.attrs["input_tokens"])]
    panel = max(240, 22 * len(labels) + 60)  # px per panel: one readable row per token
    gap = 110  # px between panels, for the subplot title and the layer axis title
    height = len(kinds) * panel + (len(kinds) - 1) * gap + 140
    fig = make_subplots(
        rows=len(kinds), cols=1, subplot_titles=[titles[k] for k in kinds],
        vertical_spacing=gap / (height - 140) if len(kinds) > 1 else 0.0,
    )
    for row, kind in enumerate(kinds, start=1):
        arrays = to_rome(frame, kind)
        domain = fig.layout["yaxis" if row == 1 else f"yaxis{row}"].domain
        fig.add_trace(
            go.Heatmap(
                z=arrays["scores"],
                x=list(range(arrays["scores"].shape[1])),
                y=[f"{i}: {label}" for i, label in enumerate(labels)],
                colorscale=_KIND_COLOR[kind],
                zmin=low,
                zmax=max(high, float(np.nanmax(arrays["scores"]))),
                colorbar=dict(x=1.02, xanchor="left", y=(domain[0] + domain[1]) / 2, yanchor="middle",
                              len=domain[1] - domain[0], title=f"p({frame.attrs['answer'].strip()})"),
                hovertemplate="layer %{x}<br>token %{y}<br>p=%{z:.4f}<extra></extra>",
            ),
            row=row,
            col=1,
        )
        fig.update_xaxes(title_text=f"layer ({kind})", row=row, col=1)
        fig.update_yaxes(autorange="reversed", automargin=True, row=row, col=1)
    fig.update_layout(
        title=title or f"causal trace: p({frame.attrs['answer']!r}) clean {high:.3f}, corrupted {low:.3f}",
        height=height,
        width=max(700, 22 * int(frame["layer"].nunique()) + 420),
        margin=dict(l=40, r=120, t=90, b=60),
    )
    return fig
