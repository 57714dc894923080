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

__all__ = ["sample_euler", "sample_euler_stochastic"]


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


def sample_euler_stochastic(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    sigmas,
    extra_args: dict | None = None,
    callback: Callable[[dict], None] | None = None,
    *,
    noise_sampler: Callable[[torch.Tensor], torch.Tensor],
    after_step: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Re-noising flow sampler of distilled checkpoints (``stochastic_sampling`` in the scheduler config).

    Each step takes the model's clean estimate x0 and jumps to the next noise level with fresh noise:
    ``x_next = (1 - sigma_next) * x0 + sigma_next * noise``. ``noise_sampler(x)`` returns that noise (drawn
    from the user's seed); ``after_step(x)`` may edit the new sample (e.g. put clean conditioning frames
    back, which the re-noising would otherwise disturb). Arithmetic in float32, the state keeps x's dtype.
    """
    sig = _as_sigma_list(sigmas)
    if len(sig) < 2:
        raise ValueError(f"sample_euler_stochastic: need at least 2 sigmas (one step), got {len(sig)}")
    # Mixing weights as float32 numbers, as the reference computes them from float32 sigmas.
    nxt = [float(np.float32(s)) for s in sig[1:]]
    extra_args = {} if extra_args is None else extra_args
    state_dtype = x.dtype
    work_dtype = torch.promote_types(x.dtype, torch.float32)
    for i, s_next in enumerate(nxt):
        denoised = model(x, sig[i], **extra_args)
        noise = noise_sampler(x).to(device=x.device, dtype=work_dtype)
        x = torch.add(denoised.to(work_dtype) * (1.0 - s_next), noise, alpha=s_next).to(state_dtype)
        if after_step is not None:
            x = after_step(x)
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sig[i], "sigma_next": sig[i + 1], "denoised": denoised})
    return x
