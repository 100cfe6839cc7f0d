"""Run by tests/test_distributed.py under ``torchrun --nproc-per-node 2``: every sharded function on a tiny float64 model.

Each rank saves what it got to ``OUT/rank{RANK}.pt``, so the test can check that every rank returns
the one-process result. ``python distributed_worker.py OUT`` in one process gives the reference.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_models import tiny_model  # noqa: E402

from interp.causal.patching import activation_patching  # noqa: E402
from interp.causal.tracing import causal_trace  # noqa: E402
from interp.circuits import edge_attribution, evaluate_circuits, induction_task, patch_edges, top_n_mask  # noqa: E402
from interp.circuits.evaluation import faithfulness_curve  # noqa: E402
from interp.distributed import alone  # noqa: E402
from interp.hooks import HookedModel  # noqa: E402


def float64_model() -> HookedModel:
    """A tiny Llama in float64, RMSNorm included (HF's computes in float32 whatever the input dtype)."""
    model = tiny_model("llama").double()
    for module in model.modules():
        if type(module).__name__.endswith("RMSNorm"):
            def forward(x, module=module):
                return module.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + module.variance_epsilon)
            module.forward = forward
    return HookedModel(model)


def record_shares(shares: dict[str, list[int]]) -> None:
    """Count the rows (cells) each sweep gives this rank, to check that the work was split."""
    import interp.causal.patching as patching
    import interp.causal.tracing as tracing

    for module, name in ((patching, "patching"), (tracing, "trace")):
        def counted(items, *, strided=False, inner=module.shard, name=name):
            mine = inner(items, strided=strided)
            shares.setdefault(name, []).append(len(mine))
            return mine
        module.shard = counted


def results(count: bool = True) -> dict:
    """Every sharded function's result; ``count``: also how many rows / cells this rank took (patches interp's modules)."""
    model = float64_model()
    shares: dict[str, list[int]] = {}
    if count:
        record_shares(shares)

    def rows(name: str):
        return lambda n: shares.setdefault(name, []).append(n)

    # 7 rows in batches of 3: the two ranks' shares (3 and 4 rows) cut a batch in two
    pairs = induction_task(7, model=model, seed=0, block=5, repeat=2)
    out = {}
    for method in ("eap", "eap-ig"):
        scores = edge_attribution(model, pairs, method=method, steps=2, batch_size=3, progress=rows(method))
        out[method] = (scores.scores, scores.clean_metric, scores.corrupted_metric, scores.n_prompts)
    masks = [top_n_mask(scores.graph, scores.scores, n) for n in (3, 10, 40)]
    evaluation = evaluate_circuits(model, pairs, masks, batch_size=3, progress=rows("evaluate"))
    out["evaluate"] = (evaluation["metrics"], evaluation["clean"], evaluation["corrupted"])
    curve = faithfulness_curve(model, pairs, scores, [2, 20], batch_size=3)
    out["curve"] = curve["faithfulness"].tolist()
    edges = [tuple(map(int, e)) for e in torch.nonzero(scores.graph.edge_mask)[:9].tolist()]
    out["patch_edges"] = patch_edges(model, pairs, edges, batch_size=3, progress=rows("patch_edges"))
    batch = pairs.encode(model)[0]
    frame = activation_patching(model, batch.clean, batch.corrupted, answers=(int(batch.answers[0, 0]), int(batch.wrong[0, 0])),
                                sites=("resid_pre", "head_out"), batch_size=7)
    out["patching"] = (frame["metric"].to_numpy(), frame.attrs["clean_metric"], frame.attrs["corrupted_metric"])
    trace = causal_trace(model, batch.clean[0], (1, 3), samples=3, window=1, batch_size=8)
    out["trace"] = (trace["prob"].to_numpy(), trace.attrs["low_score"], trace.attrs["high_score"])
    if os.environ.get("RANK") == "0":  # a call on one rank only: every row here, no collective to wait on
        with alone():
            out["alone"] = edge_attribution(model, pairs, method="eap", batch_size=3, progress=rows("alone")).scores
    out["shares"] = {name: sum(counts) for name, counts in shares.items()}
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    folder = Path(sys.argv[1])
    torch.save(results(), folder / f"rank{os.environ.get('RANK', 'single')}.pt")
