"""Random-init tiny models of every supported architecture, built from configs (no downloads)."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, PretrainedConfig
from transformers import GemmaConfig, Gemma2Config, Gemma3TextConfig, GPT2Config, GPTNeoConfig, GPTNeoXConfig, LlamaConfig
from transformers import MistralConfig, Olmo2Config, Qwen2Config, Qwen3Config

VOCAB = 97


def tiny_config(architecture: str) -> PretrainedConfig:
    """A 2-layer, d_model-32 config of ``architecture``; GQA where the family has it."""
    common = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    decoder = dict(common, num_key_value_heads=2, max_position_embeddings=256, head_dim=8)
    if architecture == "gpt2":
        return GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=256)
    if architecture == "gpt_neox":
        return GPTNeoXConfig(**common, max_position_embeddings=256, rotary_pct=0.5)
    if architecture == "gpt_neo":
        return GPTNeoConfig(
            vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4, attention_types=[[["global", "local"], 1]],
            window_size=5, max_position_embeddings=256,
        )
    configs = {
        "llama": LlamaConfig,
        "mistral": MistralConfig,
        "qwen2": Qwen2Config,
        "qwen3": Qwen3Config,
        "gemma": GemmaConfig,
        "gemma2": Gemma2Config,
        "gemma3_text": Gemma3TextConfig,
        "olmo2": Olmo2Config,
    }
    extra = {}
    if architecture == "mistral":
        extra = dict(sliding_window=6)
    if architecture == "gemma2":
        extra = dict(sliding_window=6, attn_logit_softcapping=5.0, final_logit_softcapping=None)
    if architecture == "gemma3_text":  # one sliding-window layer, one global; QK-norm is built in
        extra = dict(sliding_window=6, layer_types=["sliding_attention", "full_attention"])
    return configs[architecture](**decoder, **extra)


def tiny_model(architecture: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(architecture)).eval()


ARCHITECTURE_NAMES = ["gpt2", "gpt_neox", "gpt_neo", "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo2"]


# ---------------------------------------------------------------------------------------- coverage matrix
# Every causal-LM model type in the installed transformers, built tiny from its config class.

_TINY_SIZES = dict(
    vocab_size=VOCAB, hidden_size=32, n_embd=32, d_model=32, num_hidden_layers=2, n_layer=2, num_layers=2,
    num_attention_heads=4, n_head=4, num_heads=4, num_key_value_heads=2, intermediate_size=64, n_inner=64,
    ffn_dim=64, head_dim=8, max_position_embeddings=256, n_positions=256, n_ctx=256,
    num_local_experts=4, num_experts=4, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
    kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=8, n_shared_experts=1,
    first_k_dense_replace=1, n_group=1, topk_group=1, shared_expert_intermediate_size=32, rotary_dim=4,
    pad_token_id=0, bos_token_id=1, eos_token_id=2, index_topk=4,
)
# A window or chunk shorter than the test inputs (12-64 tokens), where the family has one.
_SHORT_WINDOWS = dict(sliding_window=6, attention_chunk_size=6, window_size=6)


def generic_tiny_config(model_type: str) -> PretrainedConfig:
    """A 2-layer, d_model-32 config of any model type, GQA (4 query / 2 KV heads) where the family has it."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    cls = CONFIG_MAPPING[model_type]
    base = cls()
    overrides = {}
    for name, value in {**_TINY_SIZES, **_SHORT_WINDOWS}.items():
        if not hasattr(base, name):
            continue
        try:  # read-only properties (derived sizes) cannot be overridden
            setattr(base, name, getattr(base, name))
        except Exception:
            continue
        overrides[name] = value
    if hasattr(base, "layer_types"):
        overrides["layer_types"] = None  # recomputed for 2 layers
    if hasattr(base, "kv_lora_rank"):
        overrides["num_key_value_heads"] = 4  # multi-latent attention: one key/value per query head (HF's eager assumes it)
        if "head_dim" in overrides:
            overrides["head_dim"] = overrides["qk_rope_head_dim"]  # DeepSeek-V3 configs define head_dim as the rotary part
    if getattr(base, "use_sliding_window", None) is False and hasattr(base, "sliding_window"):
        overrides["use_sliding_window"] = True
    return cls(**overrides)


def sharpen_attention(model: torch.nn.Module, factor: float = 2.0) -> torch.nn.Module:
    """Scale every attention input projection so attention is peaked (near-uniform at default init proves little)."""
    from interp.models.architectures import spec_for

    spec = spec_for(model)
    with torch.no_grad():
        for block in model.get_submodule(spec.layers):
            attention = block.get_submodule(spec.attention)
            for name, param in attention.named_parameters():
                if not name.startswith(spec.out_proj) and param.dim() == 2:
                    param.mul_(factor)
    return model


def generic_tiny_model(model_type: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return sharpen_attention(AutoModelForCausalLM.from_config(generic_tiny_config(model_type)).eval())


def float64_rms_norms(model: torch.nn.Module) -> torch.nn.Module:
    """HF's RMSNorm computes in float32 whatever the input dtype; make it float64 for exact checks."""
    for module in model.modules():
        if type(module).__name__.endswith("RMSNorm"):
            def forward(x, module=module):
                return module.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + module.variance_epsilon)
            module.forward = forward
    return model


def save_tiny_folder(architecture: str, folder, shipped) -> str:
    """A random-init (seed 0) tiny ``architecture`` with the shipped model's vocabulary, saved with its
    tokenizer as an HF folder (CLI tests); ``shipped`` is the loaded SmolLM2 (fixture ``smollm``)."""
    config = tiny_config(architecture)
    config.vocab_size = shipped.cfg.d_vocab
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    shipped.tokenizer.save_pretrained(folder)
    return str(folder)
