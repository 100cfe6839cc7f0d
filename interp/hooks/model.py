"""``HookedModel``: a Hugging Face causal LM with named hook points, caching and interventions.

The original modules run unchanged; interp adds forward hooks for the residual stream, MLP and
attention outputs, and routes the attention step through :mod:`interp.hooks.attention`. With no hook
function registered, outputs are bit-identical to the unwrapped model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
import warnings
from typing import Any

import torch
from torch import nn

from interp.errors import BeyondContextWarning, InterpError
from interp.models.architectures import ArchitectureSpec, check_eager_name_tests, spec_for, statistics_refusal, text_config
from interp.hooks.attention import (
    AttentionSite,
    gpt_neo_attn,
    key_padding_only_masks,
    original_attention_function,
    register_interp_implementation,
    route_in_place,
)
from interp.hooks.knockout import Knockouts
from interp.hooks.generation import generate as _generate
from interp.hooks.interventions import Index, head_ablation_hooks, replace_fn, scale_fn, steer_fn
from interp.hooks.stats import StatsCollector
from interp.kernels import AttentionStats, StatsConfig
from interp.kernels.chunked import reuse_workspace
from interp.threads import faster_threads
from interp.hooks.layout import ModelLayout, trace_layout
from interp.hooks.layout_hooks import LayoutHooks
from interp.hooks.points import (
    CORE_SITES,
    HookFn,
    HookRegistry,
    NamesFilter,
    first_tensor,
    hook_name,
    parse_hook_name,
    replace_first_tensor,
)


@dataclass(frozen=True)
class ModelSpec:
    """Sizes of a hooked model (TransformerLens calls this ``cfg``)."""

    name: str
    architecture: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    d_vocab: int
    n_ctx: int | None

    @property
    def n_groups(self) -> int:
        """Query heads per key/value head (1 without GQA)."""
        return self.n_heads // self.n_kv_heads


def _model_spec(model: nn.Module, spec: ArchitectureSpec, name: str) -> ModelSpec:
    """Sizes read from the modules interp hooks (configs name them inconsistently; MLA heads differ from d_model / n_heads)."""
    config = text_config(model.config)
    attention = model.get_submodule(spec.layers)[0].get_submodule(spec.attention)
    n_heads = (
        getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None) or getattr(config, "num_heads", None)
    )
    d_model = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
    out_weight = getattr(attention, spec.out_proj).weight
    z_width = out_weight.shape[0] if type(getattr(attention, spec.out_proj)).__name__ == "Conv1D" else out_weight.shape[1]
    groups = getattr(attention, "num_key_value_groups", None)
    n_kv_heads = n_heads // groups if isinstance(groups, int) and groups > 0 else (
        getattr(config, "num_key_value_heads", None) or n_heads
    )
    if any(hasattr(attention, name) for name in ("kv_b_proj", "kv_a_proj_with_mqa")):
        n_kv_heads = n_heads  # multi-latent attention decompresses one key and value per query head
    return ModelSpec(
        name=name,
        architecture=config.model_type,
        n_layers=len(model.get_submodule(spec.layers)),
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        d_head=int(z_width) // n_heads,
        d_model=d_model,
        d_vocab=model.get_output_embeddings().weight.shape[0] if model.get_output_embeddings() is not None else config.vocab_size,
        n_ctx=getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None),
    )


class ActivationCache(dict):
    """Captured activations by hook name (a plain ``dict[str, Tensor]``), as returned by :meth:`HookedModel.run_with_cache`."""

    def stack(self, site: str) -> torch.Tensor:
        """Stack one site over layers: ``cache.stack("attn.hook_z")`` -> ``[layer, batch, pos, head, d_head]``."""
        layers = sorted(int(name.split(".")[1]) for name in self if name.endswith("." + site) and name.startswith("blocks."))
        if not layers:
            raise KeyError(f"no cached activations for site {site!r}; cached: {', '.join(self)}")
        return torch.stack([self[hook_name(layer, site)] for layer in layers])




class HookedModel:
    """A Hugging Face causal LM plus its tokenizer, with TransformerLens-style hook points.

    Build one with :func:`interp.load`, or wrap a model you already have: ``HookedModel(hf_model, tokenizer)``.
    """

    def __init__(self, model: nn.Module, tokenizer: Any = None, *, name: str | None = None) -> None:
        self.architecture_spec: ArchitectureSpec = spec_for(model)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.cfg = _model_spec(model, self.architecture_spec, name or getattr(model.config, "name_or_path", "") or model.config.model_type)
        self.hooks_registry = HookRegistry(self.cfg.n_layers)
        self._knockouts = Knockouts(self.cfg.n_layers, self.cfg.n_heads)
        self._stats_collector: Any = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._layout: ModelLayout | None = None
        self._install()

    @property
    def spec_arch(self) -> ArchitectureSpec:
        """Old name of :attr:`architecture_spec` (interp <= 0.1)."""
        return self.architecture_spec

    # ------------------------------------------------------------------ installation
    @property
    def layers(self) -> nn.ModuleList:
        return self.model.get_submodule(self.architecture_spec.layers)

    def attention_module(self, layer: int) -> nn.Module:
        """The HF module whose attention step interp hooks for ``layer``."""
        return self.layers[layer].get_submodule(self.architecture_spec.attention)

    def out_proj(self, layer: int) -> nn.Module:
        """The output projection of ``layer``'s attention (concatenated heads -> d_model)."""
        return getattr(self.attention_module(layer), self.architecture_spec.out_proj)

    def _install(self) -> None:
        spec = self.architecture_spec
        attention0 = self.attention_module(0)
        # Tools such as TransformerLens' bridge swap HF attention modules for their own components,
        # which never call the attention function interp hooks: q/k/v/pattern/z/statistics cannot fire.
        # The check walks the whole path: a bridge keeps the HF module nested inside its own component
        # (``attn._original_component``), where it is found but never called.
        on_path, module = [self.layers[0]], self.layers[0]
        for part in spec.attention.split("."):
            module = getattr(module, part)
            on_path.append(module)
        self.attention_hookable = all(type(m).__module__.startswith("transformers.") for m in on_path)
        if spec.attention_entry == "interface":
            self._original_implementation, original = original_attention_function(self.model, attention0)
            if self._original_implementation == "eager":
                # Eager attention is each modeling module's own function, not a registered one: interp
                # registers ``interp_eager`` and points the model at it.
                check_eager_name_tests(self.model)
                self.model.config._attn_implementation = register_interp_implementation("eager")
            else:
                route_in_place(self._original_implementation)  # the name stays (models test it)
        else:
            self._original_implementation, original = self.model.config._attn_implementation, None
        for layer, block in enumerate(self.layers):
            attention = block.get_submodule(spec.attention)
            site = AttentionSite(self, layer, original)
            attention._interp_site = site
            if spec.attention_entry == "gpt_neo_attn":
                attention._interp_original_attn = attention._attn
                attention._attn = gpt_neo_attn(site, attention, attention._interp_original_attn)
            self._handles += [
                block.register_forward_pre_hook(self._resid_pre_hook(layer), with_kwargs=True),
                block.register_forward_hook(self._output_hook(hook_name(layer, "hook_resid_post"))),
                block.get_submodule(spec.attention.split(".")[0]).register_forward_hook(
                    self._output_hook(hook_name(layer, "hook_attn_out"))
                ),
                block.get_submodule(spec.mlp).register_forward_hook(self._output_hook(hook_name(layer, "hook_mlp_out"))),
                self.out_proj(layer).register_forward_hook(self._result_hook(layer)),
            ]
        self._handles.append(self.model.get_input_embeddings().register_forward_hook(self._output_hook("hook_embed")))

    def unhook(self) -> nn.Module:
        """Remove everything interp installed and return the plain HF model."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._layout = None
        for layer in range(self.cfg.n_layers):
            attention = self.attention_module(layer)
            if hasattr(attention, "_interp_original_attn"):
                attention._attn = attention._interp_original_attn
                del attention._interp_original_attn
            del attention._interp_site
        if self.architecture_spec.attention_entry == "interface":
            self.model.config._attn_implementation = self._original_implementation  # restores a renamed eager
        return self.model

    def _resid_pre_hook(self, layer: int) -> Callable:
        name = hook_name(layer, "hook_resid_pre")

        def hook(module, args, kwargs):
            if not self.hooks_registry.active(name):
                return None
            if args:
                return (self.hooks_registry.apply(name, args[0]), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": self.hooks_registry.apply(name, kwargs["hidden_states"])}

        return hook

    def _output_hook(self, name: str) -> Callable:
        def hook(module, args, output):
            if not self.hooks_registry.active(name):
                return None
            return replace_first_tensor(output, self.hooks_registry.apply(name, first_tensor(output)))

        return hook

    def _result_hook(self, layer: int) -> Callable:
        name = hook_name(layer, "attn.hook_result")

        def hook(module, args, output):
            if not self.hooks_registry.active(name):
                return None
            z = args[0].reshape(*args[0].shape[:-1], self.cfg.n_heads, self.cfg.d_head)
            result = torch.einsum("bphd,hdm->bphm", z, self.W_O(layer).to(z.dtype))
            replaced = self.hooks_registry.apply(name, result)
            if replaced is result and not self.hooks_registry.has_backward(name):
                return None
            bias = getattr(module, "bias", None)
            return replaced.sum(dim=2) + (bias if bias is not None else 0)

        return hook

    # ------------------------------------------------------------------ points that depend on the block's modules
    @property
    def layout(self) -> ModelLayout:
        """Each block's norms, MLP projections and parallel/sequential shape (traced once; see hooks/layout.py).

        Tracing also installs the hooks behind ``ln*.hook_*``, ``hook_resid_mid`` and ``mlp.hook_*``.
        """
        if self._layout is None:
            self._layout = trace_layout(self)
            self._install_layout_hooks(self._layout)
        return self._layout

    def _install_layout_hooks(self, layout: ModelLayout) -> None:
        self._handles += LayoutHooks(self.hooks_registry).install(self.model, self.layers, layout)

    # ------------------------------------------------------------------ weights
    def W_O(self, layer: int) -> torch.Tensor:
        """Output projection per head, ``[head, d_head, d_model]``: head h adds ``z[..., h, :] @ W_O[h]``."""
        proj = self.out_proj(layer)
        weight = proj.weight
        # transformers' Conv1D (GPT-2) stores [in, out]; nn.Linear stores [out, in].
        in_out = weight if type(proj).__name__ == "Conv1D" else weight.T
        return in_out.reshape(self.cfg.n_heads, self.cfg.d_head, self.cfg.d_model)

    # ------------------------------------------------------------------ running
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def hook_names(self) -> list[str]:
        """Every hook point this model has, in execution order, with those an attached SAE or transcoder
        provides (see :meth:`hook_point_refusal` for the others)."""
        return [name for name in self.hooks_registry.names() if self.hook_point_refusal(name) is None]

    def select_hook_names(self, names: NamesFilter) -> list[str]:
        """This model's hook names that ``names`` chooses: one name, a list, a predicate, or None for all."""
        if names is None or callable(names):
            every = self.hook_names()
            return every if names is None else [name for name in every if names(name)]
        return self.hooks_registry.check_names(names)

    def hook_point_refusal(self, name: str) -> str | None:
        """Why hook point ``name`` does not exist in this model (one line), or None when it does.

        The points beyond interp 0.1's (norms, ``hook_resid_mid``, MLP neurons, router) depend on the
        block's modules, which are traced from one small forward pass the first time they are asked for.
        Points an attachment provides (``<hook>.hook_sae_acts_post``) exist while it is attached.
        """
        point = self.hooks_registry.point(name)
        if self.hooks_registry.is_dynamic(name) or point.site in CORE_SITES or point.site in ("hook_embed", "attn.hook_attn_scores"):
            return None
        return self.layout.refusal(point.layer, point.site)

    def to_tokens(self, text: str | Sequence[str]) -> torch.Tensor:
        """Tokenize with the model's own tokenizer settings: ``[batch, pos]`` on the model's device."""
        if self.tokenizer is None:
            raise InterpError("this HookedModel has no tokenizer; pass token ids, or wrap with HookedModel(model, tokenizer)")
        texts = [text] if isinstance(text, str) else list(text)
        if any(not t for t in texts):
            raise InterpError("empty prompt: give at least one character of text")
        if len(texts) > 1 and self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        encoded = self.tokenizer(texts, return_tensors="pt", padding=len(texts) > 1)
        return encoded["input_ids"].to(self.device)

    def _as_tokens(self, inputs: torch.Tensor | str | Sequence[str]) -> torch.Tensor:
        tokens = inputs if isinstance(inputs, torch.Tensor) else self.to_tokens(inputs)
        if tokens.ndim == 1:
            tokens = tokens[None]
        if tokens.ndim != 2 or tokens.shape[1] == 0:
            raise InterpError(f"tokens must be [batch, pos] with pos >= 1, got shape {tuple(tokens.shape)}")
        if int(tokens.max()) >= self.cfg.d_vocab or int(tokens.min()) < 0:
            raise InterpError(
                f"token ids must lie in [0, {self.cfg.d_vocab}) for this model's vocabulary, got "
                f"{int(tokens.min())}..{int(tokens.max())}"
            )
        return tokens.to(self.device)

    def forward(
        self,
        inputs: torch.Tensor | str | Sequence[str],
        *,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Logits ``[batch, pos, vocab]`` for token ids ``[batch, pos]`` or text.

        Warns (:class:`~interp.errors.BeyondContextWarning`) when the input is longer than the model's
        trained window: it still runs, but positions there are extrapolation.
        """
        tokens = self._as_tokens(inputs)
        if self.cfg.n_ctx is not None and tokens.shape[1] > self.cfg.n_ctx:
            warnings.warn(
                f"{tokens.shape[1]} tokens exceed {self.cfg.name}'s trained context window of {self.cfg.n_ctx}; "
                f"positions past it are extrapolation",
                BeyondContextWarning,
                stacklevel=2,
            )
        return self.model(input_ids=tokens, attention_mask=attention_mask, use_cache=False, **kwargs).logits

    __call__ = forward

    def _require_attention_hooks(self, what: str) -> None:
        if not self.attention_hookable:
            raise InterpError(
                f"{what} needs interp's attention hooks, but this model's attention modules were replaced "
                f"(by a TransformerLens bridge or similar wrapper); load the same weights with interp.load(folder) instead"
            )

    @contextmanager
    def hooks(
        self, fwd_hooks: Iterable[tuple[str, HookFn]] = (), bwd_hooks: Iterable[tuple[str, HookFn]] = ()
    ) -> Iterator[HookedModel]:
        """Register ``(name, fn)`` pairs for the ``with`` block; always removed, even on exceptions.

        ``fwd_hooks``: ``fn(activation, hook)`` may return a replacement. ``bwd_hooks`` (TransformerLens
        semantics): ``fn(grad, hook)`` receives d(loss)/d(activation) when ``backward()`` runs inside the
        block, and may return a replacement gradient. A hook point this model lacks is refused with the reason.
        """
        pairs, backward = list(fwd_hooks), list(bwd_hooks)
        names = [name for name, _ in pairs + backward]
        inside = [name for name in names if ".attn.hook_" in name]
        if inside:
            self._require_attention_hooks(f"hook point {inside[0]}")
        for name in dict.fromkeys(names):
            refusal = self.hook_point_refusal(name)
            if refusal is not None:
                raise InterpError(f"hook point {name} does not exist in {self.cfg.architecture}: {refusal}")
        with self.hooks_registry.added(pairs, backward):
            yield self

    def run_with_hooks(
        self,
        inputs: Any,
        *,
        fwd_hooks: Iterable[tuple[str, HookFn]] = (),
        bwd_hooks: Iterable[tuple[str, HookFn]] = (),
        **kwargs: Any,
    ) -> torch.Tensor:
        """One forward pass with temporary hooks (TransformerLens signature).

        Backward hooks fire only when ``backward()`` runs before this returns; to use them, call
        ``loss.backward()`` inside ``with model.hooks(bwd_hooks=...)`` instead, or use :meth:`gradients`.
        """
        with self.hooks(fwd_hooks, bwd_hooks):
            return self.forward(inputs, **kwargs)

    def gradients(
        self,
        inputs: Any,
        metric: Callable[[torch.Tensor], torch.Tensor],
        *,
        names: NamesFilter = None,
        **kwargs: Any,
    ) -> ActivationCache:
        """d(metric)/d(activation) at ``names`` (default: every hook point), from one forward and one backward.

        ``metric(logits)`` returns a scalar. No parameter gradient is computed or accumulated (the
        backward pass stops at the embedding output). Asking for ``hook_pattern``/``hook_attn_scores``
        materializes those layers' patterns.
        """
        chosen = self.select_hook_names(names)
        grads = ActivationCache()
        embedded: list[torch.Tensor] = []

        def save(grad: torch.Tensor, hook) -> None:
            grads[hook.name] = grads[hook.name] + grad.detach() if hook.name in grads else grad.detach()

        def start(activation: torch.Tensor, hook) -> torch.Tensor | None:
            # The backward pass ends here; frozen weights get a graph from this leaf.
            if not activation.requires_grad:
                activation = activation.detach().requires_grad_()
            embedded.append(activation)
            return activation

        with torch.enable_grad(), self.hooks([("hook_embed", start)], [(name, save) for name in chosen]):
            logits = self.forward(inputs, **kwargs)
            value = metric(logits)
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                raise InterpError("metric(logits) must return a scalar tensor, e.g. logits[0, -1, token] or a mean")
            if value.requires_grad:
                torch.autograd.grad(value.reshape(()), embedded, allow_unused=True)
        return ActivationCache((name, grads[name]) for name in chosen if name in grads)

    def run_with_cache(
        self,
        inputs: Any,
        *,
        names: NamesFilter = None,
        detach: bool = True,
        device: torch.device | str | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, ActivationCache]:
        """Logits plus the activations at ``names`` (a name, a list, a predicate, or None for all).

        Only the requested points are stored; ``hook_pattern`` makes that layer materialize its
        ``[batch, head, query, key]`` pattern, so ask for it only at short context.
        """
        cache = ActivationCache()

        def save(activation: torch.Tensor, hook) -> None:
            kept = activation.detach() if detach else activation
            cache[hook.name] = kept.to(device) if device is not None else kept

        chosen = self.select_hook_names(names)
        with self.hooks([(name, save) for name in chosen]):
            logits = self.forward(inputs, **kwargs)
        return logits, ActivationCache((name, cache[name]) for name in chosen if name in cache)

    def generate(
        self,
        inputs: torch.Tensor | str | Sequence[str],
        *,
        max_new_tokens: int,
        fwd_hooks: Iterable[tuple[str, HookFn]] = (),
        cache_names: NamesFilter | bool = None,
        **generate_kwargs: Any,
    ) -> Any:
        """Hugging Face ``generate`` (KV cache and all its options) with hook functions running at every step.

        Returns the token ids ``[batch, prompt + new]`` (HF's output object instead when
        ``return_dict_in_generate=True``). Hooks (``fwd_hooks`` and any active ``hooks``/``intervene``/
        ``steer`` block) fire on the prompt pass and on every new token; ``hook.step`` is 0 for the
        prompt and k for the k-th new token fed, ``hook.positions`` the absolute positions of the rows it
        sees, and ``positions=`` of ``intervene``/``steer`` are absolute positions.

        ``cache_names`` (a names filter, or True for every cacheable point) returns ``(tokens, cache)``:
        every step's activations concatenated along ``pos``, as ``run_with_cache`` over the whole
        generated sequence gives them (the last generated token gets one extra pass through the KV cache
        for this). Keys, values and patterns are refused (the KV cache holds them unhooked).

        Several texts are padded on the left; for token ids pass ``attention_mask=`` where they are padded.
        """
        result = _generate(
            self, inputs, max_new_tokens=max_new_tokens, fwd_hooks=fwd_hooks, cache_names=cache_names, **generate_kwargs
        )
        if cache_names is None or cache_names is False:
            return result
        return result[0], ActivationCache(result[1])

    # ------------------------------------------------------------------ interventions
    @contextmanager
    def intervene(
        self,
        name: str,
        *,
        replace: torch.Tensor | None = None,
        scale: float | None = None,
        heads: Index = None,
        positions: Index = None,
    ) -> Iterator[HookedModel]:
        """Temporarily replace or scale one hook point's activation at chosen heads/positions.

        ``with model.intervene("blocks.3.attn.hook_z", scale=0.0, heads=[5]): model(tokens)``
        zero-ablates head 3.5 at every position.
        """
        if (replace is None) == (scale is None):
            raise InterpError("intervene needs exactly one of replace= (a tensor) or scale= (a number)")
        fn = replace_fn(replace, heads=heads, positions=positions) if replace is not None else scale_fn(
            scale, heads=heads, positions=positions
        )
        with self.hooks([(name, fn)]):
            yield self

    def steering_shape(self, name: str) -> tuple[int, ...]:
        """The shape of a vector :meth:`steer` adds at ``name``: ``[d_model]``, or ``[head, d_head]`` at ``hook_z``/``hook_q``."""
        try:
            site = parse_hook_name(name, self.cfg.n_layers).site
        except ValueError as error:
            raise InterpError(str(error)) from None
        if site in ("attn.hook_z", "attn.hook_q"):
            return (self.cfg.n_heads, self.cfg.d_head)
        if site == "attn.hook_result":
            return (self.cfg.n_heads, self.cfg.d_model)
        if site in ("hook_embed", "hook_resid_pre", "hook_attn_out", "hook_mlp_out", "hook_resid_post"):
            return (self.cfg.d_model,)
        raise InterpError(
            f"steer adds a vector to the residual stream, attention/MLP outputs, hook_z, hook_q or hook_result, not {name}; "
            f"use intervene(replace=...) there"
        )

    @contextmanager
    def steer(
        self, name: str, vector: torch.Tensor, coeff: float = 1.0, *, positions: Index = None
    ) -> Iterator[HookedModel]:
        """Add ``coeff * vector`` at hook point ``name`` for the ``with`` block: plain runs and :meth:`generate`.

        ``vector`` is ``[d_model]`` (``[head, d_head]`` at ``attn.hook_z``); ``positions`` are absolute
        during generation (``None``: every position, prompt and new tokens).
        """
        expected = self.steering_shape(name)
        if not isinstance(vector, torch.Tensor) or tuple(vector.shape) != expected:
            got = tuple(vector.shape) if isinstance(vector, torch.Tensor) else type(vector).__name__
            raise InterpError(f"steering vector for {name} must have shape {list(expected)}, got {got}")
        with self.hooks([(name, steer_fn(vector, coeff, positions=positions))]):
            yield self

    @contextmanager
    def ablate_heads(
        self,
        heads: Iterable[tuple[int, int]],
        *,
        method: str = "zero",
        reference: torch.Tensor | None = None,
        positions: Index = None,
    ) -> Iterator[HookedModel]:
        """Ablate ``(layer, head)`` pairs at their ``hook_z``.

        ``method="zero"`` sets the head's output to 0; ``method="mean"`` replaces it by its mean over
        the ``reference`` tokens ``[batch, pos]`` (all batch items and positions).
        """
        fns = head_ablation_hooks(self, heads, method=method, reference=reference, positions=positions)
        with self.hooks(fns):
            yield self

    @contextmanager
    def attach_sae(self, sae: Any, *, use_error_term: bool = False) -> Iterator[Any]:
        """Replace the activation at ``sae.hook_name`` by the SAE's reconstruction for the ``with`` block.

        ``sae``: an :class:`interp.saes.SAE`, a SAELens folder or a live ``sae_lens`` SAE. With
        ``use_error_term=True`` the activation becomes reconstruction + error (the output is unchanged until
        a feature is changed). Features appear at ``{hook_name}.hook_sae_acts_post`` ``[batch, pos, d_sae]``.
        """
        from interp.hooks.attachments import attach_sae
        from interp.saes.load import load_sae

        with attach_sae(self, load_sae(sae), use_error_term=use_error_term) as attached:
            yield attached

    @contextmanager
    def attach_transcoder(self, transcoder: Any, *, use_error_term: bool = False) -> Iterator[Any]:
        """Replace layer l's ``hook_mlp_out`` by a transcoder of that MLP's input for the ``with`` block.

        Features appear at ``blocks.{l}.hook_mlp_out.hook_sae_acts_post``; ``use_error_term`` as in :meth:`attach_sae`.
        """
        from interp.hooks.attachments import attach_transcoder
        from interp.saes.load import load_sae

        with attach_transcoder(self, load_sae(transcoder), use_error_term=use_error_term) as attached:
            yield attached

    def intervening(self) -> bool:
        """Whether any hook function or attention knockout is active now."""
        return self.hooks_registry.any_active() or self._knockouts.any_active()

    # ------------------------------------------------------------------ attention-edge knockout (hooks/knockout.py)
    def has_knockout(self, layer: int) -> bool:
        return self._knockouts.active(layer)

    def knockout_mask(self, layer: int, shape: torch.Size, device: torch.device) -> torch.Tensor | None:
        """Boolean ``[batch|1, head, query, key]`` mask of blocked edges for ``layer`` (True = blocked)."""
        return self._knockouts.mask(layer, shape, device)

    @contextmanager
    def knockout(
        self, edges: torch.Tensor, *, layers: Iterable[int] | None = None, heads: Sequence[int] | None = None
    ) -> Iterator[HookedModel]:
        """Block attention edges before the softmax: ``edges[..., query, key] = True`` removes that edge.

        ``edges`` is ``[query, key]`` (every batch row), ``[batch, query, key]`` (per row) or
        ``[batch, head, query, key]`` (per row and head; ``heads`` must then be None). Applies to
        ``layers`` (default all) and ``heads`` (default all query heads of those layers). Knocked-out
        layers compute attention explicitly (the pattern is materialized for them).
        """
        self._require_attention_hooks("attention knockout")
        with self._knockouts.added(edges, layers=layers, heads=heads):
            yield self

    def layer_window(self, layer: int, passed: int | None) -> int | None:
        """The sliding window of ``layer``: the config's per-layer type where it has one, else what the module passed.

        Some modules pass their config's window on every layer while the mask (which HF's own attention
        obeys) is full on global layers; ``config.layer_types`` says which layers slide.
        """
        config = text_config(self.model.config)
        types = getattr(config, "layer_types", None)
        if isinstance(types, (list, tuple)) and len(types) == self.cfg.n_layers:
            return getattr(config, "sliding_window", None) if types[layer] == "sliding_attention" else None
        if passed is None and getattr(config, "use_sliding_window", True) is not False:
            # e.g. PhiMoE builds a sliding-window mask for every layer but passes no window to attention.
            return getattr(config, "sliding_window", None)
        return passed

    # ------------------------------------------------------------------ attention statistics (interp.kernels)
    def collects_stats(self, layer: int) -> bool:
        return self._stats_collector is not None and self._stats_collector.wants(layer)

    def attention_with_stats(self, layer: int, query, key, value, attention_mask, **kwargs) -> torch.Tensor:
        config = text_config(self.model.config)
        types = getattr(config, "layer_types", None) or ()
        refusal = statistics_refusal(config)
        if refusal is not None:
            raise InterpError(f"attention statistics are not available for {config.model_type}: {refusal}")
        if layer < len(types) and types[layer] == "chunked_attention":
            kwargs["attention_chunk"] = config.attention_chunk_size  # the sliding window passed is None here
        return self._stats_collector.compute(layer, query, key, value, attention_mask, **kwargs)

    @contextmanager
    def collect_attention_stats(
        self,
        config: StatsConfig | None = None,
        *,
        layers: Iterable[int] | None = None,
        backend: str = "auto",
        reduce: Callable[[int, AttentionStats], object] | None = None,
    ) -> Iterator[StatsCollector]:
        """Compute attention through the statistics kernel for the ``with`` block.

        ``with model.collect_attention_stats(StatsConfig(n_sink=4)) as stats: model(tokens)``, then
        ``stats[layer].entropy`` is ``[batch, head, query]``. Logits stay within float tolerance of
        the plain model; the attention pattern is never materialized.

        With the CPU kernel all float statistics of one layer share one allocation: a ``reduce`` that
        keeps only a slice of one should ``.clone()`` it, or it keeps the whole layer's statistics alive.
        """
        self._require_attention_hooks("collecting attention statistics")
        if self._stats_collector is not None:
            raise InterpError("attention statistics are already being collected; nest no second collect_attention_stats")
        collector = StatsCollector(config or StatsConfig(), layers=layers, backend=backend, reduce=reduce)
        self._stats_collector = collector
        # With every layer on the kernel (which applies causality and windows itself) the model need not
        # build an [N, N] mask. GPT-Neo builds its own mask outside transformers' mask interface.
        lean = layers is None and self.architecture_spec.attention_entry == "interface"
        try:
            # Under INTERP_THREADS=auto the kernel picks its thread count (many short parallel ops suffer most from
            # a busy core); otherwise the count stays fixed, so runs repeat bit for bit (interp.threads).
            with key_padding_only_masks(self.model) if lean else nullcontext(), reuse_workspace(), faster_threads(self.device):
                yield collector
        finally:
            self._stats_collector = None

    def __repr__(self) -> str:
        c = self.cfg
        return (
            f"HookedModel({c.name!r}, {c.architecture}, layers={c.n_layers}, heads={c.n_heads}, "
            f"kv_heads={c.n_kv_heads}, d_head={c.d_head}, d_model={c.d_model})"
        )

