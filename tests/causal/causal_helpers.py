"""Shared inputs and independent references for the causal-analysis tests."""

from __future__ import annotations

import tempfile

import torch
from tiny_models import VOCAB, tiny_model

# IOI-style prompts (Wang et al. 2022); the corrupted prompt swaps the names, so the answers swap.
IOI = [
    ("When Mary and John went to the store, John gave a drink to", " Mary", " John"),
    ("When Tom and James went to the park, James gave a ball to", " Tom", " James"),
]


def ioi_inputs():
    clean = [p for p, _, _ in IOI]
    corrupted = [p.replace(a, "#").replace(b, a).replace("#", b) for p, a, b in IOI]
    answers = [(a, b) for _, a, b in IOI]
    return clean, corrupted, answers


def random_pair(batch=2, pos=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, pos), generator=g), torch.randint(0, VOCAB, (batch, pos), generator=g)


def logit_diff(logits, ids):
    """Mean over rows of logits[b, -1, ids[b, 0]] - logits[b, -1, ids[b, 1]], written out row by row."""
    return torch.stack([logits[b, -1, ids[b, 0]] - logits[b, -1, ids[b, 1]] for b in range(logits.shape[0])]).mean()


def naive_patch(model, base, source, ids, hook, position, head, cache=None):
    """One forward per cell: patch ``source``'s activation at ``hook`` into the run on ``base``.

    ``cache``: the source run's activations, if already captured (else captured here).
    """
    with torch.no_grad():
        if cache is None:
            _, cache = model.run_with_cache(source, names=[hook])
        src = cache[hook]

        def fn(act, point):
            out = act.clone()
            if head is None:
                out[:, position] = src[:, position]
            elif position is None:
                out[:, :, head] = src[:, :, head]
            else:
                out[:, position, head] = src[:, position, head]
            return out

        return float(logit_diff(model.run_with_hooks(base, fwd_hooks=[(hook, fn)]), ids))


def bridge_for(hf_model, tokenizer=None):
    """A TransformerLens v4 bridge around ``hf_model`` (saved to a temporary folder for its config)."""
    from transformer_lens.model_bridge import TransformerBridge

    folder = tempfile.mkdtemp()
    hf_model.save_pretrained(folder)
    bridge = TransformerBridge.boot_transformers(folder, hf_model=hf_model, device="cpu", tokenizer=tokenizer)
    bridge.eval()
    return bridge


__all__ = ["IOI", "ioi_inputs", "random_pair", "logit_diff", "naive_patch", "bridge_for", "tiny_model"]
