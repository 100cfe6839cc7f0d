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
