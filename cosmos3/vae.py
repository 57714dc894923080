"""The Wan video VAE used by Cosmos3: Wan2.2's 48-channel residual variant, and the plain Wan2.1 one.

A causal 3-D convolutional autoencoder. Pixels [B, 3, T, H, W] in [-1, 1] become latents
[B, z_dim, 1 + (T - 1) // 4, H / 16, W / 16] (Wan2.2: 2x2 pixel patches, then 3 spatial halvings and
2 temporal ones; Wan2.1: 3 spatial halvings, no patches, so H / 8).

Causality in time is what makes streaming possible. Every convolution with a time kernel of 3 sees
only the current frame and the two before it, so a clip can be processed chunk by chunk: the encoder
eats 1 frame, then 4 at a time, and emits one latent frame per chunk; the decoder eats one latent
frame at a time and emits 1, then 4 frames. Between chunks each such convolution keeps the last two
frames it was fed (its left context) in a per-call cache, a dict keyed by the module itself. The
temporal resamplers are special on the first chunk: the encoder's stride-2 time convolution is
skipped (its one frame is only remembered), the decoder's frame-doubling time convolution is
skipped too, and Wan2.2's parameter-free up shortcut drops the frame that has no counterpart.

Attribute names are the diffusers ``AutoencoderKLWan`` checkpoint keys, so a ``vae/`` folder's
``diffusion_pytorch_model.safetensors`` loads without renaming. Inference only (dropout is ignored).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.distributed import RowShard, rows_split
from ..core.pixel_patches import patchify, unpatchify
from .latent_format import WanLatentFormat

# Constructor defaults of diffusers' AutoencoderKLWan (the Wan2.1 VAE); a vae/config.json overrides them.
DEFAULT_CONFIG = {
    "base_dim": 96,
    "decoder_base_dim": None,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
    "latents_mean": [
        -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
        0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
    ],
    "latents_std": [
        2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
        3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
    ],
    "is_residual": False,
    "in_channels": 3,
    "out_channels": 3,
    "patch_size": None,
    "scale_factor_temporal": 4,
    "scale_factor_spatial": 8,
}

Cache = dict  # module -> tensor of the frames it needs from the previous chunk; lives for one call


class CausalConv3d(nn.Conv3d):
    """Conv3d that looks only backwards in time.

    A time padding of p (kernel 2p + 1) becomes 2p frames of left context: the previous chunk's last
    input frames when a cache is given, zeros where there are none. Space is padded symmetrically by
    the convolution itself.
    """

    rows: RowShard | None = None  # set while a distributed decode splits the rows (core.distributed.rows_split)

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self.context = 2 * self.padding[0]
        self.padding = (0, self.padding[1], self.padding[2])

    def _conv(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        padding = self.padding
        if self.rows is not None and padding[1]:  # a band of the rows: the neighbours' rows instead of zeros
            x, padding = self.rows.halo(x, padding[1]), (padding[0], 0, padding[2])
        return F.conv3d(x, weight, self.bias, self.stride, padding)

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        if self.context == 0:
            return self._conv(x, self.weight)
        prev = None if cache is None else cache.get(self)
        if prev is None and x.shape[2] == 1:
            # One frame after zeros (a clip's first chunk): only the last time tap sees data.
            if cache is not None:
                cache[self] = x.clone()
            return self._conv(x, self.weight[:, :, -1:])
        parts = [x] if prev is None else [prev, x]
        missing = self.context - (0 if prev is None else prev.shape[2])
        if missing > 0:
            b, c, _, h, w = x.shape
            parts.insert(0, x.new_zeros(b, c, missing, h, w))
        x = torch.cat(parts, 2)
        if cache is not None:
            cache[self] = x[:, :, -self.context:].clone()
        return self._conv(x, self.weight)


class RowConv2d(nn.Conv2d):
    """A per-frame Conv2d that, while the rows are split over ranks, pads its band with the neighbours' rows."""

    rows: RowShard | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rows is None or not self.padding[0]:
            return super().forward(x)
        x = self.rows.halo(x, self.padding[0])
        return F.conv2d(x, self.weight, self.bias, self.stride, (0, self.padding[1]))


