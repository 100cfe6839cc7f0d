"""Turn a model reference (alias, local folder, ``.gguf`` file, hub name, or a live model) into a HookedModel.

Resolution order for ``interp.load(ref)``:

1. an ``nn.Module`` (a Hugging Face model, or a TransformerLens ``TransformerBridge``) is wrapped as is;
2. a built-in alias (``smollm2-135m``) resolves to a shipped GGUF file (see :mod:`interp.models.builtin`);
3. an existing path: a ``.gguf`` file, or a folder with ``config.json`` (HF format) or one ``.gguf`` file;
4. anything else is a Hugging Face hub id, loaded by ``from_pretrained`` (from the local HF cache or hub).

GGUF weights are de-quantized by transformers (slow: ~15 s for 135M parameters) and cached once as
safetensors under :func:`cache_dir`, so the second load takes well under a second.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from interp.models.cache import cache_dir
from interp.errors import InterpError
from interp.hooks import HookedModel
from interp.models.architectures import spec_for_config

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> CUDA when available, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise InterpError(f"unknown device {device!r}: use cpu, cuda, cuda:N or auto") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InterpError("device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """None -> float32 (research default: exact numerics); strings like ``bf16`` accepted."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise InterpError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _gguf_to_safetensors(gguf_path: Path, target: Path) -> None:
    """De-quantize a GGUF file with transformers and save it (with its tokenizer) as an HF folder, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf  # noqa: F401
    except ImportError as error:
        raise InterpError("loading .gguf files needs the 'gguf' package: pip install gguf") from error
    try:
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    except Exception as error:  # transformers raises many types for unreadable/unsupported GGUF
        raise InterpError(f"could not read GGUF file {gguf_path}: {error}".splitlines()[0]) from error
    # The de-quantized weights are plain fp32 now; drop the GGUF marker so the model serializes.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; the cache folder should follow the user's umask
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.rename(target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "config.json").exists():
            raise


def gguf_as_hf_folder(gguf_path: Path) -> Path:
    """The cached HF-format folder for a GGUF file, converting it on first use."""
    from interp.models.gguf_header import check_gguf

    target = cache_dir() / "gguf" / f"{gguf_path.stem}-{_file_digest(gguf_path)}"
    if not (target / "config.json").exists():
        check_gguf(gguf_path)  # an unreadable, truncated or unsupported file fails here, before anything is written
        log.info("de-quantizing %s once into %s", gguf_path, target)
        _gguf_to_safetensors(gguf_path, target)
    return target


def _folder_model(folder: Path) -> Path:
    """An HF-format folder for a local folder: itself, or the converted cache of its single GGUF file."""
    if (folder / "config.json").exists():
        if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
            raise InterpError(f"{folder} has config.json but no weights (*.safetensors or *.bin); copy the weights there")
        return folder
    ggufs = sorted(folder.glob("*.gguf"))
    if len(ggufs) == 1:
        return gguf_as_hf_folder(ggufs[0])
    if len(ggufs) > 1:
        raise InterpError(f"{folder} holds several .gguf files; pass the path of the one to load")
    raise InterpError(f"{folder} is not a model folder: it has no config.json and no .gguf file")


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers a TCP connection (False at once when HF_HUB_OFFLINE is set)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    parsed = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def _hub_config(source: str) -> Any:
    """The config of a hub id: from the local HF cache if there, else from the Hub if reachable."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source, local_files_only=True), True
    except (OSError, ValueError):
        pass
    if not hub_reachable():
        raise OSError("the Hugging Face Hub is unreachable and the model is not in the local HF cache")
    return AutoConfig.from_pretrained(source), False


