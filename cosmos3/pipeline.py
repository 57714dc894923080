"""Cosmos3 pipeline stages as plain functions over plain data, and the ``generate`` entry point.

Stages, in the order a graph (or :func:`generate`) runs them; the graph nodes call the same functions:

1. :func:`encode_prompts`      prompt ids -> per-layer UND keys/values of prompt and negative prompt
2. :func:`empty_latents` / :func:`image_latents` / :func:`video_latents`   the starting latent (raw VAE latents, as
                               ComfyUI keeps them) and its clean conditioning frames
3. :func:`sampling_schedule`   the checkpoint's sampling recipe: sigmas, sampler and guidance
4. :func:`sample`              raw latents in, raw latents out: normalises (:mod:`.latent_format`), draws the
                               seed's noise, runs :func:`denoise` (UniPC or flow Euler with classifier-free
                               guidance over the GEN path), and takes the result back to raw latents
5. :func:`decode`              raw latents -> frames ``[B, T, H, W, 3]`` in [0, 1], one latent frame at a time

Joint sound (sound-capable checkpoints: ``sound_gen`` in the transformer config and a ``sound_tokenizer/``): a
sound latent ``[B, sound_dim, T_s]`` (:func:`empty_sound_latents`, :func:`sound_latent_frames`) travels beside the
video latent; :func:`sample` given ``sound=`` denoises both as one sampler state ``(video, sound)`` (each part keeps
its own UniPC history, as the reference's per-stream scheduler copies do) and :func:`decode_sound` makes the
waveform. Sound latents have no normalisation: the sampler sees them as they are.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from ..core.offload import check_resident, enable_block_offload, resident_for_model
from ..core.noise import noise_generator, seeded_noise  # noise_generator: also the nodes' entry point
from ..core.sampling import (
    flow_euler_schedule,
    sample_euler,
    sample_euler_stochastic,
    sample_unipc,
    unipc_flow_schedule,
)
from ..core.checks import OptionError, require_finite
from ..core.images import to_rgb01, to_rgb255
from ..core.videos import frames_of
from .options import (
    SAMPLERS,
    SPATIAL_FACTOR,
    TEMPORAL_FACTOR,
    VIDEO_KEEP,
    VIDEO_LATENT_FRAMES,
    check_clip_length,
    check_request,
    check_sampling,
    check_video_options,
    video_condition_frames,
)
from .prompt import PromptOptions, prompt_ids
from .transformer import Cosmos3Transformer, TextKV

# ---------------------------------------------------------------------------------------------- sizes
def latent_shape(num_frames: int, height: int, width: int) -> tuple[int, int, int]:
    """Latent ``(T, H, W)`` of a clip: 4x causal time compression, 16x space."""
    return (num_frames - 1) // TEMPORAL_FACTOR + 1, height // SPATIAL_FACTOR, width // SPATIAL_FACTOR


def sound_latent_frames(sound_decoder, num_frames: int, fps: float) -> int:
    """Sound latent frames of a clip of ``num_frames`` at ``fps``: its ``int(num_frames / fps * sample_rate)``
    samples rounded up to whole decoder hops (per diffusers' ``prepare_latents``)."""
    return sound_decoder.latent_frames(num_frames, fps)


def empty_sound_latents(sound_decoder, num_frames: int, fps: float, batch: int = 1, device=None) -> torch.Tensor:
    """Zero sound latents ``[B, sound_dim, T_s]`` for a clip of ``num_frames`` at ``fps`` (every frame is
    generated: sampling replaces them with the seed's noise)."""
    frames = sound_latent_frames(sound_decoder, num_frames, fps)
    return torch.zeros(batch, sound_decoder.latent_channels, frames, device=device)


def initial_noise(shape, seed: int | torch.Generator) -> torch.Tensor:
    """The starting noise for ``seed`` (or continuing a generator): the pack's seed rule,
    :func:`core.noise.seeded_noise` (float32 from a CPU generator, the ComfyUI / diffusers convention)."""
    return seeded_noise(seed, shape)[0]


# ---------------------------------------------------------------------------------------------- prompts
@dataclass
class Cosmos3Conditioning:
    """The cached prompt encodings a sampler needs; ``uncond`` is None when guidance is off."""

    cond: TextKV
    uncond: TextKV | None
    fps: float
    meta: dict = field(default_factory=dict)


@torch.no_grad()
def encode_prompts(
    transformer: Cosmos3Transformer,
    tokenizer,
    prompt: str,
    negative_prompt: str | None = "",
    *,
    num_frames: int,
    height: int,
    width: int,
    fps: float = 24.0,
    options: PromptOptions = PromptOptions(),
    with_negative: bool = True,
) -> Cosmos3Conditioning:
    """Tokenize both prompts with the reference templates and run the UND path once for each."""
    cond_ids, uncond_ids = prompt_ids(
        tokenizer, prompt, negative_prompt, num_frames=num_frames, height=height, width=width, fps=fps,
        options=options,
    )
    cond = transformer.encode_text(cond_ids)
    uncond = transformer.encode_text(uncond_ids) if with_negative else None
    meta = dict(num_frames=num_frames, height=height, width=width, prompt_tokens=len(cond_ids),
                negative_tokens=len(uncond_ids))
    return Cosmos3Conditioning(cond, uncond, float(fps), meta)


# ---------------------------------------------------------------------------------------------- latents
def empty_latents(num_frames: int, height: int, width: int, batch: int = 1, channels: int = 48,
                  device=None) -> torch.Tensor:
    """Zero latents ``[B, C, T, H/16, W/16]`` for text-to-video (text-to-image when ``num_frames == 1``)."""
    return torch.zeros(batch, channels, *latent_shape(num_frames, height, width), device=device)


def preprocess_image(image, height: int, width: int) -> torch.Tensor:
    """One picture -> ``[1, 3, H, W]`` in [-1, 1], scaled to cover ``H x W`` and centre-cropped.

    Takes what :func:`~..core.images.to_rgb255` reads: a file path, a PIL image, a uint8 / uint16 array, or a float
    tensor/array ``[H, W, 3]`` or ``[1, H, W, 3]`` in [0, 1] (ComfyUI's IMAGE); 16-bit greyscale is scaled, not
    clipped, and transparency is refused. Resampling is bilinear with antialiasing on values in 0..255 and the crop
    offsets are rounded, as in the reference.
    """
    x = to_rgb255(image).permute(2, 0, 1).unsqueeze(0)
    src_h, src_w = x.shape[-2:]
    scale = max(width / src_w, height / src_h)
    rh, rw = math.ceil(scale * src_h), math.ceil(scale * src_w)
    x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)
    top, left = round((rh - height) / 2), round((rw - width) / 2)
    x = x[:, :, top : top + height, left : left + width]
    return x.round().clamp(0, 255) / 127.5 - 1.0


