"""Q-, K- and V-composition scores between attention heads (Elhage et al., "A Mathematical Framework
for Transformer Circuits", 2021), from the model's own weights.

Row-vector convention (as TransformerLens): a head reads ``x @ W_Q``, ``x @ W_K``, ``x @ W_V`` and
writes ``z @ W_O``, so ``W_QK = W_Q W_K^T`` and ``W_OV = W_V W_O`` are ``[d_model, d_model]``. For an
earlier head h1 and a later head h2::

    Q: ||W_OV^h1 W_QK^h2||_F    / (||W_OV^h1||_F ||W_QK^h2||_F)   (h1 writes what h2's queries read)
    K: ||W_OV^h1 W_QK^h2^T||_F  / (||W_OV^h1||_F ||W_QK^h2||_F)   (h1 writes what h2's keys read)
    V: ||W_OV^h1 W_OV^h2||_F    / (||W_OV^h1||_F ||W_OV^h2||_F)   (h1 writes what h2's values read)

the paper's ``W_QK^h2^T W_OV^h1`` etc. transposed into this convention. Biases are ignored; rotary
embeddings are ignored (as usual); GQA query heads use the key/value head they share. LayerNorm /
RMSNorm gains are *not* folded by default (interp works on the original HF weights); pass
``fold_norm=True`` to scale W_Q, W_K, W_V rows by the reading layer's input-norm gain (centering is
never folded). Scores lie in [0, 1]; read them against :func:`composition_baseline`, the mean score
of random Gaussian matrices of the same shapes (the ``ratio`` column).

Products are never formed at ``d_model x d_model``: every matrix is a rank-``d_head`` product, so a
score needs only ``d_head x d_head`` pieces (QR of the outer factors preserves Frobenius norms).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
import torch

from interp.errors import InterpError
from interp.hooks import HookedModel

KINDS = ("q", "k", "v")


@dataclass
class HeadWeights:
    """Per-head weights of one layer in row-vector form: ``W_Q [head, d_model, d_head]``,
    ``W_K``/``W_V [kv_head, d_model, d_head]``, ``W_O [head, d_head, d_model]``."""

    W_Q: torch.Tensor
    W_K: torch.Tensor
    W_V: torch.Tensor
    W_O: torch.Tensor


def _in_out(module: torch.nn.Module) -> torch.Tensor:
    """A projection's weight as ``[in, out]`` (Conv1D stores it that way, nn.Linear transposed)."""
    return module.weight if type(module).__name__ == "Conv1D" else module.weight.T


def _norm_gain(model: HookedModel, layer: int) -> torch.Tensor:
    block = model.layers[layer]
    for name in ("input_layernorm", "ln_1"):
        norm = getattr(block, name, None)
        if norm is not None and getattr(norm, "weight", None) is not None:
            gain = norm.weight.detach().float()
            # Gemma's RMSNorm multiplies by (1 + weight).
            return gain + 1 if model.cfg.architecture in ("gemma", "gemma2") else gain
    raise InterpError(f"fold_norm: no pre-attention norm gain found for {model.cfg.architecture}; use fold_norm=False")


def head_weights(model: HookedModel, layer: int, *, fold_norm: bool = False) -> HeadWeights:
    """Per-head ``W_Q, W_K, W_V, W_O`` of ``layer`` (float32, detached) for the supported layouts:
    separate ``q_proj/k_proj/v_proj`` (Llama family, GPT-Neo), GPT-2's fused ``c_attn`` (Conv1D) and
    GPT-NeoX's per-head interleaved ``query_key_value``."""
    cfg = model.cfg
    attention = model.attention_module(layer)
    d, r, nh, nkv = cfg.d_model, cfg.d_head, cfg.n_heads, cfg.n_kv_heads
    with torch.no_grad():
        if all(hasattr(attention, n) for n in ("q_proj", "k_proj", "v_proj")):
            wq, wk, wv = (_in_out(getattr(attention, n)) for n in ("q_proj", "k_proj", "v_proj"))
        elif hasattr(attention, "c_attn"):
            wq, wk, wv = _in_out(attention.c_attn).split([nh * r, nkv * r, nkv * r], dim=1)
        elif hasattr(attention, "query_key_value"):
            fused = _in_out(attention.query_key_value).reshape(d, nh, 3, r)
            wq, wk, wv = (fused[:, :, i].reshape(d, nh * r) for i in range(3))
        else:
            raise InterpError(f"composition scores: unknown attention layout in {type(attention).__name__}")
        split = lambda w, n: w.detach().float().reshape(d, n, r).permute(1, 0, 2)  # noqa: E731
        weights = HeadWeights(split(wq, nh), split(wk, nkv), split(wv, nkv), model.W_O(layer).detach().float())
        if fold_norm:
            gain = _norm_gain(model, layer)[None, :, None]
            weights.W_Q, weights.W_K, weights.W_V = weights.W_Q * gain, weights.W_K * gain, weights.W_V * gain
    return weights


