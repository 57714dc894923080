"""``comfyui_cosmos3_ltx2.ltx2.generate`` (defined here): LTX-2 / LTX-2.3 video with its sound track in one call.

Three pipelines, each a short chain of the stage functions the graph nodes call (:mod:`.text_encoding`,
:mod:`.conditioning`, :mod:`.sampling`, :mod:`.decoding`):

* ``"one-stage"``: Gemma-3 hidden states -> connectors -> seeded packed noise -> guided Euler over the
  LTX-2 schedule at full resolution -> decode.
* ``"hq"`` (official ``TI2VidTwoStagesHQPipeline``): res2s with the guider at half resolution, x2 latent
  upsampler, re-noise, three distilled res2s steps at full resolution with the positive prompt only, decode.
* ``"distilled"`` (official ``DistilledPipeline``, for the distilled checkpoint): the same two stages with
  Euler over the fixed 8 + 3 sigma lists and no guidance.

A LoRA (the distilled LoRA for "hq"), when given, is merged once and switched between its stage strengths in
place. All take conditioning images: a first frame (``image``, replaces the frame-0 latent) and keyframes at
other frames (``keyframes``, appended tokens), prepared as the official pipelines do (:mod:`.image`).
Whatever the call merges into a loaded checkpoint is taken out again when it returns, fails or is
interrupted (a ``callback`` that raises stops the run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..core.lora import LoraHandle
from ..core.offload import check_resident, enable_block_offload, resident_for_model
from ..core.noise import seeded_noise
from ..core.sampling.ltx_schedule import DISTILLED_SIGMAS, ltx2_sigmas
from .conditioning import picture_latents, prepare_pictures
from .decoding import decode
from .denoiser import AUDIO_GUIDANCE, HQ_AUDIO_GUIDANCE, HQ_VIDEO_GUIDANCE, VIDEO_GUIDANCE, Guidance
from .image import DEFAULT_IMAGE_CRF
from .latents import latent_shape
from .options import PIPELINES, check_request
from .sampling import STAGE2_SIGMAS, half_shape, refine, sample
from .text_encoding import connect, gemma_states

__all__ = ["DEFAULT_STEPS", "PIPELINES", "Keyframe", "generate", "initial_noise"]


DEFAULT_STEPS = {"one-stage": 30, "hq": 15, "distilled": None}  # distilled: the fixed 8 + 3 sigma lists
DEFAULT_GUIDANCE = {"one-stage": (VIDEO_GUIDANCE, AUDIO_GUIDANCE), "hq": (HQ_VIDEO_GUIDANCE, HQ_AUDIO_GUIDANCE),
                    "distilled": (None, None)}


@dataclass(frozen=True)
class Keyframe:
    """A conditioning picture for pixel frame ``frame_idx`` (0 = first frame) kept at ``strength`` (1 = as is)."""

    image: object
    frame_idx: int = 0
    strength: float = 1.0


def initial_noise(shape, seed: int, appended: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed video (plus ``appended`` keyframe tokens) then audio noise for ``seed``, by the pack's seed rule
    (:func:`core.noise.seeded_noise`: float32 from one CPU generator, video first)."""
    b, s, c = shape.video_packed
    return seeded_noise(seed, (b, s + appended, c), shape.audio_packed)


def _keyframes(image, image_strength, keyframes, num_frames: int) -> list[Keyframe]:
    out = [] if image is None else [Keyframe(image, 0, image_strength)]
    for i, k in enumerate(keyframes or ()):
        if not isinstance(k, Keyframe):
            try:
                k = Keyframe(*k)
            except TypeError:
                raise ValueError(f"keyframes[{i}]: expected Keyframe(image, frame_idx, strength) or a tuple of "
                                 f"them, got {type(k).__name__}") from None
        out.append(k)
    seen_first = False
    for i, k in enumerate(out):
        idx = k.frame_idx
        if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < num_frames:
            raise ValueError(f"keyframes: frame_idx must be an integer in [0, {num_frames - 1}] (num_frames "
                             f"{num_frames}), got {idx!r}")
        if not 0.0 <= float(k.strength) <= 1.0:
            raise ValueError(f"keyframes: strength must lie in [0, 1], got {k.strength!r} (frame {idx})")
        if idx == 0:
            if seen_first:
                raise ValueError("keyframes: two images for frame 0 (`image` is the frame-0 image)")
            seen_first = True
    # the frame-0 image replaces latent tokens and goes first; the rest are appended in the given order
    return sorted(out, key=lambda k: k.frame_idx != 0)


def _release(device) -> None:
    """Return freed blocks to the device (CUDA caches them otherwise)."""
    import gc

    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _lora(transformer, distilled_lora) -> tuple[LoraHandle | None, bool]:
    """(handle, whether this call merged it and must remove it)."""
    if distilled_lora is None:
        return None, False
    if isinstance(distilled_lora, LoraHandle):
        if distilled_lora.module is not transformer:
            raise ValueError("distilled_lora: this LoRA handle belongs to another transformer")
        return distilled_lora, False
    from .loader import load_distilled_lora

    return load_distilled_lora(transformer, distilled_lora, strength=0.0), True


