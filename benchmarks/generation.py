"""Overhead of generating under interp's hooks: ``model.generate`` with a steering hook against plain HF ``generate``.

    python benchmarks/generation.py [--model smollm2-135m] [--new-tokens 30] [--repeats 3] [--device cpu] [--threads 1]

Loads the model twice (one copy unhooked: the Hugging Face model with nothing of interp left) and
times, interleaved in the same run, greedy generation of ``--new-tokens`` tokens (``min_new_tokens``
forces the full length) from one prompt:

  plain    HF ``generate`` on the unhooked copy
  hooked   ``HookedModel.generate`` with no hook function (interp's hooks installed, all idle)
  steered  ``HookedModel.generate`` inside ``model.steer(blocks.{L/2}.hook_resid_post, v, coeff=4)``

and prints the median of ``--repeats`` runs and each ratio to plain (target for steered: <= 1.1x).
Each repeat runs the three in a rotated order, so a burst of load on a shared machine does not always
hit the same one; ``--threads`` fixes torch's CPU thread count for all three.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--new-tokens", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads [default: torch's]")
    args = parser.parse_args()

    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    import interp

    hooked = interp.load(args.model, device=args.device)
    plain = interp.load(args.model, device=args.device).unhook()
    tokens = hooked.to_tokens("The Eiffel Tower is in the city of Paris, and the best thing to do there is")
    mask = torch.ones_like(tokens)
    name = f"blocks.{hooked.cfg.n_layers // 2}.hook_resid_post"
    vector = torch.randn(hooked.cfg.d_model, generator=torch.Generator().manual_seed(0)).to(hooked.device)
    common = {"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens, "do_sample": False,
              "pad_token_id": hooked.tokenizer.eos_token_id}

    def run_plain():
        with torch.no_grad():
            return plain.generate(tokens, attention_mask=mask, **common)

    def run_hooked():
        return hooked.generate(tokens, **common)

    def run_steered():
        with hooked.steer(name, vector, coeff=4.0):
            return hooked.generate(tokens, **common)

    runs = {"plain": run_plain, "hooked": run_hooked, "steered": run_steered}
    times: dict[str, list[float]] = {key: [] for key in runs}
    for fn in runs.values():  # warm-up
        fn()
    order = list(runs)
    for repeat in range(args.repeats):
        for key in order[repeat % 3 :] + order[: repeat % 3]:  # interleaved and rotated: load hits every variant alike
            fn = runs[key]
            if hooked.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = fn()
            if hooked.device.type == "cuda":
                torch.cuda.synchronize()
            times[key].append(time.perf_counter() - start)
            assert out.shape[1] == tokens.shape[1] + args.new_tokens
    base = statistics.median(times["plain"])
    print(f"{args.model} on {hooked.device} ({torch.get_num_threads()} threads), {tokens.shape[1]} prompt tokens + "
          f"{args.new_tokens} new, median of {args.repeats}")
    for key in runs:
        median = statistics.median(times[key])
        print(f"  {key:<8} {median * 1000:8.1f} ms   {median / base:5.3f}x plain")


if __name__ == "__main__":
    main()
