"""Hooked Hugging Face models: named hook points, activation caching and interventions."""

from interp.models.architectures import OVERRIDES, REFUSED, ArchitectureSpec, discover, supported_architectures
from interp.hooks.model import ActivationCache, HookedModel, ModelSpec
from interp.hooks.points import LAYER_SITES, HookPoint, all_hook_names, hook_name

__all__ = [
    "OVERRIDES",
    "REFUSED",
    "ActivationCache",
    "ArchitectureSpec",
    "HookPoint",
    "HookedModel",
    "LAYER_SITES",
    "ModelSpec",
    "all_hook_names",
    "discover",
    "hook_name",
    "supported_architectures",
]