@torch.no_grad()
def encode_image(vae, image: torch.Tensor) -> torch.Tensor:
    """Raw latent ``[1, C, 1, h, w]`` (float32) of one preprocessed image: the VAE sees that single frame only.

    (The causal encoder treats frame 0 as its own chunk, so this equals frame 0 of encoding a video of
    repeated images, at a fraction of the work.)
    """
    dtype = next(vae.parameters()).dtype
    device = next(vae.parameters()).device
    return vae.encode(image.to(device=device, dtype=dtype).unsqueeze(2)).float()


def image_latents(vae, image, num_frames: int, height: int, width: int, batch: int = 1) -> tuple[torch.Tensor, list[int]]:
    """Image-to-video start: raw latents whose frame 0 holds the encoded image; the list of clean frames.
    The latents are on the VAE's device."""
    return first_frame_latents(vae, preprocess_image(image, height, width), num_frames, batch)


def first_frame_latents(vae, pixels: torch.Tensor, num_frames: int, batch: int = 1) -> tuple[torch.Tensor, list[int]]:
    """:func:`image_latents` from the already preprocessed ``[1, 3, H, W]`` pixels."""
    first = encode_image(vae, pixels)
    latents = empty_latents(num_frames, *pixels.shape[-2:], batch, first.shape[1],
                            device=first.device)
    latents[:, :, :1] = first
    return latents, [0]


