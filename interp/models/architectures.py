"""Where a Hugging Face causal LM keeps its blocks, attention, MLP, final norm and unembedding.

interp never re-implements a model: it finds the original modules and hooks them. The places are
*discovered* from the module tree (:func:`discover`):

- the blocks: the ``ModuleList`` holding one module per layer (``config.num_hidden_layers``);
- each block's attention: the first submodule whose ``forward`` calls transformers'
  ``ALL_ATTENTION_FUNCTIONS`` (the attention interface interp routes through);
- its output projection: the attention module's linear layer that maps ``n_heads * d_head`` to ``d_model``;
- the MLP (a dense MLP or an MoE block), the final norm and the unembedding.

Hand-written :data:`OVERRIDES` remain only where discovery needs help (each has a test showing why),
and :data:`REFUSED` lists model types that cannot be hooked exactly, each with its reason. Anything
else that discovery cannot place fails with one line saying what was missing.
"""

from __future__ import annotations

import inspect
import re
import sys
from dataclasses import dataclass
from functools import lru_cache

from torch import nn

from interp.errors import UnsupportedArchitectureError


@dataclass(frozen=True)
class ArchitectureSpec:
    """Module paths of one model (all relative).

    Attributes:
        layers: dotted path from the ``*ForCausalLM`` model to the ``ModuleList`` of blocks.
        attention: dotted path from a block to the module whose ``(q, k, v) -> z`` step interp hooks.
        out_proj: attribute of the attention module that maps concatenated head outputs to d_model.
        mlp: dotted path from a block to its MLP (or MoE block).
        attention_entry: how interp reaches the attention computation: ``"interface"`` for models
            that call ``ALL_ATTENTION_FUNCTIONS`` (most modern ones), ``"gpt_neo_attn"`` for GPT-Neo,
            whose eager attention is the method ``_attn``.
        final_norm: dotted path from the model to the norm before the unembedding (None: none found).
        discovered: True when found by :func:`discover`, False for an entry of :data:`OVERRIDES`.
    """

    layers: str
    attention: str
    out_proj: str
    mlp: str
    attention_entry: str = "interface"
    final_norm: str | None = None
    discovered: bool = True


# Discovery finds the blocks, MLP and norms of these, but GPT-Neo's attention has no attention
# interface: interp wraps its eager ``_attn`` method (tests/test_architecture_matrix.py shows discovery refuses it).
OVERRIDES: dict[str, ArchitectureSpec] = {
    "gpt_neo": ArchitectureSpec(
        layers="transformer.h",
        attention="attn.attention",
        out_proj="out_proj",
        mlp="mlp",
        attention_entry="gpt_neo_attn",
        final_norm="transformer.ln_f",
        discovered=False,
    ),
}

# Inside a block's MLP, interp's neuron hooks (mlp.hook_pre / hook_pre_linear / hook_post) hook these linear
# layers, found by name (attribute names of the MLP module; OPT-style blocks hold fc1/fc2 directly). Which norm
# feeds attention and which feeds the MLP, and whether the block is parallel, is not named here: it is traced
# from one small forward pass (interp.hooks.layout), which works whatever the norms are called.
# Gated MLPs: down(act(gate(x)) * up(x)), as (gate, up, down).
GATED_MLP_PROJECTIONS: tuple[tuple[str, str, str], ...] = (("gate_proj", "up_proj", "down_proj"), ("w1", "w3", "w2"))
# Gated MLPs with one fused projection whose output splits into (gate, up) halves, gate first (Phi-3, GLM).
FUSED_GATE_UP_PROJECTIONS: tuple[tuple[str, str], ...] = (("gate_up_proj", "down_proj"),)
# Plain MLPs: down(act(in(x))), as (in, down).
PLAIN_MLP_PROJECTIONS: tuple[tuple[str, str], ...] = (
    ("up_proj", "down_proj"), ("c_fc", "c_proj"), ("fc_in", "fc_out"), ("fc1", "fc2"),
    ("dense_h_to_4h", "dense_4h_to_h"), ("0", "2"),
)
# A mixture-of-experts block: it has one of these children. Its router returns the router logits first,
# except the classes listed with the index of the logits in their output tuple.
MOE_CHILDREN: tuple[str, ...] = ("experts", "router")
ROUTER_NAMES: tuple[str, ...] = ("router", "gate")
ROUTER_LOGITS_INDEX: dict[str, int] = {"Llama4Router": 1, "JetMoeTopKGating": 4}

