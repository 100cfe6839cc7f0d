"""Coverage matrix: a tiny random-init model of every tested causal-LM model type passes every check.

Models: 2 layers, GQA where the family has it, a window or chunk shorter than the inputs where it has
one, and attention projections scaled up so that attention is peaked (see ``tiny_models``). The checks
(``architecture_checks``) compare against the plain model, HF's eager attention weights and a hand-written
patching loop, never against interp's own output.
"""

import pytest
import torch
from architecture_checks import (
    check_all,
    check_cache_and_pattern,
    check_load_and_logits,
    check_patching,
    tokens_for,
)
from tiny_models import generic_tiny_model
from transformers import AutoModelForCausalLM
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

import interp
from interp.errors import InterpError, UnsupportedArchitectureError
from interp.models.architectures import REFUSED, discover
from interp.models.coverage import OVERRIDE_TESTED, PARTIAL, TESTED, architecture_table


def test_the_matrix_is_well_over_forty_model_types_of_the_installed_transformers():
    installed = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    assert set(TESTED) <= installed and set(PARTIAL) <= installed
    assert len(TESTED) >= 40


@pytest.mark.parametrize("model_type", TESTED)
def test_model_type_passes_every_check(model_type):
    check_all(generic_tiny_model(model_type))


@pytest.mark.parametrize("model_type", sorted(PARTIAL))
def test_partial_model_types_are_exact_where_supported_and_refuse_statistics_in_one_line(model_type):
    model = generic_tiny_model(model_type)
    hooked = check_load_and_logits(model)
    check_cache_and_pattern(model, hooked)
    check_patching(model, hooked)
    with pytest.raises(InterpError) as error, torch.no_grad():
        with hooked.collect_attention_stats():
            hooked(tokens_for(model))
    assert "\n" not in str(error.value)


# Refused model types that build tiny: each must fail with one line, never give numbers.
REFUSED_BUILDABLE = ["falcon", "bloom", "mpt", "bart", "bert", "rwkv", "glm_moe_dsa", "minimax", "mimo_v2_flash"]


@pytest.mark.parametrize("model_type", REFUSED_BUILDABLE)
def test_refused_model_types_fail_with_one_line(model_type):
    from tiny_models import generic_tiny_config

    config = generic_tiny_config(model_type)
    if model_type == "bert":
        config.is_decoder = True
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    with pytest.raises(UnsupportedArchitectureError) as error:
        interp.load(model)
    assert "\n" not in str(error.value) and model_type in str(error.value)


def test_falcon_is_refused_because_renaming_its_implementation_changes_its_numbers():
    """Why falcon is in REFUSED: it picks its attention path by comparing the implementation's name."""
    model = generic_tiny_model("llama")  # any model: only falcon's own source matters here
    assert discover(model).attention == "self_attn"
    import inspect

    import transformers.models.falcon.modeling_falcon as falcon

    assert '_attn_implementation == "sdpa"' in inspect.getsource(falcon)
    assert "falcon" in REFUSED


def test_gpt_neo_needs_its_override():
    """Discovery alone refuses GPT-Neo (its attention is an eager _attn method, no attention interface)."""
    model = generic_tiny_model("llama")
    from tiny_models import tiny_model

    with pytest.raises(UnsupportedArchitectureError, match="attention interface"):
        discover(tiny_model("gpt_neo"))
    assert interp.load(tiny_model("gpt_neo")).architecture_spec.discovered is False
    assert discover(model).discovered


def test_architecture_table_lists_every_installed_model_type_with_a_status():
    table = architecture_table()
    assert sorted(table.model_type) == sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    assert set(table.status) <= {"tested", "partial", "discovered", "refused", "unknown"}
    statuses = dict(zip(table.model_type, table.status))
    assert all(statuses[t] == "tested" for t in TESTED + OVERRIDE_TESTED)
    assert statuses["falcon"] == "refused" and statuses["doge"] == "partial"
    refused_notes = table[table.status == "refused"].note
    assert (refused_notes.str.len() > 0).all() and not refused_notes.str.contains("\n").any()
