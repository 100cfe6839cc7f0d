"""Attach an SAE or a transcoder to a hooked model: the activation at its hook point becomes its reconstruction.

``with model.attach_sae(sae):`` registers one function at ``sae.hook_name`` that encodes the activation,
runs the functions registered at the dynamic point ``{hook_name}.hook_sae_acts_post`` on the feature
activations ``[batch, pos, d_sae]`` (so they are cached, patched and steered like any hook point) and
returns the decoded reconstruction. With ``use_error_term=True`` it returns
``decode(hooked_features) + (x - decode(features))``: exactly ``x`` until a function changes a feature,
and the gradient reaching ``x`` is the identity. SAEs at ``attn.hook_z`` read the heads concatenated
(``[batch, pos, head * d_head]``), as SAELens' ``hook_z`` SAEs do.

``with model.attach_transcoder(tc):`` reads the MLP's input (what its block passes to the MLP module:
the pre-MLP norm's output) and replaces ``blocks.{l}.hook_mlp_out`` by the transcoder's output (plus its
skip term), with the same error term and features at ``blocks.{l}.hook_mlp_out.hook_sae_acts_post``.

The SAE is anything with ``hook_name``, ``d_in``, ``d_out``, ``encode(x)``, ``decode(acts, x)`` and
``skip(x)`` (:class:`interp.saes.sae.SAE`); :meth:`HookedModel.attach_sae` converts SAELens files and objects.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from interp.errors import InterpError
from interp.hooks.modules import module_hooks
from interp.hooks.points import HookPoint, hook_name

if TYPE_CHECKING:
    from interp.hooks.model import HookedModel

ACTS = "hook_sae_acts_post"
# The hook name a transcoder reads: its layer's MLP input (TransformerLens' name for the pre-MLP norm's output).
_MLP_INPUT = re.compile(r"^blocks\.(\d+)\.ln2\.hook_normalized$")
# Sites whose width is known before running: the residual-stream-wide ones and the concatenated heads.
_D_MODEL_SITES = ("hook_embed", "hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out")
_MLP_OUTPUT = re.compile(r"^blocks\.(\d+)\.hook_mlp_out$")


def features_name(name: str) -> str:
    """The dynamic hook point holding the features of an SAE attached at ``name``."""
    return f"{name}.{ACTS}"


def _point(model: HookedModel, name: str, what: str) -> HookPoint:
    try:
        return model.hooks_registry.point(name)
    except ValueError as error:
        raise InterpError(f"{what} reads hook point {name!r}, which this model does not have: {error}") from None


def _width(model: HookedModel, point: HookPoint) -> int | None:
    if point.site == "attn.hook_z":
        return model.cfg.n_heads * model.cfg.d_head
    return model.cfg.d_model if point.site in _D_MODEL_SITES or point.site.endswith("hook_normalized") else None


def _wrong_width(name: str, width: int, d_in: int) -> InterpError:
    return InterpError(f"the SAE reads {width}-wide activations at {name} in this model, but its d_in is {d_in}; "
                       f"it was trained on another model")


def _replacement(sae: Any, acts_name: str, registry: Any, use_error_term: bool):
    """f(original, source) -> output: encode ``source``, run the feature hooks, decode, add the skip term and,
    with the error term, ``original`` minus the unhooked output."""

    def replace(original: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        acts = sae.encode(source)
        # A separate node for the hooks: gradients at it flow only through the decoder, not the error term.
        hooked = registry.apply(acts_name, acts.clone()) if registry.active(acts_name) else acts
        out = sae.decode(hooked, source)
        skip = sae.skip(source)
        if skip is not None:
            out = out + skip
        if use_error_term:
            clean = sae.decode(acts, source) + (skip if skip is not None else 0)
            out = out + (original.to(out.dtype) - clean)
        return out.to(original.dtype)

    return replace


@contextmanager
def attach_sae(model: HookedModel, sae: Any, *, use_error_term: bool = False) -> Iterator[Any]:
    """Replace the activation at ``sae.hook_name`` by the SAE's reconstruction for the ``with`` block (see module doc)."""
    if getattr(sae, "transcoder", False):
        raise InterpError(f"{sae.hook_name}: this is a transcoder (it maps an MLP's input to its output); use model.attach_transcoder")
    point = _point(model, sae.hook_name, "the SAE")
    width = _width(model, point)
    if width is not None and sae.d_in != width:
        raise _wrong_width(sae.hook_name, width, sae.d_in)
    _check_device(model, sae)
    registry = model.hooks_registry
    acts_name = features_name(sae.hook_name)
    replace = _replacement(sae, acts_name, registry, use_error_term)

    def fn(activation: torch.Tensor, hook: HookPoint) -> torch.Tensor | None:
        if use_error_term and not registry.active(acts_name):
            return None  # reconstruction + error is the activation itself
        heads = activation.dim() == 4  # hook_z: [batch, pos, head, d_head]
        x = activation.flatten(-2) if heads else activation
        if x.shape[-1] != sae.d_in:  # sites whose width only the run tells (e.g. MLP neurons)
            raise _wrong_width(sae.hook_name, x.shape[-1], sae.d_in)
        out = replace(x, x)
        return out.unflatten(-1, activation.shape[-2:]) if heads else out

    with _provide(model, acts_name, sae.hook_name), model.hooks([(sae.hook_name, fn)]):
        yield sae


