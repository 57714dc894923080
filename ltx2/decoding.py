"""LTX-2 decoding: packed normalised latents -> frames ``[T, H, W, 3]`` in [0, 1], the waveform and its rate."""

from __future__ import annotations

import torch

from .latents import LatentShape, unpack_audio, unpack_video


@torch.no_grad()
def decode(video_vae, audio_vae, vocoder, video_latents: torch.Tensor, audio_latents: torch.Tensor,
           shape: LatentShape | None = None, *, temporal_chunk: int | None = None,
           spatial_tile: int | None = None, spatial_overlap: int = 64
           ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Normalised latents -> (frames, waveform, sample_rate).

    ``video_latents``: [B, C, F, H, W], or packed [B, S, C] with ``shape``; ``audio_latents``: [B, C, T, M]
    or packed [B, T, C*M]. Frames are float32 [T, H, W, 3] in [0, 1] (batches are stacked along T:
    [B*T, H, W, 3], ComfyUI's IMAGE layout); the waveform is float32 [B, channels, samples].
    ``temporal_chunk``, ``spatial_tile`` and ``spatial_overlap`` go to the video VAE's decode.
    """
    if video_latents.ndim == 3:
        if shape is None:
            raise ValueError("decode: packed video latents need the LatentShape (`shape`)")
        video_latents = unpack_video(video_latents, shape.frames, shape.height, shape.width)
    if audio_latents.ndim == 3:
        audio_latents = unpack_audio(audio_latents, audio_vae.latent_channels)
    z = video_vae.denormalize_latents(video_latents.to(device=video_vae.device, dtype=torch.float32))
    video = video_vae.decode(z.to(video_vae.dtype), temporal_chunk=temporal_chunk, spatial_tile=spatial_tile,
                             spatial_overlap=spatial_overlap)
    frames = (video.float() / 2 + 0.5).clamp_(0.0, 1.0).permute(0, 2, 3, 4, 1).flatten(0, 1)
    mel = audio_vae.decode(audio_latents, normalized=True)
    wave = vocoder(mel.to(device=vocoder.device, dtype=vocoder.dtype)).float()
    return frames, wave, int(vocoder.sampling_rate)
