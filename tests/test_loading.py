"""interp.load: aliases, GGUF files, HF folders, live models, and the errors users see."""

import json

import pytest
import torch
from tiny_models import tiny_model
from transformers import AutoModelForCausalLM

import interp
from interp.errors import InterpError, UnsupportedArchitectureError
from interp.models.builtin import BUILTIN_MODELS, resolve_builtin
from interp.models.loading import load


def test_alias_resolves_to_the_shipped_gguf_with_the_documented_shape(smollm):
    cfg = smollm.cfg
    assert (cfg.architecture, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_model) == (
        "llama", 30, 9, 3, 64, 576
    )
    assert resolve_builtin("smollm2-135m").name == BUILTIN_MODELS["smollm2-135m"].filename


@torch.no_grad()
def test_gguf_path_and_hf_folder_load_the_same_weights(smollm, smollm_folder):
    tokens = smollm.to_tokens("Hello there, general")
    from_gguf = load(str(resolve_builtin("smollm2-135m")), device="cpu")
    from_folder = load(smollm_folder, device="cpu")
    assert torch.equal(from_gguf(tokens), smollm(tokens))
    assert torch.equal(from_folder(tokens), smollm(tokens))


def test_live_hf_model_is_wrapped(tmp_path):
    model = tiny_model("gpt2")
    hooked = load(model)
    assert hooked.model is model and hooked.cfg.n_layers == 2


def test_local_folder_saved_by_hf_loads_with_dtype(tmp_path):
    tiny_model("qwen2").save_pretrained(tmp_path)
    hooked = load(tmp_path, device="cpu", dtype="bfloat16")
    assert hooked.cfg.architecture == "qwen2" and next(hooked.model.parameters()).dtype == torch.bfloat16
    assert hooked.tokenizer is None


def test_unknown_model_without_hub_is_one_clear_error():
    with pytest.raises(InterpError, match="neither a local path nor reachable on the Hugging Face Hub"):
        load("does-not-exist", device="cpu")


def test_unsupported_architecture_in_a_folder_is_refused_before_its_weights_load(tmp_path, monkeypatch):
    """Phi is now discovered; a BLOOM folder (ALiBi, attention computed inline) is refused, weights unread."""
    from transformers import BloomConfig

    AutoModelForCausalLM.from_config(BloomConfig(vocab_size=50, hidden_size=16, n_layer=1, n_head=2)).save_pretrained(tmp_path)
    import transformers

    def never(*args, **kwargs):
        raise AssertionError("weights were loaded before the architecture check")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", never)
    with pytest.raises(UnsupportedArchitectureError, match="bloom.*not supported.*ALiBi"):
        load(tmp_path, device="cpu")


def test_live_llama_is_wrapped_whole_not_its_base_model():
    """interp.load(LlamaForCausalLM) used to take its .model (the base model) for a TransformerLens bridge."""
    from tiny_models import tiny_model

    live = tiny_model("llama")
    hooked = load(live)
    assert hooked.model is live
    tokens = torch.randint(0, 90, (1, 6))
    with torch.no_grad():
        assert torch.equal(hooked(tokens), live(input_ids=tokens).logits)


def test_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(InterpError, match="no config.json and no .gguf"):
        load(tmp_path, device="cpu")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(InterpError, match="no weights"):
        load(tmp_path, device="cpu")
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InterpError, match="config.json could not be read"):
        load(tmp_path, device="cpu")


def test_bad_device_and_dtype_are_clear_errors():
    with pytest.raises(InterpError, match="unknown dtype 'float8'"):
        load("smollm2-135m", dtype="float8")
    if not torch.cuda.is_available():
        with pytest.raises(InterpError, match="no CUDA GPU is visible"):
            load("smollm2-135m", device="cuda")


def test_public_api_is_importable():
    for name in interp.__all__:
        assert hasattr(interp, name), name


@torch.no_grad()
def test_transformer_lens_bridge_is_unwrapped_to_its_hf_model(tmp_path):
    from transformer_lens.model_bridge import TransformerBridge

    model = tiny_model("gpt2")
    model.save_pretrained(tmp_path)
    bridge = TransformerBridge.boot_transformers(str(tmp_path), hf_model=model, device="cpu")
    tokens = torch.randint(0, 97, (1, 7))
    expected = bridge.original_model(input_ids=tokens).logits
    hooked = load(bridge)
    assert hooked.model is bridge.original_model
    logits, cache = hooked.run_with_cache(tokens, names=["blocks.1.hook_resid_post", "blocks.0.hook_attn_out"])
    assert torch.equal(logits, expected) and len(cache) == 2
    # The bridge replaced the attention modules, so attention-internal hooks cannot fire: say so.
    with pytest.raises(InterpError, match="attention modules were replaced.*interp.load\\(folder\\)"):
        hooked.run_with_cache(tokens, names=["blocks.0.attn.hook_z"])


@torch.no_grad()
def test_accelerate_offload_hooks_and_interp_hooks_coexist(smollm, smollm_folder):
    """--device map hands placement to accelerate, which wraps the forward of every module with weights in
    its own hook (moving inputs to the module's device). On this GPU-less machine the same hooks are
    attached with a CPU execution device."""
    from accelerate.hooks import attach_align_device_hook
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(smollm_folder, dtype=torch.float32).eval()
    attach_align_device_hook(hf, execution_device=torch.device("cpu"))
    assert hasattr(hf.model.layers[0].self_attn.q_proj, "_hf_hook")
    mapped = interp.HookedModel(hf, smollm.tokenizer)
    tokens = smollm.to_tokens("The capital of Germany is Berlin, and the capital of France is")
    torch.testing.assert_close(mapped(tokens), smollm(tokens), atol=1e-5, rtol=1e-5)
    with mapped.collect_attention_stats() as stats:
        mapped(tokens)
    with smollm.collect_attention_stats() as expected:
        smollm(tokens)
    torch.testing.assert_close(stats[12].entropy, expected[12].entropy)
    with mapped.ablate_heads([(3, 1)]), smollm.ablate_heads([(3, 1)]):
        torch.testing.assert_close(mapped(tokens), smollm(tokens), atol=1e-5, rtol=1e-5)
