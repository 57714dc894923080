"""The options of a Cosmos3 run, checked one way for every door (``generate``, the command line, the graph nodes,
the headless runner), before any model is loaded.

A wrong value raises :class:`~..core.checks.OptionError` naming the field (the Python API's spelling; each door
renames it to its own: ``--frames``, ``frames``). Nothing is changed behind the user's back: 0 is not "the
default", a frame count the VAE cannot make is refused with the nearest ones it can, NaN is refused.

The limits, and why:

* width and height: multiples of 16 (the Wan2.2 VAE's pixel block), 16 .. 8192;
* frames: ``4k + 1`` (the VAE's causal time compression: one frame, then groups of four), 1 .. 1025 (1 = an
  image; image-to-video needs at least 5);
* at most :data:`MAX_VIDEO_TOKENS` (2^18 = 262,144) transformer tokens per video, about 6x the 44,160 of the
  released model's 1280x720, 189-frame default (a 3840x2160 clip of 121 frames still fits). A token is a 2x2 patch
  of latent pixels of one latent frame: 32x32 pixels of 4 frames. Past this a single denoising step of the 15 B
  Nano (hidden size 4096) holds over 2 GB per activation and attends 35x the reference's pairs; sizes such as
  100000x100000 are refused here instead of dying at a multi-gigabyte allocation;
* video-to-video: keep the first or last ``k`` latent frames of the source clip (default 2, as diffusers'
  ``condition_frame_indexes_vision=(0, 1)``), which are its first or last ``4 (k - 1) + 1`` frames; the clip must
  have them (diffusers would repeat its last frame into the gap, a still the model then continues), and the video
  made must have more than ``k`` latent frames, or nothing would be generated; an image and a video together are
  refused;
* steps 1 .. 1000; guidance (cfg) a finite number in 1 .. 30 (1 turns it off, below 1 is not guidance); shift
  None (the checkpoint's) or a finite number in (0, 100]; fps finite in 1 .. 240; seed 0 .. 2^64 - 1; batch
  1 .. 64. The graph nodes take their widget ranges from here.
"""

from __future__ import annotations

import math

from ..core.checks import OptionError, integer, number

SPATIAL_FACTOR = 16  # pixels per latent pixel (Wan2.2 VAE, its 2x2 patchify included)
TEMPORAL_FACTOR = 4  # frames per latent frame after the first
LATENT_PATCH = 2  # latent pixels per token side (config latent_patch_size, 2 in every released checkpoint)

MAX_SIDE = 8192
MAX_FRAMES = 1025
MAX_VIDEO_TOKENS = 2**18
STEPS = (1, 1000)
GUIDANCE = (1.0, 30.0)
MAX_SHIFT = 100.0
FPS = (1.0, 240.0)
MAX_SEED = 2**64 - 1
MAX_BATCH = 64
SAMPLERS = ("auto", "uni_pc_bh2", "uni_pc_bh1", "euler")
VIDEO_KEEP = ("first", "last")  # which end of the source clip video-to-video conditions on
VIDEO_LATENT_FRAMES = 2  # latent frames of the source clip kept by default (diffusers: indexes (0, 1))


def nearest_frame_counts(num_frames: int) -> tuple[int, int]:
    """The ``4k + 1`` frame counts just below and above ``num_frames``."""
    below = (num_frames - 1) // TEMPORAL_FACTOR * TEMPORAL_FACTOR + 1
    return below, below + TEMPORAL_FACTOR


