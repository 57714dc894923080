"""Seeded noise: the one rule that turns a seed into noise, for every model and stage.

The rule (ComfyUI's and diffusers' Cosmos3 pipeline's convention, so a run can be reproduced in either):

* one ``torch.Generator`` on the CPU, seeded with ``seed mod 2**64`` (torch takes seeds in [-2**63, 2**64);
  a negative seed therefore names the same stream as before, and ``seed + offset`` past 2**64 wraps instead
  of failing);
* standard normal draws in float32, one per shape, **in the order the shapes are given**, all from that one
  generator (so the second tensor continues the first one's stream);
* each draw moved to the target device and dtype afterwards: the same numbers on every device.

Callers document their order: Cosmos3 draws its start latent and then, for a re-noising sampler, each
step's noise from the same generator; LTX-2 draws packed video then audio tokens (and for the two-stage
pipelines stage-1 video, stage-1 audio, stage-2 video, stage-2 audio).

The res2s SDE noise is the one exception, on purpose: ltx-pipelines draws it in float64 from a generator on
the latent's device (``_get_new_noise`` and ``res2s_audio_video_denoising_loop`` in ltx_pipelines
``utils/samplers.py``), and the pack's ``sde_noise="reference"`` mode reproduces those numbers, so
:mod:`core.sampling.res2s` passes its own generators (:func:`noise_generator` on the device) and
``draw_dtype=torch.float64`` to the same function.
"""

from __future__ import annotations

import torch

__all__ = ["SEED_MODULUS", "noise_generator", "seeded_noise"]

SEED_MODULUS = 1 << 64


def noise_generator(seed: int, device="cpu") -> torch.Generator:
    """A generator on ``device`` (the CPU unless a caller must match a device-side reference) seeded with
    ``seed mod 2**64``."""
    return torch.Generator(device=device).manual_seed(int(seed) % SEED_MODULUS)


def seeded_noise(seed: int | torch.Generator, *shapes, device=None, dtype: torch.dtype | None = None,
                 draw_dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    """Standard normal noise of each of ``shapes``, drawn in that order from one generator.

    ``seed`` is an integer (a fresh CPU generator, :func:`noise_generator`) or a generator to continue (its
    draws advance it). The draws are made in ``draw_dtype`` (float32: the convention) on the generator's
    device, then moved to ``device`` / ``dtype`` when given. Returns one tensor per shape, as a tuple
    (``x, = seeded_noise(seed, shape)`` for one).
    """
    if not shapes:
        raise ValueError("seeded_noise: give at least one shape")
    gen = seed if isinstance(seed, torch.Generator) else noise_generator(seed)
    out = tuple(torch.randn(tuple(s), generator=gen, dtype=draw_dtype, device=gen.device) for s in shapes)
    if device is None and dtype is None:
        return out
    return tuple(t.to(device=t.device if device is None else device, dtype=t.dtype if dtype is None else dtype)
                 for t in out)