class RMSNorm(nn.Module):
    """L2-normalise over channels, times sqrt(C) and a per-channel gain (fp32 statistics for 16-bit input)."""

    def __init__(self, dim: int, images: bool = False):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, 1, 1) if images else torch.ones(dim, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = x.dtype in (torch.float16, torch.bfloat16)
        y = F.normalize(x.float() if low else x, dim=1).to(x.dtype)
        return y.mul_(self.scale).mul_(self.gamma)


def per_frame(fn, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2-D (image) module to every frame of [B, C, T, H, W]."""
    b, c, t, h, w = x.shape
    y = fn(x.transpose(1, 2).reshape(b * t, c, h, w))
    return y.view(b, t, *y.shape[1:]).transpose(1, 2)


class ResidualBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.norm1 = RMSNorm(in_dim)
        self.conv1 = CausalConv3d(in_dim, out_dim, 3, padding=1)
        self.norm2 = RMSNorm(out_dim)
        self.conv2 = CausalConv3d(out_dim, out_dim, 3, padding=1)
        self.conv_shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x, cache, first=False):
        h = self.conv_shortcut(x)
        x = self.conv1(F.silu(self.norm1(x), inplace=True), cache)
        x = self.conv2(F.silu(self.norm2(x), inplace=True), cache)
        return x.add_(h)


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (no mixing across time).

    While the rows are split over ranks, each rank's pixels attend to the keys and values of every band."""

    rows: RowShard | None = None

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x, cache=None, first=False):
        b, c, t, h, w = x.shape
        y = self.to_qkv(self.norm(x.transpose(1, 2).reshape(b * t, c, h, w)))
        if self.rows is None:
            q, k, v = y.view(b * t, 1, 3 * c, h * w).transpose(-1, -2).contiguous().chunk(3, dim=-1)
        else:
            kv = self.rows.gather(y[:, c:])  # [B*T, 2C, H_all, W]
            q = y[:, :c].reshape(b * t, 1, c, h * w).transpose(-1, -2)
            k, v = kv.reshape(b * t, 1, 2 * c, -1).transpose(-1, -2).chunk(2, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v)  # [B*T, 1, H*W, C]
        y = self.proj(y.squeeze(1).transpose(1, 2).reshape(b * t, c, h, w))
        return x + y.view(b, t, c, h, w).transpose(1, 2)


class Resample(nn.Module):
    """Spatial x2 up/down (per frame), optionally with a causal x2 in time.

    upsample3d: a time conv makes 2C channels that become two frames per input frame; skipped on the
    first chunk. downsample3d: a stride-2 time conv over (last frame of the previous chunk, this
    chunk); on the first chunk the frame is only remembered.
    """

    def __init__(self, dim: int, mode: str, upsample_out_dim: int | None = None):
        super().__init__()
        self.mode = mode
        if mode.startswith("upsample"):
            out_dim = dim // 2 if upsample_out_dim is None else upsample_out_dim
            self.resample = nn.Sequential(
                nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"), RowConv2d(dim, out_dim, 3, padding=1)
            )
        else:
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=(2, 2)))
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def forward(self, x, cache, first=False):
        if self.mode == "upsample3d" and not first:
            b, c, t, h, w = x.shape
            x = self.time_conv(x, cache).view(b, 2, c, t, h, w)
            x = x.permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * t, h, w)  # frame 2i from the first C channels
        x = per_frame(self.resample, x)
        if self.mode == "downsample3d":
            prev = cache.get(self)
            cache[self] = x[:, :, -1:].clone()
            if not first:
                x = self.time_conv(torch.cat([prev, x], 2))
        return x


def avg_down(x: torch.Tensor, out_dim: int, ft: int, fs: int) -> torch.Tensor:
    """Wan2.2's parameter-free down shortcut: fold ft x fs x fs neighbourhoods into channels, then average
    groups of consecutive channels down to out_dim. Time is zero-padded in front to a multiple of ft."""
    pad = -x.shape[2] % ft
    if pad:
        x = F.pad(x, (0, 0, 0, 0, pad, 0))
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t // ft, ft, h // fs, fs, w // fs, fs).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, out_dim, c * ft * fs * fs // out_dim, t // ft, h // fs, w // fs).mean(2)


