"""Causal sweeps: interp's replayed path vs interp ``reuse="none"`` vs nnsight 0.8.1 batched invokes.

Workloads (SmolLM2-135M, fp32, CPU):

- ``ioi_resid_pre``: IOI activation patching of ``resid_pre``, every (layer, position) cell, denoising;
- ``ioi_head_out``: the same prompts, ``head_out`` (every layer x head, all positions);
- ``trace``: the default ``interp trace`` (resid, attn, mlp; 10 noise samples; window 10) on the Eiffel prompt;
- ``stats``: the scan's statistics forward (every statistic, chunked kernel) against a plain forward
  of the same model, on a 1,024-token text (the issue's second contention check).

Methods: ``interp`` (the default path: each cell starts at its patched block and token), ``interp
reuse=none`` (one full forward per cell, stacked on the batch axis: the path before interp.hooks.replay)
and, for the IOI workloads, ``nnsight batched`` (nnsight 0.8.1: one trace, a clean invoke plus one
invoke per cell, all in one batched forward; needs ``pip install -e .[bench]``). One process; the
methods alternate within each round; medians over ``--rounds``. Memory is the peak resident set
sampled every 5 ms during the call, above the resident set just before it (after ``malloc_trim``).

``--contended`` runs the same rounds again while a second process keeps one core busy with a bounded
matmul loop (it stops by itself after ``--contended-seconds``, or when this process exits) and
reports each method's slowdown against the idle rounds. Run: ``python benchmarks/patching.py``.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

import interp  # noqa: E402
from interp.causal.patching import activation_patching  # noqa: E402
from interp.causal.tracing import causal_trace  # noqa: E402

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When John and Mary went to the store, Mary gave a drink to"
ANSWERS = (" Mary", " John")
TRACE = dict(prompt="The Eiffel Tower is located in the city of", subject="The Eiffel Tower", answer=" Paris")
WORKLOADS = ("ioi_resid_pre", "trace", "ioi_head_out", "stats")
STATS_TOKENS = 1024

BUSY = """
import os, sys, time, torch
torch.set_num_threads(1)
deadline, parent = time.time() + float(sys.argv[1]), int(sys.argv[2])
a = torch.randn(384, 384)
while time.time() < deadline and os.getppid() == parent:
    for _ in range(20):
        a = torch.tanh(a @ a)
"""


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def measured(fn: Callable[[], object]) -> tuple[object, float, int]:
    """``fn()``'s result, wall seconds, and peak RSS above the start (sampled every 5 ms)."""
    trim()
    start_rss = rss_bytes()
    peak = [start_rss]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    began = time.perf_counter()
    try:
        result = fn()
    finally:
        seconds = time.perf_counter() - began
        done.set()
        sampler.join()
    return result, seconds, max(peak[0], rss_bytes()) - start_rss


def nnsight_model(model: interp.HookedModel):
    """An nnsight LanguageModel over a fresh copy of the same weights (no interp hooks), or None if missing."""
    try:
        from nnsight import LanguageModel
    except ImportError:
        return None
    from transformers import AutoModelForCausalLM

    from interp.models.builtin import resolve_builtin
    from interp.models.loading import gguf_as_hf_folder

    folder = str(gguf_as_hf_folder(resolve_builtin("smollm2-135m")))
    hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa").eval()
    return LanguageModel(hf, tokenizer=model.tokenizer)


