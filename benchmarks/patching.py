"""Residual-stream activation patching: interp's batched sweep vs TransformerLens ``get_act_patch_resid_pre``.

Same model (the shipped SmolLM2-135M, eager attention on both sides so numerics match), same IOI
prompt pair, same metric (logit difference). Run: ``.venv/bin/python benchmarks/patching.py``.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

import interp  # noqa: E402
from interp.analyses.activation_patching import activation_patching  # noqa: E402
from interp.builtin_models import resolve_builtin  # noqa: E402
from interp.hooks import HookedModel  # noqa: E402
from interp.loading import gguf_as_hf_folder  # noqa: E402

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When John and Mary went to the store, Mary gave a drink to"
ANSWERS = (" Mary", " John")


def main() -> None:
    from transformer_lens import patching
    from transformer_lens.model_bridge import TransformerBridge

    folder = str(gguf_as_hf_folder(resolve_builtin("smollm2-135m")))
    shipped = interp.load("smollm2-135m", device="cpu")
    hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    model = HookedModel(copy.deepcopy(hf), shipped.tokenizer, name="smollm2-135m (eager)")
    staging = tempfile.mkdtemp()
    hf.save_pretrained(staging)
    bridge = TransformerBridge.boot_transformers(staging, hf_model=hf, device="cpu", tokenizer=shipped.tokenizer)
    bridge.eval()

    clean, corrupted = model.to_tokens(CLEAN), model.to_tokens(CORRUPTED)
    ids = [shipped.tokenizer(a, add_special_tokens=False)["input_ids"][0] for a in ANSWERS]

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return (logits[:, -1, ids[0]] - logits[:, -1, ids[1]]).mean()

    n_cells = model.cfg.n_layers * clean.shape[1]
    print(f"model {model.cfg.name}: {model.cfg.n_layers} layers, prompt {clean.shape[1]} tokens -> {n_cells} cells; "
          f"torch threads {torch.get_num_threads()}")

    start = time.perf_counter()
    ours = activation_patching(model, clean, corrupted, answers=ANSWERS, sites="resid_pre", batch_size=64)
    ours_s = time.perf_counter() - start
    print(f"interp activation_patching (batched, batch_size=64): {ours_s:7.1f} s")

    start = time.perf_counter()
    with torch.no_grad():
        _, cache = bridge.run_with_cache(clean)
        tl = patching.get_act_patch_resid_pre(bridge, corrupted, cache, metric)
    tl_s = time.perf_counter() - start
    print(f"TransformerLens get_act_patch_resid_pre (TransformerBridge, one forward per cell): {tl_s:7.1f} s")

    got = torch.tensor(ours.pivot(index="layer", columns="position", values="metric").to_numpy())
    diff = (got - tl.double()).abs().max().item()
    print(f"speed-up {tl_s / ours_s:.1f}x; max |interp - TL| = {diff:.2e} (logit difference)")


if __name__ == "__main__":
    main()
