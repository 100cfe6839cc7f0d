"""The attention step that every hooked layer runs through.

Modern Hugging Face models call ``ALL_ATTENTION_FUNCTIONS[config._attn_implementation](module, q, k, v,
mask, ...)``. interp registers one function there (``interp_sdpa``, ``interp_eager``, ... named after the
implementation it wraps, so masks are built exactly as before) and points the model at it. For each
layer it

1. runs the ``hook_q/k/v`` functions,
2. computes attention: by calling the model's *original* implementation when nothing needs more
   (logits stay bit-identical), by an explicit softmax when ``hook_attn_scores`` or ``hook_pattern`` is hooked or attention
   edges are knocked out, or by :func:`interp.kernels.attention_with_stats` when statistics are
   being collected,
3. runs the ``hook_z`` functions on the per-head output ``[batch, pos, head, d_head]``.

On a GQA layer, ``hook_k``/``hook_v`` may hold one key/value head per query head (widened by
:func:`kv_per_query_head`, or projected so by a hook upstream): the original implementation is then
called with ``num_key_value_groups`` 1, and the explicit softmax repeats by the shapes it gets.

GPT-Neo has no attention interface; its eager ``_attn`` method is wrapped instead.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask

from interp.hooks.points import hook_name

if TYPE_CHECKING:
    from interp.hooks.model import HookedModel

AttentionFn = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


def visible_keys_mask(
    n_query: int,
    n_key: int,
    *,
    sliding_window: int | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Causal (bottom-right aligned) visibility ``[query, key]``: True where the query may attend.

    Query ``i`` sits at absolute position ``n_key - n_query + i``; with ``sliding_window = w`` it sees
    only the last ``w`` keys up to and including itself.
    """
    query_pos = torch.arange(n_key - n_query, n_key, device=device)[:, None]
    key_pos = torch.arange(n_key, device=device)[None, :]
    visible = key_pos <= query_pos
    if sliding_window is not None:
        visible &= key_pos > query_pos - sliding_window
    return visible


def repeat_kv(states: torch.Tensor, n_groups: int) -> torch.Tensor:
    """``[batch, kv_head, pos, d]`` -> ``[batch, kv_head * n_groups, pos, d]`` (query head h uses kv head h // n_groups)."""
    return states if n_groups == 1 else states.repeat_interleave(n_groups, dim=1)


def attention_scores(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    scaling: float,
    softcap: float | None = None,
    sliding_window: int | None = None,
) -> torch.Tensor:
    """Masked pre-softmax scores ``[batch, head, query, key]`` in float32 (float64 for float64 models), as HF's eager attention computes them.

    ``attention_mask`` is what the model passes to its attention function: a boolean mask (True = attend),
    an additive float mask, a ``[batch, key]`` padding mask (see :func:`key_padding_only_masks`), or None
    for plain causal attention.
    """
    n_groups = query.shape[1] // key.shape[1]
    dtype = torch.promote_types(query.dtype, torch.float32)  # float64 models keep float64
    scores = torch.matmul(query.to(dtype), repeat_kv(key, n_groups).to(dtype).transpose(-1, -2)) * scaling
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    floor = torch.finfo(scores.dtype).min
    if attention_mask is None or attention_mask.dim() == 2:
        visible = visible_keys_mask(scores.shape[-2], scores.shape[-1], sliding_window=sliding_window, device=scores.device)
        if attention_mask is not None:
            visible = visible & attention_mask[:, None, None, -scores.shape[-1] :].bool()
        return scores.masked_fill(~visible, floor)
    mask = attention_mask[..., : scores.shape[-1]]
    if mask.dtype == torch.bool:
        return scores.masked_fill(~mask, floor)
    return scores + mask.float()


