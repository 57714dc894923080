"""The LTX-2 / LTX-2.3 latent upsampler: video latents [B, C, T, H, W] -> [B, C, T, 2H, 2W].

It is the bridge between the two stages of the two-stage pipelines: stage 1 samples at half the
resolution, the upsampler doubles the latent grid, stage 2 refines at full resolution.

Network (one compact module, names equal to the checkpoint keys):

* ``initial_conv`` (k3, ``in_channels`` -> ``mid_channels``), ``initial_norm`` (GroupNorm 32), SiLU;
* ``res_blocks.{i}``: conv1 -> norm1 -> SiLU -> conv2 -> norm2, then SiLU(out + input);
* ``upsampler``: the x2 step, applied frame by frame (2-D convolution) for the spatial kinds;
* ``post_upsample_res_blocks.{i}`` like ``res_blocks``; ``final_conv`` back to ``in_channels``.

Upsampling kinds (config switches):

* plain spatial (LTX-2.3 upsampler; ``rational_resampler`` false): ``upsampler.0`` is a 3x3 Conv2d to
  4x the channels followed by a 2-D pixel shuffle (channel ``c*4 + 2*i + j`` -> pixel (2h+i, 2w+j));
* rational spatial (LTX-2.0 upsampler): ``upsampler.conv`` (Conv2d to num^2 x the channels), a pixel
  shuffle by ``num``, then an anti-aliasing blur (fixed 5x5 binomial) with stride ``den``, where
  scale = num/den is one of 0.75, 1.5, 2, 4. At scale 2 the stride is 1 and the blur is skipped.
  The blur kernel is a constant: it is rebuilt here, and a copy stored in a checkpoint
  (``upsampler.blur_down.kernel``) is ignored;
* temporal x2 (``temporal_upsample``) and spatio-temporal x2 (both flags): 3-D conv + 1-D / 3-D pixel
  shuffle; the first output frame is dropped so 1 + k frames become 1 + 2k.

``dims == 2`` runs the whole network frame by frame with 2-D convolutions.

Checkpoints. A diffusers ``latent_upsampler/`` folder (``config.json`` + weights) and the official
single file (config as JSON in the safetensors metadata ``"config"``) hold the same tensor names, so no
key map is needed. Only the config names differ; :func:`normalize_config` accepts both:

=====================  ==========================  =================  =========================
ours / official        diffusers                   official default   diffusers default
=====================  ==========================  =================  =========================
``spatial_scale``      ``rational_spatial_scale``  2.0                2.0
``rational_resampler`` ``use_rational_resampler``  False              True
``mid_channels``       ``mid_channels``            512                1024
=====================  ==========================  =================  =========================

A config is read as diffusers' when it has ``_diffusers_version`` or one of the diffusers-only names
(the defaults differ, so this decides what a missing key means).

Latent normalisation (what the caller must do). The upsampler was trained on *raw* VAE latents, while
the diffusion model works on latents normalised with the video VAE's per-channel statistics. The
official pipelines (ltx-core ``upsample_video``) therefore un-normalise with the VAE stats, upsample and
normalise again; diffusers' ``LTX2LatentUpsamplePipeline`` un-normalises and returns raw latents, which the
next ``LTX2Pipeline`` call normalises. :func:`upsample_normalized_latents` does the official sequence
given the VAE's ``latents_mean`` / ``latents_std`` (``scaling_factor`` 1 for LTX-2). The optional
diffusers extras (AdaIN against the input, tone mapping) are not part of the official two-stage flow
and are not implemented here.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.checkpoint import CheckpointError, load_into, read_config, resolve_weight_files

__all__ = [
    "DEFAULT_CONFIG",
    "LTX2LatentUpsampler",
    "normalize_config",
    "load_latent_upsampler",
    "upsample_normalized_latents",
]

# Official (ltx-core) names and defaults.
DEFAULT_CONFIG = {
    "in_channels": 128,
    "mid_channels": 512,
    "num_blocks_per_stage": 4,
    "dims": 3,
    "spatial_upsample": True,
    "temporal_upsample": False,
    "spatial_scale": 2.0,
    "rational_resampler": False,
}

_DIFFUSERS_DEFAULTS = dict(DEFAULT_CONFIG, mid_channels=1024, rational_resampler=True)
_DIFFUSERS_NAMES = {"rational_spatial_scale": "spatial_scale", "use_rational_resampler": "rational_resampler"}
_RATIONAL_SCALES = {0.75: (3, 4), 1.5: (3, 2), 2.0: (2, 1), 4.0: (4, 1)}
_BLUR_KEY = "upsampler.blur_down.kernel"


def normalize_config(config: dict) -> dict:
    """A diffusers or official upsampler config -> our names, with the right defaults filled in."""
    is_diffusers = "_diffusers_version" in config or any(k in config for k in _DIFFUSERS_NAMES)
    out = dict(_DIFFUSERS_DEFAULTS if is_diffusers else DEFAULT_CONFIG)
    for key, value in config.items():
        key = _DIFFUSERS_NAMES.get(key, key)
        if key in out:
            out[key] = value
    for key in ("in_channels", "mid_channels", "num_blocks_per_stage", "dims"):
        out[key] = int(out[key])
    for key in ("spatial_upsample", "temporal_upsample", "rational_resampler"):
        out[key] = bool(out[key])
    out["spatial_scale"] = float(out["spatial_scale"])
    if out["dims"] not in (2, 3):
        raise ValueError(f"latent upsampler: dims must be 2 or 3, got {out['dims']}.")
    if out["mid_channels"] % 32:
        raise ValueError(f"latent upsampler: mid_channels ({out['mid_channels']}) must be a multiple of 32 "
                         "(GroupNorm with 32 groups).")
    if not (out["spatial_upsample"] or out["temporal_upsample"]):
        raise ValueError("latent upsampler: the config enables neither spatial_upsample nor temporal_upsample.")
    if out["spatial_upsample"] and not out["temporal_upsample"] and out["rational_resampler"] \
            and out["spatial_scale"] not in _RATIONAL_SCALES:
        raise ValueError(f"latent upsampler: spatial_scale {out['spatial_scale']} is not supported by the "
                         f"rational resampler; use one of {sorted(_RATIONAL_SCALES)}.")
    return out


# --------------------------------------------------------------------------------------------------
# Building blocks


def _frames_to_batch(x: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] -> [B*T, C, H, W]."""
    return x.transpose(1, 2).flatten(0, 1)


