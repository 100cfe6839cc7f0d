"""The torch hooks behind the hook points that depend on a block's traced layout (:mod:`interp.hooks.layout`):
``ln1``/``ln2``/``ln_final`` ``hook_scale`` and ``hook_normalized``, ``hook_resid_mid``, the MLP's
``hook_pre``/``hook_pre_linear``/``hook_post`` and ``hook_router``.

:class:`~interp.hooks.model.HookedModel` installs them once, the first time one of these points is asked
for; each does nothing unless a function is registered at its point.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from interp.errors import InterpError
from interp.hooks.layout import ModelLayout, NormSite, norm_scale
from interp.hooks.points import HookRegistry, first_tensor, hook_name, replace_first_tensor




class LayoutHooks:
    """Hook builders for one model's layout-dependent points, sharing its hook registry."""

    def __init__(self, registry: HookRegistry) -> None:
        self.registry = registry
        # Blocks that flatten [batch, pos] (OPT) and MoE blocks: the leading shape of their input, per layer.
        self._block_shapes: dict[int, torch.Size] = {}
        self._mlp_shapes: dict[int, torch.Size] = {}

    def install(self, model: nn.Module, layers: nn.ModuleList, layout: ModelLayout) -> list[RemovableHandle]:
        """Register the torch hooks for ``layout`` on ``model`` (blocks ``layers``); returns their handles."""
        handles: list[RemovableHandle] = []
        for layer, (block, lay) in enumerate(zip(layers, layout.layers)):
            if lay.flat:
                handles.append(block.register_forward_pre_hook(self._block_shape_hook(layer), with_kwargs=True))
            for ln, norm in (("ln1", lay.ln1), ("ln2", lay.ln2)):
                if norm is not None:
                    hook = self._norm_hook(
                        hook_name(layer, f"{ln}.hook_scale"), hook_name(layer, f"{ln}.hook_normalized"), norm, layer
                    )
                    handles.append(block.get_submodule(norm.path).register_forward_hook(hook, with_kwargs=True))
            if lay.mid is not None:
                handles.append(
                    block.get_submodule(lay.mid).register_forward_pre_hook(self._resid_mid_hook(layer), with_kwargs=True)
                )
            mlp = lay.mlp
            pre, pre_linear, post = (hook_name(layer, f"mlp.{site}") for site in ("hook_pre", "hook_pre_linear", "hook_post"))
            if mlp.kind == "fused":
                handles.append(block.get_submodule(mlp.pre).register_forward_hook(self._fused_hook(pre, pre_linear, layer)))
            elif mlp.kind in ("gated", "plain"):
                handles.append(block.get_submodule(mlp.pre).register_forward_hook(self._neuron_hook(pre, layer)))
                if mlp.pre_linear is not None:
                    handles.append(
                        block.get_submodule(mlp.pre_linear).register_forward_hook(self._neuron_hook(pre_linear, layer))
                    )
            if mlp.kind in ("fused", "gated", "plain"):
                handles.append(block.get_submodule(mlp.post).register_forward_pre_hook(self._input_hook(post, layer)))
            if mlp.router is not None:
                router_name = hook_name(layer, "mlp.hook_router")
                handles += [
                    block.get_submodule(lay.mlp_entry).register_forward_pre_hook(
                        self._mlp_shape_hook(layer, router_name), with_kwargs=True
                    ),
                    block.get_submodule(mlp.router).register_forward_hook(self._router_hook(layer, router_name, mlp.router_index)),
                ]
        if layout.ln_final is not None:
            hook = self._norm_hook("ln_final.hook_scale", "ln_final.hook_normalized", layout.ln_final, None)
            handles.append(model.get_submodule(layout.ln_final.path).register_forward_hook(hook, with_kwargs=True))
        return handles

    def _shaped(self, name: str, x: torch.Tensor, layer: int | None) -> torch.Tensor:
        """Apply the functions at ``name``; in blocks that flatten [batch, pos] (OPT) they see it unflattened."""
        lead = self._block_shapes.get(layer) if layer is not None and x.dim() == 2 else None
        if lead is None:
            return self.registry.apply(name, x)
        seen = x.view(*lead, x.shape[-1])
        out = self.registry.apply(name, seen, grad_of=x)
        return x if out is seen else out.reshape(x.shape)

    def _block_shape_hook(self, layer: int) -> Callable:
        def hook(module, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            self._block_shapes[layer] = x.shape[:-1]

        return hook

    def _neuron_hook(self, name: str, layer: int) -> Callable:
        def hook(module, args, output):
            if not self.registry.active(name):
                return None
            replaced = self._shaped(name, output, layer)
            return None if replaced is output else replaced

        return hook

    def _norm_hook(self, scale_name: str, normalized_name: str, norm: NormSite, layer: int | None) -> Callable:
        registry = self.registry

        def hook(module, args, kwargs, output):
            if not (registry.active(scale_name) or registry.active(normalized_name)):
                return None
            out = first_tensor(output)
            if registry.active(scale_name):
                x = args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
                # From the detached input: the scale's gradient is then the partial one (input held fixed), and the
                # gradient reaching the input is the norm's own, unchanged.
                scale = norm_scale(x.detach(), norm.kind, norm.eps)
                if torch.is_grad_enabled() and x.requires_grad:
                    # Joined to the graph by an exact zero: backward reaches the scale (and its hooks) from the
                    # loss, and sends nothing through this link to the input.
                    scale = scale + 0 * x[..., :1]
                new_scale = self._shaped(scale_name, scale, layer)
                if new_scale is not scale or registry.has_backward(scale_name):
                    bias = getattr(module, "bias", None)
                    bias = bias if isinstance(bias, torch.Tensor) else 0
                    out = ((out - bias) * (scale.detach() / new_scale) + bias).to(out.dtype)
            out = self._shaped(normalized_name, out, layer)
            return None if out is first_tensor(output) else replace_first_tensor(output, out)

        return hook

    def _resid_mid_hook(self, layer: int) -> Callable:
        name = hook_name(layer, "hook_resid_mid")

        def hook(module, args, kwargs):
            if not self.registry.active(name):
                return
            resid = args[0] if args else kwargs["hidden_states"]
            replaced = self._shaped(name, resid, layer)
            if replaced is not resid:
                # The block holds this tensor twice (the MLP's input and the residual added after it): writing in
                # place replaces both, as TransformerLens' hook_resid_mid does.
                resid.copy_(replaced)
            return

        return hook

    def _input_hook(self, name: str, layer: int) -> Callable:
        def hook(module, args):
            if not self.registry.active(name):
                return None
            replaced = self._shaped(name, args[0], layer)
            return None if replaced is args[0] else (replaced, *args[1:])

        return hook

    def _fused_hook(self, gate_name: str, up_name: str, layer: int) -> Callable:
        registry = self.registry

        def hook(module, args, output):
            if not (registry.active(gate_name) or registry.active(up_name)):
                return None
            gate, up = output.chunk(2, dim=-1)
            new_gate, new_up = self._shaped(gate_name, gate, layer), self._shaped(up_name, up, layer)
            if new_gate is gate and new_up is up and not (registry.has_backward(gate_name) or registry.has_backward(up_name)):
                return None
            return torch.cat([new_gate, new_up], dim=-1)

        return hook

    def _mlp_shape_hook(self, layer: int, router_name: str) -> Callable:
        def hook(module, args, kwargs):
            if self.registry.active(router_name):
                x = args[0] if args else kwargs["hidden_states"]
                self._mlp_shapes[layer] = x.shape[:-1]

        return hook

    def _router_hook(self, layer: int, name: str, index: int) -> Callable:
        def hook(module, args, output):
            if not self.registry.active(name):
                return
            logits = output[index] if isinstance(output, tuple) else output
            seen = logits.reshape(*self._mlp_shapes[layer], logits.shape[-1])
            if self.registry.apply(name, seen, grad_of=logits) is not seen:
                raise InterpError(
                    f"{name} is read-only: the router computes its routing from these logits before returning them, "
                    f"so a replacement would not change the forward pass; intervene on ln2.hook_normalized or hook_mlp_out"
                )
            return

        return hook
