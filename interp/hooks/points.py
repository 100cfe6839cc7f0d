"""Hook point names, shapes and the registry that runs user functions at them.

Names follow TransformerLens so its users feel at home. Shapes (one convention, used everywhere):

======================================  ==================================  =====================================
name                                    shape                               what
======================================  ==================================  =====================================
``hook_embed``                          [batch, pos, d_model]               token embedding output
``blocks.{l}.hook_resid_pre``           [batch, pos, d_model]               residual stream entering block l
``blocks.{l}.attn.hook_q``              [batch, pos, head, d_head]          queries (after rotary, if any)
``blocks.{l}.attn.hook_k``              [batch, pos, kv_head, d_head]       keys (after rotary; GQA: kv heads)
``blocks.{l}.attn.hook_v``              [batch, pos, kv_head, d_head]       values
``blocks.{l}.attn.hook_pattern``        [batch, head, query_pos, key_pos]   softmax pattern (only when hooked)
``blocks.{l}.attn.hook_z``              [batch, pos, head, d_head]          per-head output before out-proj
``blocks.{l}.attn.hook_result``         [batch, pos, head, d_model]         per-head contribution (no bias)
``blocks.{l}.hook_attn_out``            [batch, pos, d_model]               attention module output
``blocks.{l}.hook_mlp_out``             [batch, pos, d_model]               MLP output
``blocks.{l}.hook_resid_post``          [batch, pos, d_model]               residual stream leaving block l
======================================  ==================================  =====================================

A hook function has the TransformerLens signature ``fn(activation, hook) -> Tensor | None``:
return a tensor to replace the activation, or ``None`` to leave it as it is. During
``HookedModel.generate`` the ``hook`` also says which decoding step runs (``hook.step``, 0 = the
prompt pass) and which absolute positions its ``pos`` rows hold (``hook.positions``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch

LAYER_SITES: tuple[str, ...] = (
    "hook_resid_pre",
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "attn.hook_pattern",
    "attn.hook_z",
    "attn.hook_result",
    "hook_attn_out",
    "hook_mlp_out",
    "hook_resid_post",
)
GLOBAL_SITES: tuple[str, ...] = ("hook_embed",)

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
    """Every hook point of a model with ``n_layers`` blocks, in execution order."""
    return list(GLOBAL_SITES) + [hook_name(layer, site) for layer in range(n_layers) for site in LAYER_SITES]


NamesFilter = str | Sequence[str] | Callable[[str], bool] | None
HookFn = Callable[[torch.Tensor, HookPoint], "torch.Tensor | None"]


def select_names(names: NamesFilter, n_layers: int) -> list[str]:
    """Resolve a names filter (one name, a list of names, a predicate, or None for all) to hook names."""
    every = all_hook_names(n_layers)
    if names is None:
        return every
    if callable(names):
        return [name for name in every if names(name)]
    chosen = [names] if isinstance(names, str) else list(names)
    for name in chosen:
        parse_hook_name(name, n_layers)
    return chosen


class HookRegistry:
    """Functions registered per hook name; the model's hooks call :meth:`apply` at each point."""

    def __init__(self, n_layers: int) -> None:
        self.n_layers = n_layers
        self._fns: dict[str, list[HookFn]] = {}
        self._points: dict[str, HookPoint] = {}
        self._step: tuple[int, torch.Tensor] | None = None
        self._step_points: dict[str, HookPoint] = {}

    def active(self, name: str) -> bool:
        """Whether any function is registered at ``name`` (the hot path checks this first)."""
        return name in self._fns

    def any_active(self) -> bool:
        """Whether any function is registered at any hook point."""
        return bool(self._fns)

    def active_names(self) -> list[str]:
        """The hook names with at least one function registered."""
        return list(self._fns)

    def set_step(self, step: int | None, positions: torch.Tensor | None = None) -> None:
        """Tell hook functions which decoding step runs and its absolute positions (``None``: a plain run)."""
        self._step = None if step is None else (step, positions)
        self._step_points = {}

    def apply(self, name: str, activation: torch.Tensor) -> torch.Tensor:
        """Run the functions at ``name`` in registration order, each seeing the previous result."""
        fns = self._fns.get(name)
        if not fns:
            return activation
        point = self._points[name]
        if self._step is not None:
            point = self._step_points.get(name) or self._step_points.setdefault(
                name, replace(point, step=self._step[0], positions=self._step[1])
            )
        for fn in fns:
            replaced = fn(activation, point)
            if replaced is not None:
                if replaced.shape != activation.shape:
                    raise ValueError(
                        f"hook at {name} returned shape {tuple(replaced.shape)}, expected "
                        f"{tuple(activation.shape)}; return a tensor of the same shape or None"
                    )
                activation = replaced
        return activation

    @contextmanager
    def added(self, hooks: Iterable[tuple[str, HookFn]]) -> Iterator[None]:
        """Register ``(name, fn)`` pairs for the duration of the ``with`` block, removed even on error."""
        pairs = list(hooks)
        for name, _ in pairs:
            self._points.setdefault(name, parse_hook_name(name, self.n_layers))
        try:
            for name, fn in pairs:
                self._fns.setdefault(name, []).append(fn)
            yield
        finally:
            for name, fn in pairs:
                fns = self._fns.get(name, [])
                if fn in fns:
                    fns.remove(fn)
                if not fns:
                    self._fns.pop(name, None)

    def clear(self) -> None:
        """Remove every registered function."""
        self._fns.clear()
