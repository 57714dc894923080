"""Pixel patches of the video VAEs (Wan2.2, LTX-2): ``p x p`` pixel blocks folded into channels and back.

Both families order a patch's pixels column offset first: channel ``c*p*p + pw*p + ph`` of the patched
tensor holds pixel ``(ph, pw)`` of channel ``c``.
"""

from __future__ import annotations

import torch


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, T, H*p, W*p] -> [B, C*p*p, T, H, W]."""
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t, h // p, p, w // p, p).permute(0, 1, 6, 4, 2, 3, 5)
    return x.reshape(b, c * p * p, t, h // p, w // p)


def unpatchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: [B, C*p*p, T, H, W] -> [B, C, T, H*p, W*p]."""
    b, c, t, h, w = x.shape
    x = x.reshape(b, c // (p * p), p, p, t, h, w).permute(0, 1, 4, 5, 3, 6, 2)
    return x.reshape(b, c // (p * p), t, h * p, w * p)