def dup_up(x: torch.Tensor, out_dim: int, ft: int, fs: int, first: bool) -> torch.Tensor:
    """Wan2.2's parameter-free up shortcut, the mirror of avg_down: repeat channels, unfold them into
    ft x fs x fs neighbourhoods. On the first chunk the ft - 1 leading frames are dropped."""
    b, c, t, h, w = x.shape
    x = x.repeat_interleave(out_dim * ft * fs * fs // c, dim=1)
    x = x.view(b, out_dim, ft, fs, fs, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    x = x.reshape(b, out_dim, t * ft, h * fs, w * fs)
    return x[:, :, ft - 1 :] if first else x


class MidBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.attentions = nn.ModuleList([AttentionBlock(dim)])
        self.resnets = nn.ModuleList([ResidualBlock(dim, dim), ResidualBlock(dim, dim)])

    def forward(self, x, cache):
        x = self.resnets[0](x, cache)
        return self.resnets[1](self.attentions[0](x), cache)


class ResidualDownBlock(nn.Module):
    """Wan2.2 encoder stage: resnets (+ down resample) plus the avg_down shortcut of the stage input."""

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, temporal: bool, spatial: bool):
        super().__init__()
        self.out_dim, self.ft, self.fs = out_dim, 2 if temporal else 1, 2 if spatial else 1
        dims = [in_dim] + [out_dim] * num_res_blocks
        self.resnets = nn.ModuleList(ResidualBlock(a, b) for a, b in zip(dims, dims[1:]))
        self.downsampler = Resample(out_dim, "downsample3d" if temporal else "downsample2d") if spatial else None

    def forward(self, x, cache, first=False):
        shortcut = avg_down(x, self.out_dim, self.ft, self.fs)
        for resnet in self.resnets:
            x = resnet(x, cache)
        if self.downsampler is not None:
            x = self.downsampler(x, cache, first)
        return x.add_(shortcut)


class ResidualUpBlock(nn.Module):
    """Wan2.2 decoder stage: resnets (+ up resample) plus the dup_up shortcut of the stage input."""

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, mode: str | None):
        super().__init__()
        self.out_dim, self.ft = out_dim, 2 if mode == "upsample3d" else 1
        dims = [in_dim] + [out_dim] * (num_res_blocks + 1)
        self.resnets = nn.ModuleList(ResidualBlock(a, b) for a, b in zip(dims, dims[1:]))
        self.upsampler = None if mode is None else Resample(out_dim, mode, upsample_out_dim=out_dim)

    def forward(self, x, cache, first=False):
        shortcut = None if self.upsampler is None else dup_up(x, self.out_dim, self.ft, 2, first)
        for resnet in self.resnets:
            x = resnet(x, cache)
        if self.upsampler is None:
            return x
        return self.upsampler(x, cache, first).add_(shortcut)


class UpBlock(nn.Module):
    """Wan2.1 decoder stage: resnets, then an up resample that halves the channels."""

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, mode: str | None):
        super().__init__()
        dims = [in_dim] + [out_dim] * (num_res_blocks + 1)
        self.resnets = nn.ModuleList(ResidualBlock(a, b) for a, b in zip(dims, dims[1:]))
        self.upsamplers = None if mode is None else nn.ModuleList([Resample(out_dim, mode)])

    def forward(self, x, cache, first=False):
        for resnet in self.resnets:
            x = resnet(x, cache)
        return x if self.upsamplers is None else self.upsamplers[0](x, cache, first)