def _batch_to_frames(x: torch.Tensor, b: int) -> torch.Tensor:
    """[B*T, C, H, W] -> [B, C, T, H, W]."""
    return x.unflatten(0, (b, -1)).transpose(1, 2)


def _shuffle_time(x: torch.Tensor, r: int) -> torch.Tensor:
    """[B, C*r, T, H, W] -> [B, C, T*r, H, W] (channel c*r + k goes to frame t*r + k)."""
    b, cr, t, h, w = x.shape
    return x.view(b, cr // r, r, t, h, w).permute(0, 1, 3, 2, 4, 5).reshape(b, cr // r, t * r, h, w)


def _shuffle_3d(x: torch.Tensor, r: int) -> torch.Tensor:
    """[B, C*r^3, T, H, W] -> [B, C, T*r, H*r, W*r] (channel order c, then t, h, w offsets)."""
    b, cr, t, h, w = x.shape
    c = cr // r**3
    x = x.view(b, c, r, r, r, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c, t * r, h * r, w * r)


class ResBlock(nn.Module):
    def __init__(self, channels: int, dims: int):
        super().__init__()
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.conv1 = conv(channels, channels, 3, padding=1)
        self.norm1 = nn.GroupNorm(32, channels)
        self.conv2 = conv(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return F.silu(h + x)


class BlurDownsample(nn.Module):
    """Depthwise 5x5 binomial blur with an integer stride, on 4-D input. Stride 1 is the identity."""

    def __init__(self, stride: int, kernel_size: int = 5):
        super().__init__()
        self.stride = stride
        self.kernel_size = kernel_size
        self.register_buffer("kernel", self._make_kernel(torch.device("cpu")), persistent=False)

    def _make_kernel(self, device: torch.device) -> torch.Tensor:
        row = torch.tensor([math.comb(self.kernel_size - 1, i) for i in range(self.kernel_size)],
                           dtype=torch.float64, device=device)
        k = torch.outer(row, row)
        return (k / k.sum()).float()[None, None]

    def reset_non_persistent_buffers(self, device) -> None:
        self.kernel = self._make_kernel(torch.device(device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x
        c = x.shape[1]
        w = self.kernel.to(x.dtype).expand(c, 1, self.kernel_size, self.kernel_size)
        return F.conv2d(x, w, stride=self.stride, padding=self.kernel_size // 2, groups=c)


class RationalResampler(nn.Module):
    """Spatial scale num/den on 4-D input: conv -> pixel shuffle by num -> blur with stride den."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.num, self.den = _RATIONAL_SCALES[float(scale)]
        self.conv = nn.Conv2d(channels, self.num**2 * channels, 3, padding=1)
        self.blur_down = BlurDownsample(self.den)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blur_down(F.pixel_shuffle(self.conv(x), self.num))


# --------------------------------------------------------------------------------------------------
# The model


class LTX2LatentUpsampler(nn.Module):
    """Latent upsampler; ``config`` uses official or diffusers names (see :func:`normalize_config`)."""

    def __init__(self, config: dict | None = None, **overrides):
        super().__init__()
        cfg = normalize_config({**(config or {}), **overrides})
        self.config = cfg
        self.dims = cfg["dims"]
        self.spatial_upsample = cfg["spatial_upsample"]
        self.temporal_upsample = cfg["temporal_upsample"]
        c_in, c = cfg["in_channels"], cfg["mid_channels"]
        n = cfg["num_blocks_per_stage"]
        conv = nn.Conv3d if self.dims == 3 else nn.Conv2d

        self.initial_conv = conv(c_in, c, 3, padding=1)
        self.initial_norm = nn.GroupNorm(32, c)
        self.res_blocks = nn.ModuleList(ResBlock(c, self.dims) for _ in range(n))
        if self.spatial_upsample and self.temporal_upsample:
            self.upsampler = nn.Sequential(nn.Conv3d(c, 8 * c, 3, padding=1))
            self._mode = "spacetime"
        elif self.spatial_upsample and cfg["rational_resampler"]:
            self.upsampler = RationalResampler(c, cfg["spatial_scale"])
            self._mode = "rational"
        elif self.spatial_upsample:
            self.upsampler = nn.Sequential(nn.Conv2d(c, 4 * c, 3, padding=1))
            self._mode = "space"
        else:
            self.upsampler = nn.Sequential(nn.Conv3d(c, 2 * c, 3, padding=1))
            self._mode = "time"
        if self.dims == 2 and self._mode in ("spacetime", "time"):
            raise ValueError("latent upsampler: temporal upsampling needs dims=3.")
        self.post_upsample_res_blocks = nn.ModuleList(ResBlock(c, self.dims) for _ in range(n))
        self.final_conv = conv(c, c_in, 3, padding=1)

    @property
    def spatial_factor(self) -> float:
        if self._mode == "rational":
            return self.upsampler.num / self.upsampler.den
        return 2.0 if self._mode in ("space", "spacetime") else 1.0

    def _upsample(self, x: torch.Tensor) -> torch.Tensor:
        if self._mode == "rational":
            return self.upsampler(x)
        if self._mode == "space":
            return F.pixel_shuffle(self.upsampler[0](x), 2)
        if self._mode == "time":
            return _shuffle_time(self.upsampler[0](x), 2)[:, :, 1:]
        return _shuffle_3d(self.upsampler[0](x), 2)[:, :, 1:]

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw (un-normalised) latents [B, C, T, H, W] -> upsampled raw latents."""
        if latents.ndim != 5:
            raise ValueError(f"latent upsampler: expected latents [B, C, T, H, W], got shape {list(latents.shape)}.")
        b = latents.shape[0]
        x = _frames_to_batch(latents) if self.dims == 2 else latents
        x = F.silu(self.initial_norm(self.initial_conv(x)))
        for block in self.res_blocks:
            x = block(x)
        if self.dims == 3 and self._mode in ("space", "rational"):
            x = _batch_to_frames(self._upsample(_frames_to_batch(x)), b)
        else:
            x = self._upsample(x)
        for block in self.post_upsample_res_blocks:
            x = block(x)
        x = self.final_conv(x)
        return _batch_to_frames(x, b) if self.dims == 2 else x


# --------------------------------------------------------------------------------------------------
# Loading and use


def load_latent_upsampler(path, *, device="cpu", dtype: torch.dtype | str | None = None) -> LTX2LatentUpsampler:
    """Load a diffusers ``latent_upsampler`` folder, or the official single ``.safetensors`` file.

    The config comes from ``config.json`` (folder) or the file's ``"config"`` metadata. ``dtype=None``
    keeps the file's dtype. Raises :class:`CheckpointError` for a missing config or mismatching weights.
    """
    path = Path(path)
    try:
        cfg = read_config(path)
    except CheckpointError as e:
        raise CheckpointError(f"latent upsampler: {e}") from None
    try:
        with torch.device("meta"):
            model = LTX2LatentUpsampler(cfg)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    load_into(model, resolve_weight_files(path), device=device, dtype=dtype, ignore=(_BLUR_KEY,))
    return model.eval()


def upsample_normalized_latents(
    upsampler: LTX2LatentUpsampler,
    latents: torch.Tensor,
    latents_mean: torch.Tensor,
    latents_std: torch.Tensor,
    scaling_factor: float = 1.0,
) -> torch.Tensor:
    """The official upsampling step on *normalised* latents: un-normalise with the video VAE statistics,
    upsample, normalise again. Returns normalised latents ready for stage 2.

    ``latents_mean`` / ``latents_std`` are the VAE's per-channel statistics (``LTX2VideoVAE.latents_mean``
    / ``latents_std``; official ``per_channel_statistics.mean-of-means`` / ``std-of-means``). The
    upsampler runs in its own parameter dtype; the result comes back in the input's dtype.
    """
    shape = (1, -1, 1, 1, 1)
    p = next(upsampler.parameters())
    mean = latents_mean.view(shape).to(p.device, p.dtype)
    std = latents_std.view(shape).to(p.device, p.dtype)
    x = latents.to(p.device, p.dtype) * std / scaling_factor + mean
    x = upsampler(x)
    x = (x - mean) * scaling_factor / std
    return x.to(latents.dtype)
