"""The 2-layer attention-only induction models the suite trains, cached on disk.

Two deterministic recipes share one training loop (:func:`_train`) and one loader
(:func:`induction_model`):

* ``induction-2l-4h-1000steps-v1`` (:data:`RECIPE`, tests/test_trained_circuit.py's model): 4 heads
  per layer, d_model 64. It spreads induction over every layer-0 -> layer-1 head pair.
* ``induction-2l-1h-1000steps-rope100-v1`` (:data:`SMALL_RECIPE`): one head per layer, so the previous-token head and
  the induction head are each a single node and the induction circuit is a handful of edges: the
  ground truth for circuit discovery (tests/circuits/test_induction_ground_truth.py).

Training takes a while on a small CPU, so the weights are kept in ``$INTERP_CACHE/test-models``
(default ``~/.cache/interp``) after the first run; each recipe is deterministic, so a cached copy is
the same model. Changing a recipe's numbers means giving it a new name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from interp.hooks import HookedModel

VOCAB, LENGTH = 128, 40


@dataclass(frozen=True)
class Recipe:
    name: str
    d_model: int
    n_heads: int
    head_dim: int
    steps: int
    batch: int = 64
    lr: float = 3e-3
    rope_theta: float = 10000.0


RECIPES = {r.name: r for r in (
    Recipe("induction-2l-4h-1000steps-v1", d_model=64, n_heads=4, head_dim=16, steps=1000),
    # RoPE base 100 rather than Llama's 10000: over 40 positions the slow rotations are useless, and a
    # lone layer-0 head must read "one position back" from the rotations alone (tried at 1000 steps:
    # base 10000 reached 70% accuracy, base 100 85%; head_dim 32 instead of 64 80%)
    Recipe("induction-2l-1h-1000steps-rope100-v1", d_model=64, n_heads=1, head_dim=64, steps=1000, rope_theta=100.0),
)}
RECIPE = "induction-2l-4h-1000steps-v1"
SMALL_RECIPE = "induction-2l-1h-1000steps-rope100-v1"


def _repeated_blocks(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.empty(batch, LENGTH, dtype=torch.long)
    predictable = torch.zeros(batch, LENGTH - 1, dtype=torch.bool)
    for row in range(batch):
        period = int(torch.randint(8, 17, (), generator=generator))
        block = torch.randint(0, VOCAB, (period,), generator=generator)
        tokens[row] = block.repeat(LENGTH // period + 1)[:LENGTH]
        predictable[row, period:] = True  # from here on the next token repeats an earlier one
    return tokens, predictable


def _config(recipe: Recipe) -> LlamaConfig:
    # num_key_value_heads = num_attention_heads: no GQA, so every head has its own k and v inputs
    return LlamaConfig(vocab_size=VOCAB, hidden_size=recipe.d_model, num_hidden_layers=2,
                       num_attention_heads=recipe.n_heads, num_key_value_heads=recipe.n_heads,
                       head_dim=recipe.head_dim, intermediate_size=64, max_position_embeddings=64,
                       rope_theta=recipe.rope_theta)


def _train(recipe: Recipe) -> torch.nn.Module:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(recipe))
    for layer in model.model.layers:  # attention-only
        for parameter in layer.mlp.parameters():
            torch.nn.init.zeros_(parameter)
            parameter.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=recipe.lr)
    for _ in range(recipe.steps):
        tokens, predictable = _repeated_blocks(recipe.batch, generator)
        logits = model(input_ids=tokens).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits[predictable], tokens[:, 1:][predictable])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def induction_model(recipe: str = RECIPE) -> HookedModel:
    """The model ``recipe`` (a key of :data:`RECIPES`) trains, wrapped (trained once, then loaded from the cache)."""
    spec = RECIPES[recipe]
    cache = Path(os.environ.get("INTERP_CACHE", Path.home() / ".cache" / "interp")) / "test-models" / f"{spec.name}.pt"
    if cache.is_file():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(_config(spec))
        model.load_state_dict(torch.load(cache, map_location="cpu"))
    else:
        model = _train(spec)
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
