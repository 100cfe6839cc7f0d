"""Memory planning: estimate a scan's peak memory before running it, and fail early if it cannot fit.

Estimates are deliberately simple and conservative: the weights, plus the largest transient of the
biggest analysis. Nothing on the scan path is O(N^2) in the sequence length: attention statistics
run through :mod:`interp.kernels` (a fixed-size query chunk on CPU, O(N) on GPU), statistics passes
skip the ``[batch, pos, vocab]`` logits, and the streaming analysis's causal pass (which
materializes one layer's pattern) uses a fixed-length prompt.
"""

from __future__ import annotations

import re

import torch

from interp.analyses.context import ScanSettings
from interp.errors import InterpError
from interp.hooks import HookedModel
from interp.kernels.chunked import DEFAULT_CHUNK_BUDGET_BYTES

_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "m": 2**20, "mb": 2**20, "g": 2**30, "gb": 2**30, "t": 2**40, "tb": 2**40}


def parse_size(text: str) -> int:
    """``"12GB"``, ``"512m"``, ``"1.5G"`` -> bytes (binary units)."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise InterpError(f"cannot read memory size {text!r}; write it like 12GB, 512MB or 1.5G")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device``: CUDA's free memory, or the OS's MemAvailable for the CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 2**62


def estimate_scan_bytes(model: HookedModel, settings: ScanSettings) -> dict[str, int]:
    """Estimated peak bytes *on top of the loaded weights*, per phase of a scan.

    - ``forward``: one statistics forward over ``batch x context_length`` tokens: the residual stream,
      one layer's q/k/v/z and MLP activations, and the kernel's query-chunk buffers;
    - ``streaming``: the causal streaming pass, one layer's ``[rows, head, 2w, 2w]`` pattern and edges;
    - ``decode``: retrieval's KV cache at the context length.
    """
    cfg = model.cfg
    element = next(model.model.parameters()).element_size()
    tokens = settings.batch * max(settings.context_length, 2 * settings.streaming_window)
    d_ff = getattr(model.model.config, "intermediate_size", None) or 4 * cfg.d_model
    per_token = (4 * cfg.d_model + 3 * d_ff + 2 * (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.d_head) * element
    per_token += 8 * cfg.n_heads * 4  # per-query statistics kept per layer (float32)
    forward = tokens * per_token + 8 * DEFAULT_CHUNK_BUDGET_BYTES  # the chunked kernel's temporaries
    n = 2 * settings.streaming_window + 8
    streaming = cfg.n_heads * cfg.n_heads * n * n * (4 * 3 + 1) + n * per_token * cfg.n_heads
    decode = 2 * cfg.n_layers * cfg.n_kv_heads * cfg.d_head * settings.context_length * element
    return {"forward": forward, "streaming": streaming, "decode": decode}


def check_scan_fits(model: HookedModel, settings: ScanSettings, *, max_bytes: int | None = None) -> int:
    """Raise a one-line :class:`InterpError` when the estimated peak exceeds ``max_bytes`` (default: free memory)."""
    need = max(estimate_scan_bytes(model, settings).values())
    limit = available_bytes(model.device) if max_bytes is None else max_bytes
    if need > limit:
        raise InterpError(
            f"the scan needs about {need / 2**30:.1f} GiB beyond the weights but only {limit / 2**30:.1f} GiB is "
            f"allowed; lower --context-length ({settings.context_length}) or --batch ({settings.batch}), "
            f"or raise --max-memory"
        )
    return need
