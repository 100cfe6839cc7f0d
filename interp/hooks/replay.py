"""Replay a recorded forward from a later block and position: the machinery of fast causal sweeps.

A patch at block ``l`` cannot change what blocks ``< l`` compute, and under causal attention a patch at
position ``p`` cannot change positions ``< p``. :func:`record` runs the base input once and keeps block
0's input, every block's output residual stream, the logits and (where that is exact) every layer's
keys and values. :meth:`Recording.run` then evaluates ``groups`` patched copies of the base in one
forward of the model's own modules, starting at block ``start`` and position ``prefix``:

- blocks ``< start`` are replaced, for the call, by a replay of their recorded outputs (their forward
  is not run, their output hooks still fire); with ``start == 0`` block 0 receives the recorded
  residual stream, so interventions of the base run at ``hook_embed`` carry over;
- positions ``< prefix`` are not run at all: every layer reads their keys and values from a
  ``transformers.DynamicCache`` filled with the recorded ones, so the model itself offsets positions,
  rotary embeddings and masks exactly as in generation;
- everything else (embeddings, masks, rotary, final norm, unembedding, soft-capping) is the model's
  own forward, so no architecture is rebuilt by hand.

Prefix reuse is exact when attention is causal and every query sees all earlier keys. A model with a
sliding or local attention window shorter than the prompt (Mistral, Gemma 2, GPT-Neo local layers) or
a chunked-attention config falls back to block reuse alone (:attr:`Recording.prefix_reason` says why).

Hooks registered with ``fwd_hooks`` see the shortened activations: position ``i`` of a hook's ``pos``
axis is absolute position ``prefix + i`` (``hook_k`` / ``hook_v`` include the cached prefix, as the
attention function receives them). ``reuse="none"`` runs every call as one plain full forward
(debugging, benchmark baseline); ``"layers"`` reuses blocks only; ``"auto"`` (default) reuses both.

Use :func:`plan_batches` to group cells so that each forward shares one ``(start, prefix)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from interp.errors import InterpError
from interp.hooks.points import HookFn, first_tensor, parse_hook_name

if TYPE_CHECKING:
    from interp.hooks.model import ActivationCache, HookedModel

REUSE_MODES = ("auto", "layers", "none")

# Planner costs, in units of "one token row through one block": the fixed cost of running a block once,
# and of one model forward besides its blocks. On an idle 2-core CPU a 1-token SmolLM2 block call costs
# about 30 token rows of a large batch; on a shared one small calls cost far more (each op waits for its
# time slice), so the planner leans to fewer, larger calls: IOI resid_pre on a loaded box ran 99 s with
# (32, 64) and 47 s with (200, 2000).
BLOCK_CALL_COST = 50.0
FORWARD_COST = 500.0
# While adapting threads (see Recording.batches): re-try the other thread count every this many batches.
THREAD_PROBE_EVERY = 8


def check_reuse(reuse: str) -> str:
    if reuse not in REUSE_MODES:
        raise InterpError(f"unknown reuse={reuse!r}; use 'auto' (blocks and prefix), 'layers' (blocks only) or 'none'")
    return reuse


def attention_window(config: Any) -> int | None:
    """The smallest number of keys a query may see in some layer (sliding / local / chunked attention), or None."""
    windows = []
    layer_types = getattr(config, "layer_types", None)
    sliding = getattr(config, "sliding_window", None)
    if isinstance(sliding, int) and sliding > 0 and (layer_types is None or any(t != "full_attention" for t in layer_types)):
        windows.append(sliding)
    local = getattr(config, "window_size", None)  # GPT-Neo's local layers
    if isinstance(local, int) and "local" in (getattr(config, "attention_layers", None) or []):
        windows.append(local)
    chunk = getattr(config, "attention_chunk_size", None)
    if isinstance(chunk, int) and chunk > 0:
        windows.append(chunk)
    return min(windows) if windows else None



def _rows(tensor: torch.Tensor, groups: int) -> torch.Tensor:
    """``[rows, ...]`` -> ``[groups * rows, ...]``, group-major (a view when ``rows == 1``)."""
    if groups == 1:
        return tensor
    if tensor.shape[0] == 1:
        return tensor.expand(groups, *tensor.shape[1:])
    return tensor.repeat(groups, *([1] * (tensor.ndim - 1)))


@dataclass
class Batch:
    """Cells (indices into the caller's list) run in one forward from block ``start`` and position ``prefix``."""

    cells: list[int]
    start: int
    prefix: int
    cost: float = 1.0  # the planner's estimate of its work (token rows x blocks, plus overheads)
    # Staggered batches: each cell's own start block (nondecreasing, ``starts[0] == start``); pass it to
    # Recording.run so each cell's rows join the forward at their own block. None: every cell at ``start``.
    starts: list[int] | None = None


@dataclass
class Recording:
    """One base run, kept so that patched copies of it can start later (see the module docstring)."""

    model: HookedModel
    tokens: torch.Tensor  # [rows, pos]
    base_hooks: list[tuple[str, HookFn]]
    reuse: str
    inputs: list[torch.Tensor | None]  # residual stream entering block 0 [rows, pos, d_model] (later: None, see outputs)
    outputs: list[torch.Tensor]  # per block: residual stream leaving it
    tuple_outputs: list[int]  # per block: 0 if it returns a tensor, else the tuple's length
    logits: torch.Tensor  # [rows, pos, vocab]
    keys: list[torch.Tensor] | None = None  # per layer [rows, kv_head, pos, d_head], when prefix reuse is exact
    values: list[torch.Tensor] | None = None
    prefix_reason: str | None = None  # why prefix reuse is off, if it is
    calls: int = field(default=0)

    @property
    def n_rows(self) -> int:
        return self.tokens.shape[0]

    @property
    def n_pos(self) -> int:
        return self.tokens.shape[1]

    @property
    def prefix_ok(self) -> bool:
        return self.reuse == "auto" and self.keys is not None

    def clamp(self, start: int, prefix: int) -> tuple[int, int]:
        """The ``(start, prefix)`` this recording can actually use for a cell that allows ``(start, prefix)``."""
        if self.reuse == "none":
            return 0, 0
        return max(0, min(start, self.model.cfg.n_layers)), (min(max(0, prefix), self.n_pos - 1) if self.prefix_ok else 0)

    # ------------------------------------------------------------------ running
    def batches(self, plan: Sequence[Batch], *, adapt_threads: bool | None = None) -> Iterator[Batch]:
        """Iterate over ``plan``, choosing torch's thread count between batches.

        On a shared CPU, torch's default (one thread per core) can be several times slower than one
        thread when another process holds a core, because every op waits for its slowest thread. With
        ``adapt_threads`` (default: only under ``INTERP_THREADS=auto``, unless ``reuse="none"``, with more than one thread and at least
        ``THREAD_PROBE_EVERY`` batches, so that the probe costs little) the first batches run with the
        default and with one thread, the faster per estimated unit of work is kept, and the other is
        re-tried every ``THREAD_PROBE_EVERY`` batches. With fewer batches (on a CPU) the count is
        chosen once by :func:`interp.threads.faster_thread_count`. The thread count is restored at the end.
        """
        import time

        from interp.threads import adaptive, faster_thread_count

        default = torch.get_num_threads()
        if adapt_threads is None and not adaptive():
            adapt_threads = False  # the count stays fixed unless INTERP_THREADS=auto (see interp.threads)
        adapt = (self.reuse != "none" and len(plan) >= THREAD_PROBE_EVERY if adapt_threads is None else adapt_threads)
        adapt = adapt and default > 1 and len(plan) > 2
        choices = (default, 1)
        rate = {default: None, 1: None}  # seconds per unit of estimated cost
        best = default
        try:
            if not adapt and adapt_threads is None and self.reuse != "none" and len(plan) > 1 and self.model.device.type == "cpu":
                best = faster_thread_count(default)  # too few batches to time them: time a small matrix product
                torch.set_num_threads(best)
            for i, batch in enumerate(plan):
                threads = best
                if adapt:
                    if i < 2:
                        threads = choices[i]
                    elif i % THREAD_PROBE_EVERY == 0:
                        threads = choices[1] if best == choices[0] else choices[0]
                    torch.set_num_threads(threads)
                began = time.perf_counter()
                yield batch
                if adapt:
                    seconds = (time.perf_counter() - began) / max(batch.cost, 1e-9)
                    previous = rate[threads]
                    rate[threads] = seconds if previous is None else 0.5 * (previous + seconds)
                    known = [(r, t) for t, r in rate.items() if r is not None]
                    best = min(known)[1]
        finally:
            torch.set_num_threads(default)

    def run(
        self,
        groups: int,
        *,
        start: int = 0,
        prefix: int = 0,
        starts: Sequence[int] | None = None,
        fwd_hooks: Iterable[tuple[str, HookFn]] = (),
        last_only: bool = False,
        logits_to_keep: int = 0,
    ) -> torch.Tensor:
        """Logits of ``groups`` copies of the base (rows group-major) with ``fwd_hooks`` added.

        Returns ``[groups * rows, pos, vocab]``, or the last ``logits_to_keep`` positions only (``last_only``:
        the last one); positions ``< prefix`` are the recorded base logits. Hooks must act at
        blocks ``>= start`` (anything earlier is replayed) and index positions relative to ``prefix``.

        ``starts`` (one nondecreasing start block per group) staggers the forward: group ``g``'s rows
        join at block ``starts[g]`` with the recorded residual stream, so no group runs a block before
        its own start. Blocks see only the groups that have joined, in order (group ``g`` is rows
        ``g * rows ..``), so a group's hooks must act at or after its own start.
        """
        hooks = list(fwd_hooks)
        if starts is not None:
            starts = [self.clamp(s, prefix)[0] for s in starts]
            if len(starts) != groups or any(b < a for a, b in zip(starts, starts[1:])):
                raise InterpError(f"starts must give one nondecreasing start block per group ({groups}), got {list(starts)}")
            start = starts[0]
        start, prefix = self.clamp(start, prefix)
        keep = 1 if last_only else logits_to_keep
        if keep < 0:
            raise InterpError(f"logits_to_keep must be >= 0 (0 = every position), got {logits_to_keep}")
        model = self.model
        self.calls += 1
        if self.reuse == "none":
            logits = model.run_with_hooks(self.tokens.repeat(groups, 1), fwd_hooks=self.base_hooks + hooks, logits_to_keep=keep)
            return logits
        self._check_hooks(hooks, start)
        joined = [sum(1 for s in starts if s <= layer) if starts is not None else groups for layer in range(self.model.cfg.n_layers)]
        first = joined[start] if start < len(joined) else groups
        cache = None
        if prefix > 0:
            from transformers import DynamicCache

            cache = DynamicCache(
                ddp_cache_data=[
                    (_rows(k[:, :, :prefix], max(first, joined[layer])), _rows(v[:, :, :prefix], max(first, joined[layer])))
                    for layer, (k, v) in enumerate(zip(self.keys, self.values))
                ]
            )
        if starts is None:
            starts = [start] * groups
        with self._replayed(starts, prefix), model.hooks(hooks):
            logits = model.model(
                input_ids=_rows(self.tokens[:, prefix:], first),
                cache=cache,
                use_cache=cache is not None,
                logits_to_keep=min(keep, self.n_pos - prefix),
            ).logits
        if prefix == 0 or 0 < keep <= self.n_pos - prefix:
            return logits
        recorded = self.logits[:, :prefix] if keep == 0 else self.logits[:, self.n_pos - keep : prefix]
        return torch.cat([_rows(recorded, groups).to(logits.dtype), logits], dim=1)

    def _check_hooks(self, hooks: Sequence[tuple[str, HookFn]], start: int) -> None:
        n_layers = self.model.cfg.n_layers
        for name, _ in hooks:
            point = parse_hook_name(name, n_layers)
            layer = point.layer if point.layer is not None else -1
            # hook_resid_post of the block just before `start` still fires (on the replayed output).
            if layer < start - (1 if point.site == "hook_resid_post" else 0):
                raise InterpError(f"hook {name} acts before block {start}, where this replay starts; start earlier")

    @contextmanager
    def _replayed(self, starts: Sequence[int], prefix: int) -> Iterator[None]:
        """Replay blocks before ``starts[0]``; let each later group join at the output of the block before its start."""
        blocks = self.model.layers
        n_rows, start = self.n_rows, starts[0]
        first = sum(1 for s in starts if s == start)
        joining = {layer: sum(1 for s in starts if s == layer) for layer in set(starts) if layer > start}
        saved = {}
        handles = []

        def replay_output(layer: int):
            def forward(*args: Any, **kwargs: Any) -> Any:
                value = _rows(self.outputs[layer][:, prefix:], first)
                n = self.tuple_outputs[layer]
                return (value, *([None] * (n - 1))) if n else value

            return forward

        def enter_hook(module, args, kwargs):
            value = _rows(self.inputs[0][:, prefix:], first)
            if args:
                return (value, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": value}

        def join_hook(layer: int, count: int):
            # Runs first among block `layer`'s output hooks: the joining groups' rows are the recorded
            # residual stream leaving that block, so hook_resid_post already sees them.
            def hook(module, args, output):
                hidden = first_tensor(output)
                grown = torch.cat([hidden, _rows(self.outputs[layer][:, prefix:], count).to(hidden.dtype)], dim=0)
                return (grown, *output[1:]) if isinstance(output, tuple) else grown

            return hook

        def widen_hook(module, args, kwargs):
            # The model built masks / position embeddings for the first groups' rows; joined groups
            # are copies of the same prompts, so their rows repeat the first `n_rows` (group-major).
            hidden = args[0] if args else kwargs["hidden_states"]
            rows = hidden.shape[0]
            if rows == first * n_rows:
                return None
            widen = lambda value: _widen(value, first * n_rows, rows, n_rows)  # noqa: E731
            return (hidden, *(widen(a) for a in args[1:])), {
                key: value if key in ("hidden_states", "cache_position") else widen(value) for key, value in kwargs.items()
            }

        try:
            for layer in range(start):
                block = blocks[layer]
                saved[layer] = block.__dict__.get("forward")
                block.forward = replay_output(layer)
            if start == 0:  # later blocks receive the replayed output of block start - 1 (after its hooks)
                handles.append(blocks[start].register_forward_pre_hook(enter_hook, with_kwargs=True, prepend=True))
            for layer, count in joining.items():
                handles.append(blocks[layer - 1].register_forward_hook(join_hook(layer - 1, count), prepend=True))
            if joining:
                for layer in range(start + 1, len(blocks)):
                    handles.append(blocks[layer].register_forward_pre_hook(widen_hook, with_kwargs=True, prepend=True))
            yield
        finally:
            for handle in handles:
                handle.remove()
            for layer, original in saved.items():
                if original is None:
                    del blocks[layer].forward
                else:
                    blocks[layer].forward = original


def _widen(value: Any, old: int, new: int, n_rows: int) -> Any:
    """``value`` with a leading batch axis of ``old`` rows tiled to ``new`` (its first ``n_rows``, repeated)."""
    if isinstance(value, tuple):
        return tuple(_widen(v, old, new, n_rows) for v in value)
    if isinstance(value, list):
        return [_widen(v, old, new, n_rows) for v in value]
    if not isinstance(value, torch.Tensor) or value.ndim < 2 or value.shape[0] != old:
        return value
    return _rows(value[:n_rows], new // n_rows)


def record(
    model: HookedModel,
    tokens: torch.Tensor,
    *,
    fwd_hooks: Iterable[tuple[str, HookFn]] = (),
    names: Sequence[str] = (),
    reuse: str = "auto",
) -> tuple[Recording, ActivationCache]:
    """Run ``tokens [rows, pos]`` once with ``fwd_hooks`` (the base run's own interventions, e.g. noise at
    ``hook_embed``) and keep what :meth:`Recording.run` needs; also returns the activations at ``names``.

    ``fwd_hooks`` define the base run: replayed calls inherit their effect through the recorded residual
    stream, so they must act before any block a later call starts at (``hook_embed`` always qualifies).
    """
    from transformers import DynamicCache

    from interp.hooks.model import ActivationCache

    check_reuse(reuse)
    base_hooks = list(fwd_hooks)
    n_layers, n_pos = model.cfg.n_layers, tokens.shape[1]
    inputs: list[Any] = [None] * n_layers
    outputs: list[Any] = [None] * n_layers
    tuple_outputs = [0] * n_layers
    saved = ActivationCache()

    def save(activation: torch.Tensor, hook) -> None:
        saved[hook.name] = activation.detach()

    def enter(layer: int):
        def hook(module, args, kwargs):
            inputs[layer] = (args[0] if args else kwargs["hidden_states"]).detach()

        return hook

    def leave(layer: int):
        def hook(module, args, output):
            outputs[layer] = first_tensor(output).detach()
            tuple_outputs[layer] = len(output) if isinstance(output, tuple) else 0

        return hook

    window = attention_window(model.model.config)
    reason = None
    if reuse != "auto":
        reason = f"reuse={reuse!r}"
    elif window is not None and window < n_pos:
        reason = f"an attention window of {window} keys is shorter than the prompt ({n_pos} tokens)"
    cache = DynamicCache() if reason is None and reuse != "none" else None
    handles = []
    try:
        if reuse != "none":
            # Block l > 0 enters with block l - 1's output: only block 0's input is kept.
            handles.append(model.layers[0].register_forward_pre_hook(enter(0), with_kwargs=True))
            for layer, block in enumerate(model.layers):
                handles.append(block.register_forward_hook(leave(layer)))
        with torch.no_grad(), model.hooks(base_hooks + [(name, save) for name in names]):
            out = model.model(input_ids=tokens, cache=cache, use_cache=cache is not None)
    finally:
        for handle in handles:
            handle.remove()
    keys = values = None
    if cache is not None:
        layers = getattr(cache, "layers", None)
        if (
            type(cache).__name__ == "DynamicCache"
            and layers is not None
            and len(layers) == n_layers
            and all(getattr(layer, "keys", None) is not None and layer.keys.shape[-2] == n_pos for layer in layers)
        ):
            keys = [layer.keys for layer in layers]
            values = [layer.values for layer in layers]
        else:
            reason = "the model's cache does not hold every layer's keys for every position"
    recording = Recording(
        model=model, tokens=tokens, base_hooks=base_hooks, reuse=reuse, inputs=inputs, outputs=outputs,
        tuple_outputs=tuple_outputs, logits=out.logits, keys=keys, values=values, prefix_reason=reason,
    )
    return recording, ActivationCache((name, saved[name]) for name in names if name in saved)


def block_cost_ratio(model: HookedModel) -> float:
    """Unembedding cost per token row, in blocks (lm head parameters / one block's parameters)."""
    block = sum(p.numel() for p in model.layers[0].parameters())
    return model.cfg.d_vocab * model.cfg.d_model / max(1, block)


def plan_batches(
    recording: Recording,
    needs: Sequence[tuple[int, int]],
    *,
    rows_per_cell: int,
    max_rows: int,
    last_only: bool,
    staggered: bool = True,
) -> list[Batch]:
    """Group cells into forwards that share one prefix, minimizing estimated work.

    ``needs[i] = (start, prefix)``: the latest block and position cell ``i`` may start at. A batch
    runs from its cells' smallest prefix and holds at most ``max_rows`` rows. The cost model counts
    token rows x blocks run plus per-call overheads.

    ``staggered`` (default): each cell joins its batch's forward at its own start block
    (:attr:`Batch.starts`, for :meth:`Recording.run`), so only the prefix is shared; cells ordered
    by (prefix, start) are cut into batches by dynamic programming. The caller must pass
    ``starts=batch.starts`` and give each cell hooks only at or after its own start.

    Otherwise a batch also shares its smallest start: cells ordered by (prefix, start) and by
    (start, prefix) are each cut by the same dynamic program, and the cheaper plan is kept.

    With ``reuse="none"`` cells keep their order and are cut into full batches.
    """
    per_batch = max(1, max_rows // max(1, rows_per_cell))
    n = len(needs)
    if recording.reuse == "none":
        return [Batch(list(range(i, min(n, i + per_batch))), 0, 0, float(min(n, i + per_batch) - i)) for i in range(0, n, per_batch)]
    if n == 0:
        return []
    clamped = [recording.clamp(s, p) for s, p in needs]
    n_layers, n_pos = recording.model.cfg.n_layers, recording.n_pos
    head = block_cost_ratio(recording.model)

    def cost(k: int, start: int, prefix: int, blocks: int) -> float:
        """``k`` cells from ``start`` and ``prefix`` that run ``blocks`` cell-blocks in all."""
        if not staggered:
            blocks = k * (n_layers - start)
        run = n_pos - prefix
        return (FORWARD_COST + (n_layers - start) * BLOCK_CALL_COST + rows_per_cell * run * blocks
                + head * k * rows_per_cell * (1 if last_only else run))

    def batch_of(cells: list[int]) -> Batch:
        cells = sorted(cells, key=lambda i: (clamped[i][0], i))  # staggered rows join in start order
        starts = [clamped[i][0] for i in cells]
        prefix = min(clamped[i][1] for i in cells)
        return Batch(cells, starts[0], prefix, cost(len(cells), starts[0], prefix, sum(n_layers - s for s in starts)),
                     starts if staggered else None)

    orders = [sorted(range(n), key=lambda i: (clamped[i][1], clamped[i][0], i))]
    if not staggered:
        orders.append(sorted(range(n), key=lambda i: (clamped[i][0], clamped[i][1], i)))
    plans = [[batch_of(cells) for cells in _cut(order, clamped, per_batch, cost, n_layers, n_pos)] for order in orders]
    return min(plans, key=lambda plan: sum(batch.cost for batch in plan))


CostFn = Callable[[int, int, int, int], float]


def _cut(order: list[int], clamped: list[tuple[int, int]], per_batch: int, cost: CostFn, n_layers: int, n_pos: int) -> list[list[int]]:
    """Cut ``order`` into consecutive batches of at most ``per_batch`` cells, minimizing total ``cost``."""
    n = len(order)
    total = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        start, prefix, blocks = n_layers, n_pos, 0
        for begin in range(end - 1, max(-1, end - 1 - per_batch), -1):
            s, p = clamped[order[begin]]
            start, prefix, blocks = min(start, s), min(prefix, p), blocks + n_layers - s
            value = total[begin] + cost(end - begin, start, prefix, blocks)
            if value < total[end]:
                total[end], cut[end] = value, begin
    plan, end = [], n
    while end > 0:
        plan.append([order[i] for i in range(cut[end], end)])
        end = cut[end]
    return plan[::-1]
