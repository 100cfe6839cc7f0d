"""Hooks during generation: Hugging Face ``generate`` (with its KV cache) under interp's hook points.

Each forward pass of ``generate`` is one step: step 0 is the prompt pass, step ``k`` feeds the
``k``-th new token. A forward pre-hook on the HF model counts the rows each step feeds (or reads
``cache_position`` where transformers still passes it) and hands the step's absolute positions, with the step number, to every hook function through its
``hook`` argument (:class:`~interp.hooks.points.HookPoint` ``step`` and ``positions``). Intervention
helpers then select by absolute position (:mod:`interp.hooks.interventions`).

Keys, values and attention patterns are refused: with a KV cache the attention function sees the
cached keys and values, which HF stored before any hook ran, so a hook there would see (and change)
other rows than the step's own.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from interp.errors import InterpError
from interp.hooks.points import HookFn, HookPoint, HookRegistry, NamesFilter

if TYPE_CHECKING:
    from interp.hooks.model import HookedModel

# Sites whose tensors span the KV cache (every key so far), not the step's own rows.
CACHED_SITES = ("attn.hook_k", "attn.hook_v", "attn.hook_pattern", "attn.hook_attn_scores")


def _refuse_cached(names: Iterable[str], registry: HookRegistry) -> None:
    for name in names:
        if registry.point(name).site in CACHED_SITES:
            raise InterpError(
                f"{name} cannot be hooked during generation: with the KV cache it holds every earlier key, stored before "
                f"hooks ran; hook it in a plain run over the generated tokens (model.run_with_cache(tokens))"
            )


def prompt_tokens(model: HookedModel, inputs: Any, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``[batch, pos]`` and attention mask for ``generate``; several texts are padded on the left."""
    if isinstance(inputs, torch.Tensor):
        tokens = model._as_tokens(inputs)
        mask = torch.ones_like(tokens) if attention_mask is None else attention_mask.to(tokens.device)
        if mask.shape != tokens.shape:
            raise InterpError(f"attention_mask has shape {tuple(mask.shape)}, expected the tokens' {tuple(tokens.shape)}")
        return tokens, mask
    if attention_mask is not None:
        raise InterpError("attention_mask= goes with token ids; for text, interp pads (on the left) and builds the mask itself")
    texts = [inputs] if isinstance(inputs, str) else list(inputs)
    if len(texts) == 1:
        tokens = model._as_tokens(texts)
        return tokens, torch.ones_like(tokens)
    tokenizer = model.tokenizer
    model.to_tokens(texts)  # the same checks (tokenizer, empty prompts) and pad token as plain runs
    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # new tokens follow each prompt directly
    try:
        encoded = tokenizer(texts, return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = side
    return encoded["input_ids"].to(model.device), encoded["attention_mask"].to(model.device)


class _Steps:
    """Counts ``generate``'s forward passes and publishes each one's step and absolute positions."""

    def __init__(self, model: HookedModel) -> None:
        self.model = model
        self.step = -1
        self.seen = 0

    def pre_hook(self, module, args, kwargs):
        cache_position = kwargs.get("cache_position")
        if cache_position is not None:
            positions = cache_position.detach().to("cpu", torch.long)
        else:  # models whose generate passes no cache_position: count the rows fed so far
            fed = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else kwargs.get("inputs_embeds")
            n = fed.shape[1] if fed is not None else args[0].shape[1]  # transformers >= 5 passes no cache_position
            positions = torch.arange(self.seen, self.seen + n)
        self.step += 1
        self.seen = int(positions[-1]) + 1
        self.model.hooks_registry.set_step(self.step, positions)


def generate(
    model: HookedModel,
    inputs: torch.Tensor | str | Sequence[str],
    *,
    max_new_tokens: int,
    fwd_hooks: Iterable[tuple[str, HookFn]] = (),
    cache_names: NamesFilter | bool = None,
    attention_mask: torch.Tensor | None = None,
    **generate_kwargs: Any,
) -> Any:
    """See :meth:`interp.hooks.model.HookedModel.generate`; the cache comes back as a plain dict."""
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InterpError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if model._knockouts.any_active() or model._stats_collector is not None:
        raise InterpError("generate runs no attention knockouts or statistics collection; leave those blocks first")
    pairs = list(fwd_hooks)
    if cache_names is None or cache_names is False:
        cached = None
    elif cache_names is True:  # every hook point that generation can cache
        cached = [name for name in model.hook_names() if model.hooks_registry.point(name).site not in CACHED_SITES]
    else:
        cached = model.select_hook_names(cache_names)
    _refuse_cached([name for name, _ in pairs] + (cached or []) + model.hooks_registry.active_names(), model.hooks_registry)
    tokens, mask = prompt_tokens(model, inputs, attention_mask)

    pieces: dict[str, dict[int, torch.Tensor]] = {name: {} for name in cached or []}

    def save(activation: torch.Tensor, hook: HookPoint) -> None:
        # keyed by step: a point that fires twice in one pass (DiffLlama's two attention halves) keeps
        # its last value, as run_with_cache does
        pieces[hook.name][hook.step] = activation.detach()

    wants_dict = bool(generate_kwargs.get("return_dict_in_generate"))
    if cached is not None:
        generate_kwargs["return_dict_in_generate"] = True  # the KV cache, for the last token's pass
    if model.tokenizer is not None and generate_kwargs.get("pad_token_id") is None:
        pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else model.tokenizer.eos_token_id
        if pad is not None and model.model.generation_config.pad_token_id is None:
            generate_kwargs["pad_token_id"] = pad
    steps = _Steps(model)
    handle = model.model.register_forward_pre_hook(steps.pre_hook, with_kwargs=True)
    try:
        with model.hooks(pairs + [(name, save) for name in cached or []]), torch.no_grad():
            output = model.model.generate(
                input_ids=tokens, attention_mask=mask, max_new_tokens=max_new_tokens, **generate_kwargs
            )
            sequences = output.sequences if not isinstance(output, torch.Tensor) else output
            if cached is not None:
                _last_token_pass(model, sequences, mask, getattr(output, "cache", None) or getattr(output, "past_key_values", None))
    finally:
        handle.remove()
        model.hooks_registry.set_step(None)
    result = output if wants_dict else sequences
    if cached is None:
        return result
    return result, {name: torch.cat([parts[step] for step in sorted(parts)], dim=1) for name, parts in pieces.items() if parts}


def _last_token_pass(model: HookedModel, sequences: torch.Tensor, mask: torch.Tensor, past: Any) -> None:
    """Feed the last generated token through the KV cache, so the cache covers every position.

    ``generate`` never runs the model on the token it picks last. This pass builds its inputs as
    ``generate`` builds every step's (``prepare_inputs_for_generation``).
    """
    if past is None:
        raise InterpError("cache_names needs generate's KV cache; drop use_cache=False")
    new = sequences.shape[1] - mask.shape[1]
    full_mask = torch.cat([mask, mask.new_ones(mask.shape[0], new)], dim=1)
    extra: dict[str, Any] = {}
    if "position_ids" in inspect.signature(model.model.forward).parameters:
        # as generate numbers left-padded rows: from the first real token
        extra["position_ids"] = (full_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -1:]
    cache_key = "cache" if "cache" in inspect.signature(model.model.prepare_inputs_for_generation).parameters else "past_key_values"
    inputs = model.model.prepare_inputs_for_generation(
        sequences, next_sequence_length=1, attention_mask=full_mask, use_cache=True, **{cache_key: past}, **extra
    )
    model.model(**inputs)