_INLINE = "computes attention inline instead of through transformers' attention interface, so interp cannot hook it exactly"
# Model types interp refuses up front, with the reason. Each is exercised by the coverage tests.
REFUSED: dict[str, str] = {
    "falcon": f"falcon {_INLINE} (it also tests _attn_implementation == 'sdpa' by name)",
    "bloom": f"bloom {_INLINE} (ALiBi biases are added in its own baddbmm)",
    "mpt": f"mpt {_INLINE} (ALiBi)",
    "gpt_bigcode": f"gpt_bigcode {_INLINE}",
    "llama4": "llama4 is a vision-language wrapper; load its text model (model_type llama4_text)",
    "inkling_text": "its per-layer head layout differs from the config's head counts, so hook shapes would be wrong",
    "dory": "a hooked forward fails interp's coverage checks (attention mask and key lengths disagree)",
    "deepseek_v32": "sparse (DSA) attention keeps an indexed KV cache that interp's replayed sweeps do not build",
    "glm_moe_dsa": "sparse (DSA) attention keeps an indexed KV cache that interp's replayed sweeps do not build",
    "axk2": "sparse (DSA) attention keeps an indexed KV cache that interp's replayed sweeps do not build",
    "hy_v4": "its residual stream is several hyper-connection streams, not one [batch, pos, d_model] tensor",
}
# Registered implementations (sdpa, flash) keep their name when interp routes them; eager is renamed
# ``interp_eager``. A model that branches on ``== "eager"`` would then change its computation, unless audited:
# GPT-2 only picks how it returns the weights, which interp's routing preserves (tests/test_hooks.py).
_NAME_CHECKS_AUDITED = {"gpt2"}
_EAGER_NAME_CHECK = re.compile(
    r"_attn_implementation\s*(==|!=)\s*[\"']eager[\"']|_attn_implementation\s*(not\s+)?in\s*[(\[][^)\]]*[\"']eager[\"']"
)
# Hooks, patterns and patching are exact for these (the mask reaches interp), but a mask beyond causal,
# window and padding (sparse index masks) is not something the statistics kernels apply.
_SPARSE_INDEX_CONFIG_KEYS = ("index_topk",)

# Hooks, patterns and patching are exact for these, but the statistics kernels would be wrong.
STATISTICS_REFUSED: dict[str, str] = {
    "doge": "its attention adds a learned dynamic mask per head, which the statistics kernels do not apply",
}

_BLOCK_LIST_NAMES = ("layers", "h", "blocks", "layer", "decoder_layers")
_OUT_PROJ_NAMES = ("o_proj", "out_proj", "dense", "c_proj", "wo", "o", "out", "proj")
_MLP_NAMES = ("mlp", "feed_forward", "block_sparse_moe", "moe", "ffn", "ff", "feedforward", "mlp_block")
_FINAL_NORM_NAMES = ("norm", "ln_f", "final_layernorm", "final_layer_norm", "norm_f", "final_norm", "ln_out")


def text_config(config):
    """The text model's config (multimodal wrappers keep it apart), or the config itself."""
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


def n_layers_of(config) -> int | None:
    config = text_config(config)
    for name in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


@lru_cache(maxsize=None)
def _calls_attention_interface(cls: type) -> bool:
    """Whether ``cls.forward`` dispatches through ``ALL_ATTENTION_FUNCTIONS`` (read from its source)."""
    try:
        source = inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return False
    return "ALL_ATTENTION_FUNCTIONS" in source