@torch.no_grad()
def generate(
    checkpoint,
    text_encoder,
    prompt: str,
    negative_prompt: str = "",
    *,
    width: int = 768,
    height: int = 512,
    num_frames: int = 121,
    fps: float = 24.0,
    steps: int | None = None,
    video_guidance: Guidance | None = None,
    audio_guidance: Guidance | None = None,
    seed: int = 0,
    pipeline: str = "one-stage",
    image=None,
    image_strength: float = 1.0,
    image_crf: float = DEFAULT_IMAGE_CRF,
    keyframes: Sequence[Keyframe | tuple] = (),
    upsampler=None,
    distilled_lora=None,
    lora_strengths: tuple[float, float] = (0.25, 0.5),
    sde_noise: str = "seeded",
    strategy: str = "split",
    decode_chunk: int | None = 4,
    decode_tile: int | None = None,
    decode_tile_overlap: int = 64,
    device=None,
    dtype: str = "bf16",
    callback: Callable[[dict], None] | None = None,
    resident_blocks: int | str | None = None,
    weight_dtype: str = "default",
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Generate a clip with its sound track; returns (frames [T, H, W, 3] float32 in [0, 1], waveform
    [channels, samples] float32, sample rate).

    Args:
        checkpoint: an LTX-2 / LTX-2.3 checkpoint (official single file or diffusers folder) or a loaded
            ``LTX2Checkpoint``; ``text_encoder``: a Gemma-3 folder or a loaded ``GemmaTextEncoder``.
        width, height, num_frames, fps: pixel size (multiples of 32, of 64 for ``"hq"``), 8k + 1 frames.
        steps: sampling steps (default 30 one-stage, 15 for the HQ stage 1; stage 2 has its fixed 3; the
            distilled pipeline takes none: its 8 + 3 sigmas are fixed).
        video_guidance, audio_guidance: :class:`Guidance` per modality (default: the official preset of the
            pipeline; HQ stage 2 is unguided).
        seed: drives all noise: the starting noise (packed video, then audio, from one CPU generator; for
            ``"hq"`` stage-1 video, stage-1 audio, stage-2 video, stage-2 audio) and res2s's SDE noise.
        pipeline: ``"one-stage"``, ``"hq"`` (two-stage, needs ``upsampler``) or ``"distilled"`` (two-stage
            Euler over fixed sigmas without guidance, for the distilled checkpoint; needs ``upsampler``).
        image, image_strength: first-frame picture (ComfyUI IMAGE tensor, array, PIL image or path) and its
            strength (1 = kept as is). ``image_crf``: H.264 rate factor of the official preparation (0 = none).
        keyframes: more pictures as :class:`Keyframe` (image, pixel frame index, strength); frame 0 replaces
            the first latent frame, others are appended as keyframe tokens.
        upsampler: the x2 latent upsampler (``.safetensors`` file, folder or loaded module), HQ only.
        distilled_lora: the distilled LoRA (file, state dict or a handle already merged into the checkpoint's
            transformer); merged at ``lora_strengths[0]`` for stage 1 (and one-stage) and
            ``lora_strengths[1]`` for stage 2 of the two-stage pipelines, removed (or set back) afterwards.
        sde_noise: ``"seeded"`` (res2s SDE noise from ``seed``) or ``"reference"`` (the official fixed seeds).
        strategy: guidance passes ``"split"`` (one call per pass, least memory) or ``"batched"``.
        decode_chunk: latent frames per VAE decode chunk (exact streaming; None = one pass).
        decode_tile, decode_tile_overlap: spatial VAE tiles in pixels (long side; official 512 / 64) blended
            over their overlap, for large frames on small GPUs (None = no spatial tiles).
        weight_dtype: ``"fp8_e4m3fn"`` stores the transformer blocks' linear weights as scaled fp8 when loading a
            bf16 file (:mod:`..core.quant`; compute stays in ``dtype``); ``"default"`` keeps the file's.
        resident_blocks: keep only that many transformer blocks on the device and stream the others from host
            memory (:mod:`..core.offload`; the same result, for a transformer larger than the GPU); None keeps all;
            ``"auto"``: as many as the device's free memory holds once the VAEs and connectors are there.
        callback: called once per sampling step with the sampler's dict (HQ adds ``"stage"``: "stage1" /
            "stage2"); an exception it raises stops the run.
    """
    from .loader import LTX2Checkpoint, load_ltx2_checkpoint
    from .text_encoding import GemmaTextEncoder, load_gemma_text_encoder
    from .upsampler import LTX2LatentUpsampler, load_latent_upsampler

    check_request(pipeline=pipeline, width=width, height=height, num_frames=num_frames, fps=fps, steps=steps,
                  seed=seed, upsampler=upsampler, sde_noise=sde_noise, image=image, image_strength=image_strength,
                  lora_strengths=lora_strengths, video_guidance=video_guidance, audio_guidance=audio_guidance)
    resident_blocks = check_resident(resident_blocks)
    distilled = pipeline == "distilled"
    two_stage = pipeline != "one-stage"
    if steps is None:
        steps = DEFAULT_STEPS[pipeline]
    vg, ag = DEFAULT_GUIDANCE[pipeline]
    video_guidance = vg if video_guidance is None else video_guidance
    audio_guidance = ag if audio_guidance is None else audio_guidance
    frames_in = _keyframes(image, image_strength, keyframes, num_frames)
    # decoded and H.264-round-tripped once, then encoded at each stage's size
    pictures = prepare_pictures([(k.image, k.frame_idx, k.strength) for k in frames_in], image_crf)

    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # Gemma first: encode both prompts, and free Gemma before the checkpoint loads when this call loaded it
    # (the official order; the two never need to share the device).
    own_gemma = not isinstance(text_encoder, GemmaTextEncoder)
    if own_gemma:
        text_encoder = load_gemma_text_encoder(text_encoder, device=device, dtype=dtype)
    text_dims = dict(text_hidden_size=text_encoder.hidden_size, text_num_hidden_states=text_encoder.num_hidden_states)
    # (the distilled pipeline is unguided: no negative prompt to encode)
    states = gemma_states(text_encoder, prompt, None if distilled else negative_prompt)
    if own_gemma:
        del text_encoder
        _release(device)
    own_checkpoint = not isinstance(checkpoint, LTX2Checkpoint)
    if own_checkpoint:
        # with block offload everything loads to host memory first; all but the streamed blocks then move
        checkpoint = load_ltx2_checkpoint(checkpoint, device="cpu" if resident_blocks is not None else device,
                                          dtype=dtype, weight_dtype=weight_dtype, **text_dims)
        if resident_blocks is not None:
            for part in (checkpoint.connectors, checkpoint.video_vae, checkpoint.audio_vae, checkpoint.vocoder):
                if part is not None:
                    part.to(device)
    ck = checkpoint
    if resident_blocks is not None and getattr(ck.transformer, "block_offload", None) is None:
        blocks = ck.transformer.transformer_blocks
        enable_block_offload(ck.transformer, blocks, device,
                             resident_for_model(resident_blocks, ck.transformer, blocks, device))
    tr, vae, audio_vae = ck.transformer, ck.video_vae, ck.audio_vae
    shape = latent_shape(num_frames, height, width, fps, video_channels=tr.config["in_channels"],
                         audio_channels=audio_vae.latent_channels,
                         mel_bins=audio_vae.mel_bins // audio_vae.mel_compression_ratio)
    if two_stage and not isinstance(upsampler, LTX2LatentUpsampler):
        upsampler = load_latent_upsampler(upsampler, device=device, dtype=vae.dtype)
    if two_stage and upsampler.config["in_channels"] != shape.video_channels:
        raise ValueError(f"upsampler: it takes {upsampler.config['in_channels']} latent channels, the checkpoint's "
                         f"video latent has {shape.video_channels} (an upsampler of another model?)")

    prompts = connect(ck.connectors, states)
    del states
    guidance = None if distilled else (video_guidance, audio_guidance)
    common = dict(seed=seed, guidance=guidance, sde_noise=sde_noise, strategy=strategy, device=device)

    def report(stage):
        if callback is None or not two_stage:
            return callback
        return lambda d: callback({**d, "stage": stage})

    handle, owned = _lora(tr, distilled_lora)
    try:
        if two_stage:
            s1 = half_shape(shape)
            sigmas = DISTILLED_SIGMAS if distilled else ltx2_sigmas(steps, tokens=s1.video_tokens)
            sampler = "euler" if distilled else "res2s"
            video, audio = sample(tr, prompts, s1, sigmas, images=picture_latents(vae, pictures, s1),
                                         sampler=sampler, lora=handle, lora_strength=lora_strengths[0],
                                         callback=report("stage1"), **common)
            # stage 2: the positive prompt alone
            video, audio = refine(tr, upsampler, vae.latents_mean, vae.latents_std, prompts, video, audio, s1,
                                         STAGE2_SIGMAS, images=picture_latents(vae, pictures, shape), sampler=sampler,
                                         lora=handle, lora_strength=lora_strengths[1], callback=report("stage2"),
                                         **{**common, "guidance": None})
        else:
            video, audio = sample(tr, prompts, shape, ltx2_sigmas(steps),
                                         images=picture_latents(vae, pictures, shape), sampler="euler", lora=handle,
                                         lora_strength=lora_strengths[0], callback=callback, **common)
    finally:
        if owned:
            handle.remove()
    handle = None
    if own_checkpoint:  # the transformer is done: free it before the VAE decodes
        ck.transformer = tr = None
        _release(device)
    frames, wave, rate = decode(vae, audio_vae, ck.vocoder, video, audio, shape, temporal_chunk=decode_chunk,
                                spatial_tile=decode_tile, spatial_overlap=decode_tile_overlap)
    return frames, wave[0], rate