def nnsight_patching(lm, clean: torch.Tensor, corrupted: torch.Tensor, ids: list[int], site: str, n_layers: int,
                     n_heads: int, d_head: int) -> torch.Tensor:
    """All cells as batched invokes in one nnsight trace; returns the logit difference per cell."""
    layers = lm.model.layers
    n_pos = clean.shape[1]
    n_cells = n_pos if site == "resid_pre" else n_heads
    # The clean invoke reads each layer's activation; the patching invokes at that layer wait for it at
    # a barrier (invokes resume in an order the model chooses), then write it into their own rows.
    sources: dict[int, torch.Tensor] = {}
    results: dict[tuple[int, int], torch.Tensor] = {}
    with torch.no_grad(), lm.trace() as tracer:
        barriers = [tracer.barrier(1 + n_cells) for _ in range(n_layers)]
        with tracer.invoke(clean):
            for layer in range(n_layers):
                module = layers[layer] if site == "resid_pre" else layers[layer].self_attn.o_proj
                sources[layer] = module.input.clone()
                barriers[layer]()
        for layer in range(n_layers):
            for index in range(n_cells):
                with tracer.invoke(corrupted):
                    module = layers[layer] if site == "resid_pre" else layers[layer].self_attn.o_proj
                    hidden = module.input
                    barriers[layer]()
                    if site == "resid_pre":
                        hidden[:, index] = sources[layer][:, index]
                    else:
                        cols = slice(index * d_head, (index + 1) * d_head)
                        hidden[:, :, cols] = sources[layer][:, :, cols]
                    logits = lm.lm_head.output
                    results[layer, index] = (logits[:, -1, ids[0]] - logits[:, -1, ids[1]]).clone()
    return torch.stack([results[layer, index].reshape(-1)[0] for layer in range(n_layers) for index in range(n_cells)])


def statistics_methods(model: interp.HookedModel) -> dict[str, Callable[[], torch.Tensor]]:
    """The scan's statistics forward and a plain forward of the same model on a STATS_TOKENS-token text."""
    from interp.kernels import StatsConfig
    from interp.analyses.probes import natural_text_tokens

    tokens = natural_text_tokens(model, STATS_TOKENS)
    config = StatsConfig(n_sink=4, window=16, targets=None, received=True)

    def stats() -> torch.Tensor:
        with torch.no_grad(), model.collect_attention_stats(config) as collected:
            model(tokens, logits_to_keep=1)
        return torch.tensor([float(len(collected))])

    def plain() -> torch.Tensor:
        with torch.no_grad():
            return model(tokens, logits_to_keep=1)[0, -1, :1].double()

    return {"interp statistics forward": stats, "plain forward (sdpa)": plain}


def warm_up(model, lm) -> None:
    """One small call of every method, so one-time allocations (thread pools, lazy imports) are not measured."""
    clean, corrupted = model.to_tokens(CLEAN), model.to_tokens(CORRUPTED)
    ids = [model.tokenizer(a, add_special_tokens=False)["input_ids"][0] for a in ANSWERS]
    for reuse in ("auto", "none"):
        activation_patching(model, clean, corrupted, answers=ANSWERS, layers=[28, 29], positions=[12, 13], reuse=reuse)
        causal_trace(model, **TRACE, layers=[29], positions=[9], kinds=["resid", "mlp"], samples=2, reuse=reuse)
    if lm is not None:
        nnsight_patching(lm, clean, corrupted, ids, "resid_pre", 1, model.cfg.n_heads, model.cfg.d_head)
    for method in statistics_methods(model).values():
        method()


