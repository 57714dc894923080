"""LTX-2 / LTX-2.3 latent geometry: the latent shape of a clip, token packing and the rotary tables.

The diffusion model works on *normalised* packed tokens: video ``[B, F*H*W, C]`` (token order f, h, w; patch
size 1) and audio ``[B, T, C*M]`` (feature ``c*M + m``). :func:`positions` builds the rotary tables of one
resolution once; every step reuses them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LatentShape:
    """Latent geometry of one request. ``frames/height/width`` are latent sizes, ``fps`` the video rate."""

    batch: int
    video_channels: int
    frames: int
    height: int
    width: int
    audio_channels: int
    audio_frames: int
    mel_bins: int
    fps: float

    @property
    def video_tokens(self) -> int:
        return self.frames * self.height * self.width

    @property
    def video_packed(self) -> tuple[int, int, int]:
        return (self.batch, self.video_tokens, self.video_channels)

    @property
    def audio_packed(self) -> tuple[int, int, int]:
        return (self.batch, self.audio_frames, self.audio_channels * self.mel_bins)

    @property
    def video_5d(self) -> tuple[int, int, int, int, int]:
        return (self.batch, self.video_channels, self.frames, self.height, self.width)

    @property
    def audio_4d(self) -> tuple[int, int, int, int]:
        return (self.batch, self.audio_channels, self.audio_frames, self.mel_bins)


def latent_shape(frames: int, height: int, width: int, fps: float = 24.0, *, batch: int = 1,
                 video_channels: int = 128, audio_channels: int = 8, mel_bins: int = 16,
                 temporal_compression: int = 8, spatial_compression: int = 32,
                 audio_latents_per_second: float = 25.0) -> LatentShape:
    """Latent sizes for ``frames`` pixel frames of ``height`` x ``width`` at ``fps``.

    ``frames`` must be 8k + 1 and ``height`` / ``width`` multiples of 32 (the VAE's compression); the
    audio latent covers ``frames / fps`` seconds at ``audio_latents_per_second`` (25 for the released
    audio VAE: 16 kHz, hop 160, 4x), rounded to the nearest frame. ``mel_bins`` is the latent mel width
    (64 mel bins / 4).
    """
    for name, value in (("frames", frames), ("height", height), ("width", width), ("batch", batch)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"LTX-2 latent shape: {name} must be a positive integer, got {value!r}")
    if (frames - 1) % temporal_compression:
        lo = (frames - 1) // temporal_compression * temporal_compression + 1
        raise ValueError(f"LTX-2 latent shape: frames must be {temporal_compression}k + 1 (e.g. {lo} or "
                         f"{lo + temporal_compression}), got {frames}")
    for name, value in (("height", height), ("width", width)):
        if value % spatial_compression:
            raise ValueError(f"LTX-2 latent shape: {name} must be a multiple of {spatial_compression}, got {value}")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"LTX-2 latent shape: fps must be a positive number, got {fps!r}")
    audio_frames = round(frames / float(fps) * audio_latents_per_second)
    return LatentShape(
        batch=int(batch), video_channels=int(video_channels), frames=(frames - 1) // temporal_compression + 1,
        height=height // spatial_compression, width=width // spatial_compression,
        audio_channels=int(audio_channels), audio_frames=max(int(audio_frames), 1), mel_bins=int(mel_bins),
        fps=float(fps),
    )


def pack_video(z: torch.Tensor) -> torch.Tensor:
    """[B, C, F, H, W] -> [B, F*H*W, C], tokens in (f, h, w) order (patch size 1)."""
    if z.ndim != 5:
        raise ValueError(f"pack_video: expected [B, C, F, H, W], got shape {tuple(z.shape)}")
    return z.flatten(2).transpose(1, 2)


def unpack_video(tokens: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
    """[B, F*H*W, C] -> [B, C, F, H, W] (latent sizes)."""
    b, s, c = tokens.shape
    if s != frames * height * width:
        raise ValueError(f"unpack_video: {s} tokens do not fill a {frames}x{height}x{width} latent grid")
    return tokens.transpose(1, 2).reshape(b, c, frames, height, width)


def pack_audio(z: torch.Tensor) -> torch.Tensor:
    """[B, C, T, M] -> [B, T, C*M] (feature index c*M + m)."""
    if z.ndim != 4:
        raise ValueError(f"pack_audio: expected [B, C, T, M], got shape {tuple(z.shape)}")
    return z.transpose(1, 2).flatten(2)


def unpack_audio(tokens: torch.Tensor, channels: int) -> torch.Tensor:
    """[B, T, C*M] -> [B, C, T, M]."""
    b, t, f = tokens.shape
    if f % channels:
        raise ValueError(f"unpack_audio: {f} features are not a multiple of {channels} channels")
    return tokens.reshape(b, t, channels, f // channels).transpose(1, 2)


def positions(transformer, shape: LatentShape, device=None, extra_video_coords: torch.Tensor | None = None):
    """The transformer's rotary tables for this latent geometry (batch 1: they broadcast over any batch,
    including the pass-expanded one). Build once per resolution and pass to :class:`LTX2Denoiser`.
    ``extra_video_coords`` ([B, 3, K, 2]) are the positions of tokens appended after the video tokens
    (keyframes; see :mod:`.conditioning`)."""
    vc = transformer.video_coords(1, shape.frames, shape.height, shape.width, fps=shape.fps, device=device)
    if extra_video_coords is not None:
        vc = torch.cat([vc, extra_video_coords[:1].to(device=vc.device)], dim=2)
    ac = transformer.audio_coords(1, shape.audio_frames, device=device)
    return transformer.rope(vc, ac)
