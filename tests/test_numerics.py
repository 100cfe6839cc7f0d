"""Numerics: bf16/fp16 scans agree with fp32 within documented tolerances; NaNs are located."""

import pytest
import torch
from tiny_models import tiny_model

import interp
from interp.hooks import HookedModel
from interp.numerics import first_nonfinite

ANALYSES = "sink,entropy,max_attention,induction"
# Documented in docs/numerics.md: max abs difference to fp32 over all heads.
TOLERANCES = {
    "bfloat16": {"sink_mass": 0.03, "sink_alpha0": 0.03, "entropy_mean": 0.1, "entropy_normalized": 0.03,
                 "max_attention_mean": 0.03, "induction_score": 0.02},
    "float16": {"sink_mass": 0.005, "sink_alpha0": 0.005, "entropy_mean": 0.01, "entropy_normalized": 0.005,
                "max_attention_mean": 0.005, "induction_score": 0.005},
}


@pytest.fixture(scope="module")
def fp32_scan(smollm):
    return interp.scan(smollm, analyses=ANALYSES, settings=interp.ScanSettings(context_length=64, batch=1))


@pytest.mark.parametrize("dtype", list(TOLERANCES))
def test_half_precision_scan_agrees_with_fp32(fp32_scan, dtype):
    model = interp.load("smollm2-135m", device="cpu", dtype=dtype)
    assert next(model.model.parameters()).dtype == getattr(torch, dtype)
    result = interp.scan(model, analyses=ANALYSES, settings=interp.ScanSettings(context_length=64, batch=1))
    for column, tolerance in TOLERANCES[dtype].items():
        difference = (result.heads[column] - fp32_scan.heads[column]).abs().max()
        assert difference <= tolerance, (column, difference)
    # The ranking of the strongest induction heads survives half precision.
    top = lambda frame: set(frame.nlargest(3, "induction_score").index)  # noqa: E731
    assert len(top(result.heads) & top(fp32_scan.heads)) >= 2


@torch.no_grad()
def test_first_nonfinite_names_the_layer_where_nan_appears():
    model = HookedModel(tiny_model("llama"))
    tokens = torch.randint(0, 97, (1, 6))
    assert first_nonfinite(model, tokens) is None
    with model.intervene("blocks.1.hook_mlp_out", scale=float("nan"), positions=[2]):
        assert first_nonfinite(model, tokens) == "blocks.1.hook_mlp_out"


def test_scan_reports_nonfinite_activations_as_one_line(smollm):
    def poison(activation, hook):
        return activation * float("inf")

    with smollm.hooks([("blocks.4.hook_attn_out", poison)]):
        with pytest.raises(interp.InterpError, match=r"NaN/inf at blocks\.4\.hook_attn_out with dtype float32"):
            interp.scan(smollm, analyses="entropy", settings=interp.ScanSettings(context_length=16, batch=1))
