"""LTX-2 / LTX-2.3 sigma schedules (flow-matching sigmas, first 1.0, last 0.0).

``ltx2_sigmas`` is the token-count-shifted schedule of the official LTX-2 scheduler. The official code
works on a float32 tensor (linspace, shift and stretch all in float32 arithmetic) and returns float32;
the values here are produced by the same float32 operations, on the CPU and before any sampling loop,
and handed back as Python floats (each one exactly a float32 value).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "DISTILLED_SIGMAS",
    "STAGE2_DISTILLED_SIGMAS",
    "LTX2_BASE_TOKENS",
    "LTX2_MAX_TOKENS",
    "ltx2_shift",
    "ltx2_sigmas",
]

# Token counts at which the shift equals base_shift and max_shift (linear in between and beyond).
LTX2_BASE_TOKENS = 1024
LTX2_MAX_TOKENS = 4096

# Fixed schedules of the distilled checkpoints: 8 steps from pure noise, and the 3-step refinement used
# after the latent upsampler.
DISTILLED_SIGMAS: tuple[float, ...] = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0)
STAGE2_DISTILLED_SIGMAS: tuple[float, ...] = (0.909375, 0.725, 0.421875, 0.0)


def ltx2_shift(tokens: int | None = None, *, max_shift: float = 2.05, base_shift: float = 0.95) -> float:
    """Shift mu for a latent of ``tokens`` tokens (frames x height x width of the latent; 4096 when None)."""
    n = LTX2_MAX_TOKENS if tokens is None else int(tokens)
    slope = (max_shift - base_shift) / (LTX2_MAX_TOKENS - LTX2_BASE_TOKENS)
    intercept = base_shift - slope * LTX2_BASE_TOKENS
    return n * slope + intercept


def ltx2_sigmas(
    steps: int,
    tokens: int | None = None,
    *,
    max_shift: float = 2.05,
    base_shift: float = 0.95,
    stretch: bool = True,
    terminal: float = 0.1,
) -> list[float]:
    """The LTX-2 sigma schedule: ``steps + 1`` Python floats from 1.0 down to 0.0.

    ``t_i = 1 - i / steps`` is mapped through the time shift ``e^mu / (e^mu + 1/t - 1)`` with ``mu`` from
    :func:`ltx2_shift`; with ``stretch`` the non-zero part is rescaled in ``1 - sigma`` so its last value
    is exactly ``terminal``. ``tokens`` is the latent's token count (F*H*W); the official one-stage and
    plain two-stage pipelines use the default (None -> 4096), the HQ pipeline the stage-1 latent's count.
    """
    if int(steps) != steps or steps < 1:
        raise ValueError(f"ltx2_sigmas: steps must be a positive integer, got {steps!r}")
    if tokens is not None and tokens < 1:
        raise ValueError(f"ltx2_sigmas: tokens must be positive, got {tokens!r}")
    if stretch and not 0.0 <= terminal < 1.0:
        raise ValueError(f"ltx2_sigmas: terminal must lie in [0, 1), got {terminal!r}")
    e_mu = math.exp(ltx2_shift(tokens, max_shift=max_shift, base_shift=base_shift))

    # float32 arithmetic on the CPU, matching the official scheduler's tensor math op for op.
    t = torch.linspace(1.0, 0.0, int(steps) + 1, dtype=torch.float32)
    nonzero = t != 0
    shifted = e_mu / (e_mu + (1 / t - 1))
    sig = torch.where(nonzero, shifted, torch.zeros_like(shifted))
    if stretch:
        keep = sig != 0
        one_minus = 1.0 - sig[keep]
        if float(one_minus[-1]) == 0.0:
            raise ValueError(
                f"ltx2_sigmas: cannot stretch to terminal={terminal}: the last non-zero sigma of {steps} step(s) "
                f"at {tokens} tokens rounds to 1.0 (use more steps, fewer tokens, or stretch=False)"
            )
        scale = one_minus[-1] / (1.0 - terminal)
        sig[keep] = 1.0 - one_minus / scale
    return sig.tolist()
