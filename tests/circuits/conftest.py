"""Models for the circuit tests: the trained 2-layer induction model (ground truth) and tiny random ones."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from interp.hooks import HookedModel

VOCAB, LENGTH = 128, 40


def _repeated_blocks(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.empty(batch, LENGTH, dtype=torch.long)
    predictable = torch.zeros(batch, LENGTH - 1, dtype=torch.bool)
    for row in range(batch):
        period = int(torch.randint(8, 17, (), generator=generator))
        block = torch.randint(0, VOCAB, (period,), generator=generator)
        tokens[row] = block.repeat(LENGTH // period + 1)[:LENGTH]
        predictable[row, period:] = True
    return tokens, predictable


def train_induction_model(steps: int = 1000) -> HookedModel:
    """The recipe of tests/test_trained_circuit.py: a 2-layer attention-only Llama that learns induction."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=4, head_dim=16, intermediate_size=64, max_position_embeddings=64)
    model = AutoModelForCausalLM.from_config(config)
    for layer in model.model.layers:  # attention-only
        for parameter in layer.mlp.parameters():
            torch.nn.init.zeros_(parameter)
            parameter.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(steps):
        tokens, predictable = _repeated_blocks(64, generator)
        logits = model(input_ids=tokens).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits[predictable], tokens[:, 1:][predictable])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return HookedModel(model.eval())


@pytest.fixture(scope="session")
def induction_model() -> HookedModel:
    return train_induction_model()
