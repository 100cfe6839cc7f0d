"""Whole-process peak memory of ``interp scan`` against one plain forward of the same model.

    python benchmarks/scan_memory.py [--model smollm2-135m] [--context-length 8192] [--analyses sink,entropy] [--batch 2]

Runs, each in its own process and measured the way ``/usr/bin/time -f %M`` measures it (peak
resident set of the whole process: interpreter, libraries, weights and activations):

  plain  load the model and run one forward with its own SDPA attention on ``context-length``
         tokens of the scan's natural-text probe, batch 1 and batch ``--batch``, keeping only the
         last position's logits (the scan does the same, so the [pos, vocab] logits, 1.6 GB at
         8,192 tokens, do not flatter the scan)
  scan   ``interp scan MODEL --analyses ANALYSES --context-length N --batch B``, writing to a
         temporary folder

and prints wall time, peak memory and the scan's ratio to each plain forward.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def plain_forward(model_name: str, length: int, batch: int) -> None:
    import torch

    import interp
    from interp.analyses.probes import natural_text_tokens

    model = interp.load(model_name, device="cpu")
    tokens = natural_text_tokens(model, length).expand(batch, -1)
    plain = model.unhook()  # the Hugging Face model with its own attention, nothing of interp left
    with torch.no_grad():
        plain(input_ids=tokens, logits_to_keep=1)


def measure(command: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of ``command``, via /usr/bin/time -f %M where it exists."""
    time_binary = shutil.which("time") or "/usr/bin/time"
    start = time.perf_counter()
    if os.path.exists(time_binary):
        result = subprocess.run([time_binary, "-f", "%M", *command], capture_output=True, text=True)
        peak_kb = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "nan"
    else:  # the same number, from the kernel's accounting of the child
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, _, usage = os.wait4(process.pid, 0)
        result = subprocess.CompletedProcess(command, process.returncode or 0, "", process.stderr.read())
        peak_kb = str(usage.ru_maxrss)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["failed"])[-2:]
        raise SystemExit(f"{' '.join(command[:4])} ... failed: {' | '.join(tail)}")
    return seconds, float(peak_kb) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--context-length", type=int, default=8192)
    parser.add_argument("--analyses", default="sink,entropy")
    parser.add_argument("--batch", type=int, default=2, help="the scan's --batch (its default is 2)")
    parser.add_argument("--plain-child", type=int, metavar="BATCH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_child:
        plain_forward(args.model, args.context_length, args.plain_child)
        return

    python = sys.executable
    common = ["--model", args.model, "--context-length", str(args.context_length)]
    rows = []
    for batch in sorted({1, args.batch}):
        seconds, peak = measure([python, __file__, *common, "--plain-child", str(batch)])
        rows.append((f"plain forward, batch {batch}", seconds, peak))
    with tempfile.TemporaryDirectory() as out:
        scan = [
            python, "-m", "interp.cli", "scan", args.model, "--analyses", args.analyses,
            "--context-length", str(args.context_length), "--batch", str(args.batch), "--out", out, "--device", "cpu",
            "--beyond-context",  # SmolLM2 was trained on 8,192 tokens; longer runs measure scale, not behaviour
        ]
        seconds, peak = measure(scan)
    rows.append((f"interp scan --analyses {args.analyses}, batch {args.batch}", seconds, peak))

    print(f"model {args.model}, {args.context_length} tokens, CPU, fp32; peak = max RSS of the whole process")
    width = max(len(name) for name, _, _ in rows)
    print(f"{'':<{width}} {'time s':>8} {'peak MB':>9}")
    for name, seconds, peak in rows:
        print(f"{name:<{width}} {seconds:>8.1f} {peak:>9.0f}")
    scan_peak = rows[-1][2]
    for name, _, peak in rows[:-1]:
        print(f"scan peak / {name}: {scan_peak / peak:.2f}")


if __name__ == "__main__":
    main()
