"""Memory and time of attention statistics versus a plain forward and versus materializing patterns.

    python benchmarks/attention_stats.py [--model smollm2-135m[,gemma3-270m]] [--lengths 512,1024,2048,4096]
        [--modes plain,stats,eager] [--repeats 3] [--threads N]

For each model (comma-separated: compared in the same run, so they share the machine's load) and
sequence length, each mode runs in its own subprocess (peak RSS is per process) on the same model and
the same tokens:

  plain   model forward with its own SDPA attention                    (baseline a)
  stats   interp forward collecting every statistic (chunked/triton)   (b)
  eager   HF eager attention with output_attentions=True: the full      (c)
          [batch, head, query, key] pattern of every layer is kept, as TransformerLens'
          run_with_cache on hook_pattern does

It prints wall time and peak memory above the loaded weights (measured after a 32-token warm-up in
the same mode, so one-off runtime allocations are not counted), with ratios to the baseline. The
times of plain and stats come from one more subprocess that runs them alternately, ``--repeats``
times each, and keeps each mode's fastest run: a burst of load on a shared machine then slows both
modes alike, or only runs that are discarded (eager, too large to repeat, is timed once). Their
ratio of process CPU time (fastest run each) is printed too: with ``--threads 1`` on a busy machine it
leaves out the time the process waited for a core, which wall time cannot. Every
mode keeps only the last position's logits (``logits_to_keep=1``, as the scan does), so the
``[pos, vocab]`` logits (800 MB at 4,096 tokens) do not hide what attention costs. A
mode that runs out of memory is reported as such. With a CUDA GPU, it also times the Triton kernel
alone against torch's scaled_dot_product_attention.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

MODES = ("plain", "stats", "eager")


def _status_mb(field: str) -> float:
    """A memory line of /proc/self/status in MB (VmRSS: now; VmHWM: peak of this process image).

    VmHWM rather than getrusage's ru_maxrss, which Linux carries across exec from the parent.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return float("nan")


def _runner(model_name: str, modes: list[str], length: int, backend: str):
    """Load the model once; returns ``(run(mode, inputs), tokens)``."""
    import torch

    import interp
    from interp.kernels import StatsConfig
    from interp.analyses.probes import natural_text_tokens

    torch.manual_seed(0)
    model = interp.load(model_name, device="cpu")
    tokens = natural_text_tokens(model, length)
    if "eager" in modes:
        plain = model.unhook()
        plain.set_attn_implementation("eager")
    config = StatsConfig(n_sink=4, window=16, targets=None, received=True)

    def run(mode: str, inputs: torch.Tensor) -> None:
        with torch.no_grad():
            if mode == "plain":
                model(inputs, logits_to_keep=1)
            elif mode == "stats":
                with model.collect_attention_stats(config, backend=backend) as stats:
                    model(inputs, logits_to_keep=1)
                assert len(stats) == model.cfg.n_layers
            else:
                out = plain(input_ids=inputs, output_attentions=True, logits_to_keep=1)
                assert len(out.attentions) == model.cfg.n_layers

    return run, tokens


def child(model_name: str, mode: str, length: int, backend: str) -> dict:
    run, tokens = _runner(model_name, [mode], length, backend)
    run(mode, tokens[:, :32])  # warm-up: one-off allocations (thread pools, kernels) are not the method's memory
    rss_loaded = _status_mb("VmRSS:")
    start = time.perf_counter()
    run(mode, tokens)
    seconds = time.perf_counter() - start
    peak = _status_mb("VmHWM:")
    return {"mode": mode, "length": length, "seconds": seconds, "peak_mb": peak, "loaded_mb": rss_loaded}


def timing_child(model_name: str, modes: list[str], length: int, backend: str, repeats: int) -> dict:
    """Fastest of ``repeats`` runs per mode, the modes alternating in one process."""
    run, tokens = _runner(model_name, modes, length, backend)
    for mode in modes:
        run(mode, tokens[:, :32])
    best = {mode: float("inf") for mode in modes}
    cpu = dict(best)
    for _ in range(repeats):
        for mode in modes:
            start, start_cpu = time.perf_counter(), time.process_time()
            run(mode, tokens)
            best[mode] = min(best[mode], time.perf_counter() - start)
            cpu[mode] = min(cpu[mode], time.process_time() - start_cpu)
    return {"length": length, "seconds": best, "cpu_seconds": cpu, "load": os.getloadavg()[0]}


def _child_command(model: str, length: int, backend: str, threads: int | None) -> list[str]:
    command = [sys.executable, __file__, "--model", model, "--lengths", str(length), "--backend", backend]
    return command + ([] if threads is None else ["--threads", str(threads)])


