"""The 2-layer attention-only induction model the suite trains (tests/test_trained_circuit.py's recipe), cached on disk.

Training takes minutes on a small CPU, so the weights are kept in ``$INTERP_CACHE/test-models``
(default ``~/.cache/interp``) after the first run; the recipe is deterministic, so a cached copy is
the same model.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from interp.hooks import HookedModel

VOCAB, LENGTH = 128, 40
RECIPE = "induction-2l-4h-1000steps-v1"


def _repeated_blocks(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.empty(batch, LENGTH, dtype=torch.long)
    predictable = torch.zeros(batch, LENGTH - 1, dtype=torch.bool)
    for row in range(batch):
        period = int(torch.randint(8, 17, (), generator=generator))
        block = torch.randint(0, VOCAB, (period,), generator=generator)
        tokens[row] = block.repeat(LENGTH // period + 1)[:LENGTH]
        predictable[row, period:] = True  # from here on the next token repeats an earlier one
    return tokens, predictable


def _config() -> LlamaConfig:
    return LlamaConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=4, head_dim=16, intermediate_size=64, max_position_embeddings=64)


def _train() -> torch.nn.Module:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config())
    for layer in model.model.layers:  # attention-only
        for parameter in layer.mlp.parameters():
            torch.nn.init.zeros_(parameter)
            parameter.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(1000):
        tokens, predictable = _repeated_blocks(64, generator)
        logits = model(input_ids=tokens).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits[predictable], tokens[:, 1:][predictable])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def induction_model() -> HookedModel:
    """The trained model, wrapped (trained once, then loaded from the cache)."""
    cache = Path(os.environ.get("INTERP_CACHE", Path.home() / ".cache" / "interp")) / "test-models" / f"{RECIPE}.pt"
    if cache.is_file():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(_config())
        model.load_state_dict(torch.load(cache, map_location="cpu"))
    else:
        model = _train()
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".tmp-{os.getpid()}")
            torch.save(model.state_dict(), tmp)
            os.replace(tmp, cache)
        except OSError:
            pass  # a read-only cache only costs the next run another training
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return HookedModel(model.eval())
