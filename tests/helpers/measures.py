"""Error measures of the parity tests, all computed in float64 whatever the inputs' dtype."""

from __future__ import annotations

import math

import numpy as np
import torch


def _f64(x) -> torch.Tensor:
    return x.detach().to("cpu", torch.float64) if isinstance(x, torch.Tensor) else torch.from_numpy(
        np.asarray(x, dtype=np.float64))


def rel(a, b) -> float:
    """max |a - b| / max |b|: the largest error relative to the reference's scale (b is the reference)."""
    a, b = _f64(a), _f64(b)
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def psnr(a, b) -> float:
    """Peak signal-to-noise ratio in dB for signals whose peak is 1 (frames in 0..1)."""
    mse = float(((_f64(a) - _f64(b)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def snr(got, want) -> float:
    """Signal-to-noise ratio in dB of ``got`` against the reference ``want`` (waveforms, spectrograms)."""
    want = _f64(want)
    err = float(((_f64(got) - want) ** 2).sum())
    return math.inf if err == 0 else 10 * math.log10(float((want**2).sum()) / err)