class AttentionSite:
    """Per-layer state interp attaches to an attention module: which layer, which model, the original function."""

    def __init__(self, owner: HookedModel, layer: int, original: AttentionFn | None) -> None:
        self.owner = owner
        self.layer = layer
        self.original = original
        self.q_name = hook_name(layer, "attn.hook_q")
        self.k_name = hook_name(layer, "attn.hook_k")
        self.v_name = hook_name(layer, "attn.hook_v")
        self.pattern_name = hook_name(layer, "attn.hook_pattern")
        self.scores_name = hook_name(layer, "attn.hook_attn_scores")
        self.z_name = hook_name(layer, "attn.hook_z")
        self.widen_kv: Callable[[], bool] | None = None  # set by kv_per_query_head

    def hook_qkv(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run q/k/v hooks. Inputs and outputs are HF's ``[batch, head, pos, d]``; hooks see ``[batch, pos, head, d]``."""
        if self.widen_kv is not None and key.shape[1] < query.shape[1] and self.widen_kv():
            groups = query.shape[1] // key.shape[1]
            key, value = repeat_kv(key, groups), repeat_kv(value, groups)
        registry = self.owner.hooks_registry
        if registry.active(self.q_name):
            query = registry.apply(self.q_name, query.transpose(1, 2)).transpose(1, 2)
        if registry.active(self.k_name):
            key = registry.apply(self.k_name, key.transpose(1, 2)).transpose(1, 2)
        if registry.active(self.v_name):
            value = registry.apply(self.v_name, value.transpose(1, 2)).transpose(1, 2)
        return query, key, value

    def explicit_attention(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        *,
        scaling: float,
        softcap: float | None,
        sliding_window: int | None,
        sinks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Softmax attention with the pattern materialized, for ``hook_pattern`` and edge knockouts.

        ``sinks`` (``[head]``, gpt_oss) are learned logits that join each row's softmax and attend to no
        value: the pattern's rows then sum to less than 1. Returns ``[batch, head, query, d_head]``.
        """
        scores = attention_scores(
            query, key, attention_mask, scaling=scaling, softcap=softcap, sliding_window=sliding_window
        )
        knockout = self.owner.knockout_mask(self.layer, scores.shape, scores.device)
        if knockout is not None:
            scores = scores.masked_fill(knockout, torch.finfo(scores.dtype).min)
        scores = self.owner.hooks_registry.apply(self.scores_name, scores)
        if sinks is None:
            pattern = torch.softmax(scores, dim=-1)
        else:
            column = sinks.to(scores.dtype).view(1, -1, 1, 1).expand(*scores.shape[:-1], 1)
            pattern = torch.softmax(torch.cat([scores, column], dim=-1), dim=-1)[..., :-1]
        pattern = self.owner.hooks_registry.apply(self.pattern_name, pattern)
        n_groups = query.shape[1] // value.shape[1]
        return torch.matmul(pattern.to(value.dtype), repeat_kv(value, n_groups))

    def needs_explicit_pattern(self) -> bool:
        registry = self.owner.hooks_registry
        return registry.active(self.pattern_name) or registry.active(self.scores_name) or self.owner.has_knockout(self.layer)

    def hook_z(self, z: torch.Tensor) -> torch.Tensor:
        """``z``: ``[batch, pos, head, d_head]``."""
        return self.owner.hooks_registry.apply(self.z_name, z)

    def forward(
        self,
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        scaling: float | None = None,
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The ``AttentionInterface`` entry: returns ``(z [batch, pos, head, d_head], weights or None)``."""
        query, key, value = self.hook_qkv(query, key, value)
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        softcap = kwargs.get("softcap")
        sliding_window = self.owner.layer_window(self.layer, kwargs.get("sliding_window"))
        sinks = kwargs.get("s_aux")
        weights = None
        if self.needs_explicit_pattern():
            out = self.explicit_attention(
                query, key, value, attention_mask, scaling=scale, softcap=softcap, sliding_window=sliding_window,
                sinks=sinks,
            ).transpose(1, 2).contiguous()
        elif self.owner.collects_stats(self.layer):
            out = self.owner.attention_with_stats(
                self.layer, query, key, value, attention_mask, scaling=scale, softcap=softcap,
                sliding_window=sliding_window, sinks=sinks,
            ).transpose(1, 2).contiguous()
        else:
            assert self.original is not None
            with _groups_from_shapes(module, query, key):
                out, weights = self.original(
                    module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
                )
        return self.hook_z(out), weights


@contextmanager
def _groups_from_shapes(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor) -> Iterator[None]:
    """Let ``hook_k``/``hook_v`` return one key/value head per query head on a GQA layer (circuits' ungrouped
    k/v inputs): HF's eager and SDPA functions repeat the keys by ``module.num_key_value_groups``, not by
    the shapes they get, so that count is 1 for the call when the keys are already one per query head."""
    groups = getattr(module, "num_key_value_groups", None)
    if not isinstance(groups, int) or groups == 1 or key.shape[1] != query.shape[1]:
        yield
        return
    module.num_key_value_groups = 1
    try:
        yield
    finally:
        module.num_key_value_groups = groups


@contextmanager
def kv_per_query_head(model: HookedModel, when: Callable[[int], bool]) -> Iterator[None]:
    """While active, a GQA layer ``l``'s keys and values are widened to one head per query head (each a copy of
    its KV head's) before ``hook_k``/``hook_v`` run, whenever ``when(l)`` is True at that call: functions there
    then see and return ``[batch, pos, n_heads, d_head]`` and can give each query head keys of its own (circuits'
    ungrouped k/v inputs). Unchanged keys attend exactly as the grouped ones."""
    sites = [model.attention_module(layer)._interp_site for layer in range(model.cfg.n_layers)]
    for site in sites:
        site.widen_kv = lambda layer=site.layer: when(layer)
    try:
        yield
    finally:
        for site in sites:
            site.widen_kv = None


def _dispatch(module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    site: AttentionSite = module._interp_site
    return site.forward(module, *args, **kwargs)


def original_attention_function(model: torch.nn.Module, attention_module: torch.nn.Module) -> tuple[str, AttentionFn]:
    """The implementation name the model uses now and the function behind it."""
    implementation = model.config._attn_implementation or "eager"
    if implementation.startswith("interp_") or hasattr(attention_module, "_interp_site"):
        raise RuntimeError("this model is already hooked by interp; wrap it once")
    if implementation == "eager":
        # The model class's own modeling module: attention modules may be wrapped by other tools
        # (e.g. TransformerLens' bridge components) that live elsewhere.
        for owner in (attention_module, model):
            eager = getattr(sys.modules[type(owner).__module__], "eager_attention_forward", None)
            if eager is not None:
                return implementation, eager
        raise RuntimeError(f"no eager_attention_forward found for {type(model).__name__}; load it with attn_implementation='sdpa'")
    return implementation, _ROUTED.get(implementation) or AttentionInterface._global_mapping[implementation]


# Registered implementations (sdpa, flash, ...) that interp routes in place: name -> the original function.
_ROUTED: dict[str, AttentionFn] = {}


def route_in_place(implementation: str) -> None:
    """Route a registered implementation through interp for hooked modules only, keeping its name.

    The registered function is replaced by one that sends modules carrying an interp site to
    :meth:`AttentionSite.forward` and every other module to the original, unchanged. Keeping the name
    matters: models branch on ``config._attn_implementation == "sdpa"`` (Gemma 4's query slicing,
    DeepSeek-V3.2's sparse index masks), and a renamed implementation would send them down other code.
    """
    if implementation in _ROUTED:
        return
    original = AttentionInterface._global_mapping[implementation]
    _ROUTED[implementation] = original

    def routed(module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        site = getattr(module, "_interp_site", None)
        if site is None:
            return original(module, *args, **kwargs)
        return site.forward(module, *args, **kwargs)

    AttentionInterface._global_mapping[implementation] = routed
    mask_fn = ALL_MASK_ATTENTION_FUNCTIONS._global_mapping.get(implementation)
    if mask_fn is not None:  # transparent except for configs in key_padding_only_masks
        ALL_MASK_ATTENTION_FUNCTIONS._global_mapping[implementation] = _mask_function(mask_fn)


# ids of the model configs whose forward passes currently need only key padding from their mask (see
# `key_padding_only_masks`). Keyed by config because transformers hands the mask function the config.
_PADDING_ONLY_CONFIGS: set[int] = set()


@contextmanager
def key_padding_only_masks(model: torch.nn.Module) -> Iterator[None]:
    """While active, ``model``'s forwards build a ``[batch, key]`` padding mask (or None) instead of ``[N, N]``.

    For use when every layer computes attention through interp's kernel or explicit softmax, which apply
    causality and the sliding window themselves: transformers would otherwise build a ``[batch, 1, N, N]``
    mask per forward for sliding-window (Mistral, Gemma 2) and eager-attention models, 1-4 bytes per entry.
    Masks with extra structure (packed sequences, custom overlays) are still built in full.
    """
    key = id(model.config)
    _PADDING_ONLY_CONFIGS.add(key)
    try:
        yield
    finally:
        _PADDING_ONLY_CONFIGS.discard(key)


def _mask_function(original: Callable) -> Callable:
    def build_mask(*, config: Any = None, allow_is_causal_skip: bool = True, **kwargs: Any) -> torch.Tensor | None:
        # allow_is_causal_skip is False when the mask has structure beyond causal / window / padding
        # (packing, overlays); chunked attention (Llama 4) keeps it True, so it is excluded by name.
        if (
            allow_is_causal_skip
            and id(config) in _PADDING_ONLY_CONFIGS
            and getattr(config, "attention_chunk_size", None) is None
        ):
            return flash_attention_mask(**kwargs)  # [batch, key] padding, or None when nothing is padded
        return original(config=config, allow_is_causal_skip=allow_is_causal_skip, **kwargs)

    return build_mask


def register_interp_implementation(wrapped: str) -> str:
    """Register ``interp_<wrapped>`` with transformers' attention and mask interfaces; returns the name."""
    name = f"interp_{wrapped}"
    if name not in AttentionInterface._global_mapping:
        AttentionInterface.register(name, _dispatch)
        mask_fn = ALL_MASK_ATTENTION_FUNCTIONS._global_mapping.get(wrapped)
        if mask_fn is not None:
            ALL_MASK_ATTENTION_FUNCTIONS.register(name, _mask_function(mask_fn))
    return name


def gpt_neo_attn(site: AttentionSite, module: torch.nn.Module, original_attn: Callable) -> Callable:
    """A replacement for ``GPTNeoSelfAttention._attn`` (unscaled scores, local layers use a window)."""
    window = module.config.window_size if module.attention_type == "local" else None

    def _attn(query, key, value, attention_mask=None):
        query, key, value = site.hook_qkv(query, key, value)
        if site.needs_explicit_pattern():
            causal = module.bias[:, :, key.shape[-2] - query.shape[-2] : key.shape[-2], : key.shape[-2]]
            mask = causal if attention_mask is None else causal & (attention_mask > torch.finfo(attention_mask.dtype).min)
            out, weights = site.explicit_attention(
                query, key, value, mask, scaling=1.0, softcap=None, sliding_window=None
            ), None
        elif site.owner.collects_stats(site.layer):
            out, weights = site.owner.attention_with_stats(
                site.layer, query, key, value, attention_mask, scaling=1.0, softcap=None, sliding_window=window
            ), None
        else:
            out, weights = original_attn(query, key, value, attention_mask)
        return site.hook_z(out.transpose(1, 2)).transpose(1, 2), weights

    return _attn
