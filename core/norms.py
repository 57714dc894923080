"""RMS normalisation in the two numeric flavours the supported checkpoints were trained with."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Qwen-style RMSNorm: statistics in float32, result cast to the weight's dtype, then scaled.

    For a float32 weight the product stays float32 (the usual rule of type promotion).
    """
    # (F.rms_norm is one fused kernel; on float32 it is bit-identical to x * rsqrt(mean(x^2) + eps))
    y = F.rms_norm(x.float(), (x.shape[-1],), None, eps)
    if weight.dtype in (torch.float16, torch.bfloat16):
        y = y.to(weight.dtype)
    return y * weight


def rms_norm_fp32_weight(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Nemotron-style RMSNorm: normalise and scale entirely in float32, then back to x's dtype."""
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
