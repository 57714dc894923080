"""The sizes and numbers of an LTX-2.3 run, checked one way for the graph nodes (and their ``VALIDATE_INPUTS``)
before any model work.

A wrong value raises :class:`~..core.checks.OptionError` naming the field; nothing is rounded behind the
user's back.

* width and height: multiples of 32 (the video VAE's pixel block; ``latent_shape`` in :mod:`.latents`), 32 ..
  8192; a two-stage run samples its first stage at half size, so its final size is a multiple of 64;
* frames: ``8k + 1`` (the VAE's causal time compression: one frame, then groups of eight), 1 .. 1025;
* fps finite in 1 .. 240 (it sets the audio length and the time positions); batch 1 .. 64;
* steps 1 .. 1000, res2s eta 0 .. 1, seed 0 .. 2^64 - 1; guidance: cfg and modality scales finite in 1 .. 30
  (1 = off), STG scale 0 .. 30 (0 = off), rescale 0 .. 1, STG blocks indices of the transformer's blocks.
"""

from __future__ import annotations

from ..core.checks import OptionError, integer, number

SPATIAL_FACTOR = 32
TEMPORAL_FACTOR = 8
MAX_SIDE = 8192
MAX_FRAMES = 1025
FPS = (1.0, 240.0)
MAX_BATCH = 64
STEPS = (1, 1000)
MAX_SEED = 2**64 - 1
SCALE = (1.0, 30.0)  # cfg and modality scales
MAX_STG = 30.0


def check_side(field: str, value, multiple: int = SPATIAL_FACTOR) -> int:
    """A width or height: a multiple of ``multiple`` in 32 .. 8192."""
    value = integer(field, value, low=SPATIAL_FACTOR, high=MAX_SIDE)
    if value % multiple:
        low = value // multiple * multiple
        options = f"{low} or {low + multiple}" if low else f"{multiple}"
        raise OptionError(field, value, f"not a multiple of {multiple}; use {options}")
    return value


def check_frames(frames) -> int:
    """An ``8k + 1`` frame count in 1 .. 1025; others are refused with the nearest valid ones named."""
    frames = integer("frames", frames, low=1, high=MAX_FRAMES)
    if (frames - 1) % TEMPORAL_FACTOR:
        below = (frames - 1) // TEMPORAL_FACTOR * TEMPORAL_FACTOR + 1
        raise OptionError("frames", frames, f"not 8k+1 frames, which the LTX-2 VAE makes (one frame, then groups of "
                                            f"{TEMPORAL_FACTOR}); use {below} or {below + TEMPORAL_FACTOR}")
    return frames


def check_fps(fps) -> float:
    return number("fps", fps, low=FPS[0], high=FPS[1])


def check_guidance_numbers(prefix: str, cfg, stg, modality, rescale) -> None:
    """One modality's guidance numbers (field names ``<prefix>_cfg`` and so on)."""
    number(f"{prefix}_cfg", cfg, low=SCALE[0], high=SCALE[1], hint="1 turns it off")
    number(f"{prefix}_stg", stg, low=0.0, high=MAX_STG, hint="0 turns it off")
    number(f"{prefix}_modality", modality, low=SCALE[0], high=SCALE[1], hint="1 turns it off")
    number(f"{prefix}_rescale", rescale, low=0.0, high=1.0, hint="0 turns it off")


def parse_blocks(text: str) -> tuple[int, ...]:
    """``"28"`` or ``"20, 28"`` -> (28,) / (20, 28); an empty text is no block."""
    if not isinstance(text, str):
        raise OptionError("stg_blocks", text, "must be text: block indices separated by commas")
    parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    try:
        blocks = tuple(int(p) for p in parts)
    except ValueError:
        raise OptionError("stg_blocks", text, "must be block indices separated by commas, e.g. 28 or 20, 28") from None
    if any(b < 0 for b in blocks):
        raise OptionError("stg_blocks", text, "block indices start at 0")
    return blocks
