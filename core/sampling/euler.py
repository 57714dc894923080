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

from .state import StateForm, step_info
from .unipc import _as_sigma_list

__all__ = ["sample_euler", "sample_euler_stochastic"]


def sample_euler(
    model: Callable,
    x,
    sigmas,
    extra_args: dict | None = None,
    callback: Callable[[dict], None] | None = None,
):
    """Flow Euler sampling over ``sigmas`` (N + 1 values, e.g. a distilled list with a final 0).

    Args (the contract of :mod:`core.sampling.state`):
        model: ``model(x, sigma, **extra_args) -> x0`` with ``sigma`` a Python float.
        x: the sample at ``sigmas[0]``: a tensor or a tuple of tensors (e.g. video, audio); each part keeps
            its dtype between steps.
        sigmas: Python floats (or a 1-D tensor, read once before the loop); every value but the last
            must be > 0.
        extra_args: keyword arguments passed to every model call.
        callback: called after each step with :func:`~core.sampling.state.step_info`'s dict.

    Returns the sample at ``sigmas[-1]``, in ``x``'s form.
    """
    form = StateForm(x, "sample_euler")
    sig = _as_sigma_list(sigmas)
    if len(sig) < 2:
        raise ValueError(f"sample_euler: need at least 2 sigmas (one step), got {len(sig)}")
    if not all(math.isfinite(s) for s in sig) or not all(s > 0.0 for s in sig[:-1]):
        raise ValueError("sample_euler: sigmas must be finite and every sigma but the last must be > 0")
    # Per-step factor dt / sigma, with dt rounded like a float32 subtraction of float32 sigmas.
    f32 = np.float32
    factors = [float(f32(f32(sig[i + 1]) - f32(sig[i]))) / sig[i] for i in range(len(sig) - 1)]
    call = form.model_fn(model, extra_args)
    xs = form.parts(x)
    dtypes = [p.dtype for p in xs]
    work = [torch.promote_types(d, torch.float32) for d in dtypes]

    for i, c in enumerate(factors):
        den = call(xs, sig[i])
        xw = [p.to(w) for p, w in zip(xs, work)]
        xs = [torch.add(p, p - d.to(w), alpha=c).to(dt) for p, d, w, dt in zip(xw, den, work, dtypes)]
        if callback is not None:
            callback(step_info(i, form.pack(xs), sig[i], sig[i + 1], form.pack(den)))
    return form.pack(xs)


def sample_euler_stochastic(
    model: Callable,
    x,
    sigmas,
    extra_args: dict | None = None,
    callback: Callable[[dict], None] | None = None,
    *,
    noise_sampler: Callable[[torch.Tensor], torch.Tensor],
    after_step: Callable | None = None,
):
    """Re-noising flow sampler of distilled checkpoints (``stochastic_sampling`` in the scheduler config).

    Each step takes the model's clean estimate x0 and jumps to the next noise level with fresh noise:
    ``x_next = (1 - sigma_next) * x0 + sigma_next * noise``. ``noise_sampler(part)`` returns that noise for
    one part of the state (drawn from the user's seed; called for each part in order, every step);
    ``after_step(x)`` may edit the new sample (e.g. put clean conditioning frames back, which the re-noising
    would otherwise disturb). Arithmetic in float32, each part keeps its dtype. Otherwise the contract of
    :mod:`core.sampling.state`.
    """
    form = StateForm(x, "sample_euler_stochastic")
    sig = _as_sigma_list(sigmas)
    if len(sig) < 2:
        raise ValueError(f"sample_euler_stochastic: need at least 2 sigmas (one step), got {len(sig)}")
    # Mixing weights as float32 numbers, as the reference computes them from float32 sigmas.
    nxt = [float(np.float32(s)) for s in sig[1:]]
    call = form.model_fn(model, extra_args)
    xs = form.parts(x)
    dtypes = [p.dtype for p in xs]
    work = [torch.promote_types(d, torch.float32) for d in dtypes]
    for i, s_next in enumerate(nxt):
        den = call(xs, sig[i])
        xs = [torch.add(d.to(w) * (1.0 - s_next), noise_sampler(p).to(device=p.device, dtype=w), alpha=s_next).to(dt)
              for p, d, w, dt in zip(xs, den, work, dtypes)]
        if after_step is not None:
            xs = form.parts(after_step(form.pack(xs)), "after_step's result")
        if callback is not None:
            callback(step_info(i, form.pack(xs), sig[i], sig[i + 1], form.pack(den)))
    return form.pack(xs)
