"""The LTX-2.3 stages as the graph nodes call them, and as :func:`~.api.generate` chains them.

One function per stage, over small named types, so that a node graph and ``generate`` given the same inputs
compute the same numbers (bit for bit on the CPU):

* :func:`encode_prompts`: Gemma-3 hidden states of the prompt (and negative prompt) through the checkpoint's
  connectors -> :class:`PromptContexts`.
* :func:`prepare_pictures` / :func:`picture_latents`: conditioning pictures decoded and (optionally) passed
  through the official H.264 round trip once, then encoded at the latent size a stage samples at.
* :func:`sample`: one sampling pass from seeded noise at a latent size (the one-stage pipeline, or stage 1 of
  the HQ / distilled pipelines): Euler or res2s, guided or not.
* :func:`refine`: the x2 latent upsampler, re-noising and the second pass (stage 2 of the two-stage
  pipelines).
* decoding is :func:`~.pipeline.decode`.

Noise follows the pack's seed rule (:mod:`core.noise`): a sampling pass at latent shape ``S`` draws packed
video (with its appended keyframe tokens) then audio noise; :func:`refine` continues the same seed's stream
where the two-stage pipelines do (stage-1 video, stage-1 audio, stage-2 video, stage-2 audio), so a node graph
whose sampler and refiner share a seed equals ``generate``'s two-stage run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..core.lora import LoraHandle, strength_scope
from ..core.noise import seeded_noise
from ..core.sampling.euler import sample_euler
from ..core.sampling.res2s import reference_noise_sampler, sample_res2s, seeded_noise_sampler
from .hq import (
    ConditionedDenoiser,
    ImageLatent,
    build_condition,
    conditioned_positions,
    stage1_start,
    stage2_start,
    strip_appended,
    upsample_stage1,
)
from .image import conditioning_pixels, encode_image, source_rgb
from .pipeline import Guidance, LatentShape, encode_prompt

__all__ = ["SAMPLERS", "SDE_NOISE", "Picture", "PromptContexts", "connect", "doubled", "encode_prompts",
           "gemma_states", "picture_latents", "prepare_pictures", "refine", "sample", "stage_noise"]

SAMPLERS = ("euler", "res2s")
SDE_NOISE = ("seeded", "reference")


@dataclass(frozen=True)
class PromptContexts:
    """The encoded prompts: ``positive`` and ``negative`` are (video context, audio context, mask); ``negative``
    is None when only the positive prompt was encoded (unguided runs)."""

    positive: tuple
    negative: tuple | None = None


@dataclass(frozen=True)
class Picture:
    """A conditioning picture ready to be encoded at any size: ``rgb`` float32 ``[H, W, 3]`` in 0..255 (after the
    optional H.264 round trip), the pixel frame it stands for and its strength (1 = kept as it is)."""

    rgb: torch.Tensor
    frame_idx: int = 0
    strength: float = 1.0


def gemma_states(text_encoder, prompt: str, negative_prompt: str | None = None) -> list[tuple]:
    """Gemma-3 (hidden states, attention mask) of each prompt, encoded one at a time as the official pipelines
    do. ``negative_prompt=None`` encodes the positive prompt only."""
    texts = (prompt,) if negative_prompt is None else (prompt, negative_prompt)
    return [text_encoder.encode(text) for text in texts]


def connect(connectors, states: Sequence[tuple]) -> PromptContexts:
    """:func:`gemma_states` through the checkpoint's text connectors."""
    contexts = [encode_prompt(connectors, hidden, mask) for hidden, mask in states]
    return PromptContexts(contexts[0], contexts[1] if len(contexts) > 1 else None)


def encode_prompts(text_encoder, connectors, prompt: str, negative_prompt: str | None = None) -> PromptContexts:
    """:func:`gemma_states` then :func:`connect`."""
    return connect(connectors, gemma_states(text_encoder, prompt, negative_prompt))


def prepare_pictures(images: Sequence[tuple], crf: float) -> list[Picture]:
    """``(picture, frame_idx, strength)`` triples -> :class:`Picture` list, frame 0 first then the others in
    the given order (the official rule: the frame-0 picture replaces latent tokens, the others are appended)."""
    out = [Picture(source_rgb(image, crf), int(idx), float(strength)) for image, idx, strength in images]
    return sorted(out, key=lambda p: p.frame_idx != 0)


def picture_latents(vae, pictures: Sequence[Picture], shape: LatentShape) -> list[ImageLatent]:
    """The pictures encoded (normalised latents) at ``shape``'s pixel size (latent size x 32)."""
    h, w = shape.height * 32, shape.width * 32
    return [ImageLatent(encode_image(vae, conditioning_pixels(p.rgb, h, w)), p.frame_idx, p.strength)
            for p in pictures]


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
