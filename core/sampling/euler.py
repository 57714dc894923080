"""Euler sampler for flow-matching models (deterministic), written in terms of the denoised estimate.

With flow sigmas the velocity is ``v = (x - x0) / sigma`` and one Euler step is
``x_next = x + (sigma_next - sigma) * v``. As in diffusers' ``FlowMatchEulerDiscreteScheduler.step`` the
step size is the float32 difference of the float32 sigmas and the update runs in float32; the state keeps
the dtype of the input sample.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .unipc import _as_sigma_list

__all__ = ["sample_euler"]


def sample_euler(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    sigmas,
    extra_args: dict | None = None,
    callback: Callable[[dict], None] | None = None,
) -> torch.Tensor:
    """Flow Euler sampling over ``sigmas`` (N + 1 values, e.g. a distilled list with a final 0).

    Args:
        model: ``model(x, sigma, **extra_args) -> x0`` with ``sigma`` a Python float.
        x: the sample at ``sigmas[0]``; its dtype is kept between steps.
        sigmas: Python floats (or a 1-D tensor, read once before the loop); every value but the last
            must be > 0.
        extra_args: keyword arguments passed to every model call.
        callback: called after each step with ``{"i", "x", "sigma", "sigma_next", "denoised"}``.

    Returns the sample at ``sigmas[-1]``.
    """
    sig = _as_sigma_list(sigmas)
    if len(sig) < 2:
        raise ValueError(f"sample_euler: need at least 2 sigmas (one step), got {len(sig)}")
    if not all(math.isfinite(s) for s in sig) or not all(s > 0.0 for s in sig[:-1]):
        raise ValueError("sample_euler: sigmas must be finite and every sigma but the last must be > 0")
    # Per-step factor dt / sigma, with dt rounded like a float32 subtraction of float32 sigmas.
    f32 = np.float32
    factors = [float(f32(f32(sig[i + 1]) - f32(sig[i]))) / sig[i] for i in range(len(sig) - 1)]
    extra_args = {} if extra_args is None else extra_args
    state_dtype = x.dtype
    work_dtype = torch.promote_types(x.dtype, torch.float32)

    for i, c in enumerate(factors):
        denoised = model(x, sig[i], **extra_args)
        xw = x.to(work_dtype)
        x = torch.add(xw, xw - denoised.to(work_dtype), alpha=c).to(state_dtype)
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sig[i], "sigma_next": sig[i + 1], "denoised": denoised})
    return x
