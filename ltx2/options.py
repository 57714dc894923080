"""The sizes and numbers of an LTX-2.3 run, checked one way for every door (graph nodes and their
``VALIDATE_INPUTS``, ``generate``, the command line) before any model work.

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


PIPELINES = ("one-stage", "hq", "distilled")
SDE_NOISE = ("seeded", "reference")
_PIPELINE_NAMES = {"one-stage": "one-stage", "hq": "HQ two-stage", "distilled": "distilled two-stage"}


def check_guidance(field: str, guidance) -> None:
    """A :class:`~.denoiser.Guidance` given by the caller: its numbers as the guider nodes check them."""
    if guidance is None:
        return
    for name in ("cfg", "stg", "modality", "rescale", "stg_blocks"):
        if not hasattr(guidance, name):
            raise OptionError(field, guidance, "must be a Guidance(cfg, stg, stg_blocks, modality, rescale)")
    check_guidance_numbers(field, guidance.cfg, guidance.stg, guidance.modality, guidance.rescale)
    blocks = guidance.stg_blocks
    if any(isinstance(b, bool) or not isinstance(b, int) or b < 0 for b in blocks):
        raise OptionError(f"{field}.stg_blocks", blocks, "block indices are whole numbers from 0")


def check_request(*, pipeline, width, height, num_frames, fps, steps, seed, upsampler, sde_noise, image,
                  image_strength, lora_strengths, video_guidance, audio_guidance) -> None:
    """Every option of :func:`~.api.generate` that needs no model, checked before anything loads, one way for the
    Python API and the command line (the nodes check the same numbers with the same functions). An option that
    does not apply to the chosen pipeline is refused rather than ignored."""
    if pipeline not in PIPELINES:
        raise OptionError("pipeline", pipeline, f"not one of {', '.join(PIPELINES)}")
    what = _PIPELINE_NAMES[pipeline]
    two_stage = pipeline != "one-stage"
    multiple = 2 * SPATIAL_FACTOR if two_stage else SPATIAL_FACTOR  # two-stage: stage 1 samples at half size
    for field, value in (("width", width), ("height", height)):
        try:
            check_side(field, value, multiple)
        except OptionError as e:
            if two_stage and isinstance(value, int) and value % SPATIAL_FACTOR == 0:
                raise OptionError(field, value, f"{e.problem} (the {what} pipeline samples stage 1 at half "
                                                "size)") from None
            raise
    check_frames_as("num_frames", num_frames)
    check_fps(fps)
    integer("seed", seed, low=0, high=MAX_SEED)
    if pipeline == "distilled":
        for field, value in (("steps", steps), ("video_guidance", video_guidance), ("audio_guidance", audio_guidance)):
            if value is not None:
                raise OptionError(field, value, "the distilled pipeline runs its fixed 8 + 3 sigmas without "
                                                "guidance; leave it unset")
    elif steps is not None:
        integer("steps", steps, low=STEPS[0], high=STEPS[1])
    check_guidance("video_guidance", video_guidance)
    check_guidance("audio_guidance", audio_guidance)
    if sde_noise not in SDE_NOISE:
        raise OptionError("sde_noise", sde_noise, f"not one of {', '.join(SDE_NOISE)}")
    if two_stage and upsampler is None:
        raise OptionError("upsampler", upsampler, f"the {what} pipeline needs the x2 latent upsampler "
                                                  "(e.g. ltx-2.3-spatial-upscaler-x2-1.0.safetensors)")
    if not two_stage and upsampler is not None:
        raise OptionError("upsampler", upsampler, "only the two-stage pipelines ('hq', 'distilled') use the x2 "
                                                  "upsampler; leave it unset for the one-stage pipeline")
    if pipeline != "hq" and sde_noise != "seeded":
        raise OptionError("sde_noise", sde_noise, f"only the 'hq' pipeline's res2s sampler draws SDE noise; the "
                                                  f"{what} pipeline samples with Euler")
    if image is None and number("image_strength", image_strength) != 1.0:
        raise OptionError("image_strength", image_strength, "there is no `image` to apply it to")
    if len(lora_strengths) != 2:
        raise OptionError("lora_strengths", lora_strengths, "must be (stage 1, stage 2)")
    for i, s in enumerate(lora_strengths):
        number(f"lora_strengths[{i}]", s)


def check_frames_as(field: str, frames) -> int:
    """:func:`check_frames` under the caller's name for the field (``num_frames`` in the Python API)."""
    try:
        return check_frames(frames)
    except OptionError as e:
        raise OptionError(field, frames, e.problem) from None