def _r_factor(x: torch.Tensor) -> torch.Tensor:
    """``R [..., r, r]`` with ``R^T R = x^T x`` (``x [..., d, r]``), so ``||A x^T||_F = ||A R^T||_F`` for any ``A``.

    Cholesky of the Gram matrix (batched QR is slow on CPU); rank-deficient heads fall back to its
    symmetric square root.
    """
    gram = x.double().transpose(-1, -2) @ x.double()
    lower, info = torch.linalg.cholesky_ex(gram)
    factor = lower.transpose(-1, -2)
    if bool((info != 0).any()):
        bad = info != 0
        values, vectors = torch.linalg.eigh(gram[bad])
        factor[bad] = values.clamp_min(0).sqrt()[..., :, None] * vectors.transpose(-1, -2)
    return factor.float()


@dataclass
class _Factors:
    """The pieces the scores need, for a stack of heads (leading dim ``[n]``, GQA expanded).

    With ``R_V^T R_V = W_V^T W_V``, ``R_O^T R_O = W_O W_O^T`` etc., ``||W_OV^1 X Y^T||_F = ||(R_V1 W_O1) (X R_Y^T)||_F``:
    ``left = R_V W_O`` is ``[n, d_head, d_model]`` and the ``right_*`` reading factors ``[n, d_model, d_head]``.
    """

    W_Q: torch.Tensor  # [n, d_model, d_head]
    W_K: torch.Tensor
    W_V: torch.Tensor
    W_O: torch.Tensor  # [n, d_head, d_model]

    def __post_init__(self) -> None:
        r_q, r_k, r_v = _r_factor(self.W_Q), _r_factor(self.W_K), _r_factor(self.W_V)
        r_o = _r_factor(self.W_O.transpose(-1, -2))
        self.left = r_v @ self.W_O.float()
        self.right = {
            "q": self.W_Q.float() @ r_k.transpose(-1, -2),
            "k": self.W_K.float() @ r_q.transpose(-1, -2),
            "v": self.W_V.float() @ r_o.transpose(-1, -2),
        }
        self.norm_ov = torch.linalg.matrix_norm(self.left.double())
        self.norm_qk = torch.linalg.matrix_norm(self.right["q"].double())


def _pair_scores(kind: str, source: _Factors, target: _Factors, *, paired: bool = False) -> torch.Tensor:
    """Scores of ``kind`` from ``source`` heads into ``target`` heads: ``[n_source, n_target]``
    (``paired``: only source i with target i, ``[n]``)."""
    right = target.right[kind]
    norm_to = target.norm_ov if kind == "v" else target.norm_qk
    if paired:
        raw = torch.linalg.matrix_norm((source.left @ right).double())
        return (raw / (source.norm_ov * norm_to)).float()
    n_src, r, d = source.left.shape
    n_tgt = right.shape[0]
    # One GEMM for all pairs: [n_src * r, d] @ [d, n_tgt * r], then a Frobenius norm per block.
    blocks = (source.left.reshape(n_src * r, d) @ right.permute(1, 0, 2).reshape(d, n_tgt * r)).double()
    raw = blocks.reshape(n_src, r, n_tgt, r).square().sum(dim=(1, 3)).sqrt()
    return (raw / (source.norm_ov[:, None] * norm_to[None])).float()


