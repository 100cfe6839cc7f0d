"""The faster scan analyses equal the straightforward way, written here by hand on the plain HF model (float64):

- streaming: one full forward per restricted layer, the head's attention cut to sink + window by an
  additive mask handed to eager attention (the scan replays from the restricted layer instead);
- retrieval (float32, as the statistics kernel runs): one ``generate`` per prompt and the argmax of eager attention's ``output_attentions``
  (the scan decodes prompts of one length together through the statistics kernel);
- the retrieval ablation check: one ``generate`` per prompt and condition with the heads' slices of
  ``o_proj``'s input zeroed (the scan runs every condition in one batched ``generate``);
- head ablation: the mean next-token loss of full forwards with the head's ``o_proj`` slice replaced by its mean.
"""

import pytest
import torch
from tiny_models import tiny_model

from interp.analyses import retrieval_ablation_check, retrieval_scores, streaming_scores
from interp.analyses.head_ablation import head_ablation
from interp.analyses.needles import NeedleSample
from interp.analyses.retrieval import _decode_rows_with_argmax, answer_recall, copy_paste_score
from interp.hooks import HookedModel

N_HEADS, N_KV, D_HEAD = 4, 2, 8  # tiny llama


def _pair(seed: int = 0, dtype: torch.dtype = torch.float64):
    """The same tiny llama twice: a plain eager HF model (the reference) and a HookedModel."""
    plain = tiny_model("llama", seed=seed).to(dtype)
    plain.set_attn_implementation("eager")
    return plain, HookedModel(tiny_model("llama", seed=seed).to(dtype))


def _answer_loss(plain, tokens: torch.Tensor, answer: list[int]) -> torch.Tensor:
    """``[rows]`` mean cross-entropy of the answer tokens at the end of ``tokens``."""
    logits = plain(tokens).logits[:, -len(answer) - 1 : -1]
    target = torch.tensor(answer).expand(tokens.shape[0], -1)
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none").mean(dim=1)


def _restricted_losses(plain, tokens, answer, layer: int, head_sets: list[list[int]], n_sink: int, window: int):
    """Row ``r``: the answer loss with the heads ``head_sets[r]`` of ``layer`` attending only to sinks + window."""
    n = tokens.shape[1]
    query, key = torch.arange(n)[:, None], torch.arange(n)[None, :]
    blocked = (key >= n_sink) & (key <= query - window)  # causally visible, neither sink nor recent

    def restrict(module, args, kwargs):
        mask = kwargs["attention_mask"]
        rows = len(head_sets)
        per_head = torch.zeros(rows, N_HEADS, n, n, dtype=torch.float64)
        if mask is not None and mask.dtype == torch.bool:
            per_head = per_head.masked_fill(~mask[..., :n, :n], float("-inf"))
        elif mask is not None:
            per_head = per_head + mask[..., :n, :n].to(torch.float64)
        else:
            per_head = per_head.masked_fill(key > query, float("-inf"))
        for row, heads in enumerate(head_sets):
            per_head[row, heads] = per_head[row, heads].masked_fill(blocked, float("-inf"))
        return args, {**kwargs, "attention_mask": per_head}

    handle = plain.model.layers[layer].self_attn.register_forward_pre_hook(restrict, with_kwargs=True)
    try:
        return _answer_loss(plain, tokens.repeat(len(head_sets), 1), answer)
    finally:
        handle.remove()