def video_tokens(width: int, height: int, num_frames: int) -> int:
    """Transformer tokens of one video: latent frames x the 2x2 patches of a latent frame (rows and columns
    zero-padded to whole patches, as the transformer's patchify does)."""
    frames = (num_frames - 1) // TEMPORAL_FACTOR + 1
    rows = math.ceil(height // SPATIAL_FACTOR / LATENT_PATCH)
    cols = math.ceil(width // SPATIAL_FACTOR / LATENT_PATCH)
    return frames * rows * cols


def check_side(field: str, value) -> int:
    """A width or height: a multiple of 16 in 16 .. 8192."""
    value = integer(field, value, low=SPATIAL_FACTOR, high=MAX_SIDE)
    if value % SPATIAL_FACTOR:
        low = value // SPATIAL_FACTOR * SPATIAL_FACTOR
        raise OptionError(field, value, f"not a multiple of {SPATIAL_FACTOR} (the VAE's pixel block); use "
                                        f"{low} or {low + SPATIAL_FACTOR}")
    return value


def check_frames(num_frames, min_frames: int = 1) -> int:
    """A ``4k + 1`` frame count in ``min_frames`` .. 1025; others are refused with the nearest valid ones named."""
    hint = " (image-to-video needs a video)" if min_frames > 1 else " (1 makes an image)"
    num_frames = integer("num_frames", num_frames, low=1, high=MAX_FRAMES)
    if num_frames < min_frames:
        raise OptionError("num_frames", num_frames, f"must be at least {min_frames}{hint}")
    if (num_frames - 1) % TEMPORAL_FACTOR:
        below, above = nearest_frame_counts(num_frames)
        options = f"{below} or {above}" if below >= min_frames else f"{above}"
        raise OptionError("num_frames", num_frames, f"not 4k+1 frames, which the Wan2.2 VAE makes (one frame, then "
                                                    f"groups of {TEMPORAL_FACTOR}); use {options}")
    return num_frames


def check_size(width, height, num_frames, *, min_frames: int = 1) -> None:
    """:func:`check_side` for both sides, :func:`check_frames`, and a video within :data:`MAX_VIDEO_TOKENS`."""
    width, height = check_side("width", width), check_side("height", height)
    num_frames = check_frames(num_frames, min_frames)
    tokens = video_tokens(width, height, num_frames)
    if tokens > MAX_VIDEO_TOKENS:
        raise OptionError(("width", "height", "num_frames"), (width, height, num_frames),
                          f"{tokens:,} transformer tokens per video, more than the {MAX_VIDEO_TOKENS:,} allowed "
                          f"(1280x720 with 189 frames has {video_tokens(1280, 720, 189):,}); make it smaller or "
                          "shorter")


def check_sampling(*, steps=None, guidance=None, shift=None, seed=None) -> None:
    """The sampler's numbers; None means "the checkpoint's choice" (seed: not given)."""
    if steps is not None:
        integer("steps", steps, low=STEPS[0], high=STEPS[1])
    if guidance is not None:
        number("guidance", guidance, low=GUIDANCE[0], high=GUIDANCE[1], hint="1 turns guidance off")
    if shift is not None:
        shift = number("shift", shift, high=MAX_SHIFT)
        if shift <= 0:
            raise OptionError("shift", shift, "must be above 0; without one the checkpoint's own is used")
    if seed is not None:
        integer("seed", seed, low=0, high=MAX_SEED)


def check_fps(fps) -> None:
    number("fps", fps, low=FPS[0], high=FPS[1])


def video_condition_frames(video_latent_frames: int) -> int:
    """Pixel frames of the source clip that ``video_latent_frames`` latent frames encode: ``4 (k - 1) + 1``."""
    return (video_latent_frames - 1) * TEMPORAL_FACTOR + 1


def check_video_options(*, video_keep=VIDEO_KEEP[0], video_latent_frames=VIDEO_LATENT_FRAMES, num_frames=None,
                        image=None) -> None:
    """Video-to-video's own options: which end of the clip (``video_keep``), how many latent frames of it are kept
    (``video_latent_frames``) and that the video made (``num_frames``, when known) leaves some to generate; an
    ``image`` as well is refused."""
    if image is not None:
        raise OptionError(("image", "video"), ("<given>", "<given>"), "give one: an image (image-to-video) or a "
                                                                      "video (video-to-video), not both")
    if video_keep not in VIDEO_KEEP:
        raise OptionError("video_keep", video_keep, f"not one of {', '.join(VIDEO_KEEP)}")
    k = integer("video_latent_frames", video_latent_frames, low=1, high=(MAX_FRAMES - 1) // TEMPORAL_FACTOR)
    if num_frames is not None:
        latent = (int(num_frames) - 1) // TEMPORAL_FACTOR + 1
        if latent <= k:
            need = k * TEMPORAL_FACTOR + 1
            raise OptionError(("num_frames", "video_latent_frames"), (num_frames, k),
                              f"keeping {k} latent frame(s) of the clip leaves none of the {latent} to generate; "
                              f"make at least {need} frames or keep fewer")


def check_clip_length(frames: int, video_latent_frames: int, field: str = "video") -> None:
    """A source clip of ``frames`` frames holds the ``4 (k - 1) + 1`` that ``k`` kept latent frames encode."""
    need = video_condition_frames(video_latent_frames)
    if frames < need:
        fits = max(frames - 1, 0) // TEMPORAL_FACTOR + 1
        raise OptionError(field, f"<{frames} frame(s)>", f"too short: keeping {video_latent_frames} latent frame(s) "
                                                         f"takes {need} frames of the clip; keep {fits} latent "
                                                         "frame(s) instead")


def check_request(*, prompt, negative_prompt, width, height, num_frames, fps, steps, guidance, shift, seed,
                  sampler, image=None, video=None, video_keep=VIDEO_KEEP[0],
                  video_latent_frames=VIDEO_LATENT_FRAMES) -> None:
    """Every option of :func:`~.pipeline.generate` that needs no checkpoint (the image is read by
    :func:`~.pipeline.preprocess_image` and the video by :func:`~.pipeline.preprocess_video`, the
    checkpoint-dependent recipe by :func:`~.pipeline.sampling_schedule`)."""
    for field, value in (("prompt", prompt), ("negative_prompt", negative_prompt)):
        if value is not None and not isinstance(value, str):
            raise OptionError(field, value, "must be text")
    if video is not None:  # the options first (an image too is refused), the frame count once it is known good
        check_video_options(video_keep=video_keep, video_latent_frames=video_latent_frames, image=image)
    check_size(width, height, num_frames, min_frames=5 if image is not None and num_frames != 1 else 1)
    if video is not None:
        check_video_options(video_keep=video_keep, video_latent_frames=video_latent_frames, num_frames=num_frames)
    check_fps(fps)
    check_sampling(steps=steps, guidance=guidance, shift=shift, seed=seed)
    if sampler not in SAMPLERS:
        raise OptionError("sampler", sampler, f"not one of {', '.join(SAMPLERS)}")
