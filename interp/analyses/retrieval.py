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
from interp.distributed import all_reduce_sum, shard
from interp.hooks import HookedModel, hook_name
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
    generated, argmax = _decode_rows_with_argmax(model, tokens, max_new_tokens)
    return generated[0].tolist(), argmax[0]


def _decode_rows_with_argmax(model: HookedModel, tokens: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`greedy_decode_with_argmax` of several prompts of one length ``[rows, pos]`` in one batch:
    ``(generated [rows, step], argmax [rows, step, layer, head])``."""

    def last_query_argmax(layer: int, stats: AttentionStats) -> torch.Tensor:
        return stats.argmax[:, :, -1].cpu()

    out = model.model(input_ids=tokens[:, :-1], use_cache=True, logits_to_keep=1)  # the prefill's logits are unused
    cache, current = out.cache, tokens[:, -1:]
    generated, argmaxes = [], []
    for step in range(steps):
        position = tokens.shape[1] - 1 + step  # of the query; it sees its cached keys plus itself
        dropped = torch.tensor([position - cache.layers[layer].keys.shape[-2] for layer in range(model.cfg.n_layers)])
        with model.collect_attention_stats(_ARGMAX_ONLY, reduce=last_query_argmax) as stats:
            out = model.model(input_ids=current, cache=cache, use_cache=True)
        cache = out.cache
        current = out.logits[:, -1].argmax(dim=-1, keepdim=True)
        generated.append(current[:, 0].cpu())
        argmax = torch.stack([stats[layer] for layer in range(model.cfg.n_layers)], dim=1)  # [rows, layer, head]
        argmaxes.append(torch.where(argmax >= 0, argmax + dropped[:, None], argmax))
    return torch.stack(generated, dim=1), torch.stack(argmaxes, dim=1)


def _by_length(samples: list[NeedleSample]) -> dict[int, list[int]]:
    """Sample indices grouped by prompt length (equal lengths batch without padding), in first-seen order."""
    groups: dict[int, list[int]] = {}
    for index, sample in enumerate(samples):
        groups.setdefault(sample.tokens.shape[1], []).append(index)
    return groups


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

    Prompts of equal length are decoded together in one batch. ``frame.attrs["summary"]`` holds the
    number of samples, how many were retrieved and the mean recall.
    """
    groups = list(_by_length(samples).values())
    return _scores_frame(model, samples, groups, _decode_groups(model, samples, groups, on_sample))


def _decode_groups(model: HookedModel, samples: list[NeedleSample], groups: list[list[int]], on_sample=None) -> dict[str, torch.Tensor]:
    """``score`` ``[sample, layer, head]`` (the copy-paste score of each retrieved sample, else 0) and
    ``recall`` ``[sample]`` of the samples in ``groups`` (one batch per group); other samples stay 0."""
    score = torch.zeros(len(samples), model.cfg.n_layers, model.cfg.n_heads)
    recall = torch.zeros(len(samples), dtype=torch.float64)
    done = 0
    with torch.no_grad():
        for indices in groups:
            steps = max(len(samples[i].answer_ids) for i in indices)
            tokens = torch.cat([samples[i].tokens for i in indices])
            generated, argmax = _decode_rows_with_argmax(model, tokens, steps)
            for row, i in enumerate(indices):
                sample, n = samples[i], len(samples[i].answer_ids)
                ids = generated[row, :n].tolist()
                recall[i] = answer_recall(ids, sample.answer_ids)
                if recall[i] > RECALL_TO_COUNT:
                    score[i] = copy_paste_score(ids, argmax[row, :n], sample.tokens[0].cpu(), sample.answer_span)
            done += len(indices)
            if on_sample:
                on_sample(done, sum(len(g) for g in groups))
    return {"score": score, "recall": recall}


def _scores_frame(model: HookedModel, samples: list[NeedleSample], groups: list[list[int]], decoded: dict[str, torch.Tensor]) -> pd.DataFrame:
    """The frame of :func:`retrieval_scores` from every sample's decoding, summed in decoding order."""
    total = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    counted = 0
    for i in (i for indices in groups for i in indices):
        if float(decoded["recall"][i]) > RECALL_TO_COUNT:
            total += decoded["score"][i]
            counted += 1
    recalls = [float(r) for r in decoded["recall"]]
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


def _zeroing_hooks(model: HookedModel, ablated: list[list[tuple[int, int]]]) -> list[tuple[str, object]]:
    """``hook_z`` hooks that zero, in batch row ``r``, the heads ``ablated[r]`` (as ``ablate_heads`` does for every row)."""
    keep: dict[int, torch.Tensor] = {}
    for row, heads in enumerate(ablated):
        for layer, head in heads:
            keep.setdefault(layer, torch.ones(len(ablated), 1, model.cfg.n_heads, 1, device=model.device))[row, 0, head, 0] = 0.0

    def zero(mask: torch.Tensor):
        return lambda z, hook: z * mask.to(z.dtype)

    return [(hook_name(layer, "attn.hook_z"), zero(mask)) for layer, mask in sorted(keep.items())]


@torch.no_grad()
def _recalls_with_heads_zeroed(
    model: HookedModel, samples: list[NeedleSample], conditions: list[list[tuple[int, int]]]
) -> list[float]:
    """Per condition (a list of heads to zero), :func:`needle_recall` over ``samples`` with those heads zeroed."""
    recalls = _zeroed_recalls(model, samples, list(_by_length(samples).values()), conditions)
    return [sum(r) / len(r) for r in recalls.tolist()]


@torch.no_grad()
def _zeroed_recalls(
    model: HookedModel, samples: list[NeedleSample], groups: list[list[int]], conditions: list[list[tuple[int, int]]]
) -> torch.Tensor:
    """``[condition, sample]`` recall with each condition's heads zeroed, for the samples in ``groups`` (others 0).

    Every condition and every prompt of one group share one batched ``generate``; each row is cut
    where its own ``generate`` would have stopped (its answer's length, or an end-of-text token).
    """
    eos = model.model.generation_config.eos_token_id
    stops = set() if eos is None else {eos} if isinstance(eos, int) else set(eos)
    recalls = torch.zeros(len(conditions), len(samples), dtype=torch.float64)
    for indices in groups:
        tokens = torch.cat([samples[i].tokens for i in indices]).repeat(len(conditions), 1)  # condition-major rows
        hooks = _zeroing_hooks(model, [heads for heads in conditions for _ in indices])
        steps = max(len(samples[i].answer_ids) for i in indices)
        with model.hooks(hooks):
            out = model.model.generate(
                tokens, attention_mask=torch.ones_like(tokens), max_new_tokens=steps, do_sample=False, pad_token_id=0
            )[:, tokens.shape[1] :].tolist()
        for row, generated in enumerate(out):
            condition, i = divmod(row, len(indices))
            generated = generated[: len(samples[indices[i]].answer_ids)]
            ended = [step for step, token in enumerate(generated) if token in stops]
            generated = generated[: ended[0] + 1] if ended else generated
            recalls[condition, indices[i]] = answer_recall(generated, samples[indices[i]].answer_ids)
    return recalls


def retrieval_ablation_check(
    model: HookedModel, samples: list[NeedleSample], scores: pd.DataFrame, *, k: int = 10, n_random: int = 3, seed: int = 0
) -> dict[str, float]:
    """Needle recall with the top-``k`` retrieval heads zeroed vs ``k`` random heads (mean of ``n_random`` draws).

    The clean run, the top-``k`` run and the random draws decode together (one batch per prompt length).
    """
    groups = list(_by_length(samples).values())
    conditions = _ablation_conditions(scores, k, n_random, seed)
    return _ablation_summary(k, n_random, _zeroed_recalls(model, samples, groups, conditions))


def _ablation_conditions(scores: pd.DataFrame, k: int, n_random: int, seed: int) -> list[list[tuple[int, int]]]:
    """No head zeroed, the top-``k`` heads, then ``n_random`` seeded draws of ``k`` heads."""
    ranked = scores.sort_values("retrieval_score", ascending=False)
    top = list(zip(ranked.layer.head(k).astype(int), ranked["head"].head(k).astype(int)))
    everything = list(zip(scores.layer.astype(int), scores["head"].astype(int)))
    rng = random.Random(seed)
    draws = [rng.sample(everything, k) for _ in range(n_random)]
    return [[], top, *draws]


def _ablation_summary(k: int, n_random: int, recalls: torch.Tensor) -> dict[str, float]:
    clean, top_recall, *random_recalls = [sum(r) / len(r) for r in recalls.tolist()]
    return {
        "k": k,
        "recall_clean": clean,
        "recall_top_k_ablated": top_recall,
        "recall_random_k_ablated": sum(random_recalls) / n_random,
    }


@register("retrieval")
def _scan_retrieval(ctx) -> pd.DataFrame:
    lengths = sorted({max(64, ctx.settings.context_length // 2), max(64, ctx.settings.context_length)})
    samples = needle_grid(ctx.model, context_lengths=lengths, n_samples=ctx.settings.needle_samples, seed=ctx.settings.seed)
    # Under torchrun a rank decodes whole groups of equal-length prompts (every N-th group): each group is
    # the batch one process decodes, so the greedy tokens and argmax keys are the same; the per-sample
    # results are gathered (zeros elsewhere: exact) and summed in one process's order.
    groups = list(_by_length(samples).values())
    mine = shard(groups, strided=True)
    decoded = _decode_groups(ctx.model, samples, mine, on_sample=ctx.progress)
    score, recall = all_reduce_sum(decoded["score"], decoded["recall"])  # unchanged in one process
    frame = _scores_frame(ctx.model, samples, groups, {"score": score, "recall": recall})
    if ctx.settings.retrieval_check_k:
        k, n_random = ctx.settings.retrieval_check_k, 3
        conditions = _ablation_conditions(frame, k, n_random, ctx.settings.seed)
        recalls = all_reduce_sum(_zeroed_recalls(ctx.model, samples, mine, conditions))
        frame.attrs["summary"]["ablation_check"] = _ablation_summary(k, n_random, recalls)
    return frame