@lru_cache(maxsize=None)
def _tests_eager_name(cls: type) -> bool:
    """Whether the model's modeling module branches on ``_attn_implementation == "eager"``."""
    module = sys.modules.get(cls.__module__)
    try:
        source = inspect.getsource(module) if module is not None else ""
    except (OSError, TypeError):
        return False
    return bool(_EAGER_NAME_CHECK.search(source))


def check_eager_name_tests(model: nn.Module) -> None:
    """Refuse to rename eager attention for a model whose code branches on the name ``"eager"``."""
    model_type = model.config.model_type
    if model_type not in _NAME_CHECKS_AUDITED and _tests_eager_name(type(model)):
        raise UnsupportedArchitectureError(
            f"{model_type} tests _attn_implementation == 'eager' to choose what attention computes, and interp routes "
            f"eager attention under another name; load it with attn_implementation='sdpa'"
        )


def statistics_refusal(config) -> str | None:
    """Why attention statistics are not available for a config, or None."""
    config = text_config(config)
    if config.model_type in STATISTICS_REFUSED:
        return STATISTICS_REFUSED[config.model_type]
    if any(getattr(config, key, None) for key in _SPARSE_INDEX_CONFIG_KEYS):
        return "its sparse attention masks each query to its top-k keys (DSA), which the statistics kernels do not apply"
    return None


def _attention_weight_shapes(attention: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in attention.named_parameters() if p.dim() == 2}


def _linear_shape(module: nn.Module) -> tuple[int, int] | None:
    """(in_features, out_features) of an ``nn.Linear`` or transformers' ``Conv1D``."""
    weight = getattr(module, "weight", None)
    if weight is None or weight.dim() != 2:
        return None
    if type(module).__name__ == "Conv1D":
        return int(weight.shape[0]), int(weight.shape[1])
    if isinstance(module, nn.Linear):
        return int(weight.shape[1]), int(weight.shape[0])
    return None


def _find_blocks(model: nn.Module, n_layers: int, model_type: str) -> str:
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) == n_layers and name
    ]
    if not candidates:
        raise UnsupportedArchitectureError(f"{model_type}: no list of {n_layers} blocks found in {type(model).__name__}")
    # Prefer the conventional names, then the shallowest path (vision towers and MTP heads nest deeper).
    candidates.sort(key=lambda item: (item[0].rsplit(".", 1)[-1] not in _BLOCK_LIST_NAMES, item[0].count(".")))
    return candidates[0][0]


def _find_attention(block: nn.Module) -> str | None:
    for name, module in block.named_modules():
        if name and _calls_attention_interface(type(module)):
            return name
    return None


def _find_out_proj(attention: nn.Module, d_model: int) -> str | None:
    linears = [(name, shape) for name, child in attention.named_children() if (shape := _linear_shape(child))]
    to_model = [(name, shape) for name, shape in linears if shape[1] == d_model]
    for preferred in _OUT_PROJ_NAMES:
        for name, _ in to_model:
            if name == preferred:
                return name
    # Otherwise the last linear layer registered that writes d_model (q/k/v come first by convention).
    return to_model[-1][0] if len(to_model) == 1 else None


def _find_mlp(block: nn.Module, attention_top: str) -> str | None:
    children = dict(block.named_children())
    for name in _MLP_NAMES:
        if name in children and name != attention_top:
            return name
    for name, child in children.items():
        label = type(child).__name__.lower()
        if name != attention_top and any(word in label for word in ("mlp", "moe", "feedforward", "experts")):
            return name
    # OPT-style blocks hold the MLP's two linear layers directly: its output is the second one's.
    if "fc1" in children and "fc2" in children:
        return "fc2"
    return None


def _find_final_norm(model: nn.Module, layers: str) -> str | None:
    base = layers.rsplit(".", 1)[0] if "." in layers else ""
    owner = model.get_submodule(base) if base else model
    children = dict(owner.named_children())
    for name in _FINAL_NORM_NAMES:
        if name in children:
            return f"{base}.{name}" if base else name
    return None