def _from_pretrained(
    source: str | Path, device: torch.device, dtype: torch.dtype, local_only: bool, device_map: str | dict | None = None
) -> tuple[nn.Module, Any]:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        if local_only:
            config = AutoConfig.from_pretrained(source, local_files_only=True)
        else:
            config, local_only = _hub_config(str(source))
    except (OSError, ValueError) as error:
        if local_only:
            raise InterpError(f"{source}: config.json could not be read ({str(error).splitlines()[0]}); fix or replace it") from error
        raise InterpError(
            f"model {str(source)!r} is neither a local path nor reachable on the Hugging Face Hub (offline, or no such "
            f"repo); pass a local folder with config.json and weights, a .gguf file, or a built-in alias (smollm2-135m)"
        ) from error
    spec_for_config(config)  # unsupported architecture: fail before loading any weights
    if device_map is not None:  # accelerate places the layers (several GPUs, or GPU + CPU offload)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=local_only, device_map=device_map)
    else:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=local_only).to(device)
    tokenizer = None
    if not (local_only and Path(source).is_dir() and not any((Path(source) / f).exists() for f in TOKENIZER_FILES)):
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        except (OSError, ValueError):
            tokenizer = None
    return model, tokenizer


def _is_transformer_bridge(model: nn.Module) -> bool:
    return any(cls.__name__ == "TransformerBridge" and cls.__module__.startswith("transformer_lens") for cls in type(model).__mro__)


def _unwrap_module(model: nn.Module) -> nn.Module:
    """The Hugging Face model inside a TransformerLens ``TransformerBridge``; any other module as it is.

    Only bridges are unwrapped: a ``*ForCausalLM`` also has a ``.model`` (its base model without the LM head).
    """
    if not _is_transformer_bridge(model):
        return model
    for attribute in ("original_model", "hf_model"):
        inner = getattr(model, attribute, None)
        if isinstance(inner, nn.Module) and hasattr(getattr(inner, "config", None), "model_type"):
            return inner
    raise InterpError("this TransformerBridge holds no Hugging Face model (original_model); boot it with boot_transformers")


def load(
    model: str | os.PathLike | nn.Module,
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = None,
    tokenizer: Any = None,
    device_map: str | dict | None = None,
) -> HookedModel:
    """Load a causal LM and wrap it as a :class:`~interp.hooks.HookedModel` (with ``.tokenizer``).

    Args:
        model: a built-in alias (``"smollm2-135m"``), a local HF folder, a ``.gguf`` file or folder,
            a hub id (``"gpt2"``), or an already-loaded HF model / TransformerLens ``TransformerBridge``.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ...
        dtype: ``float32`` (default), ``bfloat16`` or ``float16``.
        tokenizer: overrides the tokenizer found with the model.
        device_map: passed to ``from_pretrained`` (needs ``accelerate``) for models larger than one
            GPU, e.g. ``"auto"``; ``device`` is then ignored. Hooks work across devices.
    """
    from interp.models.builtin import BUILTIN_MODELS, resolve_builtin

    if isinstance(model, nn.Module):
        hf_model = _unwrap_module(model)
        found_tokenizer = tokenizer or getattr(model, "tokenizer", None)
        return HookedModel(hf_model, found_tokenizer)
    resolved_device, resolved_dtype = resolve_device(device), resolve_dtype(dtype)
    reference = str(model)
    name = reference
    path = Path(reference).expanduser()
    if reference in BUILTIN_MODELS:
        source, local_only = gguf_as_hf_folder(resolve_builtin(reference)), True
    elif path.is_file() and path.suffix == ".gguf":
        source, local_only = gguf_as_hf_folder(path), True
    elif path.is_dir():
        source, local_only = _folder_model(path), True
    elif path.exists():
        raise InterpError(f"{path} is a file but not a .gguf model; pass a model folder or a .gguf file")
    elif reference.endswith(".gguf") or reference.startswith(("/", "./", "../", "~")) or os.sep * 2 in reference:
        raise InterpError(f"{path} does not exist; check the path (hub ids look like 'org/name')")
    else:
        source, local_only = reference, False
    hf_model, found_tokenizer = _from_pretrained(source, resolved_device, resolved_dtype, local_only, device_map)
    return HookedModel(hf_model, tokenizer or found_tokenizer, name=name)
