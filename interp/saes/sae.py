"""A sparse autoencoder or transcoder as SAELens computes it: standard, topk, jumprelu and gated encoders.

One class for every architecture, so that attaching, caching and attribution never branch on it:

- standard: ``f = relu((x - b_dec) @ W_enc + b_enc)``
- topk: the ``k`` largest of ``(x - b_dec) @ W_enc + b_enc`` (times ``|W_dec|`` row norms with
  ``rescale_acts_by_decoder_norm``), relu'd, the rest 0
- jumprelu: ``relu(pre) * (pre > threshold)``
- gated: ``(pre_gate > 0) * relu(pre_mag)`` with ``pre_gate = x' @ W_enc + b_gate`` and
  ``pre_mag = x' @ (W_enc * exp(r_mag)) + b_mag``
- reconstruction: ``f @ W_dec + b_dec`` (``f / |W_dec|`` row norms for rescaled topk)

``x' = x - b_dec`` only with ``apply_b_dec_to_input`` (never for transcoders, whose ``b_dec`` lives in
the output space). A transcoder maps an MLP's input to its output and may add ``x @ W_skip.T``.
"""

from __future__ import annotations

import torch
from torch import nn

ENCODERS = ("standard", "topk", "jumprelu", "gated")
# SAELens' runtime normalizations; "expected_average_only_in" is folded into the weights when loaded.
NORMALIZATIONS = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")


def _param(value: torch.Tensor | None) -> nn.Parameter | None:
    return None if value is None else nn.Parameter(value.detach().clone(), requires_grad=False)


class SAE(nn.Module):
    """A sparse autoencoder (or transcoder) reading the hook point ``hook_name``.

    Build one with :func:`interp.load_sae` (SAELens' files or a live ``sae_lens`` SAE), or from tensors:
    ``SAE(W_enc, b_enc, W_dec, b_dec, hook_name="blocks.3.hook_resid_post")``.
    """

    def __init__(
        self,
        W_enc: torch.Tensor,
        b_enc: torch.Tensor | None,
        W_dec: torch.Tensor,
        b_dec: torch.Tensor,
        *,
        hook_name: str,
        architecture: str = "standard",
        threshold: torch.Tensor | None = None,
        k: int | None = None,
        b_gate: torch.Tensor | None = None,
        b_mag: torch.Tensor | None = None,
        r_mag: torch.Tensor | None = None,
        apply_b_dec_to_input: bool = True,
        normalize_activations: str = "none",
        rescale_acts_by_decoder_norm: bool = False,
        transcoder: bool = False,
        hook_name_out: str | None = None,
        W_skip: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.W_enc, self.b_enc, self.W_dec, self.b_dec = _param(W_enc), _param(b_enc), _param(W_dec), _param(b_dec)
        self.threshold, self.W_skip = _param(threshold), _param(W_skip)
        self.b_gate, self.b_mag, self.r_mag = _param(b_gate), _param(b_mag), _param(r_mag)
        self.hook_name = hook_name
        self.architecture = architecture
        self.k = k
        self.transcoder = transcoder
        self.hook_name_out = hook_name_out
        self.apply_b_dec_to_input = apply_b_dec_to_input and not transcoder
        self.normalize_activations = normalize_activations
        self.rescale_acts_by_decoder_norm = rescale_acts_by_decoder_norm

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    @property
    def d_out(self) -> int:
        return int(self.W_dec.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    # ------------------------------------------------------------------ input normalization
    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize_activations == "constant_norm_rescale":
            return x * (self.d_in**0.5 / x.norm(dim=-1, keepdim=True))
        if self.normalize_activations == "layer_norm":
            centred = x - x.mean(dim=-1, keepdim=True)
            return centred / (centred.std(dim=-1, keepdim=True) + 1e-5)
        return x

    def _denormalize(self, out: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        if self.transcoder or self.normalize_activations not in ("constant_norm_rescale", "layer_norm"):
            return out
        if x is None:
            raise ValueError(f"decode needs the input x to undo normalize_activations={self.normalize_activations!r}")
        if self.normalize_activations == "constant_norm_rescale":
            return out / (self.d_in**0.5 / x.norm(dim=-1, keepdim=True))
        return out * x.std(dim=-1, keepdim=True) + x.mean(dim=-1, keepdim=True)

    # ------------------------------------------------------------------ encode / decode
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations ``[..., d_sae]`` of inputs ``[..., d_in]`` (cast to the SAE's dtype)."""
        sae_in = self._normalize(x.to(self.dtype))
        if self.apply_b_dec_to_input:
            sae_in = sae_in - self.b_dec
        if self.architecture == "gated":
            active = (sae_in @ self.W_enc + self.b_gate > 0).to(sae_in.dtype)
            return active * torch.relu(sae_in @ (self.W_enc * self.r_mag.exp()) + self.b_mag)
        pre = sae_in @ self.W_enc + self.b_enc
        if self.architecture == "topk":
            if self.rescale_acts_by_decoder_norm:
                pre = pre * self.W_dec.norm(dim=-1)
            values, indices = torch.topk(pre, k=min(self.k, self.d_sae), dim=-1, sorted=False)
            return torch.zeros_like(pre).scatter(-1, indices, values.relu())
        acts = torch.relu(pre)
        if self.architecture == "jumprelu":
            acts = acts * (pre > self.threshold).to(acts.dtype)
        return acts

    def decode(self, acts: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruction ``[..., d_out]`` of feature activations; ``x`` (the input) only for runtime normalizations."""
        if self.architecture == "topk" and self.rescale_acts_by_decoder_norm:
            acts = acts / self.W_dec.norm(dim=-1)
        out = self._denormalize(acts @ self.W_dec + self.b_dec, None if x is None else x.to(self.dtype))
        return out

    def skip(self, x: torch.Tensor) -> torch.Tensor | None:
        """A skip transcoder's linear term ``x @ W_skip.T`` (None without one)."""
        return None if self.W_skip is None else x.to(self.dtype) @ self.W_skip.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of ``x`` (the transcoder's output, skip term included)."""
        out = self.decode(self.encode(x), x)
        extra = self.skip(x)
        return out if extra is None else out + extra

    def extra_repr(self) -> str:
        kind = "transcoder" if self.transcoder else "sae"
        out = f", hook_name_out={self.hook_name_out!r}" if self.hook_name_out else ""
        return f"{kind} {self.architecture}, hook_name={self.hook_name!r}{out}, d_in={self.d_in}, d_sae={self.d_sae}"
