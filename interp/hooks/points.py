"""Hook point names, shapes and the registry that runs user functions at them.

Names follow TransformerLens so its users feel at home. Shapes (one convention, used everywhere):

==========================================  ==================================  =====================================
name                                        shape                               what
==========================================  ==================================  =====================================
``hook_embed``                              [batch, pos, d_model]               token embedding output
``blocks.{l}.hook_resid_pre``               [batch, pos, d_model]               residual stream entering block l
``blocks.{l}.ln1.hook_scale``               [batch, pos, 1]                     what the norm before attention divides by
``blocks.{l}.ln1.hook_normalized``          [batch, pos, d_model]               that norm's output (after its weight/bias)
``blocks.{l}.attn.hook_q``                  [batch, pos, head, d_head]          queries (after rotary, if any)
``blocks.{l}.attn.hook_k``                  [batch, pos, kv_head, d_head]       keys (after rotary; GQA: kv heads)
``blocks.{l}.attn.hook_v``                  [batch, pos, kv_head, d_head]       values
``blocks.{l}.attn.hook_attn_scores``        [batch, head, query_pos, key_pos]   pre-softmax scores (only when hooked)
``blocks.{l}.attn.hook_pattern``            [batch, head, query_pos, key_pos]   softmax pattern (only when hooked)
``blocks.{l}.attn.hook_z``                  [batch, pos, head, d_head]          per-head output before out-proj
``blocks.{l}.attn.hook_result``             [batch, pos, head, d_model]         per-head contribution (no bias)
``blocks.{l}.hook_attn_out``                [batch, pos, d_model]               attention module output
``blocks.{l}.hook_resid_mid``               [batch, pos, d_model]               residual between attention and MLP
``blocks.{l}.ln2.hook_scale``               [batch, pos, 1]                     what the norm before the MLP divides by
``blocks.{l}.ln2.hook_normalized``          [batch, pos, d_model]               that norm's output (after its weight/bias)
``blocks.{l}.mlp.hook_router``              [batch, pos, n_experts]             MoE router logits (read-only)
``blocks.{l}.mlp.hook_pre``                 [batch, pos, d_mlp]                 gate projection (gated) / first linear
``blocks.{l}.mlp.hook_pre_linear``          [batch, pos, d_mlp]                 up projection (gated MLPs only)
``blocks.{l}.mlp.hook_post``                [batch, pos, d_mlp]                 what enters the down projection
``blocks.{l}.hook_mlp_out``                 [batch, pos, d_model]               MLP output
``blocks.{l}.hook_resid_post``              [batch, pos, d_model]               residual stream leaving block l
``ln_final.hook_scale``                     [batch, pos, 1]                     what the final norm divides by
``ln_final.hook_normalized``                [batch, pos, d_model]               the final norm's output
==========================================  ==================================  =====================================

Details of the new points (TransformerLens names, interp's conventions where they differ):

- ``ln*.hook_normalized`` is the norm module's *output*, after its weight and bias (TransformerLens'
  ``LayerNormPre`` hooks before the weight; interp does not fold weights, so it hooks the module as it is).
- ``ln*.hook_scale`` is the denominator, as in TransformerLens: ``sqrt(mean(x^2) + eps)`` for RMSNorm,
  ``sqrt(var(x) + eps)`` for LayerNorm, computed in at least float32 from the norm's input. Replacing it
  rescales the norm's output: ``(out - bias) * old_scale / new_scale + bias``. Norms whose formula interp
  cannot recognise keep ``hook_normalized`` and refuse ``hook_scale``.
- ``attn.hook_attn_scores`` is after scaling, soft-capping, the causal/window/padding mask and knockouts;
  masked entries hold the float32 minimum (not -inf), as HF's eager attention does. Learned sinks
  (gpt_oss) join the softmax after this point. Scores are float32.
- ``hook_resid_mid`` exists for sequential blocks only (parallel-attention blocks such as GPT-J, Phi,
  Cohere and GPT-NeoX with ``use_parallel_residual`` refuse it); a replacement is written into the
  residual tensor in place, so both the MLP's input and the residual it is added to see it.
- ``mlp.hook_pre``/``hook_pre_linear``/``hook_post`` exist for dense MLPs; mixture-of-experts blocks refuse
  them and have ``mlp.hook_router`` (the router's logits, which the routing is computed from inside the router:
  read and differentiate it, replacing it is refused).

A hook function has the TransformerLens signature ``fn(activation, hook) -> Tensor | None``:
return a tensor to replace the activation, or ``None`` to leave it as it is. During
``HookedModel.generate`` the ``hook`` also says which decoding step runs (``hook.step``, 0 = the
prompt pass) and which absolute positions its ``pos`` rows hold (``hook.positions``).

Attachments add *dynamic* hook points for as long as they are attached: an SAE attached at
``blocks.3.hook_resid_post`` provides ``blocks.3.hook_resid_post.hook_sae_acts_post`` ``[batch, pos, d_sae]``
(:meth:`HookRegistry.provided`). They are cached, patched and listed like the fixed ones while they exist.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch

LAYER_SITES: tuple[str, ...] = (
    "hook_resid_pre",
    "ln1.hook_scale",
    "ln1.hook_normalized",
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "attn.hook_attn_scores",
    "attn.hook_pattern",
    "attn.hook_z",
    "attn.hook_result",
    "hook_attn_out",
    "hook_resid_mid",
    "ln2.hook_scale",
    "ln2.hook_normalized",
    "mlp.hook_router",
    "mlp.hook_pre",
    "mlp.hook_pre_linear",
    "mlp.hook_post",
    "hook_mlp_out",
    "hook_resid_post",
)
# The sites of interp <= 0.1, which every hooked model has (the others depend on the block's modules).
CORE_SITES: tuple[str, ...] = (
    "hook_resid_pre", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_pattern", "attn.hook_z",
    "attn.hook_result", "hook_attn_out", "hook_mlp_out", "hook_resid_post",
)
GLOBAL_SITES: tuple[str, ...] = ("hook_embed", "ln_final.hook_scale", "ln_final.hook_normalized")

_LAYER_NAME = re.compile(r"^blocks\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class HookPoint:
    """Where a hook function is being called: passed as its second argument."""

    name: str
    layer: int | None
    site: str
    # Set only during generation: the decoding step (0 = prompt pass) and the absolute positions
    # (columns of the generated sequence, a CPU tensor) of the rows on the activation's pos axis.
    step: int | None = None
    positions: torch.Tensor | None = field(default=None, compare=False)  # a tensor has no single truth value


def hook_name(layer: int, site: str) -> str:
    """``hook_name(3, "attn.hook_z") == "blocks.3.attn.hook_z"``."""
    if site not in LAYER_SITES:
        raise ValueError(f"unknown hook site {site!r}; valid sites: {', '.join(LAYER_SITES)}")
    return f"blocks.{layer}.{site}"


def parse_hook_name(name: str, n_layers: int) -> HookPoint:
    """Split a hook name into layer and site, with a clear error for names that do not exist."""
    if name in GLOBAL_SITES:
        return HookPoint(name, None, name)
    match = _LAYER_NAME.match(name)
    if match and match.group(2) in LAYER_SITES and int(match.group(1)) < n_layers:
        return HookPoint(name, int(match.group(1)), match.group(2))
    raise ValueError(
        f"unknown hook point {name!r}; names look like 'blocks.{{layer}}.<site>' with layer < {n_layers} and "
        f"site one of {', '.join(LAYER_SITES)}, or {', '.join(GLOBAL_SITES)}"
    )


def all_hook_names(n_layers: int) -> list[str]:
    """Every hook point name of a model with ``n_layers`` blocks, in execution order.

    A given model may lack some (a parallel block has no ``hook_resid_mid``); ``HookedModel.hook_names()``
    lists those it has.
    """
    layers = [hook_name(layer, site) for layer in range(n_layers) for site in LAYER_SITES]
    return [GLOBAL_SITES[0], *layers, *GLOBAL_SITES[1:]]


def _is_fixed(name: str, n_layers: int) -> bool:
    try:
        parse_hook_name(name, n_layers)
    except ValueError:
        return False
    return True


NamesFilter = str | Sequence[str] | Callable[[str], bool] | None
HookFn = Callable[[torch.Tensor, HookPoint], "torch.Tensor | None"]


class HookRegistry:
    """Functions registered per hook name; the model's hooks call :meth:`apply` at each point.

    Forward functions see (and may replace) the activation. Backward functions are attached to the
    activation as a tensor hook during the forward pass: ``fn(grad, hook)`` then runs when autograd
    reaches it, with d(loss)/d(activation), and may return a replacement gradient.
    """

    def __init__(self, n_layers: int) -> None:
        self.n_layers = n_layers
        self._fns: dict[str, list[HookFn]] = {}
        self._bwd: dict[str, list[HookFn]] = {}
        self._points: dict[str, HookPoint] = {}
        # Dynamic points provided by attachments: name -> (point, the fixed point it fires inside).
        self._dynamic: dict[str, tuple[HookPoint, str]] = {}
        # The decoding step and its absolute positions while HookedModel.generate runs (None otherwise).
        self._step: tuple[int, torch.Tensor] | None = None
        self._step_points: dict[str, HookPoint] = {}

    def point(self, name: str) -> HookPoint:
        """The :class:`HookPoint` of a fixed or currently provided name (ValueError for anything else)."""
        if name in self._dynamic:
            return self._dynamic[name][0]
        try:
            return parse_hook_name(name, self.n_layers)
        except ValueError as error:
            if _is_fixed(name.rpartition(".")[0], self.n_layers):
                raise ValueError(
                    f"unknown hook point {name!r}: names below a hook point exist only while an attachment provides "
                    f"them (e.g. '<hook>.hook_sae_acts_post' inside `with model.attach_sae(sae)`)"
                ) from error
            raise

    def is_dynamic(self, name: str) -> bool:
        """Whether ``name`` is a point an attachment provides now (``<hook>.hook_sae_acts_post``)."""
        return name in self._dynamic

    def names(self) -> list[str]:
        """Every hook point in execution order: the fixed ones, each followed by the dynamic points inside it."""
        inside: dict[str, list[str]] = {}
        for name, (_, parent) in self._dynamic.items():
            inside.setdefault(parent, []).append(name)
        out = []
        for name in all_hook_names(self.n_layers):
            out.append(name)
            out.extend(inside.get(name, ()))
        return out

    def check_names(self, names: str | Sequence[str]) -> list[str]:
        """``names`` (one name or a list) as a list, each checked to be a fixed or currently provided point."""
        chosen = [names] if isinstance(names, str) else list(names)
        for name in chosen:
            self.point(name)
        return chosen

    @contextmanager
    def provided(self, points: Iterable[tuple[str, str]]) -> Iterator[None]:
        """Make ``(name, parent)`` dynamic hook points valid for the ``with`` block; ``parent`` is the fixed
        point they fire inside. Functions still registered at them when the block ends are dropped."""
        pairs = list(points)
        new: dict[str, tuple[HookPoint, str]] = {}
        for name, parent in pairs:
            if name in self._dynamic or name in new:
                raise ValueError(f"hook point {name!r} is already provided by another attachment; detach it first")
            parsed = self.point(parent)
            new[name] = (HookPoint(name, parsed.layer, name.removeprefix(f"blocks.{parsed.layer}.")), parent)
        self._dynamic.update(new)
        try:
            yield
        finally:
            for name, _ in pairs:
                self._dynamic.pop(name, None)
                self._fns.pop(name, None)
                self._points.pop(name, None)

    def active(self, name: str) -> bool:
        """Whether any function is registered at ``name`` (the hot path checks this first)."""
        return name in self._fns or name in self._bwd

    def has_backward(self, name: str) -> bool:
        """Whether a backward function is registered at ``name`` (the activation must then be on the autograd path)."""
        return name in self._bwd

    def any_active(self) -> bool:
        """Whether any function is registered at any hook point."""
        return bool(self._fns) or bool(self._bwd)

    def active_names(self) -> list[str]:
        """The hook names with at least one function registered."""
        return list(self._fns)

    def set_step(self, step: int | None, positions: torch.Tensor | None = None) -> None:
        """Tell hook functions which decoding step runs and its absolute positions (``None``: a plain run)."""
        self._step = None if step is None else (step, positions)
        self._step_points = {}

    def apply(self, name: str, activation: torch.Tensor, *, grad_of: torch.Tensor | None = None) -> torch.Tensor:
        """Run the functions at ``name`` in registration order, each seeing the previous result.

        Backward functions attach to the result, or to ``grad_of`` when the activation handed to the
        functions is a reshaped view of that tensor which the model does not use further.
        """
        point = self._points.get(name)
        if point is not None and self._step is not None:
            point = self._step_points.get(name) or self._step_points.setdefault(
                name, replace(point, step=self._step[0], positions=self._step[1])
            )
        for fn in self._fns.get(name, ()):
            replaced = fn(activation, point)
            if replaced is not None:
                if replaced.shape != activation.shape:
                    raise ValueError(
                        f"hook at {name} returned shape {tuple(replaced.shape)}, expected "
                        f"{tuple(activation.shape)}; return a tensor of the same shape or None"
                    )
                activation = replaced
        if name in self._bwd:
            target = activation if grad_of is None else grad_of
            if target.requires_grad:
                shape = activation.shape
                for fn in self._bwd[name]:
                    target.register_hook(_grad_hook(fn, point, shape, target.shape))
        return activation

    @contextmanager
    def added(self, hooks: Iterable[tuple[str, HookFn]], backward: Iterable[tuple[str, HookFn]] = ()) -> Iterator[None]:
        """Register ``(name, fn)`` pairs for the duration of the ``with`` block, removed even on error.

        Backward functions stop being called when the block ends, as TransformerLens removes its
        backward hooks: a ``backward()`` after the block sees the plain gradients.
        """
        pairs, backward_pairs = list(hooks), list(backward)
        for name, _ in pairs + backward_pairs:
            if name not in self._points:
                self._points[name] = self.point(name)
        alive = [True]
        live_backward = [(name, _while_alive(fn, alive)) for name, fn in backward_pairs]
        try:
            for name, fn in pairs:
                self._fns.setdefault(name, []).append(fn)
            for name, fn in live_backward:
                self._bwd.setdefault(name, []).append(fn)
            yield
        finally:
            alive[0] = False
            for table, entries in ((self._fns, pairs), (self._bwd, live_backward)):
                for name, fn in entries:
                    fns = table.get(name, [])
                    if fn in fns:
                        fns.remove(fn)
                    if not fns:
                        table.pop(name, None)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No function runs inside the block (for interp's own probing forward passes)."""
        saved = self._fns, self._bwd
        self._fns, self._bwd = {}, {}
        try:
            yield
        finally:
            self._fns, self._bwd = saved

    def clear(self) -> None:
        """Remove every registered function."""
        self._fns.clear()
        self._bwd.clear()


def _while_alive(fn: HookFn, alive: list[bool]) -> HookFn:
    def call(grad: torch.Tensor, hook: HookPoint) -> torch.Tensor | None:
        return fn(grad, hook) if alive[0] else None

    return call


def _grad_hook(fn: HookFn, point: HookPoint, shape: torch.Size, target_shape: torch.Size) -> Callable:
    def hook(grad: torch.Tensor) -> torch.Tensor | None:
        seen = grad.reshape(shape) if target_shape != shape else grad
        replaced = fn(seen, point)
        if replaced is None:
            return None
        if replaced.shape != seen.shape:
            raise ValueError(
                f"backward hook at {point.name} returned shape {tuple(replaced.shape)}, expected {tuple(seen.shape)}"
            )
        return replaced.reshape(target_shape)

    return hook


def first_tensor(output: Any) -> torch.Tensor:
    """A module's main output: the first element of a tuple output, else the output itself."""
    return output[0] if isinstance(output, tuple) else output


def replace_first_tensor(output: Any, value: torch.Tensor) -> Any:
    """``output`` with its main tensor (see :func:`first_tensor`) replaced by ``value``."""
    return (value, *output[1:]) if isinstance(output, tuple) else value
