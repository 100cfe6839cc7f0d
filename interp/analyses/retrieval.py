"""Retrieval heads (Wu et al., "Retrieval Head Mechanistically Explains Long-Context Factuality", 2024).

On needle-in-a-haystack prompts the model greedily decodes the answer. At each decoding step a head
scores ``1 / len(answer)`` when its most-attended key (argmax of the current query's attention row,
from the statistics kernel: no pattern is materialized) lies inside the needle's answer span AND the
generated token equals the token at that key, i.e. the head "copy-pastes" the needle. Samples count
only when the model retrieved the needle (answer-token recall > 0.5); a head's ``retrieval_score`` is
the mean over counted samples. Heads above 0.1 are flagged (the paper finds fewer than 5% do).

Causal check (:func:`retrieval_ablation_check`): zeroing the top-k retrieval heads should hurt needle
recall much more than zeroing k random heads.
"""

from __future__ import annotations

import random

import pandas as pd
import torch

from interp.analyses.head_stats import head_frame
from interp.analyses.registry import register
from interp.hooks import HookedModel
from interp.kernels import AttentionStats, StatsConfig
from interp.analyses.needles import NeedleSample, needle_grid

RETRIEVAL_THRESHOLD = 0.1
RECALL_TO_COUNT = 0.5
_ARGMAX_ONLY = StatsConfig(n_sink=0, window=0, received=False)


@torch.no_grad()
def greedy_decode_with_argmax(
    model: HookedModel, tokens: torch.Tensor, max_new_tokens: int
) -> tuple[list[int], torch.Tensor]:
    """Greedy decoding of ``tokens`` ``[1, pos]``; returns the generated ids and, per generated token,
    the argmax key of the query that produced it: ``[step, layer, head]``.

    The prompt minus its last token is prefilled with the model's own attention; every step after
    runs one query through the statistics kernel against the KV cache. Keys are absolute prompt
    positions: a sliding-window layer's cache keeps only its last ``window - 1`` keys, so the kernel's
    argmax (an index into the keys it was given) is shifted by the keys dropped before them.
    """

    def last_query_argmax(layer: int, stats: AttentionStats) -> torch.Tensor:
        return stats.argmax[0, :, -1].cpu()

    out = model.model(input_ids=tokens[:, :-1], use_cache=True, logits_to_keep=1)  # the prefill's logits are unused
    cache, current = out.cache, tokens[:, -1:]
    generated, argmaxes = [], []
    for step in range(max_new_tokens):
        position = tokens.shape[1] - 1 + step  # of the query; it sees its cached keys plus itself
        dropped = torch.tensor([position - cache.layers[layer].keys.shape[-2] for layer in range(model.cfg.n_layers)])
        with model.collect_attention_stats(_ARGMAX_ONLY, reduce=last_query_argmax) as stats:
            out = model.model(input_ids=current, cache=cache, use_cache=True)
        cache = out.cache
        next_id = int(out.logits[0, -1].argmax())
        generated.append(next_id)
        argmax = torch.stack([stats[layer] for layer in range(model.cfg.n_layers)])
        argmaxes.append(torch.where(argmax >= 0, argmax + dropped[:, None], argmax))
        current = torch.tensor([[next_id]], device=tokens.device)
    return generated, torch.stack(argmaxes)


def answer_recall(generated: list[int], answer_ids: list[int]) -> float:
    """Share of the answer's tokens that appear among the generated tokens."""
    return sum(t in generated for t in answer_ids) / len(answer_ids)


def copy_paste_score(
    generated: list[int], argmax: torch.Tensor, prompt: torch.Tensor, answer_span: tuple[int, int]
) -> torch.Tensor:
    """Wu et al.'s per-sample score ``[layer, head]`` from the decoding trace.

    ``argmax[step, layer, head]`` is the key each head attended most when producing ``generated[step]``;
    a step counts for a head when that key lies in ``answer_span`` and holds the generated token.
    Each counted step adds ``1 / answer length``.
    """
    start, end = answer_span
    score = torch.zeros(argmax.shape[1:])
    for step, token in enumerate(generated):
        keys = argmax[step]
        in_span = (keys >= start) & (keys < end)
        copied = prompt[keys.clamp(0, len(prompt) - 1)] == token
        score += (in_span & copied).float() / (end - start)
    return score


