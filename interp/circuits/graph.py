"""The computational graph of a transformer as circuits see it, and the hooks that split its inputs.

Nodes that *write* to the residual stream (upstream nodes, in execution order): ``embed`` (the
residual stream entering block 0), per block its attention, either every head ``a{l}.h{h}`` (its
``hook_result``) or one node ``a{l}`` for the whole layer, and its MLP ``m{l}``. Nodes that *read*
it (downstream inputs): each query head's query input ``a{l}.h{h}`` kind ``q``; each key/value
head's key and value inputs ``a{l}.kv{g}`` kinds ``k`` and ``v`` (GQA: k and v belong to the KV
head, shared by ``n_heads / n_kv_heads`` query heads; with ``ungroup_kv`` every query head has its own,
``a{l}.h{h}``, as MIB's graph); each MLP's input ``m{l}`` kind ``mlp``; and
``logits`` (the final norm's input). An edge ``u -> v`` exists when ``u`` runs before ``v`` reads
(in a parallel block the MLP reads what the attention reads): the residual stream at ``v``'s input
is ``embed + sum_u out_u`` (+ constant biases), so every edge is one term of that sum.

The block structure is the traced layout (:attr:`HookedModel.layout`), not a table: which norm feeds
the attention and the MLP, whether the block is parallel. What a node adds to the residual stream is
read from the stream itself (``hook_resid_mid - hook_resid_pre`` for a sequential block's attention,
``hook_resid_post - hook_resid_mid`` for its MLP), so post-norms, sandwich norms, residual multipliers
and mixtures of experts are all exact. Heads are separate nodes only where the layer's attention
output *is* the sum of its heads' ``hook_result`` plus a constant (checked on a traced forward, see
:func:`circuit_layout`); Gemma 2/3 and OLMo 2 normalise the attention output before adding it, so
their attention is one node per layer (``CircuitGraph.head_nodes`` False).

:func:`split_inputs` gives every downstream input its own copy of the residual stream on the
original Hugging Face modules, without re-implementing the model. For block ``l``:

* the attention's inputs: ``delta [batch, pos, slots, d_model]``, one slot per q head, k head and v
  head (TransformerLens' ``use_split_qkv_input``). Fast path (separate ``q_proj``/``k_proj``/``v_proj``
  linear layers and no norm across heads after them): the pre-attention norm runs on the widened
  ``x[:, :, None] + delta`` and hooks on the projections replace each output by the per-head
  projection of that head's own slot. Generic path (fused projections, MLA, norms across heads):
  for every slot the attention module runs on ``norm(x + delta_slot)`` up to interp's
  ``attn.hook_q/k/v`` point, where the call is cut short; the real call then gets each head's q, k, v
  from its own slot's run;
* ungrouped k/v inputs (``ungroup_kv``, GQA): a split layer attends with one key and value head per
  query head, query head ``h``'s computed from its own slot: the fast path projects each slot with its
  KV head's weights (``k_proj``/``v_proj`` then return ``n_heads`` heads); the generic path widens the
  keys and values before ``hook_k``/``hook_v`` (:func:`~interp.hooks.attention.kv_per_query_head`) and
  puts each query head's in place. Unpatched copies equal the KV head's, so this is the grouped model;
* a forward pre-hook on the MLP's input (its norm, or the MLP itself) adds the MLP's ``delta``, and
  one on the final norm (or the unembedding) adds the logits' ``delta``. The skip connections keep
  the unmodified stream.

With ``delta`` a zero tensor that requires grad, ``d metric / d delta`` is the gradient with
respect to the residual stream *as seen by* that one input (everything downstream included); with
``delta = sum over removed edges of (corrupted out_u - current out_u)`` the run is the circuit's.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import torch
from torch import nn

from interp.errors import InterpError
from interp.hooks import HookedModel, hook_name
from interp.hooks.attention import kv_per_query_head
from interp.hooks.modules import module_hooks

KINDS = ("q", "k", "v", "mlp", "logits")

# circuit_layout's result per model (tracing costs one forward).
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# kv_projections_widen's answer per model (one forward).
_WIDENS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class CircuitLayout:
    """Where a model's circuit inputs and outputs are, from its traced layout and one checked forward.

    ``attn_norm[l]``: the norm whose output is the attention's input (None: the attention reads the
    stream). ``mlp_read[l]``: ``"norm"`` (``mlp_norm[l]`` reads the stream), ``"entry"`` (the MLP
    itself reads the stream) or ``"shared"`` (a parallel block whose MLP reads ``attn_norm``'s output).
    ``logits_site``: the final norm, or the unembedding where there is none. ``fast_qkv``: separate
    per-head ``q_proj``/``k_proj``/``v_proj`` linear layers (see module doc).
    """

    head_nodes: bool
    parallel: tuple[bool, ...]
    attn_norm: tuple[nn.Module | None, ...]
    attn_top: tuple[nn.Module, ...]
    mlp_read: tuple[str, ...]
    mlp_site: tuple[nn.Module, ...]
    logits_site: nn.Module
    fast_qkv: bool
    why_layer_nodes: str | None = None

    @property
    def granularity(self) -> str:
        """``"head"`` (one node per attention head) or ``"layer"`` (one attention node per layer)."""
        return "head" if self.head_nodes else "layer"


def circuit_layout(model: HookedModel) -> CircuitLayout:
    """The model's :class:`CircuitLayout` (traced once per model), or a one-line error saying why circuits cannot run."""
    found = _CACHE.get(model)
    if found is None:
        found = _discover(model)
        _CACHE[model] = found
    return found


def _refuse(model: HookedModel, why: str) -> InterpError:
    return InterpError(f"circuit discovery does not support {model.cfg.architecture!r}: {why}")


def _fast_qkv(model: HookedModel, attention: nn.Module) -> bool:
    """Separate q/k/v linear layers of the expected per-head shapes, and no norm over more than one head after them."""
    cfg = model.cfg
    shapes = {"q_proj": cfg.n_heads * cfg.d_head, "k_proj": cfg.n_kv_heads * cfg.d_head, "v_proj": cfg.n_kv_heads * cfg.d_head}
    for name, rows in shapes.items():
        proj = getattr(attention, name, None)
        if not isinstance(proj, nn.Linear) or proj.weight.shape != (rows, cfg.d_model):
            return False
    for name, child in attention.named_children():
        # A norm on q or k (q_norm, k_layernorm, query_layernorm, ...) must act on one head at a time; norms
        # elsewhere (on the attention's output) do not touch the inputs. Weightless ones could be either.
        lowered = name.lower()
        on_qk = lowered.startswith(("q_", "k_", "query", "key")) or lowered in ("qnorm", "knorm")
        if on_qk and ("norm" in lowered or "norm" in type(child).__name__.lower()):
            weight = getattr(child, "weight", None)
            if not isinstance(weight, torch.Tensor) or weight.numel() != cfg.d_head:
                return False
    return True


def _discover(model: HookedModel) -> CircuitLayout:
    if not model.attention_hookable:
        raise _refuse(model, "its attention modules were replaced by a wrapper, so hook_q/k/v never run; load the weights with interp.load")
    layout = model.layout
    blocks = model.layers
    top = model.architecture_spec.attention.split(".")[0]
    n = model.cfg.n_layers
    attn_norm, attn_top, mlp_read, mlp_site = [], [], [], []
    for layer, (block, lay) in enumerate(zip(blocks, layout.layers)):
        attn_norm.append(block.get_submodule(lay.ln1.path) if lay.ln1 is not None else None)
        attn_top.append(block.get_submodule(top))
        if lay.ln2 is not None:
            mlp_read.append("norm")
            mlp_site.append(block.get_submodule(lay.ln2.path))
        else:
            mlp_read.append("shared" if lay.parallel and lay.ln1 is not None else "entry")
            mlp_site.append(block.get_submodule(lay.mlp_entry))
    if layout.ln_final is not None:
        logits_site = model.model.get_submodule(layout.ln_final.path)
    else:
        logits_site = model.model.get_output_embeddings()
        if logits_site is None:
            raise _refuse(model, "it has no output embedding module whose input is the final residual stream")
    parallel = tuple(lay.parallel for lay in layout.layers)
    fast = all(_fast_qkv(model, model.attention_module(layer)) for layer in range(n))
    head_nodes, why = _check_additive(model, parallel, logits_site, fast)
    return CircuitLayout(head_nodes, parallel, tuple(attn_norm), tuple(attn_top), tuple(mlp_read), tuple(mlp_site),
                         logits_site, fast, why)


def _tolerance(model: HookedModel) -> float:
    dtype = next(model.model.parameters()).dtype
    return 1e-3 if dtype in (torch.float32, torch.float64) else 5e-2


def _relative(values: torch.Tensor, scale: torch.Tensor) -> float:
    return float(values.double().abs().max() / scale.double().abs().max().clamp_min(1e-30))


def _spread(values: torch.Tensor, scale: torch.Tensor) -> float:
    """How far ``values [batch, pos, ...]`` are from one constant (a bias), relative to ``scale``'s size."""
    return _relative(values - values[:1, :1], scale)


def _check_additive(model: HookedModel, parallel: tuple[bool, ...], logits_site: nn.Module,
                    fast_qkv: bool) -> tuple[bool, str | None]:
    """One forward on two short prompts: does the residual stream telescope through the blocks, are parallel
    blocks ``x + attn + mlp``, and is each attention's contribution the sum of its heads' ``hook_result``?"""
    n = model.cfg.n_layers
    seen: dict[str, torch.Tensor] = {}
    calls: dict[str, int] = {}

    def keep(activation, hook):
        seen[hook.name] = activation.detach()
        calls[hook.name] = calls.get(hook.name, 0) + 1

    def keep_logits_in(module, args):
        seen["logits_in"] = args[0].detach()

    names = []
    for layer in range(n):
        sites = ["hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out", "attn.hook_q", "attn.hook_z",
                 "attn.hook_result"]
        if not parallel[layer]:
            sites.append("hook_resid_mid")
        names += [hook_name(layer, site) for site in sites]
    vocab = model.cfg.d_vocab
    tokens = torch.stack([torch.arange(3, 9), torch.arange(11, 5, -1)]) % max(vocab - 1, 1)
    try:
        with torch.no_grad(), module_hooks(pre=[(logits_site, keep_logits_in)]), model.hooks([(name, keep) for name in names]):
            model(tokens.to(model.device))
    except InterpError as error:
        raise _refuse(model, str(error)) from None
    twice = [layer for layer in range(n) if calls.get(hook_name(layer, "attn.hook_q"), 0) != 1]
    if twice and not fast_qkv:
        raise _refuse(model, f"layer {twice[0]}'s attention calls the attention function {calls.get(hook_name(twice[0], 'attn.hook_q'), 0)} "
                             f"times per forward (differential attention), so its q/k/v inputs cannot be split per head")
    tol = _tolerance(model)
    shape = seen[hook_name(0, "hook_resid_pre")].shape

    def get(layer: int | None, site: str) -> torch.Tensor:
        value = seen["logits_in"] if layer is None else seen[hook_name(layer, site)]
        return value.reshape(shape) if site not in ("attn.hook_z", "attn.hook_result") else value

    for layer in range(n):
        after = get(layer + 1, "hook_resid_pre") if layer + 1 < n else get(None, "")
        if _relative(after.double() - get(layer, "hook_resid_post").double(), after) > tol:
            where = (f"block {layer + 1}" if layer + 1 < n else "the final norm" if model.layout.ln_final is not None
                     else "the unembedding (no final norm feeds it directly)")
            raise _refuse(model, f"the residual stream changes between block {layer} and {where}, so it is not a sum of node outputs")
        if parallel[layer]:
            rest = get(layer, "hook_resid_post") - get(layer, "hook_resid_pre") - get(layer, "hook_attn_out") - get(layer, "hook_mlp_out")
            if _spread(rest, get(layer, "hook_attn_out")) > tol:
                raise _refuse(model, f"parallel block {layer} does not add its attention and MLP outputs unscaled to the residual stream")
    why = None
    for layer in range(n):
        result = get(layer, "attn.hook_result")
        z = get(layer, "attn.hook_z")
        added = get(layer, "hook_attn_out") if parallel[layer] else get(layer, "hook_resid_mid") - get(layer, "hook_resid_pre")
        try:
            per_head = torch.einsum("bphd,hdm->bphm", z.double(), model.W_O(layer).detach().double())
        except (RuntimeError, InterpError):
            per_head = None
        if per_head is None or per_head.shape != result.shape or _relative(per_head - result.double(), result) > tol:
            why = f"layer {layer}'s output projection does not read the heads' hook_z alone"
        elif _spread(added - result.sum(2), added) > tol:
            why = f"layer {layer} does not add the sum of its heads' outputs to the residual stream (a norm or scale after the attention)"
        if why is not None:
            break
    return why is None, why


def kv_projections_widen(model: HookedModel) -> bool:
    """Whether ungrouped k/v inputs can use the fast path: the attention modules accept ``k_proj``/``v_proj``
    outputs of one head per query head (most view them with ``-1`` heads; StableLM views them with its KV
    head count) and attend with them exactly as with the grouped ones. Checked once per model on one forward.
    Where they do not, ungrouped inputs take the generic path, which needs one attention call per layer."""
    found = _WIDENS.get(model)
    if found is None:
        found = _WIDENS[model] = _check_widening(model)
    return found


def _check_widening(model: HookedModel) -> bool:
    cfg = model.cfg
    lay = circuit_layout(model)
    if not lay.fast_qkv or cfg.n_kv_heads == cfg.n_heads:
        return lay.fast_qkv
    per, D = cfg.n_heads // cfg.n_kv_heads, cfg.d_head

    def widen(module, args, output):
        return output.reshape(*output.shape[:-1], cfg.n_kv_heads, D).repeat_interleave(per, -2).flatten(-2)

    calls: dict[int, int] = {}

    def count(layer: int):
        def fn(activation, hook):
            calls[layer] = calls.get(layer, 0) + 1
        return fn

    forward = [(getattr(model.attention_module(layer), name), widen) for layer in range(cfg.n_layers) for name in ("k_proj", "v_proj")]
    tokens = (torch.arange(3, 9)[None] % max(cfg.d_vocab - 1, 1)).to(model.device)
    with torch.no_grad():
        with model.hooks([(hook_name(layer, "attn.hook_q"), count(layer)) for layer in range(cfg.n_layers)]):
            plain = model(tokens)
        try:
            with module_hooks(forward):
                wide = model(tokens)
            return _relative(wide.double() - plain.double(), plain) <= _tolerance(model)
        except (RuntimeError, ValueError):
            pass
    twice = [layer for layer in range(cfg.n_layers) if calls.get(layer, 0) != 1]
    if twice:
        raise _refuse(model, f"ungrouped k/v inputs: layer {twice[0]}'s attention neither accepts one key head per query head "
                             f"nor calls the attention function once per forward; score the grouped graph (no --ungroup-kv)")
    return False


@dataclass(frozen=True)
class CircuitGraph:
    """Node and input indexing for a model with ``n_layers`` blocks of ``n_heads`` query / ``n_kv_heads`` KV heads.

    Upstream index: ``embed`` = 0, then per layer its attention nodes (``n_heads`` heads, or one node
    when ``head_nodes`` is False) and its MLP. Downstream index: per layer, ``n_heads`` q slots, then
    ``kv_inputs`` k slots, ``kv_inputs`` v slots, one MLP slot; ``logits`` last. ``parallel[l]``:
    block ``l``'s MLP reads the same stream as its attention (empty: no parallel blocks).

    ``ungroup_kv`` (GQA only; False without GQA whatever is passed): every *query* head has its own k
    and v input, named like its q input (``a{l}.h{h}``), as MIB's graph has; the keys and values query
    head ``h`` attends with are computed from that input alone (:func:`split_inputs`). Otherwise the k
    and v inputs belong to the KV head (``a{l}.kv{g}``), shared by its ``n_heads / n_kv_heads`` query heads.
    """

    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_nodes: bool = True
    parallel: tuple[bool, ...] = ()
    ungroup_kv: bool = False

    def __post_init__(self) -> None:
        if self.ungroup_kv and self.n_kv_heads == self.n_heads:
            object.__setattr__(self, "ungroup_kv", False)  # nothing to ungroup: the same graph

    @classmethod
    def of(cls, model: HookedModel, ungroup_kv: bool = False) -> CircuitGraph:
        layout = circuit_layout(model)
        parallel = layout.parallel if any(layout.parallel) else ()
        if ungroup_kv and model.cfg.n_kv_heads != model.cfg.n_heads:
            kv_projections_widen(model)  # its check forward runs now, before the caller's hooks (or refuses)
        return cls(model.cfg.n_layers, model.cfg.n_heads, model.cfg.n_kv_heads, layout.head_nodes, parallel, ungroup_kv)

    # sizes -------------------------------------------------------------------------------
    @property
    def kv_inputs(self) -> int:
        """k (and v) inputs per layer: one per query head when ungrouped, else one per KV head."""
        return self.n_heads if self.ungroup_kv else self.n_kv_heads

    def kv_head(self, head: int) -> int:
        """The KV head whose keys and values query head ``head`` attends with."""
        return head // (self.n_heads // self.n_kv_heads)

    @property
    def slots(self) -> int:
        """Attention input slots per layer: q per query head, k and v per KV head (per query head when ungrouped)."""
        return self.n_heads + 2 * self.kv_inputs

    @property
    def attn_nodes(self) -> int:
        """Upstream attention nodes per layer."""
        return self.n_heads if self.head_nodes else 1

    @property
    def granularity(self) -> str:
        return "head" if self.head_nodes else "layer"

    @property
    def per_layer_up(self) -> int:
        return self.attn_nodes + 1

    @property
    def n_up(self) -> int:
        return 1 + self.n_layers * self.per_layer_up

    @property
    def per_layer_down(self) -> int:
        return self.slots + 1

    @property
    def n_down(self) -> int:
        return self.n_layers * self.per_layer_down + 1

    def is_parallel(self, layer: int) -> bool:
        return bool(self.parallel) and self.parallel[layer]

    # indices -----------------------------------------------------------------------------
    def head_index(self, layer: int, head: int) -> int:
        """Upstream index of the node holding head ``head``'s output (the layer's node without head nodes)."""
        return 1 + layer * self.per_layer_up + (head if self.head_nodes else 0)

    def attn_index(self, layer: int) -> int:
        """Upstream index of layer ``layer``'s first attention node."""
        return 1 + layer * self.per_layer_up

    def mlp_index(self, layer: int) -> int:
        return 1 + layer * self.per_layer_up + self.attn_nodes

    def attn_down(self, layer: int) -> slice:
        start = layer * self.per_layer_down
        return slice(start, start + self.slots)

    def mlp_down(self, layer: int) -> int:
        return layer * self.per_layer_down + self.slots

    @property
    def logits_down(self) -> int:
        return self.n_down - 1

    def visible_attn(self, layer: int) -> int:
        """Upstream nodes that write before block ``layer``'s attention reads."""
        return 1 + layer * self.per_layer_up

    def visible_mlp(self, layer: int) -> int:
        if self.is_parallel(layer):
            return self.visible_attn(layer)
        return 1 + layer * self.per_layer_up + self.attn_nodes

    # names -------------------------------------------------------------------------------
    @cached_property
    def up_names(self) -> list[str]:
        names = ["embed"]
        for layer in range(self.n_layers):
            heads = [f"a{layer}.h{h}" for h in range(self.n_heads)] if self.head_nodes else [f"a{layer}"]
            names += heads + [f"m{layer}"]
        return names

    @cached_property
    def down_info(self) -> list[tuple[str, str, int]]:
        """``(name, kind, layer)`` per downstream index (``logits`` has layer ``n_layers``)."""
        info = []
        for layer in range(self.n_layers):
            info += [(f"a{layer}.h{h}", "q", layer) for h in range(self.n_heads)]
            kv = [f"a{layer}.h{h}" for h in range(self.n_heads)] if self.ungroup_kv else \
                [f"a{layer}.kv{g}" for g in range(self.n_kv_heads)]
            info += [(name, "k", layer) for name in kv]
            info += [(name, "v", layer) for name in kv]
            info.append((f"m{layer}", "mlp", layer))
        info.append(("logits", "logits", self.n_layers))
        return info

    @cached_property
    def visible(self) -> np.ndarray:
        """``[n_down]``: how many upstream nodes (a prefix in execution order) each input reads."""
        out = np.empty(self.n_down, dtype=np.int64)
        for layer in range(self.n_layers):
            out[self.attn_down(layer)] = self.visible_attn(layer)
            out[self.mlp_down(layer)] = self.visible_mlp(layer)
        out[self.logits_down] = self.n_up
        return out

    @cached_property
    def edge_mask(self) -> torch.Tensor:
        """``[n_up, n_down]`` bool: which (upstream, downstream) pairs are edges."""
        return torch.arange(self.n_up)[:, None] < torch.as_tensor(self.visible)[None, :]

    @property
    def n_edges(self) -> int:
        return int(self.edge_mask.sum())

    def up_layer(self, index: int) -> int:
        """Layer of an upstream node (-1 for ``embed``)."""
        return -1 if index == 0 else (index - 1) // self.per_layer_up

    def feeds(self, down: int) -> list[int]:
        """Upstream nodes whose output input ``down`` helps compute (empty for ``logits``)."""
        name, kind, layer = self.down_info[down]
        if kind == "logits":
            return []
        if kind == "mlp":
            return [self.mlp_index(layer)]
        if not self.head_nodes:
            return [self.attn_index(layer)]
        if kind == "q" or self.ungroup_kv:
            return [self.head_index(layer, int(name.split(".h")[1]))]
        group = int(name.split(".kv")[1])
        per = self.n_heads // self.n_kv_heads
        return [self.head_index(layer, h) for h in range(group * per, (group + 1) * per)]

    def edges_frame(self, scores: torch.Tensor | None = None) -> pd.DataFrame:
        """One row per edge: ``upstream, downstream, kind, up_index, down_index[, score]``, in index order."""
        up, down = torch.nonzero(self.edge_mask, as_tuple=True)
        info = self.down_info
        frame = pd.DataFrame({
            "upstream": [self.up_names[i] for i in up.tolist()],
            "downstream": [info[j][0] for j in down.tolist()],
            "kind": [info[j][1] for j in down.tolist()],
            "up_index": up.numpy(),
            "down_index": down.numpy(),
        })
        if scores is not None:
            frame["score"] = scores[up, down].double().numpy()
        return frame

    def edge_index(self, upstream: str, downstream: str, kind: str) -> tuple[int, int]:
        """``(up_index, down_index)`` of a named edge."""
        try:
            u = self.up_names.index(upstream)
        except ValueError:
            raise InterpError(f"unknown upstream node {upstream!r}") from None
        for j, (name, k, _) in enumerate(self.down_info):
            if name == downstream and k == kind:
                if u >= self.visible[j]:
                    raise InterpError(f"{upstream} -> {downstream} ({kind}) is not an edge: {upstream} does not run before it reads")
                return u, j
        raise InterpError(f"unknown downstream input {downstream!r} of kind {kind!r}")


# Called when an input reads the residual stream: (group, layer, x) -> delta or None, where group is
# "attn" (delta [batch, pos, slots, d_model]), "mlp" or "logits" ([batch, pos, d_model]).
DeltaFn = Callable[[str, int, torch.Tensor], torch.Tensor | None]


class _Probed(Exception):
    """Raised at ``hook_v`` to end an attention call once a slot's q, k and v are known."""


_CACHE_KWARGS = ("past_key_value", "past_key_values", "layer_past")


def _first_input(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _with_input(args: tuple, kwargs: dict, value: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (value, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": value}


@contextmanager
def split_inputs(model: HookedModel, delta: DeltaFn, *, ungroup_kv: bool = False) -> Iterator[None]:
    """Give every downstream input its own residual stream ``x + delta`` for the ``with`` block (see module doc).

    ``ungroup_kv``: the attention delta has one k and one v slot per query head (:class:`CircuitGraph`),
    and a layer whose inputs are split attends with one key and value head per query head.
    """
    graph = CircuitGraph.of(model, ungroup_kv)
    lay = circuit_layout(model)
    fast = lay.fast_qkv and (not graph.ungroup_kv or kv_projections_widen(model))
    H, KV, D = graph.n_heads, graph.n_kv_heads, model.cfg.d_head
    KI = graph.kv_inputs
    stream: dict[int, torch.Tensor] = {}  # the residual stream the attention reads, per layer in flight
    pending: dict[int, torch.Tensor] = {}  # the attention's delta, from its norm to its call
    normed: dict[int, torch.Tensor] = {}  # fast path: norm(x + delta) per slot
    probed: dict[int, dict[str, dict[int, torch.Tensor]]] = {}  # generic path: q/k/v per head from its slot
    probe: dict[str, object] = {}  # the slot run in progress: {"layer": l, "q": .., "k": .., "v": ..}

    def attn_delta(layer: int, x: torch.Tensor) -> None:
        stream[layer] = x
        d = delta("attn", layer, x)
        if d is None:
            normed.pop(layer, None)
            pending.pop(layer, None)
            return
        d = d.reshape(*x.shape[:-1], graph.slots, x.shape[-1])
        if fast:
            norm = lay.attn_norm[layer]
            wide = x.unsqueeze(-2) + d
            normed[layer] = norm.forward(wide) if norm is not None else wide
        else:
            pending[layer] = d

    def attn_norm_hook(layer: int):
        def hook(module, args, output):
            attn_delta(layer, args[0])
            return None
        return hook

    def proj_hook(layer: int, start: int, count: int, heads: int):
        def hook(module, args, output):
            split = normed.get(layer)
            if split is None:
                return None
            inputs = split[..., start:start + count, :]  # [batch, pos, count, d_model]
            weight = module.weight.reshape(heads, D, -1)
            if count != heads:  # ungrouped k/v: each query head projects its own slot with its KV head's weights
                weight = weight.repeat_interleave(count // heads, 0)
            out = torch.einsum("bphm,hdm->bphd", inputs.to(weight.dtype), weight).reshape(*output.shape[:-1], count * D)
            if module.bias is not None:
                bias = module.bias
                if count != heads:
                    bias = bias.reshape(heads, D).repeat_interleave(count // heads, 0).reshape(-1)
                out = out + bias
            if start + count == graph.slots:
                normed.pop(layer, None)
            return out
        return hook

    def attention_pre_hook(layer: int):
        def hook(module, args, kwargs):
            probed.pop(layer, None)  # the slot runs below see the layer's own keys (no widening)
            if lay.attn_norm[layer] is None:
                attn_delta(layer, _first_input(args, kwargs))
            d = pending.pop(layer, None)
            if d is None:
                probed.pop(layer, None)
                return None
            x, norm = stream[layer], lay.attn_norm[layer]
            call_kwargs = {k: (None if k in _CACHE_KWARGS else v) for k, v in kwargs.items()}
            found: dict[str, dict[int, torch.Tensor]] = {"q": {}, "k": {}, "v": {}}
            for slot in range(graph.slots):
                ds = d[..., slot, :]
                if not ds.requires_grad and not bool(ds.any()):
                    continue  # this slot reads the real stream: the real call computes its head
                hidden = x + ds
                hidden = norm.forward(hidden) if norm is not None else hidden
                a, kw = _with_input(args, call_kwargs, hidden)
                probe.clear()
                probe["layer"] = layer
                try:
                    module.forward(*a, **kw)
                except _Probed:
                    pass
                finally:
                    got, _ = dict(probe), probe.clear()
                if "v" not in got:
                    raise InterpError(f"layer {layer}'s attention returned before reaching hook_v; circuits cannot split its inputs")
                part, head = ("q", slot) if slot < H else ("k", slot - H) if slot < H + KI else ("v", slot - H - KI)
                source = graph.kv_head(head) if part != "q" and graph.ungroup_kv else head
                found[part][head] = got[part][:, :, source]
            if any(found.values()):
                probed[layer] = found
            else:
                probed.pop(layer, None)
            return None
        return hook

    def qkv_fn(layer: int, part: str):
        def fn(activation, hook):
            if probe.get("layer") == layer:
                probe[part] = activation
                if part == "v":
                    raise _Probed
                return None
            found = probed.get(layer)
            if not found or not found[part]:
                return None
            heads = list(activation.unbind(2))
            expected = H if part == "q" or graph.ungroup_kv else KV  # ungrouped: widened by kv_per_query_head
            if len(heads) != expected:
                raise InterpError(f"layer {layer}'s hook_{part} has {len(heads)} heads, not the {expected} "
                                  f"circuits expect; circuits cannot split its inputs")
            for head, value in found[part].items():
                heads[head] = value.to(activation.dtype)
            return torch.stack(heads, 2)
        return fn

    # The final norm may also run before block 0 (NanoChat): the logits read only after the last block has
    # run (or been replayed, interp.hooks.replay, which still calls the block module).
    after_last: list[bool] = []

    def last_block_hook(module, args, output):
        after_last[:] = [True]

    def reads_hook(group: str, layer: int):
        def hook(module, args, kwargs):
            x = _first_input(args, kwargs)
            if group == "logits":
                if not after_last:
                    return None
                after_last.clear()
            if group == "mlp" and lay.mlp_read[layer] == "shared":
                base = stream[layer]
                d = delta(group, layer, base)
                if d is None:
                    return None
                return _with_input(args, kwargs, lay.attn_norm[layer].forward(base + d.reshape(base.shape)))
            if x.dim() == 2 and layer in stream:  # a block that flattens [batch, pos] before its MLP (OPT)
                d = delta(group, layer, x.reshape(stream[layer].shape))
            else:
                d = delta(group, layer, x)
            if d is None:
                return None
            return _with_input(args, kwargs, x + d.reshape(x.shape).to(x.dtype))
        return hook

    forward, pre_kwargs, named = [], [], []
    for layer in range(graph.n_layers):
        norm = lay.attn_norm[layer]
        if norm is not None:
            forward.append((norm, attn_norm_hook(layer)))
        if fast:
            attention = model.attention_module(layer)
            forward += [(attention.q_proj, proj_hook(layer, 0, H, H)), (attention.k_proj, proj_hook(layer, H, KI, KV)),
                        (attention.v_proj, proj_hook(layer, H + KI, KI, KV))]
        if norm is None or not fast:
            pre_kwargs.append((lay.attn_top[layer], attention_pre_hook(layer)))
        if not fast:
            named += [(hook_name(layer, f"attn.hook_{part}"), qkv_fn(layer, part)) for part in ("q", "k", "v")]
        pre_kwargs.append((lay.mlp_site[layer], reads_hook("mlp", layer)))
    forward.append((model.layers[graph.n_layers - 1], last_block_hook))
    pre_kwargs.append((lay.logits_site, reads_hook("logits", graph.n_layers)))
    try:
        with ExitStack() as stack:
            stack.enter_context(module_hooks(forward, pre_kwargs=pre_kwargs))
            if named:
                stack.enter_context(model.hooks(named))
                if graph.ungroup_kv:  # a layer with split inputs attends with one key/value head per query head
                    stack.enter_context(kv_per_query_head(model, lambda layer: layer in probed))
            yield
    finally:
        normed.clear()
        probed.clear()
        pending.clear()
        stream.clear()
        after_last.clear()


def work_dtype(model: HookedModel) -> torch.dtype:
    """float64 for a float64 model (exact checks), else float32 (whatever the model's dtype)."""
    return torch.float64 if next(model.model.parameters()).dtype == torch.float64 else torch.float32


def output_hooks(model: HookedModel, store: Callable[[int, torch.Tensor], None]) -> list[tuple[str, Callable]]:
    """Hook pairs calling ``store(first_up_index, value [batch, pos, n, d_model])`` as each upstream node writes.

    ``embed`` is the residual stream entering block 0; heads come from ``hook_result``; a layer's
    attention node is what it adds to the residual stream (``hook_resid_mid - hook_resid_pre``, or
    ``hook_attn_out`` in a parallel block) and an MLP likewise (``hook_resid_post - hook_resid_mid``,
    or ``hook_resid_post - hook_resid_pre - hook_attn_out``). Values are passed as computed (detach
    them to keep them).
    """
    graph = CircuitGraph.of(model)
    pre: dict[int, torch.Tensor] = {}
    mid: dict[int, torch.Tensor] = {}
    attn: dict[int, torch.Tensor] = {}

    def keep_pre(layer):
        def fn(activation, hook):
            pre[layer] = activation
            if layer == 0:
                store(0, activation.unsqueeze(2))
        return fn

    def result(layer):
        def fn(activation, hook):
            store(graph.attn_index(layer), activation)
        return fn

    def keep_mid(layer):
        def fn(activation, hook):
            value = activation.reshape(pre[layer].shape)
            mid[layer] = value
            if not graph.head_nodes:
                store(graph.attn_index(layer), (value - pre[layer]).unsqueeze(2))
        return fn

    def keep_attn(layer):
        def fn(activation, hook):
            attn[layer] = activation
            if not graph.head_nodes:
                store(graph.attn_index(layer), activation.unsqueeze(2))
        return fn

    def post(layer):
        def fn(activation, hook):
            value = activation.reshape(pre[layer].shape)
            before = pre.pop(layer) + attn.pop(layer) if graph.is_parallel(layer) else mid.pop(layer)
            store(graph.mlp_index(layer), (value - before).unsqueeze(2))
        return fn

    pairs = []
    for layer in range(graph.n_layers):
        pairs.append((hook_name(layer, "hook_resid_pre"), keep_pre(layer)))
        if graph.head_nodes:
            pairs.append((hook_name(layer, "attn.hook_result"), result(layer)))
        if graph.is_parallel(layer):
            pairs.append((hook_name(layer, "hook_attn_out"), keep_attn(layer)))
        else:
            pairs.append((hook_name(layer, "hook_resid_mid"), keep_mid(layer)))
        pairs.append((hook_name(layer, "hook_resid_post"), post(layer)))
    return pairs


def upstream_outputs(model: HookedModel, tokens: torch.Tensor, *, extra_hooks=()) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and every upstream node's output ``[batch, pos, n_up, d_model]`` (float32) for ``tokens``."""
    graph = CircuitGraph.of(model)
    b, p = tokens.shape
    buffer = torch.zeros(b, p, graph.n_up, model.cfg.d_model, device=tokens.device, dtype=work_dtype(model))

    def store(index, value):
        buffer[:, :, index:index + value.shape[2]] = value.detach()

    with torch.no_grad(), model.hooks(list(output_hooks(model, store)) + list(extra_hooks)):
        logits = model(tokens)
    return logits, buffer
