"""Head ablation: the batched sweep equals one ablate_heads() run per head; scan registration."""

import pytest
import torch
from causal_helpers import tiny_model

from interp.analyses.context import ScanContext, ScanSettings
from interp.analyses.head_ablation import head_ablation, joint_ablation, plot_head_ablation
from interp.analyses.registry import ANALYSES
from interp.hooks import HookedModel
from interp.analyses.probes import Probe


def _loss(logits, tokens):
    """Mean next-token cross-entropy, written with log_softmax and gather."""
    logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    return -logp.gather(-1, tokens[:, 1:, None]).mean().item()


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
@pytest.mark.parametrize("method", ["zero", "mean"])
def test_batched_equals_ablate_heads_loop(architecture, method):
    model = HookedModel(tiny_model(architecture))
    tokens = torch.randint(0, 97, (2, 10), generator=torch.Generator().manual_seed(4))
    reference = torch.randint(0, 97, (3, 10), generator=torch.Generator().manual_seed(5))
    frame = head_ablation(model, tokens, method=method, reference=reference if method == "mean" else None, batch_size=6)
    assert len(frame) == 8
    with torch.no_grad():
        baseline = _loss(model(tokens), tokens)
        for row in frame.itertuples():
            with model.ablate_heads([(row.layer, row.head)], method=method, reference=reference):
                expected = _loss(model(tokens), tokens)
            assert row.metric == pytest.approx(expected, abs=1e-5)
            assert row.delta == pytest.approx(expected - baseline, abs=1e-5)


def test_logits_budget_splits_forwards_without_changing_scores(monkeypatch):
    """A big vocabulary (Gemma 3: 262K) caps the rows per forward so their logits fit the budget."""
    from interp.analyses import head_ablation as module

    model = HookedModel(tiny_model("llama"))
    tokens = torch.randint(0, 97, (2, 10), generator=torch.Generator().manual_seed(4))
    default = head_ablation(model, tokens, method="zero", batch_size=16)
    from interp.hooks.replay import Recording

    rows = []
    batches = Recording.batches

    def counting(self, plan, **kwargs):
        for batch in batches(self, plan, **kwargs):
            rows.append(len(batch.cells) * self.n_rows)
            yield batch

    monkeypatch.setattr(Recording, "batches", counting)
    monkeypatch.setattr(module, "LOGITS_BUDGET_BYTES", 5 * 10 * 97 * 4)  # 5 rows of [10, vocab] float32
    capped = head_ablation(model, tokens, method="zero", batch_size=16)
    assert max(rows) <= 5 and sum(rows) == 8 * 2  # 8 heads x 2 prompt rows, at most 5 rows' logits per forward
    assert capped["metric"].tolist() == pytest.approx(default["metric"].tolist(), abs=1e-6)


def test_resample_and_joint_ablation():
    model = HookedModel(tiny_model("llama"))
    tokens = torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(4))
    other = torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(6))
    frame = head_ablation(model, tokens, method="resample", reference=other, heads=[(1, 3)])
    with torch.no_grad():
        _, cache = model.run_with_cache(other, names=["blocks.1.attn.hook_z"])
        with model.intervene("blocks.1.attn.hook_z", replace=cache["blocks.1.attn.hook_z"][:, :, 3:4], heads=3):
            expected = _loss(model(tokens), tokens)
    assert frame["metric"].item() == pytest.approx(expected, abs=1e-5)

    ranking = head_ablation(model, tokens, method="zero")
    joint = joint_ablation(model, ranking, top_k=3, tokens=tokens, method="zero")
    top = ranking.sort_values("delta", ascending=False)
    with torch.no_grad():
        with model.ablate_heads(list(zip(top["layer"][:3], top["head"][:3]))):
            expected = _loss(model(tokens), tokens)
    assert list(joint["k"]) == [1, 2, 3]
    assert joint["metric"].iloc[0] == pytest.approx(top["metric"].iloc[0], abs=1e-5)
    assert joint["metric"].iloc[2] == pytest.approx(expected, abs=1e-5)
    assert plot_head_ablation(ranking).data


def test_scan_entry_is_registered_and_uses_the_natural_probe():
    model = HookedModel(tiny_model("gpt2"))
    natural = torch.randint(0, 97, (2, 40), generator=torch.Generator().manual_seed(7))
    ctx = ScanContext(model, {"natural": Probe("natural", natural, "test")}, ScanSettings())
    table = ANALYSES["head_ablation"].run(ctx)
    assert list(table.columns) == ["layer", "head", "kv_head", "head_ablation_loss_delta"]
    direct = head_ablation(model, natural[:1, :64], method="mean", reference=natural)
    assert table["head_ablation_loss_delta"].tolist() == pytest.approx(direct["delta"].tolist(), abs=1e-6)


def test_real_model_batched_equals_loop(smollm):
    tokens = smollm.to_tokens("The quick brown fox jumps over the lazy dog near the river bank.")
    heads = [(0, 0), (14, 4), (29, 8)]
    frame = head_ablation(smollm, tokens, method="mean", heads=heads)
    with torch.no_grad():
        for row in frame.itertuples():
            with smollm.ablate_heads([(row.layer, row.head)], method="mean", reference=tokens):
                expected = _loss(smollm(tokens), tokens)
            # float32 loss over a 49k vocabulary; batched and single-row matmuls round differently.
            assert row.metric == pytest.approx(expected, abs=5e-4)
