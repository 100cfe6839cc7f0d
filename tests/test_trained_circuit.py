"""A tiny model trained in the test suite, whose circuit is known because we built the task for it.

A 2-layer attention-only Llama (RoPE, MLPs fixed at zero) learns to continue sequences made of a
random block of 8-16 tokens repeated: the only general solution is an induction circuit, a
previous-token head in layer 0 composing with induction heads in layer 1 (Olsson et al. 2022). The
scores must find exactly that: previous-token heads in layer 0, induction heads in layer 1, and
ablating the previous-token heads must break the layer-1 induction heads' accuracy.
"""

import pytest
import torch
from trained_models import VOCAB, induction_model

from interp.analyses import role_scores
from interp.hooks import HookedModel


@pytest.fixture(scope="module")
def trained():
    # Shared with tests/circuits (weights cached on disk after the first training: see tests/trained_models.py).
    return induction_model()


def _probe(seed: int = 1) -> torch.Tensor:
    first = torch.randint(0, VOCAB, (8, 16), generator=torch.Generator().manual_seed(seed))
    return torch.cat([first, first, first[:, :8]], dim=1)


def _second_half_accuracy(model: HookedModel, tokens: torch.Tensor) -> float:
    with torch.no_grad():
        predicted = model(tokens)[:, 16:-1].argmax(-1)
    return (predicted == tokens[:, 17:]).float().mean().item()


def test_training_learned_the_task(trained):
    assert _second_half_accuracy(trained, _probe()) > 0.9


def test_scores_find_previous_token_heads_in_layer0_and_induction_heads_in_layer1(trained):
    tokens = _probe()
    previous, _ = role_scores(trained, tokens, "previous_token")
    induction, _ = role_scores(trained, tokens, "induction")
    assert previous[0].max() > 0.3 and previous[0].max() > 3 * previous[1].max()
    assert induction[1].min() > 0.5 and induction[0].max() < 0.1


def test_ablating_the_previous_token_heads_breaks_induction(trained):
    tokens = _probe()
    previous, _ = role_scores(trained, tokens, "previous_token")
    prev_heads = [(0, int(h)) for h in torch.nonzero(previous[0] > 0.3).flatten()]
    assert prev_heads
    with trained.ablate_heads(prev_heads):
        broken = _second_half_accuracy(trained, tokens)
        induction_after, _ = role_scores(trained, tokens, "induction")
    assert broken < 0.5 * _second_half_accuracy(trained, tokens)
    assert induction_after[1].mean() < 0.5 * role_scores(trained, tokens, "induction")[0][1].mean()
