"""LTX-2.3 image conditioning and the HQ two-stage flow, as plain functions over packed latents.

* Image-to-video (first frame): :func:`condition_first_frame` writes the image's latent tokens over the
  frame-0 tokens and returns a :class:`VideoCondition` (denoise mask, 1 = denoise, and the clean latent).
  :class:`ConditionedDenoiser` is :class:`ltx2.pipeline.LTX2Denoiser` that gives conditioned tokens their
  own timestep ``sigma * mask`` (0 for a clean frame), converts velocity to x0 with that per-token sigma
  (so clean tokens get ``x0 = x``) and blends the guided x0 with the clean latent. It works with every sampler
  of :mod:`core.sampling` on the (video, audio) pair, e.g. Euler and res2s (which also re-blends its re-noised
  samples).
* Keyframes (any other frame): :func:`append_keyframe` appends the image's latent tokens after the video
  tokens (official ``VideoConditionByKeyframeIndex``): they keep their clean values (mask ``1 - strength``),
  take rotary positions of their own (:func:`~ltx2.transformer.keyframe_coords`, time moved to the pixel frame
  index) and are dropped again after sampling (:func:`strip_appended`). :func:`build_condition` applies a list
  of :class:`ImageLatent` (frame 0 replaces, others append) and :func:`conditioned_positions` gives the rotary
  tables of the grown sequence.
* HQ two-stage (official ``TI2VidTwoStagesHQPipeline`` order):
  :func:`stage1` -- half resolution, guided denoiser, :func:`core.sampling.res2s.sample_res2s`;
  :func:`upsample_stage1` -- x2 latent upsampler on the normalised video latent;
  :func:`noise_latent` -- re-noise to the first stage-2 sigma, ``x = noise*(s*mask) + x*(1 - s*mask)``;
  :func:`stage2` -- full resolution, positive prompt only, the fixed distilled :data:`STAGE2_SIGMAS`.
  :func:`run_hq` chains them. :func:`run_distilled` is the distilled checkpoint's two-stage flow (official
  ``DistilledPipeline``): the same stages with Euler over fixed sigma lists and no guidance.

Noise: the initial / re-noising noise is drawn in packed token shape from one CPU generator seeded with the
user's seed, in float32 (stage-1 video, stage-1 audio, stage-2 video, stage-2 audio; video noise covers the
appended keyframe tokens too, as the official noiser does), then moved to the device.
The res2s SDE noise follows the user's seed by default (``seeded_noise_sampler(seed)``, fresh per stage);
``sde_noise="reference"`` gives the official pipelines' fixed seeds (-1 / 9999, fresh per stage).

No loop reads a device value back to the host: sigmas are Python floats, masks are tensors fixed before
the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch

from ..core.lora import strength_scope
from ..core.noise import seeded_noise
from ..core.sampling.euler import sample_euler
from ..core.sampling.ltx_schedule import DISTILLED_SIGMAS, STAGE2_DISTILLED_SIGMAS, ltx2_sigmas
from ..core.sampling.res2s import reference_noise_sampler, sample_res2s, seeded_noise_sampler
from .pipeline import Guidance, LatentShape, LTX2Denoiser, pack_video, positions, unpack_video
from .transformer import TokenTimesteps
from .upsampler import upsample_normalized_latents

__all__ = [
    "HQ_AUDIO_GUIDANCE",
    "HQ_VIDEO_GUIDANCE",
    "STAGE2_SIGMAS",
    "ConditionedDenoiser",
    "ImageLatent",
    "VideoCondition",
    "append_keyframe",
    "build_condition",
    "condition_first_frame",
    "conditioned_positions",
    "half_shape",
    "hq_noise",
    "noise_latent",
    "run_distilled",
    "run_hq",
    "stage1",
    "stage1_start",
    "stage2",
    "stage2_start",
    "strip_appended",
    "upsample_stage1",
]

# official distilled stage-2 schedule (LP constants STAGE_2_DISTILLED_SIGMA_VALUES)
STAGE2_SIGMAS: tuple[float, ...] = STAGE2_DISTILLED_SIGMAS
# official HQ guidance (LP constants): STG off, rescale 0.45 / 1.0, modality 3
HQ_VIDEO_GUIDANCE = Guidance(cfg=3.0, stg=0.0, stg_blocks=(), modality=3.0, rescale=0.45)
HQ_AUDIO_GUIDANCE = Guidance(cfg=7.0, stg=0.0, stg_blocks=(), modality=3.0, rescale=1.0)


# --------------------------------------------------------------------------------------------------
# Image conditioning


@dataclass(frozen=True)
class VideoCondition:
    """Per-token denoise mask [B, S + K, 1] (float32, 1 = denoise, 0 = keep) and clean latent [B, S + K, C].

    ``keyframe_coords`` ([B, 3, K, 2], :func:`~ltx2.transformer.keyframe_coords`) are the positions of the K
    tokens appended after the S video tokens by :func:`append_keyframe` (None when nothing is appended);
    ``replaced`` counts the leading tokens that :func:`condition_first_frame` wrote over. ``levels`` are the
    mask's distinct values, ascending, as float32-rounded Python floats, when the builder knows them (so that
    the denoiser need not read the mask back from the device); None = read them from the mask.
    """

    mask: torch.Tensor
    clean: torch.Tensor
    keyframe_coords: torch.Tensor | None = None
    replaced: int = 0  # leading tokens written over by a frame-0 image (whatever its strength)
    levels: tuple[float, ...] | None = None

    @property
    def appended(self) -> int:
        """Number of appended keyframe tokens."""
        return 0 if self.keyframe_coords is None else int(self.keyframe_coords.shape[2])


@dataclass(frozen=True)
class ImageLatent:
    """One conditioning image: its normalised latent [B, C, F, h, w] at a stage's latent resolution, the pixel
    frame it stands for (0 = first frame, replaced in place; others appended) and its strength (1 = kept
    clean)."""

    latent: torch.Tensor
    frame_idx: int = 0
    strength: float = 1.0


def condition_first_frame(latent: torch.Tensor, image_latent: torch.Tensor, shape: LatentShape,
                          strength: float = 1.0) -> tuple[torch.Tensor, VideoCondition]:
    """Replace the frame-0 tokens of packed ``latent`` [B, S, C] by the image latent.

    ``image_latent`` is the normalised VAE latent of one frame, [B, C, 1, H, W] (or packed [B, H*W, C]) at the
    latent's resolution. Returns the new latent and its :class:`VideoCondition` (mask ``1 - strength`` on the
    frame-0 tokens; the clean latent is ``latent`` with the same replacement). The frame-0 tokens come back
    un-noised: with ``strength < 1`` noise them with :func:`noise_latent` (``mask``) as the official noiser does.
    """
    if latent.ndim != 3 or latent.shape[1] != shape.video_tokens:
        raise ValueError(f"condition_first_frame: latent must be packed [B, {shape.video_tokens}, C], "
                         f"got {tuple(latent.shape)}")
    if image_latent.ndim == 5:
        b, c, f, h, w = image_latent.shape
        if f != 1 or (h, w) != (shape.height, shape.width):
            raise ValueError(f"condition_first_frame: image latent must be [B, C, 1, {shape.height}, {shape.width}]"
                             f" (the latent's resolution), got {tuple(image_latent.shape)}")
        tokens = pack_video(image_latent)
    else:
        tokens = image_latent
    n = shape.height * shape.width
    if tokens.shape[1] != n or tokens.shape[2] != latent.shape[2]:
        raise ValueError(f"condition_first_frame: image latent has {tuple(tokens.shape)} tokens, expected "
                         f"[B, {n}, {latent.shape[2]}]")
    strength = _check_strength(strength, "condition_first_frame")
    tokens = tokens.to(device=latent.device, dtype=latent.dtype).expand(latent.shape[0], -1, -1)
    out = latent.clone()
    out[:, :n] = tokens
    mask = torch.ones(latent.shape[0], latent.shape[1], 1, dtype=torch.float32, device=latent.device)
    mask[:, :n] = 1.0 - float(strength)
    levels = _mask_levels([1.0 - float(strength)] + ([1.0] if latent.shape[1] > n else []))
    return out, VideoCondition(mask=mask, clean=out.clone(), replaced=n, levels=levels)


def _mask_levels(values) -> tuple[float, ...]:
    """The distinct float32 roundings of ``values`` (Python floats written into a float32 mask), ascending."""
    return tuple(sorted(set(torch.tensor(list(values), dtype=torch.float32).tolist())))


def _check_strength(strength: float, what: str) -> float:
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"{what}: strength must lie in [0, 1], got {strength!r}")
    return float(strength)


def append_keyframe(latent: torch.Tensor, condition: VideoCondition | None, keyframe: torch.Tensor,
                    frame_idx: int, strength: float, transformer, fps: float
                    ) -> tuple[torch.Tensor, VideoCondition]:
    """Append the tokens of ``keyframe`` (normalised latent [B, C, F, h, w] at the latent's resolution) after
    packed ``latent`` [B, S (+K), C], standing for pixel frame ``frame_idx``.

    The new tokens carry mask ``1 - strength`` and are their own clean latent; their positions come from
    ``transformer.keyframe_coords`` (time moved by ``frame_idx``, in seconds at ``fps``). Returns the longer
    latent and the grown :class:`VideoCondition` (``condition`` None = nothing conditioned yet).
    """
    strength = _check_strength(strength, "append_keyframe")
    if isinstance(frame_idx, bool) or int(frame_idx) != frame_idx or frame_idx < 0:
        raise ValueError(f"append_keyframe: frame_idx must be a non-negative integer, got {frame_idx!r}")
    if keyframe.ndim != 5 or keyframe.shape[1] != latent.shape[2]:
        raise ValueError(f"append_keyframe: keyframe latent must be [B, {latent.shape[2]}, F, h, w], "
                         f"got {tuple(keyframe.shape)}")
    b = latent.shape[0]
    _, _, f, h, w = keyframe.shape
    tokens = pack_video(keyframe).to(device=latent.device, dtype=latent.dtype).expand(b, -1, -1)
    if condition is None:
        condition = VideoCondition(mask=torch.ones(b, latent.shape[1], 1, device=latent.device),
                                   clean=latent.clone(), levels=_mask_levels([1.0] if latent.shape[1] else []))
    mask = torch.full((b, tokens.shape[1], 1), 1.0 - strength, device=latent.device)
    coords = transformer.keyframe_coords(b, f, h, w, int(frame_idx), fps=fps, device=latent.device)
    if condition.keyframe_coords is not None:
        coords = torch.cat([condition.keyframe_coords.to(latent.device), coords], dim=2)
    levels = None if condition.levels is None else _mask_levels(condition.levels + (1.0 - strength,))
    new = VideoCondition(mask=torch.cat([condition.mask, mask], dim=1),
                         clean=torch.cat([condition.clean.to(latent.dtype), tokens], dim=1),
                         keyframe_coords=coords, replaced=condition.replaced, levels=levels)
    return torch.cat([latent, tokens], dim=1), new


def build_condition(shape: LatentShape, images: Sequence[ImageLatent], transformer, device=None,
                    dtype: torch.dtype = torch.float32) -> VideoCondition | None:
    """The :class:`VideoCondition` of ``images`` at latent geometry ``shape`` (None for no images).

    Official ``combined_image_conditionings`` rule: an image at frame 0 replaces the frame-0 tokens, any other
    frame is appended as a keyframe, in the given order. The images' latents must be at ``shape``'s height
    and width.
    """
    if not images:
        return None
    latent = torch.zeros(shape.video_packed, device=device, dtype=dtype)
    cond = None
    for i, img in enumerate(images):
        if img.latent.ndim != 5 or tuple(img.latent.shape[3:]) != (shape.height, shape.width):
            raise ValueError(f"images[{i}]: latent must be [B, C, F, {shape.height}, {shape.width}] (the stage's "
                             f"latent resolution), got {tuple(img.latent.shape)}")
        if img.frame_idx == 0:
            if cond is not None and cond.appended:
                raise ValueError(f"images[{i}]: put the frame-0 image before the keyframes")
            if cond is not None:
                raise ValueError(f"images[{i}]: two images for frame 0")
            latent, cond = condition_first_frame(latent, img.latent, shape, img.strength)
        else:
            latent, cond = append_keyframe(latent, cond, img.latent, img.frame_idx, img.strength, transformer,
                                           shape.fps)
    return cond


def conditioned_positions(transformer, shape: LatentShape, condition: VideoCondition | None, device=None):
    """:func:`ltx2.pipeline.positions` for a sequence grown by appended keyframe tokens."""
    extra = None if condition is None else condition.keyframe_coords
    return positions(transformer, shape, device, extra_video_coords=extra)


def strip_appended(video: torch.Tensor, shape: LatentShape) -> torch.Tensor:
    """Drop appended keyframe tokens: the first ``shape.video_tokens`` tokens of packed ``video``."""
    return video[:, : shape.video_tokens]


def noise_latent(latent: torch.Tensor, noise: torch.Tensor, scale: float,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """``noise * (scale * mask) + latent * (1 - scale * mask)`` (the official noiser; no mask = all ones)."""
    s = float(scale) if mask is None else mask * float(scale)
    return (noise * s + latent * (1 - s)).to(latent.dtype)


class ConditionedDenoiser(LTX2Denoiser):
    """:class:`LTX2Denoiser` with a per-token video denoise mask (image conditioning).

    Same arguments as :class:`LTX2Denoiser` plus ``condition`` (:class:`VideoCondition`, or None for plain
    text-to-video, which then behaves exactly like the parent). Conditioned video tokens get the timestep
    ``sigma * mask``; each pass's video x0 is ``x - (sigma * mask) * v`` (x itself where the mask is 0); with
    ``blend`` (the default) the guided video x0 is blended with the clean latent
    (``x0 * mask + clean * (1 - mask)``). The official loops blend each x0 exactly once: pass ``blend=False``
    when the sampler does it (:func:`core.sampling.res2s.sample_res2s` with ``denoise_mask``), since a second
    blend changes tokens whose strength is below 1.
    """

    def __init__(self, *args, condition: VideoCondition | None = None, blend: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.condition = condition
        self.blend = bool(blend)
        if condition is not None:
            self._mask = condition.mask.float()
            self._clean = condition.clean.float()
            # the mask's few distinct values -> levels and a per-token index, so that the transformer embeds
            # K timesteps instead of one per token (TokenTimesteps). Known from the builder, or read once here.
            token_mask = self._mask.squeeze(-1)  # [B, S]
            if condition.levels is not None:
                levels = torch.tensor(condition.levels, dtype=torch.float32, device=token_mask.device)
            else:
                levels = torch.unique(token_mask)
            self._levels = levels.unsqueeze(0).expand(token_mask.shape[0], -1).contiguous()  # [B, K]
            self._index = torch.searchsorted(levels, token_mask.contiguous())  # [B, S]

    @torch.no_grad()
    def __call__(self, x: tuple[torch.Tensor, torch.Tensor], sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        if self.condition is None:
            return super().__call__(x, sigma)
        vx, ax = x
        sigma = float(sigma)
        mask = self._mask.to(vx.device)
        if mask.shape[:2] != vx.shape[:2]:
            raise ValueError(f"ConditionedDenoiser: mask {tuple(mask.shape)} does not match latent {tuple(vx.shape)}")
        tok_sigma = mask * sigma  # [B, S, 1]
        ts = TokenTimesteps(self._levels.to(vx.device) * sigma, self._index.to(vx.device))
        out = self.guided(vx, ax, sigma, timestep=ts, video_sigma=tok_sigma)
        if not self.blend:
            return out[0], out[1]
        clean = self._clean.to(vx.device)
        video = out[0] * mask + clean * (1 - mask)
        return video, out[1]


# --------------------------------------------------------------------------------------------------
# HQ stages


def half_shape(shape: LatentShape) -> LatentShape:
    """The stage-1 latent geometry (half height and width) of a full-resolution request."""
    if shape.height % 2 or shape.width % 2:
        raise ValueError(f"HQ two-stage: the latent height and width must be even (pixel sizes divisible by 64), "
                         f"got a {shape.height}x{shape.width} latent")
    return replace(shape, height=shape.height // 2, width=shape.width // 2)


def hq_noise(seed: int, shape: LatentShape, device=None, appended: tuple[int, int] = (0, 0)
             ) -> tuple[torch.Tensor, ...]:
    """(stage-1 video, stage-1 audio, stage-2 video, stage-2 audio) packed noise by the pack's seed rule
    (:func:`core.noise.seeded_noise`: float32 from one CPU generator, in that order, the official draw order),
    moved to ``device``. ``appended`` = the number of appended keyframe tokens at stage 1 and stage 2 (their
    noise is drawn with the video's)."""
    s1 = half_shape(shape)
    b = shape.batch
    return seeded_noise(seed, (b, s1.video_tokens + appended[0], s1.video_channels), s1.audio_packed,
                        (b, shape.video_tokens + appended[1], shape.video_channels), shape.audio_packed, device=device)


def _masks(condition: VideoCondition | None):
    if condition is None:
        return None, None
    return (condition.mask, None), (condition.clean, None)


def stage1_start(video_noise: torch.Tensor, condition: VideoCondition | None) -> torch.Tensor:
    """The stage-1 starting video latent: the noise, or ``noise * mask + clean * (1 - mask)`` with a
    condition (the official noise scale 1)."""
    if condition is None:
        return video_noise
    return noise_latent(condition.clean.to(video_noise.dtype), video_noise, 1.0, condition.mask)


def stage2_start(video: torch.Tensor, audio: torch.Tensor, video_noise: torch.Tensor, audio_noise: torch.Tensor,
                 s0: float, condition: VideoCondition | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The stage-2 starting latents: the upsampled video and the stage-1 audio re-noised to ``s0``. With a
    condition the frame-0 tokens are first overwritten by the image (official replacement, whatever the
    strength) and keyframe tokens appended; conditioned tokens are noised by ``s0 * mask``."""
    if condition is not None:
        if condition.appended and video.shape[1] + condition.appended == condition.mask.shape[1]:
            video = torch.cat([video, condition.clean[:, video.shape[1]:].to(video.dtype)], dim=1)
        n0 = condition.replaced
        if n0:
            video = torch.cat([condition.clean[:, :n0].to(device=video.device, dtype=video.dtype), video[:, n0:]],
                              dim=1)
        v = noise_latent(video, video_noise, s0, condition.mask)
    else:
        v = noise_latent(video, video_noise, s0)
    return v, noise_latent(audio, audio_noise, s0)


@torch.no_grad()
def stage1(denoiser: Callable, video_noise: torch.Tensor, audio_noise: torch.Tensor, sigmas: Sequence[float], *,
           noise_sampler: Callable, condition: VideoCondition | None = None,
           callback: Callable[[dict], None] | None = None, **res2s_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 1: res2s from pure noise over ``sigmas`` with the guided ``denoiser``.

    With a ``condition`` the starting video latent is ``noise * mask + clean * (1 - mask)`` (the official
    noise scale 1) and every x0 / re-noised sample is blended with the clean latent here, once: give a
    :class:`ConditionedDenoiser` built with ``blend=False``.
    """
    v = stage1_start(video_noise, condition)
    mask, clean = _masks(condition)
    return sample_res2s(denoiser, (v, audio_noise), sigmas, callback=callback, noise_sampler=noise_sampler,
                        denoise_mask=mask, clean_latent=clean, **res2s_kwargs)


@torch.no_grad()
def upsample_stage1(upsampler, video: torch.Tensor, shape1: LatentShape, latents_mean: torch.Tensor,
                    latents_std: torch.Tensor) -> torch.Tensor:
    """Packed normalised stage-1 video [B, S1, C] -> packed normalised x2 latent [B, S2, C]
    (un-normalise with the VAE statistics, upsample, normalise)."""
    z = unpack_video(video, shape1.frames, shape1.height, shape1.width)
    return pack_video(upsample_normalized_latents(upsampler, z, latents_mean, latents_std))


@torch.no_grad()
def stage2(denoiser: Callable, video: torch.Tensor, audio: torch.Tensor, video_noise: torch.Tensor,
           audio_noise: torch.Tensor, *, noise_sampler: Callable, sigmas: Sequence[float] = STAGE2_SIGMAS,
           condition: VideoCondition | None = None, callback: Callable[[dict], None] | None = None,
           **res2s_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 2: re-noise the upsampled video / stage-1 audio to ``sigmas[0]`` with the given noise, then res2s
    over ``sigmas`` with ``denoiser`` (positive prompt only in the official flow). With a ``condition`` the
    conditioned tokens of ``video`` are replaced first and are not re-noised; appended keyframe tokens are
    added after ``video`` when it does not hold them yet (and are returned with it)."""
    v, a = stage2_start(video, audio, video_noise, audio_noise, float(sigmas[0]), condition)
    mask, clean = _masks(condition)
    return sample_res2s(denoiser, (v, a), sigmas, callback=callback, noise_sampler=noise_sampler,
                        denoise_mask=mask, clean_latent=clean, **res2s_kwargs)


def _stage_callback(callback: Callable[[str, dict], None] | None, stage: str):
    """A sampler callback that reports ``stage`` with each step (None without a callback)."""
    return None if callback is None else (lambda d: callback(stage, d))


def _two_stage_setup(transformer, shape: LatentShape, seed: int, pairs, noise, device):
    """(device, stage-1 shape, stage-1 and stage-2 conditions, the four packed noises) of a two-stage run."""
    dev = device if device is not None else next(transformer.parameters()).device
    s1 = half_shape(shape)
    cond1 = build_condition(s1, [p[0] for p in pairs], transformer, dev)
    cond2 = build_condition(shape, [p[1] for p in pairs], transformer, dev)
    k1 = 0 if cond1 is None else cond1.appended
    k2 = 0 if cond2 is None else cond2.appended
    noise = tuple(t.to(dev) for t in (noise if noise is not None else hq_noise(seed, shape, appended=(k1, k2))))
    if noise[0].shape[1] != s1.video_tokens + k1 or noise[2].shape[1] != shape.video_tokens + k2:
        raise ValueError("explicit noise does not match the stage-1 / stage-2 latent shapes")
    return dev, s1, cond1, cond2, noise


@torch.no_grad()
def run_hq(transformer, upsampler, latents_mean: torch.Tensor, latents_std: torch.Tensor, *,
           positive: tuple, negative: tuple, shape: LatentShape, seed: int, steps: int = 15,
           video_guidance: Guidance = HQ_VIDEO_GUIDANCE, audio_guidance: Guidance = HQ_AUDIO_GUIDANCE,
           stage2_transformer=None, image_latents: tuple[torch.Tensor, torch.Tensor] | None = None,
           image_strength: float = 1.0, images: Sequence[tuple[ImageLatent, ImageLatent]] = (),
           lora=None, lora_strengths: tuple[float, float] = (0.25, 0.5),
           noise: tuple[torch.Tensor, ...] | None = None, sde_noise: str = "seeded",
           strategy: str = "split", device=None, callback: Callable[[str, dict], None] | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The HQ two-stage flow; returns packed normalised (video [B, S, C] at ``shape``, audio [B, T, C*M]).

    Args:
        transformer: stage-1 DiT (official: base + distilled LoRA 0.25); ``stage2_transformer`` the stage-2 one
            (official: LoRA 0.5; default: the same module).
        upsampler, latents_mean, latents_std: the x2 latent upsampler and the video VAE's statistics.
        positive, negative: (video context, audio context, mask) from :func:`ltx2.pipeline.encode_prompt`.
        shape: full-resolution :class:`LatentShape` (stage 1 runs at :func:`half_shape`).
        seed: drives the initial and re-noising noise (:func:`hq_noise`) and, with ``sde_noise="seeded"``,
            the res2s SDE noise; ``"reference"`` uses the official fixed SDE seeds.
        steps: stage-1 res2s steps (sigmas from the stage-1 token count).
        image_latents: optional (half-res, full-res) normalised first-frame latents [B, C, 1, h, w] with
            ``image_strength`` (shorthand for one entry of ``images``).
        images: (stage-1, stage-2) :class:`ImageLatent` pairs (frame 0 replaces, other frames append).
        lora: an optional :class:`core.lora.LoraHandle` merged into ``transformer`` (one-DiT mode): set to
            ``lora_strengths[0]`` for stage 1 and ``lora_strengths[1]`` for stage 2, and back to its
            strength on entry when the run ends (also on error or interruption).
        noise: optional explicit (v1, a1, v2, a2) packed noise replacing :func:`hq_noise`.
        callback: ``callback(stage, info)`` with stage "stage1" / "stage2" and res2s's per-step dict.
    """
    if sde_noise not in ("seeded", "reference"):
        raise ValueError(f"run_hq: sde_noise must be 'seeded' or 'reference', got {sde_noise!r}")
    pairs = list(images)
    if image_latents is not None:
        pairs.insert(0, (ImageLatent(image_latents[0], 0, image_strength),
                         ImageLatent(image_latents[1], 0, image_strength)))
    dev, s1, cond1, cond2, (v1n, a1n, v2n, a2n) = _two_stage_setup(transformer, shape, seed, pairs, noise, device)

    def sampler():
        return seeded_noise_sampler(seed, dev) if sde_noise == "seeded" else reference_noise_sampler(dev)

    pv, pa, pm = positive
    nv, na, nm = negative
    with strength_scope(lora) as use_lora:
        use_lora(lora_strengths[0])
        den1 = ConditionedDenoiser(transformer, pv, pa, pm, nv, na, nm,
                                   rope=conditioned_positions(transformer, s1, cond1, dev),
                                   video=video_guidance, audio=audio_guidance, strategy=strategy, condition=cond1,
                                   blend=False)
        sig1 = ltx2_sigmas(steps, tokens=s1.video_tokens)
        v, a = stage1(den1, v1n, a1n, sig1, noise_sampler=sampler(), condition=cond1,
                      callback=_stage_callback(callback, "stage1"))
        del den1
        up = upsample_stage1(upsampler, strip_appended(v, s1), s1, latents_mean, latents_std)
        use_lora(lora_strengths[1])
        tr2 = transformer if stage2_transformer is None else stage2_transformer
        den2 = ConditionedDenoiser(tr2, pv, pa, pm, rope=conditioned_positions(tr2, shape, cond2, dev),
                                   strategy=strategy, condition=cond2, blend=False)
        v, a = stage2(den2, up, a, v2n, a2n, noise_sampler=sampler(), condition=cond2,
                      callback=_stage_callback(callback, "stage2"))
    return strip_appended(v, shape), a


@torch.no_grad()
def run_distilled(transformer, upsampler, latents_mean: torch.Tensor, latents_std: torch.Tensor, *,
                  positive: tuple, shape: LatentShape, seed: int,
                  images: Sequence[tuple[ImageLatent, ImageLatent]] = (), lora=None,
                  lora_strengths: tuple[float, float] = (1.0, 1.0), noise: tuple[torch.Tensor, ...] | None = None,
                  device=None, callback: Callable[[str, dict], None] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The distilled two-stage flow (official ``DistilledPipeline``, for the distilled checkpoint): Euler over
    the fixed :data:`~core.sampling.ltx_schedule.DISTILLED_SIGMAS` at half resolution with the positive prompt
    only, the x2 upsampler, re-noise to the first stage-2 sigma and Euler over :data:`STAGE2_SIGMAS`.

    Same noise convention, conditioning and ``lora`` handling as :func:`run_hq` (no guidance, no SDE noise).
    Returns packed normalised (video [B, S, C] at ``shape``, audio [B, T, C*M]).
    """
    dev, s1, cond1, cond2, (v1n, a1n, v2n, a2n) = _two_stage_setup(transformer, shape, seed, list(images), noise,
                                                                   device)

    pv, pa, pm = positive
    with strength_scope(lora) as use_lora:
        use_lora(lora_strengths[0])
        den1 = ConditionedDenoiser(transformer, pv, pa, pm, rope=conditioned_positions(transformer, s1, cond1, dev),
                                   condition=cond1)
        v, a = sample_euler(den1, (stage1_start(v1n, cond1), a1n), DISTILLED_SIGMAS,
                            callback=_stage_callback(callback, "stage1"))
        del den1
        up = upsample_stage1(upsampler, strip_appended(v, s1), s1, latents_mean, latents_std)
        use_lora(lora_strengths[1])
        den2 = ConditionedDenoiser(transformer, pv, pa, pm, rope=conditioned_positions(transformer, shape, cond2, dev),
                                   condition=cond2)
        v, a = stage2_start(up, a, v2n, a2n, STAGE2_SIGMAS[0], cond2)
        v, a = sample_euler(den2, (v, a), STAGE2_SIGMAS, callback=_stage_callback(callback, "stage2"))
    return strip_appended(v, shape), a