@torch.no_grad()
def test_streaming_scores_equal_full_forwards_with_a_hand_written_mask():
    plain, model = _pair()
    prompt = torch.randint(0, 97, (1, 24), generator=torch.Generator().manual_seed(0))
    answer = [5, 6, 7]
    sample = NeedleSample(tokens=prompt, answer_ids=answer, answer_span=(3, 6), context_length=24, depth=0.2, answer="")
    tokens = torch.cat([prompt[0], torch.tensor(answer)])[None]
    n_sink, window = 2, 5
    per_head, per_group = streaming_scores(model, [sample], n_sink=n_sink, window=window)
    baseline = _answer_loss(plain, tokens, answer)[0]
    for layer in range(2):
        heads = _restricted_losses(plain, tokens, answer, layer, [[h] for h in range(N_HEADS)], n_sink, window) - baseline
        groups = _restricted_losses(plain, tokens, answer, layer, [[0, 1], [2, 3]], n_sink, window) - baseline
        torch.testing.assert_close(per_head[layer], heads.float(), atol=1e-5, rtol=0)
        torch.testing.assert_close(per_group[layer], groups.repeat_interleave(2).float(), atol=1e-5, rtol=0)
    assert per_group.abs().max() > 1e-3  # the restriction changes the loss: equality means something


@torch.no_grad()
def test_retrieval_scores_equal_one_prompt_at_a_time_with_eager_argmax():
    plain, model = _pair(1, torch.float32)  # the statistics kernel runs float32 at most
    plain.generation_config.eos_token_id = None  # the decoding trace runs its steps whatever it emits
    generator = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 97, (1, length), generator=generator) for length in (12, 12, 16, 12)]
    samples, expected, counted, traces = [], torch.zeros(2, N_HEADS), 0, []
    for prompt in prompts:
        # The answer is what the model decodes, so every sample counts (recall 1) and the score is non-trivial.
        out = plain.generate(prompt, max_new_tokens=3, do_sample=False, pad_token_id=0)
        answer = out[0, prompt.shape[1] :].tolist()
        generated = answer
        full = out[:, :-1]  # the query that produced step t sits at position len(prompt) - 1 + t
        attentions = plain(full, output_attentions=True).attentions
        argmax = torch.stack(
            [torch.stack([attentions[layer][0, :, prompt.shape[1] - 1 + t].argmax(-1) for layer in range(2)]) for t in range(3)]
        )
        traces.append((answer, argmax))
        span = (2, 5)
        samples.append(NeedleSample(prompt, answer, span, prompt.shape[1], 0.5, ""))
        if answer_recall(generated, answer) > 0.5:
            expected += copy_paste_score(generated, argmax, prompt[0], span)
            counted += 1
    # The batched trace of the three 12-token prompts, row by row.
    generated, argmax = _decode_rows_with_argmax(model, torch.cat([prompts[i] for i in (0, 1, 3)]), 3)
    for row, i in enumerate((0, 1, 3)):
        assert generated[row].tolist() == traces[i][0]
        assert torch.equal(argmax[row], traces[i][1])
    assert not torch.equal(argmax[0], argmax[1])  # the rows differ, so a row mix-up would show
    frame = retrieval_scores(model, samples)
    assert frame.attrs["summary"]["needle_samples_retrieved"] == counted == len(prompts)
    torch.testing.assert_close(torch.tensor(frame.retrieval_score.to_numpy()).view(2, N_HEADS).float(), expected / counted)


def _zeroed_recall(plain, sample: NeedleSample, heads: list[tuple[int, int]]) -> float:
    """Needle recall of one ``generate`` with ``heads`` zeroed in ``o_proj``'s input (their ``hook_z``)."""

    def zero(layer_heads):
        def hook(module, args):
            z = args[0].clone()
            for head in layer_heads:
                z[..., head * D_HEAD : (head + 1) * D_HEAD] = 0
            return (z,)

        return hook

    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    handles = [plain.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(zero(hs)) for layer, hs in by_layer.items()]
    try:
        out = plain.generate(sample.tokens, max_new_tokens=len(sample.answer_ids), do_sample=False, pad_token_id=0)
    finally:
        for handle in handles:
            handle.remove()
    return answer_recall(out[0, sample.tokens.shape[1] :].tolist(), sample.answer_ids)


