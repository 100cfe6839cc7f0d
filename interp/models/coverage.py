"""Which causal-LM model types of the installed transformers interp hooks, and how well that is tested.

``interp architectures`` prints :func:`architecture_table`. A model type is

- ``tested``: in :data:`TESTED`; a tiny random-init model passes every check of
  ``tests/test_architecture_matrix.py`` (load, bit-identical logits, cache shapes, pattern = eager,
  statistics = eager, scan, patching = a hand-written loop);
- ``partial``: in :data:`PARTIAL`; hooks, patterns and patching are exact and tested, attention
  statistics (and so scans) are refused with one line;
- ``discovered``: discovery places its modules but no tiny model of it is tested;
- ``refused``: interp raises one line saying why (the ``note``).
"""

from __future__ import annotations

import warnings

TESTED: tuple[str, ...] = (
    "afmoe", "apertus", "apertus1p5_text", "arcee", "aria_text", "axk1", "beam", "biogpt", "bitnet", "codegen", "cohere",
    "cohere2", "cohere2_moe", "ctrl", "cwm", "deepseek_v2", "deepseek_v3", "diffllama", "dots1", "ernie4_5",
    "ernie4_5_moe", "exaone", "exaone4", "exaone_moe", "flex_olmo", "flint", "gemma", "gemma2", "gemma3_text", "glm",
    "glm4", "glm4_moe", "glm4_moe_lite", "gpt-sw3", "gpt2", "gpt_neox", "gpt_oss", "gptj", "granite", "granite_swa",
    "granitemoe", "granitemoe_swa", "granitemoeshared", "helium", "hunyuan_v1_dense", "hunyuan_v1_moe", "hy_v3",
    "hyperclovax", "internlm3", "iquestcoder", "jais2", "jetmoe", "kolibri1", "laguna", "lfm2", "llama", "llama4_text", "mellum",
    "minicpm3", "minimax_m2", "minimax_m3_vl_text", "ministral", "ministral3", "mistral", "mixtral", "nanochat", "nemotron", "olmo",
    "olmo2", "olmo3", "olmoe", "opt", "persimmon", "phi", "phi3", "phimoe", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe",
    "sarvam_mla", "sarvam_moe", "seed_oss", "smollm3", "solar_open", "stablelm", "starcoder2", "vaultgemma", "youtu",
)
PARTIAL: dict[str, str] = {
    "doge": "dynamic per-head attention mask: statistics refused",
}
# GPT-Neo is hooked through its override (not discovery) and tested in tests/test_hooks.py with the other families.
OVERRIDE_TESTED = ("gpt_neo",)


def _discovery_note(model_type: str) -> tuple[str, str]:
    """(status, note) from discovery on a 2-layer model of the type's default config, built on the meta device."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from interp.errors import UnsupportedArchitectureError
    from interp.models.architectures import spec_for_config

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = CONFIG_MAPPING[model_type](num_hidden_layers=2)
    except Exception as error:  # many configs validate sizes on their own terms
        return "unknown", f"its default config cannot be built here ({type(error).__name__})"
    try:
        spec_for_config(config)
    except UnsupportedArchitectureError as error:
        return "refused", str(error)
    except Exception as error:
        return "unknown", f"no model could be built from its default config ({type(error).__name__})"
    return "discovered", "modules found by discovery; no tiny model of it is in the test matrix"


def architecture_table():
    """One row per causal-LM model type in the installed transformers: ``model_type, status, note``."""
    import pandas as pd
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from interp.models.architectures import REFUSED

    rows = []
    for model_type in sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES):
        if model_type in TESTED:
            status, note = "tested", ""
        elif model_type in OVERRIDE_TESTED:
            status, note = "tested", "hooked through an override (eager _attn method)"
        elif model_type in PARTIAL:
            status, note = "partial", PARTIAL[model_type]
        elif model_type in REFUSED:
            status, note = "refused", REFUSED[model_type]
        else:
            status, note = _discovery_note(model_type)
        rows.append({"model_type": model_type, "status": status, "note": note})
    return pd.DataFrame(rows)
