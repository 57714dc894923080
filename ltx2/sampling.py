"""LTX-2.3 sampling stages: one-stage, HQ stage 1, x2 upsample + stage 2, and the distilled pipeline.

* :func:`sample`: one sampling pass from seeded noise at a latent size (the one-stage pipeline, or stage 1 of
  the HQ / distilled pipelines): Euler or res2s, guided or not, with image / keyframe conditioning.
* :func:`refine`: the x2 latent upsampler, re-noising and the second pass (stage 2 of the two-stage pipelines),
  positive prompt only, over :data:`STAGE2_SIGMAS`.
* :func:`run_hq` / :func:`run_distilled`: the official ``TI2VidTwoStagesHQPipeline`` and ``DistilledPipeline``
  orders spelled out stage by stage (:func:`stage1`, :func:`upsample_stage1`, :func:`stage2`), kept as the
  reference form the parity tests compare with ltx-core.

Noise follows the pack's seed rule (:mod:`core.noise`): a pass at latent shape ``S`` draws packed video (with
its appended keyframe tokens) then audio noise, in float32 from one CPU generator; :func:`refine` continues the
same seed's stream where the two-stage pipelines do (stage-1 video, stage-1 audio, stage-2 video, stage-2
audio), so a node graph whose sampler and refiner share a seed equals ``generate``'s two-stage run. The res2s
SDE noise follows the seed too (``seeded``), or the official pipelines' fixed seeds (``reference``).
No loop reads a device value back to the host: sigmas are Python floats, masks are tensors fixed before the loop.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import torch

from ..core.lora import LoraHandle, strength_scope
from ..core.noise import seeded_noise
from ..core.sampling.euler import sample_euler
from ..core.sampling.ltx_schedule import DISTILLED_SIGMAS, STAGE2_DISTILLED_SIGMAS, ltx2_sigmas
from ..core.sampling.res2s import reference_noise_sampler, sample_res2s, seeded_noise_sampler
from .conditioning import (
    ConditionedDenoiser,
    ImageLatent,
    VideoCondition,
    build_condition,
    conditioned_positions,
    noise_latent,
    strip_appended,
)
from .denoiser import HQ_AUDIO_GUIDANCE, HQ_VIDEO_GUIDANCE, Guidance
from .latents import LatentShape, pack_video, unpack_video
from .text_encoding import PromptContexts
from .upsampler import upsample_normalized_latents

SAMPLERS = ("euler", "res2s")


SDE_NOISE = ("seeded", "reference")


def stage_noise(seed: int, shape: LatentShape, appended: int = 0, *, before: Sequence[tuple] = ()
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed video (``appended`` keyframe tokens included) and audio noise of a pass at ``shape``. ``before``
    lists the (video, audio) packed shapes drawn earlier from the same seed's stream (a two-stage run's
    stage 1), which are drawn and dropped first."""
    b, s, c = shape.video_packed
    earlier = [t for pair in before for t in pair]
    noise = seeded_noise(seed, *earlier, (b, s + appended, c), shape.audio_packed)
    return noise[-2], noise[-1]


def _noise_sampler(sde_noise: str, seed: int, device):
    if sde_noise not in SDE_NOISE:
        raise ValueError(f"sde_noise must be one of {SDE_NOISE}, got {sde_noise!r}")
    return seeded_noise_sampler(seed, device) if sde_noise == "seeded" else reference_noise_sampler(device)


