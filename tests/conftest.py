"""Shared fixtures. Triton runs in interpreter mode on machines without a GPU (must be set before import)."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

import interp  # noqa: E402


@pytest.fixture(scope="session")
def smollm() -> interp.HookedModel:
    """The shipped real model (SmolLM2-135M-Instruct), loaded once per session."""
    return interp.load("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def smollm_folder(smollm) -> str:
    """The HF-format folder interp converted the shipped GGUF into."""
    from interp.models.builtin import resolve_builtin
    from interp.models.loading import gguf_as_hf_folder

    return str(gguf_as_hf_folder(resolve_builtin("smollm2-135m")))


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_folder(smollm, tmp_path_factory) -> str:
    """A random-init tiny Llama (GQA) with the shipped tokenizer's vocabulary, saved as an HF folder (CLI tests)."""
    from tiny_models import save_tiny_folder

    return save_tiny_folder("llama", tmp_path_factory.mktemp("tiny-llama"), smollm)