@torch.no_grad()
def encode_video(vae, frames: torch.Tensor, callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Frames ``[T, H, W, C]`` in [0, 1] (ComfyUI's IMAGE) -> raw latents ``[1, z, 1 + (T - 1) // 4, H/16, W/16]``.

    As ComfyUI's ``VAE.encode`` does (``comfy/sd.py``): height and width are centre-cropped to whole multiples
    of the VAE's 16 pixels, channels past the third are dropped, pixels go to [-1, 1] as ``2 x - 1``; frames
    past the last whole group of 4 are ignored. Returns float32 on the VAE's device.
    """
    if frames.ndim != 4 or frames.shape[-1] < 3:
        raise ValueError(f"expected frames [T, H, W, 3], got {list(frames.shape)}")
    factor = SPATIAL_FACTOR
    for dim in (1, 2):
        keep = frames.shape[dim] // factor * factor
        if keep == 0:
            raise ValueError(f"frames of {frames.shape[2]}x{frames.shape[1]} pixels are smaller than one latent "
                             f"pixel ({factor}x{factor})")
        frames = frames.narrow(dim, (frames.shape[dim] - keep) // 2, keep)
    dtype = next(vae.parameters()).dtype
    device = next(vae.parameters()).device
    video = frames[..., :3].to(device=device, dtype=torch.float32).permute(3, 0, 1, 2).unsqueeze(0) * 2.0 - 1.0
    return vae.encode(video.to(dtype), callback=callback).float()


def _resized_frame(frame, height: int, width: int, field: str) -> torch.Tensor:
    """One frame of a source clip -> float32 ``[H, W, 3]`` in [0, 1], stretched to ``H x W`` (no crop).

    Per diffusers' Cosmos3 pipeline (``prepare_latents`` -> ``VideoProcessor.preprocess_video``, made with
    ``resample="bilinear"``): an 8-bit PIL frame is resized by Pillow's bilinear filter, then divided by 255, as
    there. Frames given as arrays or tensors (ComfyUI's IMAGE) are resized by the same filter in float, torch's
    antialiased bilinear (Pillow's filter support), rather than the nearest-neighbour ``interpolate`` diffusers
    falls back to for tensors, so a clip conditions alike whatever form it comes in (to 8-bit rounding).
    """
    if type(frame).__module__.startswith("PIL") and frame.mode in ("RGB", "L"):
        from PIL import Image

        if frame.size != (width, height):
            frame = frame.resize((width, height), resample=Image.Resampling.BILINEAR)
        return to_rgb01(frame, field)
    x = to_rgb01(frame, field)
    if tuple(x.shape[:2]) != (height, width):
        x = F.interpolate(x.permute(2, 0, 1).unsqueeze(0), size=(height, width), mode="bilinear",
                          align_corners=False, antialias=True)
        x = x[0].permute(1, 2, 0).clamp_(0.0, 1.0)
    return x


def preprocess_video(video, height: int, width: int, *, keep: str = VIDEO_KEEP[0],
                     latent_frames: int = VIDEO_LATENT_FRAMES, field: str = "video") -> torch.Tensor:
    """The conditioning part of a source clip -> ``[1, 3, n, H, W]`` in [-1, 1], ``n = 4 (latent_frames - 1) + 1``.

    ``video``: what :func:`~..core.videos.frames_of` reads (frames ``[F, H, W, C]`` such as ComfyUI's IMAGE, a
    list of pictures, a folder of pictures or a video file). As diffusers' Cosmos3 pipeline does for video-to-video
    (``prepare_latents``): the clip's first (``keep="first"``) or last ``n`` frames, each stretched to ``H x W``
    without keeping the aspect ratio (see :func:`_resized_frame`), as ``2 x - 1``. Only those ``n`` frames are read
    and resized. A clip shorter than ``n`` frames is refused (:func:`~.options.check_clip_length`).
    """
    check_video_options(video_keep=keep, video_latent_frames=latent_frames)
    frames = frames_of(video, field)
    check_clip_length(len(frames), latent_frames, field)
    n = video_condition_frames(latent_frames)
    frames = frames[:n] if keep == "first" else frames[len(frames) - n :]
    x = torch.stack([_resized_frame(f, height, width, field) for f in frames])  # [n, H, W, 3]
    return (x * 2.0 - 1.0).permute(3, 0, 1, 2).unsqueeze(0)


def video_latents(vae, pixels: torch.Tensor, num_frames: int, batch: int = 1) -> tuple[torch.Tensor, list[int]]:
    """Video-to-video start from :func:`preprocess_video`'s ``[1, 3, n, H, W]``: raw latents whose first
    ``k = (n - 1) / 4 + 1`` frames hold the encoded clip, and those frames' indexes (kept clean by sampling).

    diffusers encodes the whole ``num_frames`` video (the clip, then its last frame repeated) and keeps latent
    frames ``0 .. k - 1``; the causal encoder makes those from the clip's ``n`` frames alone, so only they are
    encoded here. The latents are on the VAE's device.
    """
    n = pixels.shape[2]
    if (n - 1) % TEMPORAL_FACTOR:
        raise ValueError(f"video_latents: expected 4k+1 clip frames, got {n}")
    dtype = next(vae.parameters()).dtype
    device = next(vae.parameters()).device
    with torch.no_grad():
        clip = vae.encode(pixels.to(device=device, dtype=dtype)).float()
    latents = empty_latents(num_frames, *pixels.shape[-2:], batch, clip.shape[1], device=clip.device)
    k = clip.shape[2]
    if k >= latents.shape[2]:
        raise ValueError(f"video_latents: the clip's {k} latent frames leave none of {latents.shape[2]} to generate")
    latents[:, :, :k] = clip
    return latents, list(range(k))


def start_latents(latents: torch.Tensor, noise: torch.Tensor, condition_frames: list[int]) -> torch.Tensor:
    """Noise everywhere except the clean conditioning frames, which keep their latents; on the latents'
    device (the noise is drawn on the CPU, for the same numbers on every device)."""
    x = noise.to(latents.device, latents.dtype, copy=True)
    for f in condition_frames:
        x[:, :, f] = latents[:, :, f]
    return x


# ---------------------------------------------------------------------------------------------- sampling
@dataclass
class Schedule:
    """Sigmas (``steps + 1`` floats ending at 0) and the integer timesteps the model is fed."""

    sigmas: list[float]
    timesteps: list[float]
    sampler: str  # "unipc" or "euler"
    solver: dict = field(default_factory=dict)  # UniPC options: order, solver_type, lower_order_final, ...
    stochastic: bool = False  # euler only: re-noise every step (distilled checkpoints' stochastic_sampling)


def make_schedule(
    steps: int,
    scheduler_config: dict | None = None,
    *,
    shift: float | None = None,
    native: bool = False,
    sigmas: list[float] | None = None,
) -> Schedule:
    """The sampling schedule: explicit ``sigmas`` (distilled checkpoints, flow Euler) or the UniPC one
    described by the checkpoint's ``scheduler_config.json`` (``shift`` overrides its ``flow_shift``).

    With explicit sigmas the scheduler config still decides whether Euler re-noises each step
    (``stochastic_sampling``) and its ``shift`` (1 for distilled lists, whose shift is baked in).
    """
    cfg = dict(scheduler_config or {})
    if sigmas is not None:
        s, t = flow_euler_schedule(list(sigmas), shift=float(shift if shift is not None else cfg.get("shift", 1.0)))
        return Schedule(list(s), list(t), "euler", stochastic=bool(cfg.get("stochastic_sampling", False)))
    if steps < 1:
        raise ValueError(f"steps={steps} must be at least 1")
    s, t = unipc_flow_schedule(steps, cfg, shift=shift, native=native)
    solver = dict(
        order=int(cfg.get("solver_order", 2)),
        solver_type=cfg.get("solver_type", "bh2"),
        lower_order_final=bool(cfg.get("lower_order_final", True)),
        disable_corrector=tuple(cfg.get("disable_corrector") or ()),
    )
    if not cfg.get("predict_x0", True):
        raise ValueError("scheduler config: predict_x0=false is not supported for flow checkpoints")
    return Schedule(list(s), list(t), "unipc", solver)


DEFAULT_STEPS = 35
DEFAULT_GUIDANCE = 6.0


def sampling_schedule(
    settings,
    *,
    steps: int | None = None,
    guidance: float | None = None,
    shift: float | None = None,
    sampler: str = "auto",
    sigmas=None,
) -> tuple[Schedule, float]:
    """The sampling recipe of a checkpoint, shared by :func:`generate` and the sampler node: ``(schedule, guidance)``.

    ``settings`` is a loaded checkpoint's :class:`~.loader.Cosmos3Settings` (scheduler config, distilled sigmas,
    native-schedule flag). ``None`` means "the checkpoint's choice" for every argument.

    * ``sampler="auto"`` on a distilled checkpoint: flow Euler over its fixed sigma list with guidance 1 (its
      guidance is built into the weights). ``guidance`` other than 1, or ``steps`` other than the list's
      length, is refused rather than silently changed.
    * Otherwise UniPC as the checkpoint's ``scheduler_config.json`` describes it (35 steps, guidance 6 by
      default); ``uni_pc_bh1`` / ``uni_pc_bh2`` pick the solver variant, ``euler`` runs flow Euler over the
      same sigmas. ``shift`` replaces the config's ``flow_shift``.
    * Explicit ``sigmas`` (a trailing 0 is dropped) replace the list, and ``steps``: flow Euler over them,
      shifted by ``shift`` when it is given (as diffusers' flow Euler scheduler does with custom sigmas).
    """
    check_sampling(steps=steps, guidance=guidance, shift=shift)
    if sampler not in SAMPLERS:
        raise OptionError("sampler", sampler, f"not one of {', '.join(SAMPLERS)}")
    distilled = settings.distilled_sigmas if sampler == "auto" else None
    if distilled is not None:
        if guidance is not None and float(guidance) != 1.0:
            raise OptionError("guidance", guidance, "this distilled checkpoint has guidance built in; use 1, or a "
                                                    "sampler other than 'auto' to run it as an ordinary flow model")
        guidance = 1.0
        if sigmas is None:
            if steps is not None and steps != len(distilled):
                raise OptionError("steps", steps, f"this distilled checkpoint samples in exactly {len(distilled)} "
                                                  f"steps; use {len(distilled)}, or a sampler other than 'auto'")
            sigmas = distilled
    guidance = DEFAULT_GUIDANCE if guidance is None else float(guidance)
    config = dict(settings.scheduler_config)
    if sigmas is not None:
        values = [float(v) for v in torch.as_tensor(sigmas, dtype=torch.float64).flatten().tolist()]
        if values and values[-1] == 0.0:
            values = values[:-1]
        if not values or not all(0.0 < v <= 1.0 for v in values):
            raise OptionError("sigmas", values, "need at least one value, each in (0, 1], before the final 0")
        return make_schedule(len(values), config, shift=shift, sigmas=values), guidance
    if sampler in ("uni_pc_bh1", "uni_pc_bh2"):
        config["solver_type"] = sampler[-3:]
    schedule = make_schedule(DEFAULT_STEPS if steps is None else steps, config, shift=shift,
                             native=settings.use_native_flow_schedule)
    if sampler == "euler":  # the same sigmas (already shifted), walked by flow Euler
        schedule = make_schedule(len(schedule.sigmas) - 1, config, shift=1.0, sigmas=schedule.sigmas[:-1])
    return schedule, guidance


class FlowDenoiser:
    """Wraps the transformer as a k-diffusion style denoiser ``(x, sigma) -> x0`` with CFG.

    Both guidance branches run in one batched call (rows ``[uncond..., cond...]``) unless ``batched_cfg``
    is False. The velocity is taken to float32 before guidance, and ``x0 = x - sigma * v``.

    With ``sound_frames`` the state is the pair ``(video, sound)`` and so is x0; guidance applies to each part
    with the same scale (per diffusers' Cosmos3 pipeline).
    """

    def __init__(self, transformer: Cosmos3Transformer, conditioning: Cosmos3Conditioning, latent_batch: int,
                 latent_thw: tuple[int, int, int], condition_frames: list[int], schedule: Schedule,
                 guidance: float, batched_cfg: bool = True, sound_frames: int = 0):
        self.transformer = transformer
        self.guidance = float(guidance)
        self.timestep_of = dict(zip(schedule.sigmas, schedule.timesteps))
        self.cfg = self.guidance != 1.0
        if self.cfg and conditioning.uncond is None:
            raise ValueError("guidance != 1 needs the negative prompt's encoding (conditioning has none)")
        fps = conditioning.fps
        self.batched = batched_cfg and self.cfg
        b = latent_batch
        self.sound = int(sound_frames) > 0
        kw = dict(sound_frames=int(sound_frames))
        if self.batched:
            self.ctx = transformer.prepare([conditioning.uncond] * b + [conditioning.cond] * b, latent_thw, fps,
                                           condition_frames, **kw)
        else:
            self.ctx = transformer.prepare([conditioning.cond] * b, latent_thw, fps, condition_frames, **kw)
            if self.cfg:
                self.ctx_uncond = transformer.prepare([conditioning.uncond] * b, latent_thw, fps, condition_frames,
                                                      **kw)

    def _run(self, x, t, ctx) -> list[torch.Tensor]:
        """The model's velocity parts (float32) for the state ``x`` (a tensor, or ``(video, sound)``)."""
        if self.sound:
            video, sound = self.transformer(x[0], t, ctx, sound=x[1])
            return [video.float(), sound.float()]
        return [self.transformer(x, t, ctx).float()]

    def velocity(self, x, sigma: float):
        t = self.timestep_of[sigma]
        if not self.cfg:
            v = self._run(x, t, self.ctx)
        elif self.batched:
            both = tuple(torch.cat((p, p)) for p in x) if self.sound else torch.cat((x, x))
            v = []
            for part in self._run(both, t, self.ctx):
                uncond, cond = part.chunk(2)
                v.append(uncond + self.guidance * (cond - uncond))
        else:
            v = [uncond + self.guidance * (cond - uncond)
                 for cond, uncond in zip(self._run(x, t, self.ctx), self._run(x, t, self.ctx_uncond))]
        return tuple(v) if self.sound else v[0]

    def __call__(self, x, sigma: float):
        v = self.velocity(x, sigma)
        if self.sound:
            return tuple(p - sigma * vp for p, vp in zip(x, v))
        return x - sigma * v


@torch.no_grad()
def denoise(
    transformer: Cosmos3Transformer,
    conditioning: Cosmos3Conditioning,
    x: torch.Tensor,
    schedule: Schedule,
    *,
    guidance: float = 6.0,
    condition_frames: list[int] = (),
    callback: Callable[[dict], None] | None = None,
    batched_cfg: bool = True,
    generator: torch.Generator | None = None,
    sound: torch.Tensor | None = None,
):
    """Run the sampler from the noisy start ``x`` (float32, ``[B, C, T, H, W]``) to clean latents.

    ``callback`` gets ``{"i", "x", "sigma", "sigma_next", "denoised"}`` after every step; an exception
    raised there (e.g. ComfyUI's interrupt) stops sampling and propagates. A re-noising schedule draws its
    noise from ``generator`` (continue the one that made the start noise, so one seed drives the run).

    ``sound`` (the noisy sound start ``[B, sound_dim, T_s]``) makes the sampler state the pair ``(video, sound)``,
    stepped together with one UniPC history per part; the result is then that pair. The callback's ``x`` and
    ``denoised`` stay the video's (what previews read), with the sound's under ``sound_x`` / ``sound_denoised``.
    """
    x = x.to(device=transformer.device, dtype=torch.float32)
    sound_frames = 0
    if sound is not None:
        sound = sound.to(device=transformer.device, dtype=torch.float32)
        sound_frames = sound.shape[-1]
        if callback is not None:
            user_callback = callback

            def callback(info: dict) -> None:
                info = dict(info)
                info["x"], info["sound_x"] = info["x"]
                info["denoised"], info["sound_denoised"] = info["denoised"]
                user_callback(info)

    model = FlowDenoiser(transformer, conditioning, x.shape[0], tuple(x.shape[2:]), list(condition_frames), schedule,
                         guidance, batched_cfg, sound_frames)
    state = x if sound is None else (x, sound)
    if schedule.sampler == "euler" and schedule.stochastic:
        if generator is None:
            raise ValueError("a re-noising (stochastic) schedule needs a noise generator")
        frames = list(condition_frames)
        clean = x[:, :, frames].clone()

        def pin_clean_frames(x):
            # Re-noising would disturb the clean conditioning frames: put them back after every step.
            (x if sound is None else x[0])[:, :, frames] = clean
            return x

        return sample_euler_stochastic(
            model, state, schedule.sigmas, callback=callback,
            noise_sampler=lambda x: seeded_noise(generator, x.shape)[0],
            after_step=pin_clean_frames if frames else None,
        )
    if schedule.sampler == "euler":
        return sample_euler(model, state, schedule.sigmas, callback=callback)
    return sample_unipc(model, state, schedule.sigmas, callback=callback, **schedule.solver)


def check_conditioning(conditioning: Cosmos3Conditioning, latents: torch.Tensor) -> None:
    """The prompt templates name a size and length: refuse latents of another one."""
    meta = conditioning.meta
    if latents.ndim != 5 or tuple(latents.shape[2:]) != latent_shape(meta["num_frames"], meta["height"], meta["width"]):
        if latents.ndim != 5:
            raise ValueError(f"expected video latents [B, C, T, h, w], got {list(latents.shape)}")
        t, h, w = latents.shape[2:]
        raise ValueError(
            f"the conditioning was encoded for {meta['width']}x{meta['height']}, {meta['num_frames']} frames, but the "
            f"latent is {w * SPATIAL_FACTOR}x{h * SPATIAL_FACTOR}, {TEMPORAL_FACTOR * (t - 1) + 1} frames; encode the "
            "prompt for the latent that is sampled"
        )


@torch.no_grad()
def sample(
    transformer: Cosmos3Transformer,
    conditioning: Cosmos3Conditioning,
    latents: torch.Tensor,
    schedule: Schedule,
    *,
    latent_format,
    guidance: float,
    seed: int,
    condition_frames: list[int] = (),
    callback: Callable[[dict], None] | None = None,
    batched_cfg: bool = True,
    sound: torch.Tensor | None = None,
):
    """Raw latents ``[B, C, T, h, w]`` in, sampled raw latents out (float32, on the transformer's device).

    ``latent_format`` (the checkpoint's :class:`~.latent_format.WanLatentFormat`) normalises the latents for the
    transformer and takes the result back. Only the ``condition_frames`` of ``latents`` are read (kept clean);
    every other frame starts as the seed's noise, drawn from one CPU generator that any re-noising schedule then
    continues. ``callback`` gets each step's dict (its ``denoised`` is in the normalised space, what latent
    previews read). The conditioning must have been encoded for this latent's size and length.

    Joint sound: ``sound`` (sound latents ``[B, sound_dim, T_s]``, e.g. :func:`empty_sound_latents`; its values are
    not read, every sound frame is generated) is denoised with the video, and the result is the pair ``(video
    latents, sound latents)``. Its noise is drawn from the same generator right after the video's, the order of
    diffusers' Cosmos3 pipeline.
    """
    check_conditioning(conditioning, latents)
    frames = list(condition_frames)
    clean = latent_format.process_in(latents.float())
    generator = noise_generator(seed)
    x = start_latents(clean, initial_noise(latents.shape, generator), frames)
    sound_x = None
    if sound is not None:
        if sound.ndim != 3 or sound.shape[0] != latents.shape[0]:
            raise ValueError(f"sound latents {list(sound.shape)}: expected [{latents.shape[0]}, channels, frames]")
        sound_x = initial_noise(sound.shape, generator)
    out = denoise(transformer, conditioning, x, schedule, guidance=guidance, condition_frames=frames,
                  callback=callback, batched_cfg=batched_cfg, generator=generator, sound=sound_x)
    if sound is None:
        return latent_format.process_out(out)
    return latent_format.process_out(out[0]), out[1]


# ---------------------------------------------------------------------------------------------- decode
@torch.no_grad()
def decode(vae, latents: torch.Tensor, callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Raw latents ``[B, C, T, h, w]`` -> frames ``[B, T', H, W, 3]`` float32 in [0, 1].

    Frames that are not finite raise :class:`~..core.checks.NonFiniteError` (clamped, they would be a black video).
    """
    dtype = next(vae.parameters()).dtype
    device = next(vae.parameters()).device
    video = vae.decode(latents.to(device=device, dtype=dtype), callback=callback)  # [B, 3, T', H, W] in [-1, 1]
    require_finite(video, "the decoded frames")  # before the clamp, which would hide infinities
    return video.float().mul_(0.5).add_(0.5).clamp_(0, 1).permute(0, 2, 3, 4, 1)


@torch.no_grad()
def decode_sound(sound_decoder, sound: torch.Tensor) -> torch.Tensor:
    """Sound latents ``[B, sound_dim, T_s]`` -> waveform ``[B, channels, T_s * hop]`` float32 in [-1, 1] at
    ``sound_decoder.sample_rate`` (the decoder's clamp). A waveform that is not finite raises
    :class:`~..core.checks.NonFiniteError`."""
    w = sound_decoder.decode(sound)
    require_finite(w, "the decoded sound")
    return w.float()


class Cosmos3Video(NamedTuple):
    """What :func:`generate` returns for a run with sound: frames ``[T, H, W, 3]`` in [0, 1], the waveform
    ``[channels, N]`` in [-1, 1] and its sample rate. Unpacks as ``frames, waveform, sample_rate = ...``."""

    frames: torch.Tensor
    waveform: torch.Tensor
    sample_rate: int


# ---------------------------------------------------------------------------------------------- one call
def _release(device) -> None:
    """Free what was just dropped (CUDA keeps freed blocks cached otherwise)."""
    import gc

    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def generate(
    checkpoint,
    prompt: str,
    negative_prompt: str = "",
    image=None,
    *,
    video=None,
    video_keep: str = VIDEO_KEEP[0],
    video_latent_frames: int = VIDEO_LATENT_FRAMES,
    width: int = 1280,
    height: int = 720,
    num_frames: int = 189,
    fps: float = 24.0,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    shift: float | None = None,
    sigmas: list[float] | None = None,
    sampler: str = "auto",
    use_system_prompt: bool | None = None,
    add_duration_template: bool = True,
    add_resolution_template: bool = True,
    device=None,
    dtype: str | torch.dtype | None = None,
    callback: Callable[[dict], None] | None = None,
    vae=None,
    resident_blocks: int | str | None = None,
    sound: bool | None = None,
):
    """Text-to-video, image-to-video (``image`` given), video-to-video (``video`` given) or text-to-image
    (``num_frames == 1``) in one call.

    ``checkpoint`` is a diffusers-format Cosmos3 folder (or an already loaded ``Cosmos3Checkpoint``); ``vae``
    optionally names a VAE folder or file to use instead of its ``vae/`` (e.g. ComfyUI's ``wan2.2_vae.safetensors``).
    Defaults follow the reference pipeline (1280x720, 189 frames at 24 fps, 35 UniPC steps, guidance 6).
    ``steps``, ``guidance``, ``shift``, ``sampler`` and ``sigmas`` follow :func:`sampling_schedule`, the recipe
    the sampler node uses too: a distilled checkpoint (``distilled_sigmas`` in its ``modular_model_index.json``)
    samples its own list with guidance 1. The same ``seed`` gives the same starting noise as diffusers'
    ``Cosmos3OmniPipeline``. Returns frames ``[T, H, W, 3]`` float32 in [0, 1].

    Sound: a sound-capable checkpoint (``sound_gen`` in its transformer config and a ``sound_tokenizer/``) makes a
    sound track with the video unless ``sound=False``, as diffusers' pipeline does with ``enable_sound=True``, and
    then returns a :class:`Cosmos3Video` ``(frames, waveform [channels, N], sample_rate)`` instead of the frames
    alone; ``sound=True`` insists on it (an error for a checkpoint without sound). Checkpoints without sound, and
    ``sound=False``, return the frames as before.

    Video-to-video continues a clip: ``video`` (frames ``[F, H, W, 3]`` in [0, 1] such as ComfyUI's IMAGE, uint8
    frames, a list of pictures, a folder of pictures or a video file) gives its first (``video_keep="first"``) or
    last ``4 (video_latent_frames - 1) + 1`` frames (5 by default), stretched to ``width x height``, as the first
    ``video_latent_frames`` latent frames of the video, which sampling keeps; the rest is generated, as diffusers'
    ``Cosmos3OmniPipeline(video=..., condition_frame_indexes_vision=range(k), condition_video_keep=...)`` does
    (:func:`preprocess_video`, :func:`video_latents`).

    ``resident_blocks``: keep only that many transformer layers on the device and stream the others from host
    memory (:mod:`..core.offload`; the same frames, for a model larger than the GPU); None keeps all of them;
    ``"auto"``: as many as the device's free memory holds once the VAEs are there (a quarter left to activations).

    Every option (:mod:`.options`), the image and the checkpoint's recipe are checked before any weight is loaded;
    a wrong one raises :class:`~..core.checks.OptionError` naming the field. Frames that decode to NaN or
    infinities raise :class:`~..core.checks.NonFiniteError`.
    """
    from .loader import Cosmos3Checkpoint, folder_has_sound, load_checkpoint, read_model_index, read_settings

    # Every check first, so that a wrong option or file is reported before any weight is read.
    check_request(prompt=prompt, negative_prompt=negative_prompt, width=width, height=height, num_frames=num_frames,
                  fps=fps, steps=steps, guidance=guidance, shift=shift, seed=seed, sampler=sampler, image=image,
                  video=video, video_keep=video_keep, video_latent_frames=video_latent_frames)
    resident_blocks = check_resident(resident_blocks)
    pixels = clip = None
    if video is not None:
        clip = preprocess_video(video, height, width, keep=video_keep, latent_frames=video_latent_frames)
    elif image is not None and num_frames > 1:
        pixels = preprocess_image(image, height, width)
    elif image is not None:
        warnings.warn("text-to-image (num_frames=1) ignores the conditioning image", stacklevel=2)
    loaded = isinstance(checkpoint, Cosmos3Checkpoint)
    if loaded and vae is not None:
        raise ValueError("generate: `vae` applies when loading a checkpoint folder, not to a loaded Cosmos3Checkpoint")
    if not loaded:
        read_model_index(checkpoint)  # the folder is a Cosmos3 checkpoint
    if sound and not (checkpoint.sound is not None if loaded else folder_has_sound(checkpoint)):
        raise OptionError("sound", sound, "this checkpoint generates no sound (it needs sound_gen in its transformer "
                                          "config and a sound_tokenizer/ folder)")
    settings = checkpoint.settings if loaded else read_settings(checkpoint)
    schedule, guidance = sampling_schedule(settings, steps=steps, guidance=guidance, shift=shift, sampler=sampler,
                                           sigmas=sigmas)
    if not loaded:
        device = torch.device(device) if device is not None else default_device()
        if dtype is None:
            dtype = "bf16" if device.type == "cuda" else "fp32"
        # with block offload everything loads to host memory first; all but the streamed layers then move
        checkpoint = load_checkpoint(checkpoint, device="cpu" if resident_blocks is not None else device, dtype=dtype,
                                     vae=vae, sound=sound is not False)
        if resident_blocks is not None:
            for part in (checkpoint.vae, checkpoint.sound):
                if part is not None:
                    part.to(device)
    ckpt = checkpoint
    if resident_blocks is not None and getattr(ckpt.transformer, "block_offload", None) is None:
        target = torch.device(device) if device is not None else default_device()
        layers = ckpt.transformer.layers
        enable_block_offload(ckpt.transformer, layers, target,
                             resident_for_model(resident_blocks, ckpt.transformer, layers, target))
    options = PromptOptions(
        use_system_prompt=ckpt.settings.default_use_system_prompt if use_system_prompt is None else bool(use_system_prompt),
        add_duration_template=add_duration_template,
        add_resolution_template=add_resolution_template,
    )
    conditioning = encode_prompts(
        ckpt.transformer, ckpt.tokenizer, prompt, negative_prompt, num_frames=num_frames, height=height,
        width=width, fps=fps, options=options, with_negative=guidance != 1.0,
    )
    if clip is not None:
        latents, condition_frames = video_latents(ckpt.vae, clip, num_frames)
    elif pixels is not None:
        latents, condition_frames = first_frame_latents(ckpt.vae, pixels, num_frames)
    else:
        latents, condition_frames = empty_latents(num_frames, height, width), []
    with_sound = ckpt.sound is not None and sound is not False
    sound_latents = empty_sound_latents(ckpt.sound, num_frames, fps) if with_sound else None
    x = sample(ckpt.transformer, conditioning, latents, schedule, latent_format=ckpt.settings.latent_format,
               guidance=guidance, seed=seed, condition_frames=condition_frames, callback=callback,
               sound=sound_latents)
    if not loaded:  # this call loaded the checkpoint: the transformer leaves the device before the decoders run
        del conditioning
        ckpt.transformer = None
        _release(x[0].device if isinstance(x, tuple) else x.device)
    if not with_sound:
        return decode(ckpt.vae, x)[0]
    x, sound_out = x
    return Cosmos3Video(decode(ckpt.vae, x)[0], decode_sound(ckpt.sound, sound_out)[0], ckpt.sound.sample_rate)