@torch.no_grad()
def test_retrieval_ablation_check_equals_one_generate_per_prompt_and_condition():
    plain, model = _pair(2, torch.float32)
    generator = torch.Generator().manual_seed(2)
    samples = []
    for length in (10, 10, 14):
        prompt = torch.randint(3, 97, (1, length), generator=generator)
        answer = plain.generate(prompt, max_new_tokens=4, do_sample=False, pad_token_id=0, min_new_tokens=4)[0, length:].tolist()
        samples.append(NeedleSample(prompt, answer, (1, 5), length, 0.5, ""))
    scores = retrieval_scores(model, samples)
    k, n_random = 3, 2
    check = retrieval_ablation_check(model, samples, scores, k=k, n_random=n_random, seed=5)
    # The same draws as the check: its top-k and its seeded random heads.
    import random

    ranked = scores.sort_values("retrieval_score", ascending=False)
    top = list(zip(ranked.layer.head(k).astype(int), ranked["head"].head(k).astype(int)))
    everything = list(zip(scores.layer.astype(int), scores["head"].astype(int)))
    rng = random.Random(5)
    draws = [rng.sample(everything, k) for _ in range(n_random)]
    mean = lambda heads: sum(_zeroed_recall(plain, s, heads) for s in samples) / len(samples)  # noqa: E731
    assert check["recall_clean"] == pytest.approx(mean([])) == pytest.approx(1.0)
    assert check["recall_top_k_ablated"] == pytest.approx(mean(top))
    assert check["recall_random_k_ablated"] == pytest.approx(sum(mean(d) for d in draws) / n_random)
    assert min(mean(top), *(mean(d) for d in draws)) < 1.0  # some ablation changes the decoding


@torch.no_grad()
def test_head_ablation_equals_full_forwards_with_a_hand_written_mean():
    plain, model = _pair(3)
    tokens = torch.randint(0, 97, (1, 12), generator=torch.Generator().manual_seed(3))
    reference = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(4))
    frame = head_ablation(model, tokens, method="mean", reference=reference)

    def loss() -> float:
        logits = plain(tokens).logits[0, :-1]
        return float(torch.nn.functional.cross_entropy(logits, tokens[0, 1:]))

    baseline = loss()
    for layer in range(2):
        seen = []
        handle = plain.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
        plain(reference)
        handle.remove()
        mean = seen[0].mean(dim=(0, 1))
        for head in range(N_HEADS):
            part = slice(head * D_HEAD, (head + 1) * D_HEAD)

            def replace(module, args):
                z = args[0].clone()
                z[..., part] = mean[part]
                return (z,)

            handle = plain.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(replace)
            expected = loss() - baseline
            handle.remove()
            row = frame[(frame.layer == layer) & (frame["head"] == head)]
            assert float(row.delta.iloc[0]) == pytest.approx(expected, abs=1e-5)


@torch.no_grad()
def test_previous_token_scores_from_the_shared_pass_equal_eager_attention(tiny_folder):
    """The scan's previous_token columns come from the statistics pass it shares with max_attention."""
    import interp
    from interp.analyses.probes import default_probes
    from interp.settings import ScanSettings

    model = interp.load(tiny_folder, device="cpu")
    result = interp.scan(model, analyses="max_attention,previous_token", settings=ScanSettings(context_length=24, batch=2))
    plain = interp.load(tiny_folder, device="cpu").model
    plain.set_attn_implementation("eager")
    probes = default_probes(model, context_length=24, batch=2, seed=0)
    for probe, column in (("repeated", "previous_token_score"), ("natural", "previous_token_score_natural")):
        tokens = probes[probe].tokens
        n = tokens.shape[1]
        for layer, pattern in enumerate(plain(tokens, output_attentions=True).attentions):
            previous = pattern[:, :, torch.arange(1, n), torch.arange(0, n - 1)]  # [batch, head, query >= 1]
            got = result.heads[result.heads.layer == layer].sort_values("head")
            torch.testing.assert_close(torch.tensor(got[column].to_numpy()).float(), previous.mean(dim=(0, 2)), atol=1e-5, rtol=0)
            if probe == "repeated":
                tl = previous.sum(dim=2).mean(dim=0) / n  # TransformerLens 'mul': summed over all n queries
                torch.testing.assert_close(torch.tensor(got["previous_token_score_tl"].to_numpy()).float(), tl, atol=1e-5, rtol=0)