@contextmanager
def attach_transcoder(model: HookedModel, transcoder: Any, *, use_error_term: bool = False) -> Iterator[Any]:
    """Replace ``blocks.{l}.hook_mlp_out`` by the transcoder of the MLP's input for the ``with`` block."""
    layer = transcoder_layer(transcoder)
    if not 0 <= layer < model.cfg.n_layers:
        raise InterpError(f"the transcoder is for layer {layer}, but this model has layers 0..{model.cfg.n_layers - 1}")
    if transcoder.d_in != model.cfg.d_model or transcoder.d_out != model.cfg.d_model:
        raise InterpError(
            f"the transcoder maps {transcoder.d_in} -> {transcoder.d_out} features, but this model's MLP maps "
            f"{model.cfg.d_model} -> {model.cfg.d_model}; it was trained on another model"
        )
    _check_device(model, transcoder)
    registry = model.hooks_registry
    out_name = hook_name(layer, "hook_mlp_out")
    acts_name = features_name(out_name)
    replace = _replacement(transcoder, acts_name, registry, use_error_term)
    mlp = model.layers[layer].get_submodule(model.architecture_spec.mlp)
    seen: dict[str, torch.Tensor] = {}

    def take_input(module, args):
        if not args or not isinstance(args[0], torch.Tensor) or args[0].shape[-1] != model.cfg.d_model:
            raise InterpError(
                f"{type(module).__name__} (layer {layer}'s MLP) is not called with its [batch, pos, d_model] input as "
                f"its first argument, so a transcoder cannot read it on {model.cfg.architecture}"
            )
        seen["input"] = args[0]

    def fn(activation: torch.Tensor, hook: HookPoint) -> torch.Tensor | None:
        source = seen.pop("input", None)
        if source is None:
            raise InterpError(f"layer {layer}'s MLP output arrived without its input; a transcoder cannot be attached here")
        if use_error_term and not registry.active(acts_name):
            return None
        return replace(activation, source)

    with module_hooks(pre=[(mlp, take_input)]), _provide(model, acts_name, out_name), model.hooks([(out_name, fn)]):
        yield transcoder


def transcoder_layer(transcoder: Any) -> int:
    """The layer whose MLP a transcoder replaces, from ``hook_name_out`` (``blocks.{l}.hook_mlp_out``) or its input hook."""
    if not getattr(transcoder, "transcoder", False):
        raise InterpError(f"{transcoder.hook_name}: this is an SAE, not a transcoder; use model.attach_sae")
    out = getattr(transcoder, "hook_name_out", None)
    given = _MLP_INPUT.match(transcoder.hook_name)
    if out is not None:
        match = _MLP_OUTPUT.match(out)
        if match is None:
            raise InterpError(f"the transcoder writes {out!r}; interp replaces MLPs only (hook_name_out 'blocks.{{l}}.hook_mlp_out')")
        if given is None or given.group(1) != match.group(1):
            raise InterpError(
                f"the transcoder reads {transcoder.hook_name!r} but writes {out!r}; interp reads the same layer's MLP input "
                f"('blocks.{match.group(1)}.ln2.hook_normalized')"
            )
        return int(match.group(1))
    if given is None:
        raise InterpError(
            f"the transcoder reads {transcoder.hook_name!r}; interp reads an MLP's input, named 'blocks.{{l}}.ln2.hook_normalized'"
        )
    return int(given.group(1))


@contextmanager
def _provide(model: HookedModel, name: str, parent: str) -> Iterator[None]:
    if name in model.hooks_registry.names():
        raise InterpError(f"an SAE or transcoder is already attached at {parent}; attach one per hook point")
    with model.hooks_registry.provided([(name, parent)]):
        yield


def _check_device(model: HookedModel, sae: Any) -> None:
    if torch.device(sae.device).type != model.device.type:
        raise InterpError(f"the SAE is on {sae.device} and the model on {model.device}; move it with sae.to(model.device)")