def run_rounds(
    model, lm, rounds: int, workloads: list[str], label: str, trace_layers: list[int] | None = None
) -> dict[tuple[str, str], list[tuple[float, int]]]:
    clean, corrupted = model.to_tokens(CLEAN), model.to_tokens(CORRUPTED)
    ids = [model.tokenizer(a, add_special_tokens=False)["input_ids"][0] for a in ANSWERS]
    cfg = model.cfg
    times: dict[tuple[str, str], list[tuple[float, int]]] = {}
    values: dict[tuple[str, str], torch.Tensor] = {}
    for round_ in range(rounds):
        for workload in workloads:
            methods: dict[str, Callable[[], torch.Tensor]] = {}
            if workload.startswith("ioi_"):
                site = workload[len("ioi_"):]
                for name, reuse in (("interp", "auto"), ("interp reuse=none", "none")):
                    methods[name] = lambda reuse=reuse, site=site: torch.tensor(
                        activation_patching(model, clean, corrupted, answers=ANSWERS, sites=site, reuse=reuse)["metric"].to_numpy()
                    )
                if lm is not None:
                    methods["nnsight batched"] = lambda site=site: nnsight_patching(
                        lm, clean, corrupted, ids, site, cfg.n_layers, cfg.n_heads, cfg.d_head
                    ).double()
            elif workload == "stats":
                methods = statistics_methods(model)
            else:
                for name, reuse in (("interp", "auto"), ("interp reuse=none", "none")):
                    methods[name] = lambda reuse=reuse: torch.tensor(
                        causal_trace(model, **TRACE, layers=trace_layers, reuse=reuse)["prob"].to_numpy()
                    )
            order = list(methods) if round_ % 2 == 0 else list(methods)[::-1]  # alternate who goes first
            for name in order:
                result, seconds, peak = measured(methods[name])
                times.setdefault((workload, name), []).append((seconds, peak))
                values[(workload, name)] = result
                print(f"[{label} round {round_ + 1}/{rounds}] {workload:14s} {name:18s} {seconds:7.2f} s  "
                      f"peak +{peak / 2**20:7.0f} MB  (load average {os.getloadavg()[0]:.1f})", flush=True)
            reference = values.get((workload, "interp reuse=none"))
            for name in methods if reference is not None else ():
                if name != "interp reuse=none":
                    diff = (values[(workload, name)].double() - reference.double()).abs().max().item()
                    print(f"{workload}: max |{name} - interp reuse=none| = {diff:.2e}", flush=True)
    return times


def table(times, baseline: str, title: str) -> str:
    lines = [f"\n{title}", "| workload | method | median time | vs nnsight batched | vs reuse=none | peak memory above start |",
             "|---|---|---|---|---|---|"]
    for (workload, name), runs in times.items():
        med = statistics.median(s for s, _ in runs)
        peak = max(p for _, p in runs)
        def ratio(other: str) -> str:
            ref = times.get((workload, other))
            if ref is None or other == name:
                return ""
            return f"{statistics.median(s for s, _ in ref) / med:.2f}x"
        lines.append(f"| {workload} | {name} | {med:.2f} s | {ratio('nnsight batched')} | {ratio(baseline)} | {peak / 2**20:.0f} MB |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated: {', '.join(WORKLOADS)}")
    parser.add_argument("--trace-layers", default=None,
                        help="comma-separated layers for the trace workload [default: all, as interp trace]; "
                             "a subset keeps the run short on a loaded machine")
    parser.add_argument("--contended", action="store_true", help="repeat the rounds while another process keeps one core busy")
    parser.add_argument("--contended-seconds", type=float, default=1800.0, help="the busy process stops by itself after this")
    args = parser.parse_args()
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        sys.exit(f"error: unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}")

    model = interp.load("smollm2-135m", device="cpu")
    lm = nnsight_model(model)
    if lm is None:
        print("nnsight is not installed: its column is skipped. Install the benchmark extra: pip install -e .[bench] "
              "(nnsight==0.8.1)")
    load = os.getloadavg()
    print(f"model {model.cfg.name}: {model.cfg.n_layers} layers; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, load average at start {load[0]:.1f} (other processes share this machine)")
    warm_up(model, lm)
    trace_layers = [int(x) for x in args.trace_layers.split(",")] if args.trace_layers else None
    idle = run_rounds(model, lm, args.rounds, workloads, "idle", trace_layers)
    print(table(idle, "interp reuse=none", "idle (no benchmark-made load)"))
    if args.contended:
        busy = subprocess.Popen([sys.executable, "-c", BUSY, str(args.contended_seconds), str(os.getpid())])
        try:
            time.sleep(1.0)
            contended = run_rounds(model, lm, args.rounds, workloads, "contended", trace_layers)
        finally:
            busy.terminate()
            busy.wait()
        print(table(contended, "interp reuse=none", "contended (one core kept busy by a second process)"))
        print("\n| workload | method | idle | contended | slowdown |\n|---|---|---|---|---|")
        for key, runs in idle.items():
            if key in contended:
                a = statistics.median(s for s, _ in runs)
                b = statistics.median(s for s, _ in contended[key])
                print(f"| {key[0]} | {key[1]} | {a:.2f} s | {b:.2f} s | {b / a:.2f}x |")
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
