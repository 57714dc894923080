"""The sampler contract shared by every sampler in :mod:`core.sampling`.

Every sampler has k-diffusion's shape, ``sample_*(model, x, sigmas, extra_args=None, callback=None,
**options)``:

* ``x`` is the sample at ``sigmas[0]``: one tensor, or a tuple of tensors that share the sigmas and are
  stepped together (LTX-2's packed video and audio tokens). The parts may differ in shape and dtype; each
  keeps its own dtype between steps.
* ``model(x, sigma, **extra_args)`` gets the same form as ``x`` (a tensor, or a tuple with as many parts)
  and returns the denoised estimate x0 in that form. ``sigma`` is a Python float.
* ``callback``, when given, is called once per step with the dict of :func:`step_info`; an exception it
  raises stops sampling (ComfyUI's interrupt).

:class:`StateForm` turns a state into its list of parts and back, so each sampler's arithmetic is written
once, per part; no model needs a flattening wrapper of its own.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

__all__ = ["StateForm", "step_info"]


def step_info(i: int, x, sigma: float, sigma_next: float, denoised) -> dict:
    """The callback dict of step ``i``, the same for every sampler.

    ``{"i", "x", "sigma", "sigma_hat", "sigma_next", "denoised"}``: k-diffusion's keys (``sigma_hat`` is the
    sigma the model was called at, which equals ``sigma``: no sampler here adds churn) plus ``sigma_next``,
    the noise level of the new ``x``. ``x`` (the sample after the step) and ``denoised`` (the x0 estimate of
    the step's first model call) have the state's form: a tensor or a tuple of tensors.
    """
    return {"i": i, "x": x, "sigma": sigma, "sigma_hat": sigma, "sigma_next": sigma_next, "denoised": denoised}


class StateForm:
    """The form of a sampler state ``x``: one tensor or a tuple of ``n`` tensors.

    ``parts(y)`` gives the list of tensors of a value of that form (a state or a model output) and checks
    its length; ``pack(parts)`` gives the form back; ``model_fn(model, extra_args)`` wraps a model as a
    function over lists of parts.
    """

    def __init__(self, x, who: str):
        self.who = who
        self.multi = isinstance(x, (tuple, list))
        self.n = len(x) if self.multi else 1
        if self.n == 0:
            raise ValueError(f"{who}: x is an empty tuple")
        for p in self.parts(x):
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"{who}: x must be a tensor or a tuple of tensors, got a {type(p).__name__}")

    def parts(self, y, what: str = "x") -> list[torch.Tensor]:
        if not self.multi:
            if isinstance(y, (tuple, list)):
                raise ValueError(f"{self.who}: {what} is a tuple of {len(y)}, the state is one tensor")
            return [y]
        if not isinstance(y, (tuple, list)) or len(y) != self.n:
            got = f"{len(y)} parts" if isinstance(y, (tuple, list)) else "one tensor"
            raise ValueError(f"{self.who}: {what} has {got}, the state has {self.n}")
        return list(y)

    def pack(self, parts: Sequence[torch.Tensor]):
        return tuple(parts) if self.multi else parts[0]

    def model_fn(self, model: Callable, extra_args: dict | None) -> Callable[[list, float], list]:
        """``call(parts, sigma) -> parts of x0``: ``model`` called on the packed form."""
        extra = {} if extra_args is None else extra_args

        def call(parts: list[torch.Tensor], sigma: float) -> list[torch.Tensor]:
            return self.parts(model(self.pack(parts), sigma, **extra), "the model's output")

        return call

    def per_part(self, value, what: str) -> list:
        """An option given for the whole state (None, or one value for a single tensor) or one per part."""
        if value is None:
            return [None] * self.n
        if isinstance(value, (tuple, list)):
            if len(value) != self.n:
                raise ValueError(f"{self.who}: {what} has {len(value)} entries for {self.n} parts")
            return list(value)
        if self.n != 1:
            raise ValueError(f"{self.who}: {what} must be a tuple of {self.n} entries (one per part) or None")
        return [value]