def discover(model: nn.Module) -> ArchitectureSpec:
    """Find a causal LM's module paths from its module tree (see the module docstring).

    Raises :class:`~interp.errors.UnsupportedArchitectureError` naming what could not be found.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if config is None or model_type is None:
        raise UnsupportedArchitectureError(
            f"{type(model).__name__} has no Hugging Face config; interp wraps transformers *ForCausalLM models"
        )
    if getattr(config, "is_encoder_decoder", False):
        raise UnsupportedArchitectureError(
            f"{model_type} is an encoder-decoder model; interp hooks decoder-only causal LMs"
        )
    n_layers = n_layers_of(config)
    if n_layers is None:
        raise UnsupportedArchitectureError(f"{model_type}: the config gives no number of layers")
    d_model = getattr(text_config(config), "hidden_size", None) or getattr(config, "n_embd", None)
    layers = _find_blocks(model, n_layers, model_type)
    blocks = model.get_submodule(layers)
    attention_paths = [_find_attention(block) for block in blocks]
    missing = [i for i, path in enumerate(attention_paths) if path is None]
    if missing:
        what = "any layer" if len(missing) == n_layers else f"layers {', '.join(map(str, missing))}"
        raise UnsupportedArchitectureError(
            f"{model_type}: no softmax attention through transformers' attention interface in {what} "
            f"(linear attention, state-space layers or inline attention cannot be hooked exactly)"
        )
    if len(set(attention_paths)) != 1:
        raise UnsupportedArchitectureError(f"{model_type}: attention sits at different paths per layer: {sorted(set(attention_paths))}")
    attention = attention_paths[0]
    shapes = [_attention_weight_shapes(block.get_submodule(attention)) for block in blocks]
    if any(shape != shapes[0] for shape in shapes):
        differing = next(i for i, shape in enumerate(shapes) if shape != shapes[0])
        raise UnsupportedArchitectureError(
            f"{model_type}: layer {differing}'s attention has other weight shapes than layer 0's (per-layer head sizes "
            f"or counts), which interp's per-model head counts cannot describe"
        )
    out_proj = _find_out_proj(blocks[0].get_submodule(attention), d_model)
    if out_proj is None:
        raise UnsupportedArchitectureError(
            f"{model_type}: no single output projection to d_model={d_model} in {type(blocks[0].get_submodule(attention)).__name__}"
        )
    mlp = _find_mlp(blocks[0], attention.split(".")[0])
    if mlp is None:
        raise UnsupportedArchitectureError(f"{model_type}: no MLP found in {type(blocks[0]).__name__}")
    return ArchitectureSpec(
        layers=layers, attention=attention, out_proj=out_proj, mlp=mlp, final_norm=_find_final_norm(model, layers)
    )


def spec_for(model: nn.Module) -> ArchitectureSpec:
    """The :class:`ArchitectureSpec` of a Hugging Face causal LM, or one line saying why it cannot be hooked."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in REFUSED:
        raise UnsupportedArchitectureError(f"architecture {model_type!r} is not supported: {REFUSED[model_type]}")
    spec = OVERRIDES[model_type] if model_type in OVERRIDES else discover(model)
    return spec


def spec_for_config(config) -> ArchitectureSpec:
    """:func:`spec_for` on a model built from ``config`` on the meta device: no weights are allocated or read."""
    import torch
    from transformers import AutoModelForCausalLM

    model_type = getattr(config, "model_type", None)
    if model_type in REFUSED:
        raise UnsupportedArchitectureError(f"architecture {model_type!r} is not supported: {REFUSED[model_type]}")
    if getattr(config, "is_encoder_decoder", False):
        raise UnsupportedArchitectureError(f"{model_type} is an encoder-decoder model; interp hooks decoder-only causal LMs")
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except ValueError as error:  # no causal-LM class for this config
        raise UnsupportedArchitectureError(
            f"architecture {model_type!r} has no causal-LM class in transformers: {str(error).splitlines()[0]}"
        ) from error
    return spec_for(model)


def supported_architectures() -> list[str]:
    """Model types with a hand-written entry (everything else is discovered; see ``interp architectures``)."""
    return sorted(OVERRIDES)