def sample_retrieval_scores(model: HookedModel, sample: NeedleSample) -> tuple[torch.Tensor, float]:
    """``([layer, head] copy-paste score, answer recall)`` for one needle prompt."""
    generated, argmax = greedy_decode_with_argmax(model, sample.tokens, len(sample.answer_ids))
    score = copy_paste_score(generated, argmax, sample.tokens[0].cpu(), sample.answer_span)
    return score, answer_recall(generated, sample.answer_ids)


def retrieval_scores(model: HookedModel, samples: list[NeedleSample], *, on_sample=None) -> pd.DataFrame:
    """Per head: ``retrieval_score`` (mean over retrieved samples), ``retrieval_head`` (score > 0.1).

    ``frame.attrs["summary"]`` holds the number of samples, how many were retrieved and the mean recall.
    """
    total = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    counted, recalls = 0, []
    for index, sample in enumerate(samples):
        score, recall = sample_retrieval_scores(model, sample)
        recalls.append(recall)
        if recall > RECALL_TO_COUNT:
            total += score
            counted += 1
        if on_sample:
            on_sample(index + 1, len(samples))
    frame = head_frame(model, {"retrieval_score": total / max(counted, 1)})
    frame["retrieval_head"] = frame["retrieval_score"] > RETRIEVAL_THRESHOLD
    frame.attrs["summary"] = {
        "needle_samples": len(samples),
        "needle_samples_retrieved": counted,
        "needle_recall_mean": sum(recalls) / len(recalls) if recalls else 0.0,
        "retrieval_threshold": RETRIEVAL_THRESHOLD,
        "retrieval_head_share": float(frame["retrieval_head"].mean()),
    }
    return frame


@torch.no_grad()
def needle_recall(model: HookedModel, samples: list[NeedleSample]) -> float:
    """Mean answer recall of greedy decoding over ``samples`` (with whatever hooks are active)."""
    recalls = []
    for sample in samples:
        generated = model.model.generate(
            sample.tokens, max_new_tokens=len(sample.answer_ids), do_sample=False, pad_token_id=0
        )[0, sample.tokens.shape[1] :].tolist()
        recalls.append(answer_recall(generated, sample.answer_ids))
    return sum(recalls) / len(recalls)


def retrieval_ablation_check(
    model: HookedModel, samples: list[NeedleSample], scores: pd.DataFrame, *, k: int = 10, n_random: int = 3, seed: int = 0
) -> dict[str, float]:
    """Needle recall with the top-``k`` retrieval heads zeroed vs ``k`` random heads (mean of ``n_random`` draws)."""
    ranked = scores.sort_values("retrieval_score", ascending=False)
    top = list(zip(ranked.layer.head(k).astype(int), ranked["head"].head(k).astype(int)))
    everything = list(zip(scores.layer.astype(int), scores["head"].astype(int)))
    rng = random.Random(seed)
    with model.ablate_heads(top):
        top_recall = needle_recall(model, samples)
    random_recalls = []
    for _ in range(n_random):
        with model.ablate_heads(rng.sample(everything, k)):
            random_recalls.append(needle_recall(model, samples))
    return {
        "k": k,
        "recall_clean": needle_recall(model, samples),
        "recall_top_k_ablated": top_recall,
        "recall_random_k_ablated": sum(random_recalls) / n_random,
    }


@register("retrieval")
def _scan_retrieval(ctx) -> pd.DataFrame:
    lengths = sorted({max(64, ctx.settings.context_length // 2), max(64, ctx.settings.context_length)})
    samples = needle_grid(ctx.model, context_lengths=lengths, n_samples=ctx.settings.needle_samples, seed=ctx.settings.seed)
    frame = retrieval_scores(ctx.model, samples, on_sample=ctx.progress)
    if ctx.settings.retrieval_check_k:
        frame.attrs["summary"]["ablation_check"] = retrieval_ablation_check(
            ctx.model, samples, frame, k=ctx.settings.retrieval_check_k, seed=ctx.settings.seed
        )
    return frame
