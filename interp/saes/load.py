"""Read SAEs and transcoders saved in SAELens' layout, or taken from a live ``sae_lens`` object.

A folder holds ``cfg.json`` and ``sae_weights.safetensors``. The weights are ``W_enc [d_in, d_sae]``,
``b_enc [d_sae]``, ``W_dec [d_sae, d_out]``, ``b_dec [d_out]`` (``d_out = d_in`` for SAEs), plus
``threshold [d_sae]`` for JumpReLU (or the older ``log_threshold``), ``b_gate``, ``b_mag``, ``r_mag``
(no ``b_enc``) for gated, and ``W_skip [d_out, d_in]`` for skip transcoders. ``hook_name`` sits at the
top level of ``cfg.json`` (SAELens < 6) or under ``metadata`` (SAELens >= 6). sae_lens itself is never
imported: a live object is read through its ``cfg`` and ``state_dict()``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from interp.errors import InterpError
from interp.saes.sae import ENCODERS, NORMALIZATIONS, SAE

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"

# SAELens architecture name -> (encoder, transcoder?, skip?)
ARCHITECTURES: dict[str, tuple[str, bool, bool]] = {
    **{name: (name, False, False) for name in ENCODERS},
    "transcoder": ("standard", True, False),
    "skip_transcoder": ("standard", True, True),
    "jumprelu_transcoder": ("jumprelu", True, False),
    "jumprelu_skip_transcoder": ("jumprelu", True, True),
}
_NEEDS = {
    "standard": ("W_enc", "b_enc", "W_dec", "b_dec"),
    "topk": ("W_enc", "b_enc", "W_dec", "b_dec"),
    "jumprelu": ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"),
    "gated": ("W_enc", "b_gate", "b_mag", "r_mag", "W_dec", "b_dec"),
}


def load_sae(source: Any, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> SAE:
    """An :class:`~interp.saes.sae.SAE` from a SAELens folder (``cfg.json`` + ``sae_weights.safetensors``),
    a live ``sae_lens`` SAE or transcoder, or an interp SAE (returned as it is, moved if asked)."""
    if isinstance(source, SAE):
        sae = source
    elif isinstance(source, (str, Path)):
        cfg, weights = _read_folder(Path(source))
        sae = from_saelens(cfg, weights, where=str(source))
    elif hasattr(source, "cfg") and callable(getattr(source, "state_dict", None)):
        cfg = source.cfg.to_dict() if callable(getattr(source.cfg, "to_dict", None)) else dict(vars(source.cfg))
        metadata = cfg.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            cfg["metadata"] = metadata.to_dict() if callable(getattr(metadata, "to_dict", None)) else dict(vars(metadata))
        sae = from_saelens(cfg, dict(source.state_dict()), where=f"the {type(source).__name__} object")
    else:
        raise InterpError(
            f"cannot load an SAE from a {type(source).__name__}; pass a folder with {CFG_FILE} and {WEIGHTS_FILE}, "
            f"a sae_lens SAE, or an interp SAE"
        )
    return sae.to(device=device, dtype=dtype) if device is not None or dtype is not None else sae


def _read_folder(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    if not folder.is_dir():
        raise InterpError(f"SAE folder {folder} does not exist; pass the folder that holds {CFG_FILE} and {WEIGHTS_FILE}")
    for name in (CFG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise InterpError(f"{folder} has no {name}; an SAE folder in SAELens' layout holds {CFG_FILE} and {WEIGHTS_FILE}")
    try:
        cfg = json.loads((folder / CFG_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InterpError(f"{folder / CFG_FILE} is not valid JSON ({error}); write it with SAELens' save_model") from None
    if not isinstance(cfg, dict):
        raise InterpError(f"{folder / CFG_FILE} must hold a JSON object, got {type(cfg).__name__}")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        weights = load_file(str(folder / WEIGHTS_FILE))
    except (SafetensorError, OSError) as error:
        raise InterpError(f"{folder / WEIGHTS_FILE} is not a readable safetensors file ({error})") from None
    return cfg, weights


def _architecture(cfg: dict) -> str:
    name = cfg.get("architecture", "standard")
    # SAELens < 6 spelled topk as a standard SAE with activation_fn "topk".
    if name == "standard" and (cfg.get("activation_fn") or cfg.get("activation_fn_str")) == "topk":
        name = "topk"
    return name


def from_saelens(cfg: dict, weights: dict[str, torch.Tensor], *, where: str = "the SAE") -> SAE:
    """Build an SAE from a SAELens config dict and state dict, checking every key and shape (one line per problem)."""
    name = _architecture(cfg)
    if name not in ARCHITECTURES:
        raise InterpError(f"{where}: unknown SAE architecture {name!r}; interp reads {', '.join(ARCHITECTURES)}")
    encoder, transcoder, skip = ARCHITECTURES[name]
    metadata = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    hook_name = cfg.get("hook_name") or metadata.get("hook_name")
    if not isinstance(hook_name, str) or not hook_name:
        raise InterpError(f"{where}: cfg.json has no hook_name (at the top level or under metadata); add the hook point it reads")
    hook_name_out = cfg.get("hook_name_out") or metadata.get("hook_name_out")
    weights = dict(weights)
    if "threshold" not in weights and "log_threshold" in weights:  # older JumpReLU checkpoints
        weights["threshold"] = weights.pop("log_threshold").exp()
    needed = _NEEDS[encoder] + (("W_skip",) if skip else ())
    missing = [key for key in needed if key not in weights]
    if missing:
        raise InterpError(f"{where}: {name} weights lack {', '.join(missing)}; found {', '.join(sorted(weights)) or 'none'}")
    W_enc, W_dec = weights["W_enc"], weights["W_dec"]
    if W_enc.dim() != 2 or W_dec.dim() != 2:
        raise InterpError(f"{where}: W_enc and W_dec must be matrices, got shapes {tuple(W_enc.shape)} and {tuple(W_dec.shape)}")
    d_in, d_sae = W_enc.shape
    d_out = W_dec.shape[1]
    expected = {
        "W_dec": (d_sae, d_out if transcoder else d_in),
        "b_dec": (d_out if transcoder else d_in,),
        "b_enc": (d_sae,), "threshold": (d_sae,), "b_gate": (d_sae,), "b_mag": (d_sae,), "r_mag": (d_sae,),
        "W_skip": (d_out, d_in),
    }
    for key in needed:
        if key in expected and tuple(weights[key].shape) != expected[key]:
            raise InterpError(
                f"{where}: {key} has shape {tuple(weights[key].shape)}, expected {expected[key]} "
                f"(from W_enc [d_in={d_in}, d_sae={d_sae}])"
            )
    for key, value in (("d_in", d_in), ("d_sae", d_sae), ("d_out", d_out)):
        if key in cfg and cfg[key] is not None and int(cfg[key]) != value and (key != "d_out" or transcoder):
            raise InterpError(f"{where}: cfg.json says {key}={cfg[key]} but the weights have {key}={value}")
    norm = cfg.get("normalize_activations") or "none"
    if norm not in NORMALIZATIONS:
        raise InterpError(
            f"{where}: normalize_activations={norm!r} is not supported; interp applies {', '.join(NORMALIZATIONS)} "
            f"(fold whitening into the weights with SAELens first)"
        )
    k = None
    if encoder == "topk":
        k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
        if not isinstance(k, int) or k < 1:
            raise InterpError(f"{where}: a topk SAE needs a positive integer k in cfg.json, got {k!r}")
    return SAE(
        W_enc, weights.get("b_enc"), W_dec, weights["b_dec"],
        hook_name=hook_name,
        architecture=encoder,
        threshold=weights.get("threshold"),
        k=k,
        b_gate=weights.get("b_gate"), b_mag=weights.get("b_mag"), r_mag=weights.get("r_mag"),
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        normalize_activations=norm,
        rescale_acts_by_decoder_norm=bool(cfg.get("rescale_acts_by_decoder_norm", False)),
        transcoder=transcoder,
        hook_name_out=hook_name_out,
        W_skip=weights.get("W_skip"),
    )