class Encoder3d(nn.Module):
    def __init__(self, in_channels, dim, out_channels, dim_mult, num_res_blocks, attn_scales, temperal_downsample,
                 is_residual):
        super().__init__()
        dims = [dim * m for m in [1] + list(dim_mult)]
        last = len(dim_mult) - 1
        self.conv_in = CausalConv3d(in_channels, dims[0], 3, padding=1)
        blocks, scale = [], 1.0
        for i, (a, b) in enumerate(zip(dims, dims[1:])):
            down, temporal = i < last, i < last and temperal_downsample[i]
            if is_residual:
                blocks.append(ResidualDownBlock(a, b, num_res_blocks, temporal, down))
                continue
            for j in range(num_res_blocks):  # Wan2.1: a flat list of resnets (+ attention) and resamples
                blocks.append(ResidualBlock(a if j == 0 else b, b))
                if scale in attn_scales:
                    blocks.append(AttentionBlock(b))
            if down:
                blocks.append(Resample(b, "downsample3d" if temporal else "downsample2d"))
                scale /= 2.0
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = MidBlock(dims[-1])
        self.norm_out = RMSNorm(dims[-1])
        self.conv_out = CausalConv3d(dims[-1], out_channels, 3, padding=1)

    def forward(self, x, cache, first):
        x = self.conv_in(x, cache)
        for block in self.down_blocks:
            x = block(x, cache, first)
        x = self.mid_block(x, cache)
        return self.conv_out(F.silu(self.norm_out(x), inplace=True), cache)


