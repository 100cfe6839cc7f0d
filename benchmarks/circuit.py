"""Circuit discovery on SmolLM2-135M IOI: time EAP, EAP-IG and exact verification; peak memory.

    python benchmarks/circuit.py [--n 32] [--steps 5] [--verify 100] [--batch 16] [--sizes 100,300,1000,3000,3500]
    python benchmarks/circuit.py --procs 1,2 [--n 64] [--cores 2]

Prints one table (seconds, peak RSS of the process after each phase) plus the Spearman correlation
of EAP-IG with exact single-edge patching over the top ``--verify`` edges and the faithfulness of
top-n circuits. Wall times move 10-20% between runs on a shared machine.

``--procs 1,2``: data parallel instead. Runs ``interp circuit smollm2-135m --task ioi`` (the whole
command: EAP-IG, faithfulness curve, DLA, verification) once per process count P, as P processes x
``cores / P`` threads (``torchrun --nproc-per-node P`` for P > 1), and prints each run's wall time,
its CPU seconds, its phase timings (circuit.json, rank 0), the wall-time speedup over the first count, and the largest
``|score|`` difference of edges.csv from the first count's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import interp
from interp.circuits import edge_attribution, evaluate_circuits, ioi_task, patch_edges, top_n_mask


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def data_parallel(procs: list[int], n: int, cores: int, batch: int) -> None:
    """Time ``interp circuit`` with P processes x cores/P threads for each P; compare edges.csv with the first P."""
    import pandas as pd

    root = Path(__file__).resolve().parents[1]
    rows, first = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for p in procs:
            threads = max(1, cores // p)
            out = Path(tmp) / f"p{p}"
            env = dict(os.environ, OMP_NUM_THREADS=str(threads), INTERP_THREADS=str(threads))
            env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
            launch = [sys.executable, "-m", "interp.cli"] if p == 1 else [
                sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(p), "-m", "interp.cli"]
            command = [*launch, "circuit", "smollm2-135m", "--task", "ioi", "-n", str(n), "--batch", str(batch),
                       "--device", "cpu", "--out", str(out)]
            start, used = time.perf_counter(), _children_cpu()
            run = subprocess.run(command, env=env, capture_output=True, text=True, cwd=root)
            wall, cpu = time.perf_counter() - start, _children_cpu() - used
            if run.returncode != 0:
                raise SystemExit(f"{p} processes failed:\n{run.stderr[-3000:]}")
            timings = json.loads((out / "circuit.json").read_text())["timings_s"]
            edges = pd.read_csv(out / "edges.csv").set_index(["upstream", "downstream", "kind"]).sort_index()
            first = first if first is not None else (wall, edges)
            diff = float((edges["score"] - first[1]["score"]).abs().max())
            rows.append((p, threads, wall, cpu, sum(timings.values()), timings, first[0] / wall, diff))
            print(f"{p} process(es) x {threads} thread(s): {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    print(f"interp circuit smollm2-135m --task ioi -n {n} --batch {batch}, CPU, {cores} cores in all "
          f"({os.cpu_count()} on this machine)")
    print(f"{'processes x threads':<22}{'wall s':>9}{'CPU s':>9}{'phases s':>10}{'speedup':>9}{'max |score diff|':>18}  phases")
    for p, threads, wall, cpu, phases, timings, speedup, diff in rows:
        detail = ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
        print(f"{f'{p} x {threads}':<22}{wall:>9.1f}{cpu:>9.1f}{phases:>10.1f}{speedup:>9.2f}{diff:>18.2e}  {detail}")


def _children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes so far: on a loaded machine, what each run cost."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--verify", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--sizes", default="100,300,1000,3000,3500")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--procs", default=None, help="data parallel: process counts to compare, e.g. 1,2")
    parser.add_argument("--cores", type=int, default=2, help="with --procs: processes x threads (default 2)")
    args = parser.parse_args()
    if args.procs:
        data_parallel([int(p) for p in args.procs.split(",")], args.n, args.cores, args.batch)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    model = interp.load("smollm2-135m", device="cpu")
    pairs = ioi_task(args.n, model=model, seed=0)
    edge_attribution(model, pairs.head(2), method="eap")  # warm-up: one-time allocations are not timed
    base = peak_mb()
    rows = []

    start = time.perf_counter()
    eap = edge_attribution(model, pairs, method="eap", batch_size=args.batch)
    rows.append(("EAP (every edge)", time.perf_counter() - start, peak_mb()))
    print(*rows[-1], flush=True)
    start = time.perf_counter()
    ig = edge_attribution(model, pairs, method="eap-ig", steps=args.steps, batch_size=args.batch)
    rows.append((f"EAP-IG, {args.steps} steps (every edge)", time.perf_counter() - start, peak_mb()))
    print(*rows[-1], flush=True)
    top = ig.frame().head(args.verify)
    start = time.perf_counter()
    exact = patch_edges(model, pairs, list(zip(top["up_index"], top["down_index"])), batch_size=args.batch)
    rows.append((f"exact patching, top {args.verify} edges one at a time", time.perf_counter() - start, peak_mb()))
    print(*rows[-1], flush=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    masks = [top_n_mask(ig.graph, ig.scores, s) for s in sizes]
    start = time.perf_counter()
    result = evaluate_circuits(model, pairs, masks, batch_size=args.batch)
    rows.append((f"exact circuit evaluation, {len(sizes)} circuits", time.perf_counter() - start, peak_mb()))

    print(f"SmolLM2-135M IOI, {args.n} prompt pairs, {ig.graph.n_edges} edges, {torch.get_num_threads()} threads; "
          f"peak RSS after loading {base:.0f} MB")
    print(f"{'phase':<52}{'seconds':>10}{'peak RSS MB':>14}")
    for name, seconds, peak in rows:
        print(f"{name:<52}{seconds:>10.1f}{peak:>14.0f}")
    top = top.assign(exact=exact)
    spearman = top["score"].rank().corr(top["exact"].rank())
    eap_top = eap.scores[top["up_index"].to_numpy(), top["down_index"].to_numpy()].numpy()
    spearman_eap = top.assign(eap=eap_top)["eap"].rank().corr(top["exact"].rank())
    print(f"clean logit diff {ig.clean_metric:.3f}, corrupted {ig.corrupted_metric:.3f}")
    print(f"Spearman vs exact over the top {args.verify} EAP-IG edges: EAP-IG {spearman:.3f}, EAP {spearman_eap:.3f}")
    for s, m, f in zip(sizes, masks, result["faithfulness"]):
        print(f"top {s} edges -> {int(m.sum())} after pruning ({int(m.sum()) / ig.graph.n_edges:.2%}): faithfulness {f:.3f}")


if __name__ == "__main__":
    main()
