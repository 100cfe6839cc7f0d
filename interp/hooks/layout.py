"""Which module of each block plays which role, traced from one small forward pass.

Blocks name their norms freely (``input_layernorm``, ``ln_1``, ``attention_layernorm``, ``operator_norm``,
...), and some norms sit after attention rather than before it (OLMo-2, Gemma 2). So instead of a
table of names, interp runs the model once on six tokens and follows the data: the norm whose output
*is* the attention module's input is ``ln1``, the norm whose output is the MLP's input is ``ln2``, and a
block whose MLP reads the block's input (or ``ln1``'s output) is a parallel block. A norm's formula is
read from the same pass: its output is fitted as a per-feature affine function of ``x / sqrt(mean(x^2)+eps)``
(RMSNorm) and of ``(x - mean) / sqrt(var+eps)`` (LayerNorm). The linear layers inside the MLP are found by
name (:data:`interp.models.architectures.GATED_MLP_PROJECTIONS` and its neighbours).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from interp.models.architectures import (
    FUSED_GATE_UP_PROJECTIONS,
    GATED_MLP_PROJECTIONS,
    MOE_CHILDREN,
    PLAIN_MLP_PROJECTIONS,
    ROUTER_LOGITS_INDEX,
    ROUTER_NAMES,
)

if TYPE_CHECKING:
    from interp.hooks.model import HookedModel

_TRACE_TOKENS = 6
_EPS_NAMES = ("eps", "variance_epsilon", "epsilon")


@dataclass(frozen=True)
class NormSite:
    """A norm module: ``path`` from the block (``ln1``/``ln2``) or from the model (``ln_final``).

    ``kind`` is ``"rms"`` or ``"layer"`` when its formula was recognised (then ``hook_scale`` exists),
    else None.
    """

    path: str
    kind: str | None
    eps: float | None
    cls: str


@dataclass(frozen=True)
class MLPSite:
    """The linear layers of one block's MLP, as dotted paths from the block.

    ``kind``: ``"gated"`` (gate, up, down), ``"fused"`` (one gate_up projection, gate half first),
    ``"plain"`` (in, down), ``"moe"`` (router), or ``"unknown"``.
    """

    kind: str
    cls: str
    pre: str | None = None
    pre_linear: str | None = None
    post: str | None = None
    router: str | None = None
    router_index: int = 0


@dataclass(frozen=True)
class LayerLayout:
    ln1: NormSite | None
    ln2: NormSite | None
    parallel: bool
    mid: str | None  # path from the block of the module whose input is the residual stream between attention and MLP
    mlp_entry: str  # path from the block of the module the MLP path starts at (the MLP, or OPT's fc1)
    mlp: MLPSite
    flat: bool = False  # the block flattens [batch, pos] to one axis before its MLP (OPT, BioGPT)


@dataclass(frozen=True)
class ModelLayout:
    layers: tuple[LayerLayout, ...]
    ln_final: NormSite | None

    def refusal(self, layer: int | None, site: str) -> str | None:
        """Why the hook point ``site`` (at ``layer``) does not exist in this model, or None when it does."""
        if layer is None:
            if site.startswith("ln_final."):
                return _norm_refusal(self.ln_final, site, "no norm module's output reaches the unembedding directly")
            return None
        lay = self.layers[layer]
        if site.startswith("ln1."):
            return _norm_refusal(lay.ln1, site, f"block {layer} has no norm whose output is the attention's input (a post-norm or norm-free block)")
        if site.startswith("ln2."):
            why = (
                f"block {layer} is a parallel block whose MLP reads the attention's norm output (use ln1)"
                if lay.parallel
                else f"block {layer} has no norm whose output is the MLP's input (a post-norm or norm-free block)"
            )
            return _norm_refusal(lay.ln2, site, why)
        if site == "hook_resid_mid" and lay.parallel:
            return (
                f"block {layer} is a parallel-attention block (attention and MLP both read the block's input), "
                f"so no residual stream exists between them"
            )
        if site.startswith("mlp."):
            return _mlp_refusal(lay.mlp, layer, site)
        return None


def _norm_refusal(norm: NormSite | None, site: str, missing: str) -> str | None:
    if norm is None:
        return missing
    if site.endswith("hook_scale") and norm.kind is None:
        return (
            f"the norm {norm.cls} at {norm.path} is not a recognised RMSNorm or LayerNorm, so its scale is unknown "
            f"(its hook_normalized works)"
        )
    return None


def _mlp_refusal(mlp: MLPSite, layer: int, site: str) -> str | None:
    if site == "mlp.hook_router":
        if mlp.kind != "moe" or mlp.router is None:
            return f"layer {layer}'s MLP {mlp.cls} is not a mixture of experts with a router"
        return None
    if mlp.kind == "moe":
        return (
            f"layer {layer}'s MLP {mlp.cls} is a mixture of experts: its neurons belong to experts that see only "
            f"their routed tokens, so no [batch, pos, d_mlp] activation exists (use mlp.hook_router or hook_mlp_out)"
        )
    if mlp.kind == "unknown":
        return f"layer {layer}'s MLP {mlp.cls} has no linear layers interp recognises by name (see GATED_MLP_PROJECTIONS)"
    if site == "mlp.hook_pre_linear" and mlp.kind == "plain":
        return f"layer {layer}'s MLP {mlp.cls} is not gated: it has no up projection beside a gate (use mlp.hook_pre)"
    return None


def norm_scale(x: torch.Tensor, kind: str, eps: float) -> torch.Tensor:
    """The denominator ``[..., 1]`` a norm divides by: ``sqrt(mean(x^2)+eps)`` (rms) or ``sqrt(var(x)+eps)`` (layer)."""
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    spread = x.var(-1, keepdim=True, unbiased=False) if kind == "layer" else x.pow(2).mean(-1, keepdim=True)
    return torch.sqrt(spread + eps)


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.LayerNorm, nn.RMSNorm)) or "norm" in type(module).__name__.lower()


def _eps(module: nn.Module) -> float | None:
    for name in _EPS_NAMES:
        value = getattr(module, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def _norm_kind(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> str | None:
    """"rms" or "layer" when ``y`` is a per-feature affine function of that normalization of ``x``, else None."""
    eps = _eps(module)
    if eps is None or x.shape != y.shape:
        return None
    tolerance = 1e-3 if x.dtype in (torch.float32, torch.float64) and y.dtype in (torch.float32, torch.float64) else 3e-2
    x = x.reshape(-1, x.shape[-1]).double()
    y = y.reshape(-1, y.shape[-1]).double()
    best, best_error = None, float("inf")
    for kind in ("rms", "layer"):
        centred = x - x.mean(-1, keepdim=True) if kind == "layer" else x
        xhat = centred / norm_scale(x, kind, eps)
        xm, ym = xhat.mean(0), y.mean(0)
        spread = ((xhat - xm) ** 2).sum(0).clamp_min(1e-30)
        slope = ((xhat - xm) * (y - ym)).sum(0) / spread
        fitted = slope * (xhat - xm) + ym
        error = float((y - fitted).norm() / y.norm().clamp_min(1e-30))
        if error < best_error:
            best, best_error = kind, error
    return best if best_error < tolerance else None


def _same(a: Any, b: Any) -> bool:
    """Whether two tensors are the same data (the output of one module handed on to the next)."""
    return (
        isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
        and a.stride() == b.stride() and a.data_ptr() == b.data_ptr() and a.device == b.device
    )


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor | None:
    for value in (*args, kwargs.get("hidden_states"), *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value
    return None


def _mlp_site(block: nn.Module, mlp_path: str) -> tuple[str, MLPSite]:
    """(entry path, MLP site) for one block; OPT-style blocks (mlp path ``fc2``) hold fc1/fc2 directly."""
    if mlp_path == "fc2":
        owner, prefix, entry = block, "", "fc1"
    else:
        owner, prefix, entry = block.get_submodule(mlp_path), mlp_path + ".", mlp_path
    children = dict(owner.named_children())
    cls = type(owner).__name__
    if any(name in children for name in MOE_CHILDREN):
        router = next((name for name in ROUTER_NAMES if name in children), None)
        index = ROUTER_LOGITS_INDEX.get(type(children[router]).__name__, 0) if router else 0
        return entry, MLPSite("moe", cls, router=prefix + router if router else None, router_index=index)
    for gate, up, down in GATED_MLP_PROJECTIONS:
        if all(name in children for name in (gate, up, down)):
            return entry, MLPSite("gated", cls, pre=prefix + gate, pre_linear=prefix + up, post=prefix + down)
    for fused, down in FUSED_GATE_UP_PROJECTIONS:
        if fused in children and down in children:
            return entry, MLPSite("fused", cls, pre=prefix + fused, pre_linear=prefix + fused, post=prefix + down)
    for first, down in PLAIN_MLP_PROJECTIONS:
        if first in children and down in children:
            return entry, MLPSite("plain", cls, pre=prefix + first, post=prefix + down)
    return entry, MLPSite("unknown", cls)


def trace_layout(hooked: HookedModel) -> ModelLayout:
    """Run the model once on a few tokens (no interp hook function runs) and read each block's layout."""
    model, spec = hooked.model, hooked.architecture_spec
    blocks = hooked.layers
    attention_top = spec.attention.split(".")[0]
    seen: dict[int, tuple[torch.Tensor | None, torch.Tensor | None]] = {}

    def record(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        out = output[0] if isinstance(output, tuple) else output
        seen[id(module)] = (_first_tensor(args, kwargs), out if isinstance(out, torch.Tensor) else None)

    watched: list[nn.Module] = list(blocks)
    entries = [_mlp_site(block, spec.mlp) for block in blocks]
    for block in blocks:
        watched += [child for _, child in block.named_children()]
    outer_norms = [
        (name, module) for name, module in model.named_modules()
        if _is_norm(module) and not (name == spec.layers or name.startswith(spec.layers + "."))
    ]
    watched += [module for _, module in outer_norms]
    unembed = model.get_output_embeddings()
    if unembed is not None:
        watched.append(unembed)
    handles = [module.register_forward_hook(record, with_kwargs=True) for module in watched]
    tokens = (torch.arange(_TRACE_TOKENS) % max(hooked.cfg.d_vocab - 3, 1) + 3).clamp_max(hooked.cfg.d_vocab - 1)
    # Nothing the user has active (statistics, knockouts sized for their inputs, hook functions) sees this pass.
    collector, hooked._stats_collector = hooked._stats_collector, None
    knockouts, hooked._knockouts = hooked._knockouts, type(hooked._knockouts)(hooked.cfg.n_layers, hooked.cfg.n_heads)
    try:
        with torch.no_grad(), hooked.hooks_registry.paused():
            model(input_ids=tokens[None].to(hooked.device), use_cache=False)
    finally:
        hooked._stats_collector, hooked._knockouts = collector, knockouts
        for handle in handles:
            handle.remove()

    def norm_site(module: nn.Module, path: str) -> NormSite:
        x, y = seen[id(module)]
        kind = _norm_kind(module, x, y) if x is not None and y is not None else None
        return NormSite(path, kind, _eps(module), type(module).__name__)

    layers = []
    for block, (entry, mlp) in zip(blocks, entries):
        block_in = seen.get(id(block), (None, None))[0]
        attn_in = seen.get(id(block.get_submodule(attention_top)), (None, None))[0]
        mlp_in = seen.get(id(block.get_submodule(entry)), (None, None))[0]
        norms = [(name, child) for name, child in block.named_children() if _is_norm(child) and id(child) in seen]
        ln1 = next((norm_site(c, n) for n, c in norms if _same(seen[id(c)][1], attn_in)), None)
        ln2 = next((norm_site(c, n) for n, c in norms if _same(seen[id(c)][1], mlp_in)), None)
        if ln2 is not None:
            ln2_in = seen[id(block.get_submodule(ln2.path))][0]
            ln1_in = seen[id(block.get_submodule(ln1.path))][0] if ln1 is not None else None
            parallel = _same(ln2_in, block_in) or _same(ln2_in, ln1_in)
        else:
            parallel = _same(mlp_in, attn_in) or _same(mlp_in, block_in)
        if parallel and ln2 is not None and ln1 is not None and ln2.path == ln1.path:
            ln2 = None
        mid = None if parallel else (ln2.path if ln2 is not None else entry)
        flat = mlp_in is not None and mlp_in.dim() == 2
        layers.append(LayerLayout(ln1=ln1, ln2=ln2, parallel=parallel, mid=mid, mlp_entry=entry, mlp=mlp, flat=flat))
    unembed_in = seen.get(id(unembed), (None, None))[0] if unembed is not None else None
    ln_final = next(
        (norm_site(module, name) for name, module in outer_norms if id(module) in seen and _same(seen[id(module)][1], unembed_in)),
        None,
    )
    return ModelLayout(layers=tuple(layers), ln_final=ln_final)