def _denoise(transformer, prompts: PromptContexts, shape: LatentShape, start, sigmas, *, condition, sampler: str,
             guidance: tuple[Guidance, Guidance] | None, eta: float, noise_sampler, strategy: str, device,
             callback):
    """One sampler run from ``start`` over ``sigmas``. Euler blends conditioned tokens in the denoiser; res2s
    blends its x0 and re-noised samples itself (the official split)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    res2s = sampler == "res2s"
    rope = conditioned_positions(transformer, shape, condition, device)
    if guidance is None:
        model = ConditionedDenoiser(transformer, *prompts.positive, rope=rope, strategy=strategy, condition=condition,
                                    blend=not res2s)
    else:
        if prompts.negative is None:
            raise ValueError("guided sampling needs the negative prompt's contexts (encode it with the prompt)")
        model = ConditionedDenoiser(transformer, *prompts.positive, *prompts.negative, rope=rope, video=guidance[0],
                                    audio=guidance[1], strategy=strategy, condition=condition, blend=not res2s)
    if not res2s:
        return sample_euler(model, start, sigmas, callback=callback)
    mask, clean = (None, None) if condition is None else ((condition.mask, None), (condition.clean, None))
    return sample_res2s(model, start, sigmas, callback=callback, eta=eta, noise_sampler=noise_sampler,
                        denoise_mask=mask, clean_latent=clean)


@torch.no_grad()
def sample(transformer, prompts: PromptContexts, shape: LatentShape, sigmas: Sequence[float], *, seed: int,
           images: Sequence[ImageLatent] = (), sampler: str = "euler",
           guidance: tuple[Guidance, Guidance] | None = None, eta: float = 0.5, sde_noise: str = "seeded",
           strategy: str = "split", lora: LoraHandle | None = None, lora_strength: float = 0.0, device=None,
           callback: Callable[[dict], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One sampling pass from the seed's noise at ``shape``; returns packed normalised (video [B, S, C] without
    appended keyframe tokens, audio [B, T, C*M]).

    ``images``: conditioning latents at ``shape`` (:func:`picture_latents`); ``guidance``: (video, audio)
    :class:`Guidance` or None for the positive prompt alone; ``lora``: a merged LoRA set to ``lora_strength``
    for the pass and set back afterwards.
    """
    dev = device if device is not None else next(transformer.parameters()).device
    condition = build_condition(shape, list(images), transformer, dev)
    appended = 0 if condition is None else condition.appended
    video, audio = (t.to(dev) for t in stage_noise(seed, shape, appended))
    noise_sampler = _noise_sampler(sde_noise, seed, dev)
    with strength_scope(lora) as use_lora:
        use_lora(lora_strength)
        video, audio = _denoise(transformer, prompts, shape, (stage1_start(video, condition), audio), sigmas,
                                condition=condition, sampler=sampler, guidance=guidance, eta=eta,
                                noise_sampler=noise_sampler, strategy=strategy, device=dev, callback=callback)
    return strip_appended(video, shape), audio


def doubled(shape: LatentShape) -> LatentShape:
    """The latent geometry of ``shape`` after the x2 spatial upsampler."""
    from dataclasses import replace

    return replace(shape, height=shape.height * 2, width=shape.width * 2)


@torch.no_grad()
def refine(transformer, upsampler, latents_mean: torch.Tensor, latents_std: torch.Tensor, prompts: PromptContexts,
           video: torch.Tensor, audio: torch.Tensor, shape: LatentShape, sigmas: Sequence[float], *, seed: int,
           images: Sequence[ImageLatent] = (), sampler: str = "res2s",
           guidance: tuple[Guidance, Guidance] | None = None, eta: float = 0.5, sde_noise: str = "seeded",
           strategy: str = "split", lora: LoraHandle | None = None, lora_strength: float = 0.0, device=None,
           callback: Callable[[dict], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 2 of the two-stage pipelines: x2 upsample the packed stage-1 ``video`` (at ``shape``), re-noise it and
    the stage-1 ``audio`` to ``sigmas[0]`` and sample over ``sigmas`` at the doubled size.

    ``seed`` is stage 1's: the re-noising noise continues its stream after the stage-1 draws (stage 1 appended the
    same keyframes at its own size). ``images``: conditioning latents at the doubled size. Returns packed
    normalised (video [B, S2, C], audio [B, T, C*M]).
    """
    dev = device if device is not None else next(transformer.parameters()).device
    full = doubled(shape)
    condition = build_condition(full, list(images), transformer, dev)
    appended = 0 if condition is None else condition.appended
    stage1_appended = sum(i.latent.shape[2] for i in images if i.frame_idx != 0) * shape.height * shape.width
    b, s, c = shape.video_packed
    video_noise, audio_noise = (t.to(dev) for t in stage_noise(
        seed, full, appended, before=[((b, s + stage1_appended, c), shape.audio_packed)]))
    up = upsample_stage1(upsampler, video, shape, latents_mean, latents_std)
    noise_sampler = _noise_sampler(sde_noise, seed, dev)
    with strength_scope(lora) as use_lora:
        use_lora(lora_strength)
        start = stage2_start(up, audio, video_noise, audio_noise, float(sigmas[0]), condition)
        video, audio = _denoise(transformer, prompts, full, start, sigmas, condition=condition, sampler=sampler,
                                guidance=guidance, eta=eta, noise_sampler=noise_sampler, strategy=strategy,
                                device=dev, callback=callback)
    return strip_appended(video, full), audio


# official distilled stage-2 schedule (LP constants STAGE_2_DISTILLED_SIGMA_VALUES)
STAGE2_SIGMAS: tuple[float, ...] = STAGE2_DISTILLED_SIGMAS


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
        positive, negative: (video context, audio context, mask) from :func:`.text_encoding.encode_prompt`.
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
