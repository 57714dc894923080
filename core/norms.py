"""RMS normalisation in the two numeric flavours the supported checkpoints were trained with."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Qwen-style RMSNorm: statistics in float32, result cast to the weight's dtype, then scaled.

    For a float32 weight the product stays float32 (the usual rule of type promotion).
    """
    # F.rms_norm is one fused kernel; it normalises in float32 and rounds once to its input's dtype, so on
    # the CPU it is bit-identical to x * rsqrt(mean(x^2) + eps) done in float32 and then cast
    if weight.dtype in (torch.float16, torch.bfloat16):
        if x.dtype == weight.dtype:
            return F.rms_norm(x, (x.shape[-1],), None, eps) * weight
        return F.rms_norm(x.float(), (x.shape[-1],), None, eps).to(weight.dtype) * weight
    return F.rms_norm(x.float(), (x.shape[-1],), None, eps) * weight


def rms_norm_fp32_weight(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Nemotron-style RMSNorm: normalise and scale entirely in float32, then back to x's dtype."""
    if weight.dtype == x.dtype:  # one fused kernel, float32 inside, one rounding at the end
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    return F.rms_norm(x.float(), (x.shape[-1],), weight.float(), eps).to(x.dtype)


class RMSNorm(nn.Module):
    """An RMSNorm holding one ``weight`` (the checkpoint's key); ``fp32_weight`` picks the flavour."""

    def __init__(self, dim: int, eps: float, fp32_weight: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
        self.fp32_weight = fp32_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fp32_weight:
            return rms_norm_fp32_weight(x, self.weight, self.eps)
        return rms_norm(x, self.weight, self.eps)
