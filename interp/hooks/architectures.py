"""Where each supported Hugging Face architecture keeps its layers, attention and MLP.

interp never re-implements a model: it finds the original modules and hooks them. An
:class:`ArchitectureSpec` names, relative paths only, the modules a hook needs. Adding an
architecture that routes attention through transformers' ``AttentionInterface`` is one new
entry in :data:`ARCHITECTURES`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from interp.errors import UnsupportedArchitectureError


@dataclass(frozen=True)
class ArchitectureSpec:
    """Module paths for one architecture family.

    Attributes:
        layers: dotted path from the ``*ForCausalLM`` model to the ``ModuleList`` of blocks.
        attention: dotted path from a block to the module whose ``(q, k, v) -> z`` step interp hooks.
        out_proj: attribute of the attention module that maps concatenated head outputs to d_model.
        mlp: dotted path from a block to its MLP.
        attention_entry: how interp reaches the attention computation: ``"interface"`` for models
            that call ``ALL_ATTENTION_FUNCTIONS`` (most modern ones), ``"gpt_neo_attn"`` for GPT-Neo,
            whose eager attention is the method ``_attn``.
    """

    layers: str
    attention: str
    out_proj: str
    mlp: str
    attention_entry: str = "interface"


_DECODER = ArchitectureSpec(layers="model.layers", attention="self_attn", out_proj="o_proj", mlp="mlp")

ARCHITECTURES: dict[str, ArchitectureSpec] = {
    "gpt2": ArchitectureSpec(layers="transformer.h", attention="attn", out_proj="c_proj", mlp="mlp"),
    "gpt_neox": ArchitectureSpec(layers="gpt_neox.layers", attention="attention", out_proj="dense", mlp="mlp"),
    "gpt_neo": ArchitectureSpec(
        layers="transformer.h",
        attention="attn.attention",
        out_proj="out_proj",
        mlp="mlp",
        attention_entry="gpt_neo_attn",
    ),
    "llama": _DECODER,
    "mistral": _DECODER,
    "qwen2": _DECODER,
    "qwen3": _DECODER,
    "gemma": _DECODER,
    "gemma2": _DECODER,
    "gemma3_text": _DECODER,  # text-only Gemma 3 (270M, 1B; GGUF files): QK-norm, 5 sliding : 1 global layers
    "olmo2": _DECODER,
}


def supported_architectures() -> list[str]:
    """The ``config.model_type`` values interp can hook."""
    return sorted(ARCHITECTURES)


def spec_for(model: nn.Module) -> ArchitectureSpec:
    """The :class:`ArchitectureSpec` of a Hugging Face causal LM, or a clear error."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"architecture {model_type!r} is not supported by interp; supported: "
            f"{', '.join(supported_architectures())} (a new one is one entry in interp/hooks/architectures.py)"
        )
    return ARCHITECTURES[model_type]

