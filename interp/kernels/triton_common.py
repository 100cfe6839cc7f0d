"""Helpers shared by the Triton kernels (both passes must compute identical scores)."""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


# @triton.jit chooses interpreter or compiled mode when a kernel is defined, i.e. when the kernel
# modules (which import this one first) are imported; snapshot the setting at the same moment.
_INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") == "1"


def interpreting() -> bool:
    """Whether the kernels were defined in Triton's CPU interpreter mode (TRITON_INTERPRET=1)."""
    return _INTERPRETING


def dot_in_fp32(dtype: torch.dtype) -> bool:
    """Whether tl.dot operands are upcast to float32 (exact "ieee" products).

    float32 inputs: avoid TF32 rounding of the scores. bfloat16 in the interpreter: its numpy
    backend has no bfloat16 and tl.dot returns garbage, so upcast there too. Otherwise
    (fp16/bf16 on GPU) use the native dtype with float32 accumulation, like flash attention.
    """
    return dtype == torch.float32 or (dtype == torch.bfloat16 and interpreting())


def head_dim_block(d: int) -> int:
    """Head dims are padded (with masking) to a power of two >= 16, the minimum tl.dot size."""
    return max(16, triton.next_power_of_2(d))


@triton.jit
def apply_softcap(s, softcap):
    """softcap * tanh(s / softcap), written with exp(-2|x|) so it never overflows."""
    x = s / softcap
    t = tl.exp(-2.0 * tl.abs(x))
    th = (1.0 - t) / (1.0 + t)
    return softcap * tl.where(x < 0, -th, th)
