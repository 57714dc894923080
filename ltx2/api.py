"""``comfyui_cosmos3_ltx2.ltx2.generate`` (defined here): LTX-2 / LTX-2.3 text-to-video with sound in one call.

Chains the stages of :mod:`.pipeline`: Gemma-3 hidden states -> connectors -> seeded packed noise ->
guided Euler over the token-count schedule -> video frames and waveform. This is the one-stage path;
image conditioning and the HQ two-stage pipeline are still to come.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..core.sampling.ltx_schedule import ltx2_sigmas
from .pipeline import Guidance, LTX2Denoiser, decode, encode_prompt, latent_shape, positions, sample_euler_av

# Guidance of the reference's one-stage LTX-2.3 preset (per modality): cfg, STG, STG blocks, modality, rescale.
VIDEO_GUIDANCE = Guidance(cfg=3.0, stg=1.0, stg_blocks=(28,), modality=3.0, rescale=0.7)
AUDIO_GUIDANCE = Guidance(cfg=7.0, stg=1.0, stg_blocks=(28,), modality=3.0, rescale=0.7)


def initial_noise(shape, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed video then audio noise for ``seed``: float32 from one CPU generator (the pack's convention)."""
    gen = torch.Generator("cpu").manual_seed(int(seed))
    video = torch.randn(shape.video_packed, generator=gen, dtype=torch.float32)
    audio = torch.randn(shape.audio_packed, generator=gen, dtype=torch.float32)
    return video, audio


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
    steps: int = 30,
    video_guidance: Guidance = VIDEO_GUIDANCE,
    audio_guidance: Guidance = AUDIO_GUIDANCE,
    seed: int = 0,
    strategy: str = "split",
    device=None,
    dtype: str = "bf16",
    callback: Callable[[dict], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Generate a clip with its sound track; returns (frames [T, H, W, 3] in [0, 1], waveform [channels,
    samples], sample rate).

    ``checkpoint``: an LTX-2 / LTX-2.3 checkpoint (official single file or diffusers folder) or an already
    loaded ``LTX2Checkpoint``; ``text_encoder``: a Gemma-3 folder or a loaded ``GemmaTextEncoder``.
    The seed drives the starting noise (packed video, then audio, from one CPU generator).
    """
    from .loader import GemmaTextEncoder, LTX2Checkpoint, load_gemma_text_encoder, load_ltx2_checkpoint

    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(text_encoder, GemmaTextEncoder):
        text_encoder = load_gemma_text_encoder(text_encoder, device=device, dtype=dtype)
    if not isinstance(checkpoint, LTX2Checkpoint):
        checkpoint = load_ltx2_checkpoint(checkpoint, device=device, dtype=dtype,
                                          text_hidden_size=text_encoder.hidden_size,
                                          text_num_hidden_states=text_encoder.num_hidden_states)
    ck = checkpoint
    vae, audio_vae = ck.video_vae, ck.audio_vae
    shape = latent_shape(num_frames, height, width, fps, video_channels=ck.transformer.config["in_channels"],
                         audio_channels=audio_vae.latent_channels,
                         mel_bins=audio_vae.mel_bins // audio_vae.mel_compression_ratio)
    contexts = []
    for text in (prompt, negative_prompt):
        hidden, mask = text_encoder.encode(text)
        contexts.append(encode_prompt(ck.connectors, hidden, mask))
    (v_ctx, a_ctx, mask), (nv_ctx, na_ctx, nmask) = contexts
    model = LTX2Denoiser(ck.transformer, v_ctx, a_ctx, mask, nv_ctx, na_ctx, nmask,
                         rope=positions(ck.transformer, shape, device=device), video=video_guidance,
                         audio=audio_guidance, strategy=strategy)
    video, audio = (t.to(device) for t in initial_noise(shape, seed))
    video, audio = sample_euler_av(model, video, audio, ltx2_sigmas(steps), callback=callback)
    frames, wave, rate = decode(ck.video_vae, audio_vae, ck.vocoder, video, audio, shape)
    return frames, wave[0], rate
