"""``model.gradients`` at every hook point vs one plain forward + backward of the HF model.

SmolLM2-135M, fp32, CPU, one prompt of ``--tokens`` tokens; the metric is the log-probability of one
answer token at the last position. Three timings per round, alternating in one process, medians over
``--rounds`` (the issue's target: ``all`` within 1.5x of ``plain``):

- ``plain``: ``model.model(input_ids).logits`` -> metric -> ``loss.backward()`` (parameter gradients,
  as a user of plain PyTorch would write it; no interp hook function registered);
- ``plain, no weights``: the same forward, backward only to the embedding output
  (``torch.autograd.grad(loss, inputs_embeds)``): the work ``model.gradients`` does, without hooks, so the
  ratio against it is interp's own overhead;
- ``interp all``: ``model.gradients(tokens, metric)`` at every hook point of the model (which
  materializes every layer's attention scores and pattern, as asking for them requires);
- ``interp no pattern``: every hook point except ``hook_attn_scores``/``hook_pattern`` (attention stays
  on the model's own SDPA kernel).

Run: ``python benchmarks/gradients.py [--tokens 128] [--rounds 3] [--threads N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

import interp  # noqa: E402

TEXT = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after "
    "the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. Locally nicknamed "
    "La dame de fer, it was constructed as the centrepiece of the 1889 World's Fair, and to crown the centennial "
    "anniversary of the French Revolution. Although initially criticised by some of France's leading artists and "
    "intellectuals for its design, it has since become a global cultural icon of France and one of the most "
    "recognisable structures in the world."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = interp.load("smollm2-135m", device="cpu")
    tokens = model.to_tokens(TEXT)[:, : args.tokens]
    answer = int(model.to_tokens(" Paris")[0, -1])

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(logits[0, -1].float(), -1)[answer]

    every = model.hook_names()
    no_pattern = [name for name in every if not name.endswith(("hook_pattern", "hook_attn_scores"))]

    def plain() -> None:
        model.model.zero_grad(set_to_none=True)
        metric(model.model(input_ids=tokens, use_cache=False).logits).backward()
        model.model.zero_grad(set_to_none=True)

    def plain_no_weights() -> None:
        with torch.no_grad():
            embeds = model.model.get_input_embeddings()(tokens)
        embeds.requires_grad_()
        loss = metric(model.model(inputs_embeds=embeds, use_cache=False).logits)
        torch.autograd.grad(loss, [embeds])

    runs = {
        "plain": plain,
        "plain, no weights": plain_no_weights,
        "interp all": lambda: model.gradients(tokens, metric),
        "interp no pattern": lambda: model.gradients(tokens, metric, names=no_pattern),
    }
    for run in runs.values():  # warm-up (also traces the block layout once)
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["plain"])
    activations_only = statistics.median(times["plain, no weights"])
    print(f"SmolLM2-135M, {tokens.shape[1]} tokens, {torch.get_num_threads()} threads, median of {args.rounds} rounds")
    print(f"hook points: all {len(every)}, without scores/pattern {len(no_pattern)}")
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"{name:>18}: {median * 1000:8.1f} ms   {median / base:5.2f}x plain forward+backward   "
            f"{median / activations_only:5.2f}x plain without weight gradients"
        )


if __name__ == "__main__":
    main()
