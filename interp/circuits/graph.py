"""The computational graph of a transformer as circuits see it, and the hooks that split its inputs.

Nodes that *write* to the residual stream (upstream nodes, in execution order): ``embed`` (the
residual stream entering block 0), every attention head ``a{l}.h{h}`` (its ``hook_result``) and
every MLP ``m{l}``. Nodes that *read* it (downstream inputs): each query head's query input
``a{l}.h{h}`` kind ``q``; each key/value head's key and value inputs ``a{l}.kv{g}`` kinds ``k`` and
``v`` (GQA: k and v belong to the KV head, shared by ``n_heads / n_kv_heads`` query heads); each
MLP's input ``m{l}`` kind ``mlp``; and ``logits`` (the final norm's input). An edge ``u -> v``
exists when ``u`` runs before ``v`` reads: the residual stream at ``v``'s input is
``embed + sum_u out_u`` (+ constant biases), so every edge is one term of that sum.

:func:`split_inputs` gives every downstream input its own copy of the residual stream on the
original Hugging Face modules, without re-implementing the model. For block ``l``:

* a forward hook on the pre-attention norm computes ``norm(x[:, :, None] + delta)`` with
  ``delta [batch, pos, slots, d_model]``, one slot per q head, k head and v head (TransformerLens'
  ``use_split_qkv_input``), by calling the norm module itself on the widened tensor;
* forward hooks on ``q_proj``, ``k_proj``, ``v_proj`` replace each projection's output by the
  per-head projection of that head's own slot (the module's weights, sliced per head);
* a forward pre-hook on the pre-MLP norm adds the MLP's ``delta`` to its input, and one on the
  final norm adds the logits' ``delta``. The skip connections keep the unmodified stream.

With ``delta`` a zero tensor that requires grad, ``d metric / d delta`` is the gradient with
respect to the residual stream *as seen by* that one input (everything downstream included); with
``delta = sum over removed edges of (corrupted out_u - current out_u)`` the run is the circuit's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import torch
from torch import nn

from interp.errors import InterpError
from interp.models.architectures import BLOCK_NORMS
from interp.hooks import HookedModel, hook_name
from interp.hooks.modules import module_hooks

# Per architecture: (pre-attention norm, pre-MLP norm) inside a block, and the final norm.
# Only architectures whose blocks add attention and MLP outputs straight into the residual stream
# (no post-norms, no embedding scale applied outside the embedding module) qualify.
KINDS = ("q", "k", "v", "mlp", "logits")


def circuit_modules(model: HookedModel) -> tuple[list[nn.Module], list[nn.Module], nn.Module]:
    """(pre-attention norms, pre-MLP norms, final norm) of ``model``, or an error for unsupported architectures."""
    spec = model.architecture_spec
    if spec.attn_norm is None or spec.mlp_norm is None or spec.final_norm is None:
        raise InterpError(
            f"circuit discovery does not support architecture {model.cfg.architecture!r} yet; "
            f"supported: {', '.join(sorted(BLOCK_NORMS))}"
        )
    return ([block.get_submodule(spec.attn_norm) for block in model.layers],
            [block.get_submodule(spec.mlp_norm) for block in model.layers],
            model.model.get_submodule(spec.final_norm))


@dataclass(frozen=True)
class CircuitGraph:
    """Node and input indexing for a model with ``n_layers`` blocks of ``n_heads`` query / ``n_kv_heads`` KV heads.

    Upstream index: ``embed`` = 0, head ``(l, h)`` = ``1 + l * (n_heads + 1) + h``, MLP ``l`` =
    ``1 + l * (n_heads + 1) + n_heads``. Downstream index: per layer, ``n_heads`` q slots, then
    ``n_kv_heads`` k slots, ``n_kv_heads`` v slots, one MLP slot; ``logits`` last.
    """

    n_layers: int
    n_heads: int
    n_kv_heads: int

    @classmethod
    def of(cls, model: HookedModel) -> CircuitGraph:
        return cls(model.cfg.n_layers, model.cfg.n_heads, model.cfg.n_kv_heads)

    # sizes -------------------------------------------------------------------------------
    @property
    def slots(self) -> int:
        """Attention input slots per layer: q per query head, k and v per KV head."""
        return self.n_heads + 2 * self.n_kv_heads

    @property
    def per_layer_up(self) -> int:
        return self.n_heads + 1

    @property
    def n_up(self) -> int:
        return 1 + self.n_layers * self.per_layer_up

    @property
    def per_layer_down(self) -> int:
        return self.slots + 1

    @property
    def n_down(self) -> int:
        return self.n_layers * self.per_layer_down + 1

    # indices -----------------------------------------------------------------------------
    def head_index(self, layer: int, head: int) -> int:
        return 1 + layer * self.per_layer_up + head

    def mlp_index(self, layer: int) -> int:
        return 1 + layer * self.per_layer_up + self.n_heads

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
        return 1 + layer * self.per_layer_up + self.n_heads

    # names -------------------------------------------------------------------------------
    @cached_property
    def up_names(self) -> list[str]:
        names = ["embed"]
        for layer in range(self.n_layers):
            names += [f"a{layer}.h{h}" for h in range(self.n_heads)] + [f"m{layer}"]
        return names

    @cached_property
    def down_info(self) -> list[tuple[str, str, int]]:
        """``(name, kind, layer)`` per downstream index (``logits`` has layer ``n_layers``)."""
        info = []
        for layer in range(self.n_layers):
            info += [(f"a{layer}.h{h}", "q", layer) for h in range(self.n_heads)]
            info += [(f"a{layer}.kv{g}", "k", layer) for g in range(self.n_kv_heads)]
            info += [(f"a{layer}.kv{g}", "v", layer) for g in range(self.n_kv_heads)]
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
                    raise InterpError(f"{upstream} -> {downstream} ({kind}) is not an edge: {upstream} runs later")
                return u, j
        raise InterpError(f"unknown downstream input {downstream!r} of kind {kind!r}")


# Called when an input reads the residual stream: (group, layer, x) -> delta or None, where group is
# "attn" (delta [batch, pos, slots, d_model]), "mlp" or "logits" ([batch, pos, d_model]).
DeltaFn = Callable[[str, int, torch.Tensor], torch.Tensor | None]


@contextmanager
def split_inputs(model: HookedModel, delta: DeltaFn) -> Iterator[None]:
    """Give every downstream input its own residual stream ``x + delta`` for the ``with`` block (see module doc)."""
    graph = CircuitGraph.of(model)
    attn_norms, mlp_norms, final_norm = circuit_modules(model)
    H, KV, D = graph.n_heads, graph.n_kv_heads, model.cfg.d_head
    normed: dict[int, torch.Tensor] = {}

    def attn_norm_hook(layer: int):
        def hook(module, args, output):
            x = args[0]
            d = delta("attn", layer, x)
            if d is None:
                normed.pop(layer, None)
                return None
            normed[layer] = module.forward(x.unsqueeze(2) + d)
            return None
        return hook

    def proj_hook(layer: int, start: int, count: int):
        def hook(module, args, output):
            split = normed.get(layer)
            if split is None:
                return None
            inputs = split[:, :, start:start + count]  # [batch, pos, heads, d_model]
            weight = module.weight.reshape(count, D, -1)
            out = torch.einsum("bphm,hdm->bphd", inputs.to(weight.dtype), weight).reshape(*output.shape)
            if module.bias is not None:
                out = out + module.bias
            if start + count == graph.slots:
                normed.pop(layer, None)
            return out
        return hook

    def pre_hook(group: str, layer: int):
        def hook(module, args):
            x = args[0]
            d = delta(group, layer, x)
            if d is None:
                return None
            return (x + d, *args[1:])
        return hook

    forward, pre = [], []
    for layer in range(graph.n_layers):
        attention = model.attention_module(layer)
        forward += [(attn_norms[layer], attn_norm_hook(layer)), (attention.q_proj, proj_hook(layer, 0, H)),
                    (attention.k_proj, proj_hook(layer, H, KV)), (attention.v_proj, proj_hook(layer, H + KV, KV))]
        pre.append((mlp_norms[layer], pre_hook("mlp", layer)))
    pre.append((final_norm, pre_hook("logits", graph.n_layers)))
    try:
        with module_hooks(forward, pre):
            yield
    finally:
        normed.clear()


def work_dtype(model: HookedModel) -> torch.dtype:
    """float64 for a float64 model (exact checks), else float32 (whatever the model's dtype)."""
    return torch.float64 if next(model.model.parameters()).dtype == torch.float64 else torch.float32


def output_hooks(model: HookedModel, store: Callable[[int, torch.Tensor], None]) -> list[tuple[str, Callable]]:
    """Hook pairs calling ``store(first_up_index, value [batch, pos, n, d_model])`` as each upstream node writes.

    ``embed`` is the residual stream entering block 0; heads come from ``hook_result``, MLPs from
    ``hook_mlp_out``. Values are passed as computed (detach them to keep them).
    """
    graph = CircuitGraph.of(model)

    def embed(activation, hook):
        store(0, activation.unsqueeze(2))

    def result(layer):
        def fn(activation, hook):
            store(graph.head_index(layer, 0), activation)
        return fn

    def mlp(layer):
        def fn(activation, hook):
            store(graph.mlp_index(layer), activation.unsqueeze(2))
        return fn

    pairs = [(hook_name(0, "hook_resid_pre"), embed)]
    for layer in range(graph.n_layers):
        pairs.append((hook_name(layer, "attn.hook_result"), result(layer)))
        pairs.append((hook_name(layer, "hook_mlp_out"), mlp(layer)))
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
