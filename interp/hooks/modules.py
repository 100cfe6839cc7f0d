"""Hooks on any submodule of the wrapped model, for the few methods that need a point between the named
hook points (circuits give each q/k/v projection its own copy of a norm's output).

:mod:`interp.hooks` is the only place that registers torch hooks: :class:`~interp.hooks.model.HookedModel`
installs the named hook points, and everything else goes through :func:`module_hooks`, which removes
what it added when its block ends, even on error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

# fn(module, args, output) -> replacement output or None
ForwardHook = Callable[[nn.Module, tuple, Any], Any]
# fn(module, args) -> replacement args or None
PreHook = Callable[[nn.Module, tuple], Any]
# fn(module, args, kwargs) -> replacement (args, kwargs) or None
KwargsPreHook = Callable[[nn.Module, tuple, dict], Any]


@contextmanager
def module_hooks(
    forward: Iterable[tuple[nn.Module, ForwardHook]] = (),
    pre: Iterable[tuple[nn.Module, PreHook]] = (),
    pre_kwargs: Iterable[tuple[nn.Module, KwargsPreHook]] = (),
) -> Iterator[None]:
    """Register ``(module, fn)`` forward hooks and forward pre-hooks for the ``with`` block (torch semantics).

    ``pre_kwargs`` pre-hooks also see (and may replace) the keyword arguments, for modules called with them
    (attention modules get ``hidden_states=...``).
    """
    handles = []
    try:
        for module, fn in forward:
            handles.append(module.register_forward_hook(fn))
        for module, fn in pre:
            handles.append(module.register_forward_pre_hook(fn))
        for module, fn in pre_kwargs:
            handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()
