"""Attention knockout: blocking nothing changes nothing; blocking the subject changes the answer."""

import copy

import pytest
import torch
from causal_helpers import tiny_model

from interp.causal.knockout import attention_knockout, plot_knockout_sweep, subject_knockout_sweep
from interp.hooks import HookedModel

PROMPT = "The Eiffel Tower is located in the city of"


def test_real_model_blocking_nothing_is_exact_and_blocking_the_subject_matters(smollm):
    tokens = smollm.to_tokens(PROMPT)
    n = tokens.shape[1]
    with torch.no_grad():
        plain = torch.softmax(smollm(tokens)[0, -1], -1)
    answer = int(plain.argmax())
    none = attention_knockout(smollm, tokens, torch.zeros(n, n, dtype=torch.bool), answer=answer)
    assert none["metric"].item() == plain[answer].item()
    assert none["delta"].item() == 0.0
    edges = torch.zeros(n, n, dtype=torch.bool)
    edges[4:, 0:4] = True  # every later token loses "The Eiffel Tower"
    blocked = attention_knockout(smollm, tokens, edges, answer=answer)
    assert blocked["baseline"].item() == plain[answer].item()
    assert abs(blocked["delta"].item()) > 1e-3


def test_knockout_equals_a_custom_attention_mask_in_the_plain_model():
    """Blocking edges in all layers and heads is the same as a 4D attention mask given to the HF model."""
    plain = tiny_model("llama")
    model = HookedModel(copy.deepcopy(plain))
    tokens = torch.randint(0, 97, (1, 6), generator=torch.Generator().manual_seed(2))
    edges = torch.zeros(6, 6, dtype=torch.bool)
    edges[5, 1:3] = True
    frame = attention_knockout(model, tokens, edges, answer=11)
    allowed = torch.tril(torch.ones(6, 6, dtype=torch.bool)) & ~edges
    with torch.no_grad():
        logits = plain(input_ids=tokens, attention_mask=allowed[None, None]).logits
    assert frame["metric"].item() == pytest.approx(torch.softmax(logits[0, -1], -1)[11].item(), abs=1e-6)
    assert frame["delta"].item() != 0.0


def test_sweep_windows_and_full_window_match_single_knockout():
    model = HookedModel(tiny_model("gpt2"))
    tokens = torch.randint(0, 97, (1, 6), generator=torch.Generator().manual_seed(2))
    sweep = subject_knockout_sweep(model, tokens[0], (1, 3), 5, window=2)
    assert list(sweep["start_layer"]) == [0, 1] and list(sweep["end_layer"]) == [1, 1]
    edges = torch.zeros(6, 6, dtype=torch.bool)
    edges[5, 1:3] = True
    single = attention_knockout(model, tokens, edges, layers=[1], answer=5)
    assert sweep["metric"].iloc[1] == pytest.approx(single["metric"].item(), abs=1e-7)
    both = attention_knockout(model, tokens, edges, answer=5)
    assert sweep["metric"].iloc[0] == pytest.approx(both["metric"].item(), abs=1e-7)
    assert plot_knockout_sweep(sweep).data