def _last_json(command: list[str]) -> dict:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["killed"])[-1]
        return {"error": "out of memory" if result.returncode in (-9, 137) else tail}
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_child(model: str, mode: str, length: int, backend: str, threads: int | None = None) -> dict:
    return {"mode": mode, "length": length} | _last_json(_child_command(model, length, backend, threads) + ["--child", mode])


def run_timing(model: str, modes: list[str], length: int, backend: str, repeats: int, threads: int | None) -> dict:
    command = _child_command(model, length, backend, threads) + ["--timing", ",".join(modes), "--repeats", str(repeats)]
    return _last_json(command)


def gpu_kernel_timing() -> None:
    import torch

    if not torch.cuda.is_available():
        print("\nno CUDA GPU: Triton kernel vs SDPA timing skipped")
        return
    import triton.testing

    from interp.kernels import StatsConfig, attention_with_stats

    print(f"\nTriton kernel vs SDPA on {torch.cuda.get_device_name()} (batch 1, 9 heads / 3 kv heads, d 64, bf16)")
    print(f"{'length':>8} {'sdpa ms':>9} {'stats ms':>9} {'ratio':>6}")
    for length in (1024, 4096, 16384, 32768):
        q = torch.randn(1, 9, length, 64, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, 3, length, 64, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        sdpa = triton.testing.do_bench(
            lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        )
        config = StatsConfig(n_sink=4, window=16)
        stats = triton.testing.do_bench(lambda: attention_with_stats(q, k, v, config=config, backend="triton"))
        print(f"{length:>8} {sdpa:>9.3f} {stats:>9.3f} {stats / sdpa:>6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="model, or comma-separated models, to load")
    parser.add_argument("--lengths", default="512,1024,2048,4096")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of plain and stats each (the fastest is kept)")
    parser.add_argument("--threads", type=int, help="torch CPU threads in every subprocess (default: torch's own)")
    parser.add_argument("--child", choices=MODES)
    parser.add_argument("--timing", help=argparse.SUPPRESS)
    args = parser.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    if args.child or args.timing:
        if args.threads is not None:
            import torch

            torch.set_num_threads(args.threads)
        if args.child:
            print(json.dumps(child(args.model, args.child, lengths[0], args.backend)))
        else:
            print(json.dumps(timing_child(args.model, args.timing.split(","), lengths[0], args.backend, args.repeats)))
        return
    modes = args.modes.split(",")
    models = args.model.split(",")
    timed = [mode for mode in modes if mode != "eager"]
    threads = args.threads if args.threads is not None else "torch default"
    print(f"models {', '.join(models)}, CPU: {platform.processor() or platform.machine()}, batch 1, fp32, backend {args.backend}, threads {threads}")
    print(f"time: fastest of {args.repeats} alternating runs of {'/'.join(timed)} in one process; memory: one run per mode in its own process")
    print(f"{'model':>14} {'length':>7} {'mode':>6} {'time s':>8} {'x plain':>8} {'mem MB':>8} {'x plain':>8} {'eager/stats mem':>16} {'x plain cpu':>11} {'load':>5}")
    for model, length in ((model, length) for length in lengths for model in models):
        rows = {mode: run_child(model, mode, length, args.backend, args.threads) for mode in modes}
        timing = run_timing(model, timed, length, args.backend, args.repeats, args.threads) if timed else {}
        for mode in timed:
            if "error" not in rows[mode] and "error" not in timing:
                rows[mode]["seconds"] = timing["seconds"][mode]
                rows[mode]["cpu_seconds"] = timing["cpu_seconds"][mode]
        load = f"{timing['load']:.1f}" if "load" in timing else ""
        base = rows.get("plain")
        for mode, row in rows.items():
            if "error" in row:
                print(f"{model:>14} {length:>7} {mode:>6} {row['error']}")
                continue
            extra = row["peak_mb"] - row["loaded_mb"]
            t_ratio = row["seconds"] / base["seconds"] if base and "error" not in base else float("nan")
            m_ratio = extra / (base["peak_mb"] - base["loaded_mb"]) if base and "error" not in base else float("nan")
            versus = ""
            if mode == "eager" and "stats" in rows and "error" not in rows["stats"]:
                versus = f"{extra / (rows['stats']['peak_mb'] - rows['stats']['loaded_mb']):.1f}"
            cpu_ratio = ""
            if "cpu_seconds" in row and base and "cpu_seconds" in base:
                cpu_ratio = f"{row['cpu_seconds'] / base['cpu_seconds']:.2f}"
            print(
                f"{model:>14} {length:>7} {mode:>6} {row['seconds']:>8.2f} {t_ratio:>8.2f} {extra:>8.0f} {m_ratio:>8.2f} "
                f"{versus:>16} {cpu_ratio:>11} {load:>5}"
            )
        if "error" in timing:
            print(f"{model:>14} {length:>7} timing run failed ({timing['error']}); times above are single runs")
    gpu_kernel_timing()


if __name__ == "__main__":
    main()