class Decoder3d(nn.Module):
    def __init__(self, dim, z_dim, dim_mult, num_res_blocks, temperal_upsample, out_channels, is_residual):
        super().__init__()
        dims = [dim * m for m in [dim_mult[-1]] + list(dim_mult)[::-1]]
        last = len(dim_mult) - 1
        self.conv_in = CausalConv3d(z_dim, dims[0], 3, padding=1)
        self.mid_block = MidBlock(dims[0])
        blocks = []
        for i, (a, b) in enumerate(zip(dims, dims[1:])):
            mode = None if i == last else "upsample3d" if temperal_upsample[i] else "upsample2d"
            if is_residual:
                blocks.append(ResidualUpBlock(a, b, num_res_blocks, mode))
            else:  # Wan2.1: every up resample halved the channels of the stage before
                blocks.append(UpBlock(a // 2 if i > 0 else a, b, num_res_blocks, mode))
        self.up_blocks = nn.ModuleList(blocks)
        self.norm_out = RMSNorm(dims[-1])
        self.conv_out = CausalConv3d(dims[-1], out_channels, 3, padding=1)

    def forward(self, x, cache, first):
        x = self.mid_block(self.conv_in(x, cache), cache)
        for block in self.up_blocks:
            x = block(x, cache, first)
        return self.conv_out(F.silu(self.norm_out(x), inplace=True), cache)


class WanVAE(nn.Module):
    """Wan2.1 / Wan2.2 VAE from a diffusers ``vae/config.json`` dict (unknown keys are ignored)."""

    def __init__(self, config: dict):
        super().__init__()
        cfg = {**DEFAULT_CONFIG, **config}
        self.config = cfg
        self.z_dim = cfg["z_dim"]
        self.latents_mean = [float(v) for v in cfg["latents_mean"]]
        self.latents_std = [float(v) for v in cfg["latents_std"]]
        self.scale_factor_spatial = cfg["scale_factor_spatial"]
        self.scale_factor_temporal = cfg["scale_factor_temporal"]
        self.patch_size = cfg["patch_size"] or 1
        tdown = list(cfg["temperal_downsample"])
        self.frames_per_latent = 2 ** sum(map(bool, tdown))  # 4: the encoder's chunk, the decoder's output
        self.encoder = Encoder3d(cfg["in_channels"], cfg["base_dim"], 2 * self.z_dim, cfg["dim_mult"],
                                 cfg["num_res_blocks"], cfg["attn_scales"], tdown, cfg["is_residual"])
        self.quant_conv = CausalConv3d(2 * self.z_dim, 2 * self.z_dim, 1)
        self.post_quant_conv = CausalConv3d(self.z_dim, self.z_dim, 1)
        self.decoder = Decoder3d(cfg["decoder_base_dim"] or cfg["base_dim"], self.z_dim, cfg["dim_mult"],
                                 cfg["num_res_blocks"], tdown[::-1], cfg["out_channels"], cfg["is_residual"])

    @property
    def dtype(self) -> torch.dtype:
        return self.quant_conv.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.quant_conv.weight.device

    @torch.no_grad()
    def encode(self, video: torch.Tensor, callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """[B, 3, T, H, W] in [-1, 1] -> posterior mean [B, z_dim, 1 + (T - 1) // 4, H/16, W/16] (not normalised).

        Frames past the last whole chunk of 4 are ignored, as in the reference. Output in the VAE's dtype.
        After each latent frame ``callback(done, total)`` is called; an exception it raises stops the encode.
        """
        p, n = self.patch_size, self.frames_per_latent
        channels = self.config["in_channels"] // (p * p)
        if video.ndim != 5 or video.shape[1] != channels or video.shape[3] % p or video.shape[4] % p:
            raise ValueError(f"WanVAE.encode: expected video [B, {channels}, T, H, W] with H and W divisible by {p}, "
                             f"got {list(video.shape)}")
        steps = 1 + (video.shape[2] - 1) // n
        weight, bias = self.quant_conv.weight[: self.z_dim], self.quant_conv.bias[: self.z_dim]  # the mean half
        cache, out = Cache(), None
        for i in range(steps):
            start, stop = (0, 1) if i == 0 else (1 + n * (i - 1), 1 + n * i)
            x = video[:, :, start:stop].to(device=self.device, dtype=self.dtype)
            x = self.encoder(patchify(x, p) if p > 1 else x, cache, first=i == 0)
            mean = F.conv3d(x, weight, bias)
            if out is None:
                out = mean.new_empty(mean.shape[0], self.z_dim, steps, *mean.shape[3:])
            out[:, :, i : i + 1] = mean
            if callback is not None:
                callback(i + 1, steps)
        return out

    @torch.no_grad()
    def iter_decode(self, z: torch.Tensor) -> Iterator[torch.Tensor]:
        """Decode latents [B, z_dim, T, h, w] (not normalised) one latent frame at a time.

        Yields pixel chunks [B, 3, t, H, W] clamped to [-1, 1]: t = 1 for latent frame 0, then 4.
        Only the causal cache (two frames per convolution) is carried between chunks. In a distributed run
        (torchrun) every rank decodes a band of the rows and every chunk is gathered whole on every rank.
        """
        if z.ndim != 5 or z.shape[1] != self.z_dim:
            raise ValueError(f"WanVAE.decode: expected latents [B, {self.z_dim}, T, h, w], got {list(z.shape)}")
        cache = Cache()
        shard = RowShard.for_decode(z.shape[3])  # under torchrun each rank decodes a band of rows
        if shard is not None:
            z = shard.split(z)
        for i in range(z.shape[2]):
            x = self.post_quant_conv(z[:, :, i : i + 1].to(device=self.device, dtype=self.dtype))
            with rows_split(self.decoder, shard):
                x = self.decoder(x, cache, first=i == 0)
            if self.patch_size > 1:
                x = unpatchify(x, self.patch_size)
            x = x.clamp_(-1.0, 1.0)
            yield x if shard is None else shard.gather(x)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, callback: Callable[[int, int], None] | None = None,
               dtype: torch.dtype | None = None) -> torch.Tensor:
        """Latents [B, z_dim, T, h, w] -> frames [B, 3, 4 * (T - 1) + 1, H, W] in [-1, 1].

        Chunks are written into one preallocated output (dtype: the VAE's unless given). After each
        latent frame ``callback(done, total)`` is called; an exception it raises stops the decode.
        """
        total, out, t = z.shape[2], None, 0
        for i, chunk in enumerate(self.iter_decode(z)):
            if out is None:
                frames = 1 + self.frames_per_latent * (total - 1)
                out = chunk.new_empty(*chunk.shape[:2], frames, *chunk.shape[3:], dtype=dtype or chunk.dtype)
            out[:, :, t : t + chunk.shape[2]] = chunk
            t += chunk.shape[2]
            if callback is not None:
                callback(i + 1, total)
        return out

    @property
    def latent_format(self) -> WanLatentFormat:
        """This VAE's latent statistics (its config's ``latents_mean`` / ``latents_std``)."""
        return WanLatentFormat(self.latents_mean, self.latents_std)

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Raw posterior mean -> the diffusion model's latents: (z - mean) / std per channel."""
        return self.latent_format.process_in(z)

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of normalize_latents: z * std + mean."""
        return self.latent_format.process_out(z)
