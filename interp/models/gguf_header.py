"""Read a GGUF file's header (metadata and tensor table) without touching its weights.

De-quantizing a GGUF model takes from seconds to minutes and writes the result to the cache, so
:func:`check_gguf` looks at the header first: the architecture (refused at once if transformers or
interp cannot load it) and whether the file holds every byte its tensor table promises (a truncated
download is named as such, instead of surfacing as a reshape error deep inside a loader).
The format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (little-endian throughout).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from interp.errors import InterpError

_MAGIC = b"GGUF"
# GGUF value types -> struct format (8: string, 9: array are handled apart).
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
# llama.cpp's architecture names where transformers' model_type differs.
GGUF_TO_MODEL_TYPE = {
    "qwen2moe": "qwen2_moe",
    "qwen3moe": "qwen3_moe",
    "gpt-oss": "gpt_oss",
    "gemma3": "gemma3_text",
    "command-r": "cohere",
    "minimax-m2": "minimax_m2",
}


class _Truncated(Exception):
    pass


@dataclass(frozen=True)
class GGUFHeader:
    architecture: str  # as llama.cpp names it (general.architecture)
    name: str | None
    n_tensors: int
    bytes_needed: int  # where the last tensor's data ends
    file_bytes: int

    @property
    def model_type(self) -> str:
        """The transformers ``model_type`` this file loads as."""
        if self.architecture == "llama" and "mistral" in (self.name or "").lower():
            return "mistral"
        return GGUF_TO_MODEL_TYPE.get(self.architecture, self.architecture)


def _read(handle: BinaryIO, n: int) -> bytes:
    data = handle.read(n)
    if len(data) != n:
        raise _Truncated
    return data


def _unpack(handle: BinaryIO, fmt: str):
    return struct.unpack("<" + fmt, _read(handle, struct.calcsize("<" + fmt)))[0]


def _string(handle: BinaryIO) -> str:
    return _read(handle, _unpack(handle, "Q")).decode("utf-8", errors="replace")


def _value(handle: BinaryIO, kind: int):
    if kind == 8:
        return _string(handle)
    if kind == 9:
        item_kind, count = _unpack(handle, "I"), _unpack(handle, "Q")
        if item_kind in _SCALARS:  # skip numeric arrays (tokenizer scores, ...) without decoding them
            size = struct.calcsize("<" + _SCALARS[item_kind]) * count
            handle.seek(size, 1)
            return None
        return [_value(handle, item_kind) for _ in range(count)]
    if kind not in _SCALARS:
        raise ValueError(f"unknown GGUF value type {kind}")
    return _unpack(handle, _SCALARS[kind])


def _tensor_bytes(dims: list[int], ggml_type: int) -> int:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    count = 1
    for dim in dims:
        count *= dim
    return count // block * type_size


def read_gguf_header(path: str | Path) -> GGUFHeader:
    """The header of a GGUF file; :class:`InterpError` if it is not one, or is cut short."""
    path = Path(path)
    file_bytes = path.stat().st_size
    truncated = InterpError(
        f"{path} is truncated ({file_bytes:,} bytes, the header itself is incomplete); download the file again"
    )
    try:
        with path.open("rb") as handle:
            if handle.read(4) != _MAGIC:
                raise InterpError(f"{path} is not a GGUF file (no GGUF magic number at its start)")
            version = _unpack(handle, "I")
            if version < 2:
                raise InterpError(f"{path} is GGUF version {version}; only versions 2 and later are readable")
            n_tensors, n_fields = _unpack(handle, "Q"), _unpack(handle, "Q")
            fields: dict[str, object] = {}
            for _ in range(n_fields):
                key = _string(handle)
                fields[key] = _value(handle, _unpack(handle, "I"))
            data_end = 0
            for _ in range(n_tensors):
                _string(handle)
                dims = [_unpack(handle, "Q") for _ in range(_unpack(handle, "I"))]
                ggml_type, offset = _unpack(handle, "I"), _unpack(handle, "Q")
                data_end = max(data_end, offset + _tensor_bytes(dims, ggml_type))
            alignment = int(fields.get("general.alignment") or 32)
            data_start = -(-handle.tell() // alignment) * alignment
    except _Truncated:
        raise truncated from None
    except (ValueError, KeyError, UnicodeDecodeError) as error:
        raise InterpError(f"{path} is not a readable GGUF file ({error}); download it again") from error
    architecture = fields.get("general.architecture")
    if not isinstance(architecture, str):
        raise InterpError(f"{path} has no general.architecture in its GGUF metadata; it cannot be loaded")
    name = fields.get("general.name")
    return GGUFHeader(
        architecture=architecture,
        name=name if isinstance(name, str) else None,
        n_tensors=n_tensors,
        bytes_needed=data_start + data_end,
        file_bytes=file_bytes,
    )


def check_gguf(path: str | Path) -> GGUFHeader:
    """Refuse, in well under a second, a GGUF file that is cut short or whose architecture cannot be hooked."""
    from transformers import AutoConfig
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    from interp.models.architectures import spec_for_config

    header = read_gguf_header(path)
    if header.file_bytes < header.bytes_needed:
        raise InterpError(
            f"{path} is truncated: it has {header.file_bytes:,} bytes but its tensors need {header.bytes_needed:,}; "
            f"download the file again"
        )
    readable = {GGUF_TO_MODEL_TYPE.get(name, name) for name in GGUF_CONFIG_MAPPING} | {"mistral"}
    if header.model_type not in readable:
        raise InterpError(
            f"{path}: transformers cannot read GGUF files of architecture {header.architecture!r}; "
            f"convert the model to a Hugging Face folder (config.json + safetensors) and load that"
        )
    try:
        config = AutoConfig.for_model(header.model_type, num_hidden_layers=2)  # a small meta model: discovery is size-free
    except ValueError as error:
        raise InterpError(f"{path}: architecture {header.architecture!r} is unknown to transformers") from error
    spec_for_config(config)  # raises UnsupportedArchitectureError with the reason
    return header