def _layer_factors(model: HookedModel, layer: int, heads: list[int], *, fold_norm: bool) -> _Factors:
    w = head_weights(model, layer, fold_norm=fold_norm)
    kv = [h // model.cfg.n_groups for h in heads]
    return _Factors(w.W_Q[heads], w.W_K[kv], w.W_V[kv], w.W_O[heads])


def composition_baseline(
    d_model: int, d_head: int, *, kinds: Iterable[str] = KINDS, samples: int = 100, seed: int = 0
) -> dict[str, float]:
    """Mean composition score of ``samples`` head pairs with i.i.d. Gaussian ``W_Q, W_K, W_V, W_O`` of
    shapes ``[d_model, d_head]`` / ``[d_head, d_model]`` (the paper's random-matrix baseline)."""
    return dict(_baseline(d_model, d_head, tuple(kinds), samples, seed))


@functools.lru_cache(maxsize=16)
def _baseline(d_model: int, d_head: int, kinds: tuple[str, ...], samples: int, seed: int) -> tuple:
    generator = torch.Generator().manual_seed(seed)

    def heads() -> _Factors:
        draw = lambda *shape: torch.randn(samples, *shape, generator=generator)  # noqa: E731
        return _Factors(draw(d_model, d_head), draw(d_model, d_head), draw(d_model, d_head), draw(d_head, d_model))

    source, target = heads(), heads()
    return tuple((kind, float(_pair_scores(kind, source, target, paired=True).mean())) for kind in kinds)


def composition_scores(
    model: HookedModel,
    *,
    kinds: Iterable[str] = KINDS,
    sources: Iterable[tuple[int, int]] | None = None,
    targets: Iterable[tuple[int, int]] | None = None,
    fold_norm: bool = False,
    baseline_samples: int = 100,
) -> pd.DataFrame:
    """Composition scores for every head pair ``layer_from < layer_to``.

    ``sources`` / ``targets`` (``(layer, head)`` lists; None = all heads) restrict the earlier / later
    head of each pair; ``kinds`` is any of ``"q", "k", "v"``. Returns a tidy frame with columns
    ``layer_from, head_from, layer_to, head_to, kind, score, ratio`` (``ratio = score / baseline``);
    ``attrs["baseline"]`` holds :func:`composition_baseline` per kind. Cost is about
    ``pairs x 2 d_head^2 d_model`` flops per kind (one GEMM per target layer).
    """
    cfg = model.cfg
    kinds = [k.lower() for k in kinds]
    if not kinds or any(k not in KINDS for k in kinds):
        raise InterpError(f"kinds must be some of {', '.join(KINDS)}, got {kinds}")
    wanted_from = None if sources is None else {tuple(map(int, s)) for s in sources}
    wanted_to = None if targets is None else {tuple(map(int, t)) for t in targets}
    heads_from = {l: [h for h in range(cfg.n_heads) if wanted_from is None or (l, h) in wanted_from] for l in range(cfg.n_layers)}
    heads_to = {l: [h for h in range(cfg.n_heads) if wanted_to is None or (l, h) in wanted_to] for l in range(cfg.n_layers)}
    layers_from = [l for l in range(cfg.n_layers) if heads_from[l]]
    layers_to = [l for l in range(cfg.n_layers) if heads_to[l] and layers_from and l > layers_from[0]]
    if not layers_to:
        rows: list[tuple[int, int, int, int, str, float]] = []
    else:
        # All source heads stacked in layer order, so the sources of a target layer are a prefix.
        source_ids = [(l, h) for l in layers_from for h in heads_from[l]]
        per_layer = [_layer_factors(model, l, heads_from[l], fold_norm=fold_norm) for l in layers_from]
        stacked = _Factors(*(torch.cat([getattr(f, n) for f in per_layer]) for n in ("W_Q", "W_K", "W_V", "W_O")))
        rows = []
        for layer_to in layers_to:
            n_src = sum(1 for l, _ in source_ids if l < layer_to)
            source = _Factors.__new__(_Factors)  # the prefix of the stacked sources; only these two are read
            source.left, source.norm_ov = stacked.left[:n_src], stacked.norm_ov[:n_src]
            target = _layer_factors(model, layer_to, heads_to[layer_to], fold_norm=fold_norm)
            for kind in kinds:
                scores = _pair_scores(kind, source, target).tolist()
                for i, (l_from, h_from) in enumerate(source_ids[:n_src]):
                    for j, h_to in enumerate(heads_to[layer_to]):
                        rows.append((l_from, h_from, layer_to, h_to, kind, scores[i][j]))
    frame = pd.DataFrame(rows, columns=["layer_from", "head_from", "layer_to", "head_to", "kind", "score"])
    frame = frame.astype({c: "int64" for c in ("layer_from", "head_from", "layer_to", "head_to")})
    baseline = composition_baseline(cfg.d_model, cfg.d_head, kinds=kinds, samples=baseline_samples)
    frame["ratio"] = frame["score"] / frame["kind"].map(baseline).astype("float64")
    frame.attrs["baseline"] = baseline
    frame.attrs["fold_norm"] = fold_norm
    return frame
