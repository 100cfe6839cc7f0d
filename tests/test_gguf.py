"""GGUF files are checked from their header before any de-quantization: fast, one line, nothing written."""

import time
from pathlib import Path

import numpy as np
import pytest

import interp
from interp.models.builtin import resolve_builtin
from interp.errors import InterpError
from interp.models.gguf_header import read_gguf_header


def _tiny_gguf(path: Path, architecture: str) -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(2)
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("INTERP_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def shipped_gguf() -> Path:
    """The shipped model's GGUF file, resolved (and downloaded if need be) before any test empties the cache."""
    return resolve_builtin("smollm2-135m")


def _written(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*")] if cache.exists() else []


def test_header_of_the_shipped_model(shipped_gguf):
    header = read_gguf_header(shipped_gguf)
    assert header.architecture == "llama" and header.model_type == "llama"
    assert header.n_tensors == 272 and header.bytes_needed == header.file_bytes


@pytest.mark.parametrize("architecture, reason", [("mamba", "softmax attention"), ("t5", "encoder-decoder")])
def test_unsupported_architecture_fails_fast_and_writes_nothing(tmp_path, empty_cache, architecture, reason):
    path = _tiny_gguf(tmp_path / f"{architecture}.gguf", architecture)
    start = time.perf_counter()
    with pytest.raises(InterpError, match=reason) as error:
        interp.load(path, device="cpu")
    assert time.perf_counter() - start < 30  # generous for a shared 2-core box; about 1 s when idle
    assert "\n" not in str(error.value)
    assert _written(empty_cache) == []


def test_truncated_file_is_named_truncated(shipped_gguf, tmp_path, empty_cache):
    source = shipped_gguf
    for size in (3_000, 30_000_000):
        cut = tmp_path / f"cut-{size}.gguf"
        with source.open("rb") as handle:
            cut.write_bytes(handle.read(size))
        with pytest.raises(InterpError, match="truncated") as error:
            interp.load(cut, device="cpu")
        assert "download the file again" in str(error.value)
    assert _written(empty_cache) == []


def test_not_a_gguf_file(tmp_path, empty_cache):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"not a model at all" * 10)
    with pytest.raises(InterpError, match="not a GGUF file"):
        interp.load(fake, device="cpu")


def test_a_missing_gguf_path_is_not_taken_for_a_hub_id(tmp_path):
    start = time.perf_counter()
    with pytest.raises(InterpError, match="does not exist"):
        interp.load(tmp_path / "nowhere" / "model.gguf", device="cpu")
    with pytest.raises(InterpError, match="does not exist"):
        interp.load("./missing-model.gguf", device="cpu")
    assert time.perf_counter() - start < 5
