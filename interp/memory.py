"""Memory planning: estimate a scan's peak memory before running it, size the attention kernel's
query chunks to the memory allowed, and fail early if the scan cannot fit.

Estimates are deliberately simple and conservative: the weights, plus the largest transient of the
biggest analysis. Nothing on the scan path is O(N^2) in the sequence length: attention statistics
run through :mod:`interp.kernels` (a fixed-size query chunk on CPU, O(N) on GPU), statistics passes
skip the ``[batch, pos, vocab]`` logits, and the streaming analysis's causal pass (which
materializes one layer's pattern) uses a fixed-length prompt.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from interp.errors import InterpError
from interp.hooks import HookedModel
from interp.kernels.chunked import MIN_CHUNK, default_chunk_size
from interp.settings import ScanSettings, parse_size  # noqa: F401  (parse_size re-exported: interp.memory.parse_size)

# The chunked kernel keeps two score blocks (scores, pattern) plus about one block of temporaries.
KERNEL_BLOCKS = 3

def available_bytes(device: torch.device) -> int:
    """Free memory on ``device``: CUDA's free memory, or the OS's MemAvailable for the CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 2**62


def _longest_forward(settings: ScanSettings) -> int:
    """Tokens per row of the scan's longest statistics forward (the streaming proxy runs at least 2 x window)."""
    return max(settings.context_length, 2 * settings.streaming_window)


def _bytes_per_token(model: HookedModel) -> int:
    """Residual stream, one layer's q/k/v/z and MLP activations, and the statistics kept per layer."""
    cfg = model.cfg
    element = next(model.model.parameters()).element_size()
    d_ff = getattr(model.model.config, "intermediate_size", None) or 4 * cfg.d_model
    per_token = (4 * cfg.d_model + 3 * d_ff + 2 * (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.d_head) * element
    return per_token + 8 * cfg.n_heads * 4  # per-query statistics kept per layer (float32)


def _activation_bytes(model: HookedModel, settings: ScanSettings) -> int:
    """One statistics forward's activations."""
    return settings.batch * _longest_forward(settings) * _bytes_per_token(model)


def _score_row_bytes(model: HookedModel, settings: ScanSettings) -> int:
    """One query's float32 scores over the longest forward's keys, for every head and batch row."""
    return settings.batch * model.cfg.n_heads * _longest_forward(settings) * 4


def default_chunk_bytes(model: HookedModel, settings: ScanSettings) -> int:
    """The score-block size the chunked kernel picks by itself at the scan's longest forward."""
    n = _longest_forward(settings)
    if n == 0:
        return 0
    return default_chunk_size(settings.batch, model.cfg.n_heads, n, n) * _score_row_bytes(model, settings)


def estimate_scan_bytes(model: HookedModel, settings: ScanSettings, *, chunk_bytes: int | None = None) -> dict[str, int]:
    """Estimated peak bytes *on top of the loaded weights*, per phase of a scan.

    - ``forward``: one statistics forward over ``batch x context_length`` tokens: the residual stream,
      one layer's q/k/v/z and MLP activations, and the kernel's query-chunk blocks (``chunk_bytes``
      each; None = the kernel's default size);
    - ``streaming``: the causal streaming pass, one layer's ``[rows, head, 2w, 2w]`` pattern and edges;
    - ``decode``: retrieval's KV cache at the context length.
    """
    cfg = model.cfg
    element = next(model.model.parameters()).element_size()
    if chunk_bytes is None:
        chunk_bytes = default_chunk_bytes(model, settings)
    forward = _activation_bytes(model, settings) + KERNEL_BLOCKS * chunk_bytes
    n = 2 * settings.streaming_window + 8
    streaming = cfg.n_heads * cfg.n_heads * n * n * (4 * 3 + 1) + n * _bytes_per_token(model) * cfg.n_heads
    decode = 2 * cfg.n_layers * cfg.n_kv_heads * cfg.d_head * settings.context_length * element
    return {"forward": forward, "streaming": streaming, "decode": decode}


@dataclass(frozen=True)
class MemoryPlan:
    """What :func:`plan_scan` decided: the memory allowed, the estimate per phase, the kernel's block size."""

    limit_bytes: int
    phases: dict[str, int]  # estimated peak beyond the weights, per phase
    chunk_bytes: int  # score-block budget of the chunked (CPU) attention kernel

    @property
    def peak_bytes(self) -> int:
        return max(self.phases.values())

    def to_dict(self) -> dict[str, object]:
        return {"limit_bytes": self.limit_bytes, "estimated_peak_bytes": self.peak_bytes, "chunk_bytes": self.chunk_bytes,
                "phases": dict(self.phases)}


def plan_scan(model: HookedModel, settings: ScanSettings, *, max_bytes: int | None = None) -> MemoryPlan:
    """Fit the scan into ``max_bytes`` beyond the weights (default: the device's free memory).

    The attention kernel keeps its default query-chunk size when that fits and shrinks it, down to one
    query row per block, when it does not. Raises a one-line :class:`InterpError` naming what to lower
    when even that cannot fit.
    """
    limit = available_bytes(model.device) if max_bytes is None else max_bytes
    chunk_bytes = default_chunk_bytes(model, settings)
    headroom = limit - _activation_bytes(model, settings)
    if KERNEL_BLOCKS * chunk_bytes > headroom:
        one_row = _score_row_bytes(model, settings)
        chunk_bytes = max(one_row, headroom // KERNEL_BLOCKS // one_row * one_row)
        if chunk_bytes < MIN_CHUNK * one_row:
            warnings.warn(
                f"memory is tight: attention statistics run {chunk_bytes // one_row} queries per block "
                f"(normally at least {MIN_CHUNK}), so the scan will be slower; raise --max-memory to avoid it",
                stacklevel=2,
            )
    plan = MemoryPlan(limit, estimate_scan_bytes(model, settings, chunk_bytes=chunk_bytes), chunk_bytes)
    if plan.peak_bytes > limit:
        raise InterpError(
            f"the scan needs about {plan.peak_bytes / 2**30:.1f} GiB beyond the weights but only {limit / 2**30:.1f} GiB "
            f"is allowed; lower --context-length ({settings.context_length}) or --batch ({settings.batch}), "
            f"or raise --max-memory"
        )
    return plan


# Causal sweeps: most rows per forward, however much memory is free (fewer, larger calls amortize the
# per-call overhead; beyond this the gain is small and one call's latency grows).
SWEEP_MAX_ROWS = 256


def sweep_batch_rows(
    model: HookedModel, n_pos: int, *, max_bytes: int | None = None, last_only: bool = True, cap: int = SWEEP_MAX_ROWS
) -> int:
    """Rows per forward pass for a causal sweep over ``n_pos``-token prompts that fit ``max_bytes`` beyond the
    weights (default: free memory): each row holds one layer's activations per token and its logits
    (the last position only when ``last_only``) with their softmax. Raises a one-line error if not even one row fits.
    """
    limit = available_bytes(model.device) if max_bytes is None else max_bytes
    per_row = n_pos * _bytes_per_token(model) + (1 if last_only else n_pos) * model.cfg.d_vocab * 4 * 3
    rows = int(limit // max(1, per_row))
    if rows < 1:
        raise InterpError(
            f"one row of this sweep needs about {per_row / 2**20:.0f} MiB but only {limit / 2**20:.0f} MiB is allowed; "
            "shorten the prompt or raise --max-memory"
        )
    return min(cap, rows)
