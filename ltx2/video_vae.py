"""The LTX-2 / LTX-2.3 video VAE: pixels <-> 128-channel latents at 32x space and 8x time compression.

Shape contract. Pixels [B, 3, 1 + 8k, H, W] in [-1, 1] (H, W multiples of 32) become latents
[B, C, 1 + k, H / 32, W / 32]; decoding returns 1 + 8 (T - 1) frames. The first frame of a clip is
coded on its own (every temporal down/up step duplicates or drops one leading frame).

Structure (diffusers ``AutoencoderKLLTX2Video`` layout, so a ``vae/`` folder loads without renaming):

* encoder: 4x4 pixel patches folded into channels (channel index ``c*16 + pw*4 + ph``), ``conv_in``,
  ``down_blocks[i]`` = resnets + one space-to-depth downsampler, ``mid_block``, pixel-norm, SiLU,
  ``conv_out`` to C + 1 channels (C means and one shared log-variance; only the means are used);
* decoder: ``conv_in``, ``mid_block``, ``up_blocks[i]`` = depth-to-space upsampler + resnets, pixel-norm,
  [timestep scale/shift], SiLU, ``conv_out``, patches unfolded back into pixels.

All convolutions have a time kernel of 3. The encoder's are causal (two copies of the first frame in
front). The shipped decoders are non-causal (one copy of the first frame in front, one of the last at
the end), which means one frame of look-ahead per convolution. Every other operation (pixel norm,
SiLU, depth-to-space, the 1x1 shortcut) acts on each frame separately. That is what makes the
streaming decode exact: the decoder is fed latent frames a chunk at a time, every convolution keeps
its last two input frames (its context) in a per-call cache and emits the frames whose whole window it
has seen, and the final chunk pads the end. A residual that skips over convolutions is queued until
the convolution output it is added to arrives. Memory is bounded by the chunk size, not the clip.

Spatial tiling (optional, ``decode(spatial_tile=...)``) follows ltx-core's tiled decode: the latent is cut
into overlapping rectangles, each is decoded on its own (its borders padded like an image border, so
tiling is an approximation, unlike the streaming), and the decoded tiles are averaged with weights that
ramp linearly across each overlap. Tiles and ramps are laid out in latent cells: the tile side along
the longer image axis is ``spatial_tile / 32`` cells, along the shorter axis that times the aspect
ratio (rounded), as ltx-core does. Each tile may itself be streamed through time, so the two combine;
the time axis is never tiled (ltx-core's blended temporal tiles are not reproduced: streaming is
exact). Peak memory is then the output plus one tile's, or one tile-chunk's, activations. In a distributed run
(``torchrun``, :mod:`..core.distributed`) the ranks decode the tiles round-robin and sum their shares; an untiled
decode is split into bands of rows instead (``RowShard``: each convolution borrows its neighbours' edge rows,
so the bands give the one-process decode).

LTX-2.0 and LTX-2.3 differ only in their config (2.3: four up blocks with per-block upsample types and
factors, optional residual upsamplers, zero padding); both are built from ``vae/config.json``.

The official single-file checkpoint stores the same tensors under different names (``vae.encoder.*``,
``vae.decoder.*`` with a flat block list, ``res_blocks``, ``per_channel_statistics.*``):
:func:`official_to_module_key` renames them for ``core.checkpoint.load_into``.

Inference only: dropout is ignored, and decoder noise injection (``decoder_inject_noise``), which no
released config enables, is refused.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core import distributed
from ..core.checkpoint import CheckpointError
from ..core.pixel_patches import patchify, unpatchify

__all__ = ["DEFAULT_CONFIG", "LTX2VideoVAE", "official_to_module_key", "make_official_key_map"]

# Constructor defaults of diffusers' AutoencoderKLLTX2Video; a vae/config.json overrides them.
DEFAULT_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 128,
    "block_out_channels": [256, 512, 1024, 2048],
    "down_block_types": ["LTX2VideoDownBlock3D"] * 4,
    "decoder_block_out_channels": [256, 512, 1024],
    "layers_per_block": [4, 6, 6, 2, 2],
    "decoder_layers_per_block": [5, 5, 5, 5],
    "spatio_temporal_scaling": [True, True, True, True],
    "decoder_spatio_temporal_scaling": [True, True, True],
    "decoder_inject_noise": [False, False, False, False],
    "downsample_type": ["spatial", "temporal", "spatiotemporal", "spatiotemporal"],
    "upsample_type": ["spatiotemporal", "spatiotemporal", "spatiotemporal"],
    "upsample_residual": [True, True, True],
    "upsample_factor": [2, 2, 2],
    "timestep_conditioning": False,
    "patch_size": 4,
    "patch_size_t": 1,
    "resnet_norm_eps": 1e-6,
    "scaling_factor": 1.0,
    "encoder_causal": True,
    "decoder_causal": True,
    "encoder_spatial_padding_mode": "zeros",
    "decoder_spatial_padding_mode": "reflect",
}

_STRIDES = {"spatial": (1, 2, 2), "temporal": (2, 1, 1), "spatiotemporal": (2, 2, 2), "conv": (2, 2, 2)}

# The official decoder's default timestep when it is timestep-conditioned (no released config is).
DEFAULT_DECODE_TIMESTEP = 0.05


def _tile_spans(length: int, size: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Cut one latent axis of ``length`` cells into tiles of ``size`` cells, neighbours sharing ``overlap``.

    Returns (start, stop, left ramp, right ramp) per tile, all in cells; the ramps are the overlaps with
    the previous and next tile. Tiles step by size - overlap, as few as cover the axis, the last one
    cut at the end (so it may be shorter). An axis no longer than a tile is one tile without ramps.
    """
    if length <= size:
        return [(0, length, 0, 0)]
    step = size - overlap
    count = -(-(length - overlap) // step)  # ceil: the last tile starts before length - overlap
    spans = []
    for i in range(count):
        start = i * step
        spans.append((start, min(start + size, length), overlap if i else 0, overlap if i < count - 1 else 0))
    return spans


def _blend_ramp(n: int, rise: int, fall: int, device) -> torch.Tensor:
    """Blend weights along one tile axis of n pixels (float32): 1 inside, a linear rise over the first
    ``rise`` pixels (r / (rise + 1) for r = 1..rise) and a linear fall over the last ``fall`` (the mirror
    image); where both ramps reach a pixel their values multiply. Two tiles meeting in an overlap of
    width w therefore weigh every pixel there in proportions summing to 1.
    """
    w = torch.ones(n, device=device)
    rise, fall = min(rise, n), min(fall, n)
    if rise:
        w[:rise] *= torch.linspace(0.0, 1.0, rise + 2, device=device)[1:-1]
    if fall:
        w[n - fall:] *= torch.linspace(1.0, 0.0, fall + 2, device=device)[1:-1]
    return w


class Stream:
    """State of one streaming decode: each module's carried frames, and whether the clip ends in this chunk."""

    def __init__(self):
        self.cache: dict = {}
        self.final = False


def _no_frames(x: torch.Tensor, channels: int) -> torch.Tensor:
    """No frames yet, shaped like x with ``channels`` channels (a look-ahead convolution still waiting)."""
    return x.new_empty(x.shape[0], channels, 0, *x.shape[3:])


def _take_aligned(stream: Stream | None, key, x: torch.Tensor, n: int) -> torch.Tensor:
    """Queue x's frames and return the oldest n: a skip path delayed to meet a look-ahead convolution."""
    if stream is None:
        return x
    queued = stream.cache.get(key)
    if queued is not None:
        x = torch.cat([queued, x], 2)
    stream.cache[key] = x[:, :, n:].clone()
    return x[:, :, :n]


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """x / sqrt(mean over channels of x^2 + eps), at every (frame, row, column)."""
    return x / torch.sqrt(torch.mean(x * x, dim=1, keepdim=True) + eps)


class CausalConv3d(nn.Module):
    """Conv3d, kernel 3, whose time padding repeats edge frames instead of adding zeros.

    causal: two copies of the first frame in front. Non-causal: one copy of the first frame in front
    and one of the last frame at the end. Space is padded by the convolution (``zeros`` or ``reflect``).
    With a ``Stream`` the input arrives in chunks; see the module docstring.
    """

    rows: distributed.RowShard | None = None  # set while a distributed decode splits the rows

    def __init__(self, in_channels: int, out_channels: int, stride=(1, 1, 1), padding_mode: str = "zeros"):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=(0, 1, 1),
                              padding_mode=padding_mode)

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        if self.rows is None:
            return self.conv(x)
        # A band of the rows: the neighbours' rows above and below, the image border padded as the conv pads it.
        conv, mode = self.conv, self.conv.padding_mode
        x = self.rows.halo(x, 1, mode)
        if mode == "zeros":
            return F.conv3d(x, conv.weight, conv.bias, conv.stride, (0, 0, 1))
        return F.conv3d(F.pad(x, (1, 1, 0, 0, 0, 0), mode=mode), conv.weight, conv.bias, conv.stride)

    def forward(self, x: torch.Tensor, causal: bool, stream: Stream | None = None) -> torch.Tensor:
        front, back = (2, 0) if causal else (1, 1)
        if stream is None:
            parts = [x[:, :, :1].expand(-1, -1, front, -1, -1), x]
            if back:
                parts.append(x[:, :, -1:])
            return self._conv(torch.cat(parts, 2))
        # Streaming (stride 1 only): prepend the carried context, or the edge padding on the first chunk.
        prev = stream.cache.get(self)
        if prev is None:
            if x.shape[2] == 0:
                return _no_frames(x, self.conv.out_channels)
            prev = x[:, :, :1].expand(-1, -1, front, -1, -1)
        seen = torch.cat([prev, x], 2)
        stream.cache[self] = seen[:, :, -2:].clone()  # not a view: the chunk can go
        if back and stream.final:
            seen = torch.cat([seen, seen[:, :, -1:]], 2)
        if seen.shape[2] < 3:
            return _no_frames(x, self.conv.out_channels)
        return self._conv(seen)


class TimestepEmbedder(nn.Module):
    """Sinusoidal timestep features (256, cos first) -> Linear -> SiLU -> Linear (PixArt-alpha style)."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(256, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        half = 128
        freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * (-math.log(10000.0) / half))
        angles = t.float()[:, None] * freqs[None]
        feats = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1).to(dtype)
        return self.linear_2(F.silu(self.linear_1(feats)))


class CombinedTimestepEmbedder(nn.Module):
    """Holds the embedder under ``timestep_embedder`` (the checkpoint's nesting)."""

    def __init__(self, dim: int):
        super().__init__()
        self.timestep_embedder = TimestepEmbedder(dim)

    def forward(self, t: torch.Tensor, batch: int, dtype: torch.dtype) -> torch.Tensor:
        return self.timestep_embedder(t.flatten(), dtype).view(batch, -1, 1, 1, 1)


class ResnetBlock(nn.Module):
    """pixel-norm, [scale/shift], SiLU, conv1, pixel-norm, [scale/shift], SiLU, conv2, plus the input.

    When the width changes the input goes through a LayerNorm over channels and a 1x1 conv first.
    """

    def __init__(self, in_channels: int, out_channels: int, eps: float, timestep_conditioning: bool,
                 padding_mode: str):
        super().__init__()
        self.conv1 = CausalConv3d(in_channels, out_channels, padding_mode=padding_mode)
        self.conv2 = CausalConv3d(out_channels, out_channels, padding_mode=padding_mode)
        self.norm3 = self.conv_shortcut = None
        if in_channels != out_channels:
            self.norm3 = nn.LayerNorm(in_channels, eps=eps, elementwise_affine=True, bias=True)
            self.conv_shortcut = nn.Conv3d(in_channels, out_channels, kernel_size=1)
        self.scale_shift_table = nn.Parameter(torch.zeros(4, in_channels)) if timestep_conditioning else None

    def forward(self, x, temb, causal, stream=None):
        h = pixel_norm(x)
        if self.scale_shift_table is not None:
            mod = temb.unflatten(1, (4, -1)) + self.scale_shift_table[None, :, :, None, None, None]
            shift1, scale1, shift2, scale2 = mod.unbind(1)
            h = h * (1 + scale1) + shift1
        h = self.conv1(F.silu(h), causal, stream)
        h = pixel_norm(h)
        if self.scale_shift_table is not None:
            h = h * (1 + scale2) + shift2
        h = self.conv2(F.silu(h), causal, stream)
        skip = _take_aligned(stream, (self, "skip"), x, h.shape[2])
        if self.norm3 is not None:
            skip = self.norm3(skip.movedim(1, -1)).movedim(-1, 1)
        if self.conv_shortcut is not None:
            skip = self.conv_shortcut(skip)
        return h + skip


def space_to_depth(x: torch.Tensor, stride) -> torch.Tensor:
    """[B, C, T*st, H*sh, W*sw] -> [B, C*st*sh*sw, T, H, W], channel index ((c*st + it)*sh + ih)*sw + iw."""
    st, sh, sw = stride
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t // st, st, h // sh, sh, w // sw, sw).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * st * sh * sw, t // st, h // sh, w // sw)


def depth_to_space(x: torch.Tensor, stride) -> torch.Tensor:
    """Inverse of space_to_depth."""
    st, sh, sw = stride
    b, c, t, h, w = x.shape
    x = x.reshape(b, c // (st * sh * sw), st, sh, sw, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c // (st * sh * sw), t * st, h * sh, w * sw)


class Downsampler(nn.Module):
    """Space-to-depth downsample: conv to out/(st*sh*sw) channels then fold, plus the folded input averaged
    over channel groups. A time stride of 2 first puts a copy of frame 0 in front."""

    def __init__(self, in_channels: int, out_channels: int, stride, padding_mode: str):
        super().__init__()
        self.stride = stride
        self.group_size = in_channels * math.prod(stride) // out_channels
        self.conv = CausalConv3d(in_channels, out_channels // math.prod(stride), padding_mode=padding_mode)

    def forward(self, x, causal):
        if self.stride[0] > 1:
            x = torch.cat([x[:, :, : self.stride[0] - 1], x], 2)
        skip = space_to_depth(x, self.stride)
        skip = skip.unflatten(1, (-1, self.group_size)).mean(2)
        return space_to_depth(self.conv(x, causal), self.stride) + skip


class Upsampler(nn.Module):
    """Depth-to-space upsample: conv to st*sh*sw*in/factor channels then unfold, plus (residual) the
    unfolded input tiled over channels. A time stride of 2 drops the clip's first output frame."""

    def __init__(self, in_channels: int, stride, residual: bool, factor: int, padding_mode: str):
        super().__init__()
        self.stride, self.residual, self.factor = stride, residual, factor
        self.conv = CausalConv3d(in_channels, in_channels * math.prod(stride) // factor, padding_mode=padding_mode)

    def forward(self, x, causal, stream=None):
        h = self.conv(x, causal, stream)
        drop = self.stride[0] - 1
        if drop and stream is not None:
            # Only the clip's first output loses its leading frames.
            if h.shape[2] == 0 or (self, "started") in stream.cache:
                drop = 0
            else:
                stream.cache[(self, "started")] = True
        out = depth_to_space(h, self.stride)[:, :, drop:]
        if self.residual:
            skip = depth_to_space(_take_aligned(stream, (self, "skip"), x, h.shape[2]), self.stride)
            out = out + skip.repeat(1, math.prod(self.stride) // self.factor, 1, 1, 1)[:, :, drop:]
        return out


class DownBlock(nn.Module):
    def __init__(self, in_channels, out_channels, num_layers, eps, downsample: str | None, padding_mode):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock(in_channels, in_channels, eps, False, padding_mode) for _ in range(num_layers))
        self.downsamplers = None
        if downsample == "conv":
            self.downsamplers = nn.ModuleList([CausalConv3d(in_channels, in_channels, (2, 2, 2), padding_mode)])
        elif downsample is not None:
            self.downsamplers = nn.ModuleList(
                [Downsampler(in_channels, out_channels, _STRIDES[downsample], padding_mode)])

    def forward(self, x, causal):
        for resnet in self.resnets:
            x = resnet(x, None, causal)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x, causal)
        return x


class MidBlock(nn.Module):
    def __init__(self, channels, num_layers, eps, timestep_conditioning, padding_mode):
        super().__init__()
        self.time_embedder = CombinedTimestepEmbedder(4 * channels) if timestep_conditioning else None
        self.resnets = nn.ModuleList(
            ResnetBlock(channels, channels, eps, timestep_conditioning, padding_mode) for _ in range(num_layers))

    def forward(self, x, t, causal, stream=None):
        temb = None if self.time_embedder is None else self.time_embedder(t, x.shape[0], x.dtype)
        for resnet in self.resnets:
            x = resnet(x, temb, causal, stream)
        return x


class UpBlock(nn.Module):
    def __init__(self, in_channels, out_channels, num_layers, eps, upsample: str | None, residual, factor,
                 timestep_conditioning, padding_mode):
        super().__init__()
        self.time_embedder = CombinedTimestepEmbedder(4 * in_channels) if timestep_conditioning else None
        self.conv_in = None
        if in_channels != out_channels:
            self.conv_in = ResnetBlock(in_channels, out_channels, eps, timestep_conditioning, padding_mode)
        self.upsamplers = None
        if upsample is not None:
            self.upsamplers = nn.ModuleList(
                [Upsampler(out_channels * factor, _STRIDES[upsample], residual, factor, padding_mode)])
        self.resnets = nn.ModuleList(
            ResnetBlock(out_channels, out_channels, eps, timestep_conditioning, padding_mode)
            for _ in range(num_layers))

    def forward(self, x, t, causal, stream=None):
        if self.conv_in is not None:
            if self.conv_in.scale_shift_table is not None:
                raise NotImplementedError("LTX2VideoVAE: a timestep-conditioned width change in an up block "
                                          "is not supported (no released config has one)")
            x = self.conv_in(x, None, causal, stream)
        temb = None if self.time_embedder is None else self.time_embedder(t, x.shape[0], x.dtype)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, causal, stream)
        for resnet in self.resnets:
            x = resnet(x, temb, causal, stream)
        return x


def _per_block(value, n: int) -> list:
    return [value] * n if isinstance(value, bool) else list(value)


class Encoder(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        p, pad, eps = cfg["patch_size"], cfg["encoder_spatial_padding_mode"], cfg["resnet_norm_eps"]
        layers = list(cfg["layers_per_block"])
        scaling = _per_block(cfg["spatio_temporal_scaling"], len(layers) - 1)
        self.patch_size, self.causal = p, bool(cfg["encoder_causal"])
        width = cfg["latent_channels"]
        self.conv_in = CausalConv3d(cfg["in_channels"] * p * p, width, padding_mode=pad)
        self.down_blocks = nn.ModuleList()
        for i, out in enumerate(cfg["block_out_channels"]):
            if cfg["down_block_types"][i] != "LTX2VideoDownBlock3D":
                raise ValueError(f"LTX2VideoVAE: unknown down block type {cfg['down_block_types'][i]!r}")
            down = cfg["downsample_type"][i] if scaling[i] else None
            self.down_blocks.append(DownBlock(width, out, layers[i], eps, down, pad))
            width = out
        self.mid_block = MidBlock(width, layers[-1], eps, False, pad)
        self.conv_out = CausalConv3d(width, cfg["latent_channels"] + 1, padding_mode=pad)

    def forward(self, x):
        x = self.conv_in(patchify(x, self.patch_size), self.causal)
        for block in self.down_blocks:
            x = block(x, self.causal)
        x = self.mid_block(x, None, self.causal)
        return self.conv_out(F.silu(pixel_norm(x)), self.causal)


class Decoder(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        p, pad, eps = cfg["patch_size"], cfg["decoder_spatial_padding_mode"], cfg["resnet_norm_eps"]
        layers = list(cfg["decoder_layers_per_block"])[::-1]
        n = len(layers) - 1
        channels = list(cfg["decoder_block_out_channels"])[::-1]
        scaling = _per_block(cfg["decoder_spatio_temporal_scaling"], n)[::-1]
        residual = _per_block(cfg["upsample_residual"], n)[::-1]
        factors = list(cfg["upsample_factor"])[::-1]
        types = list(cfg["upsample_type"])  # not reversed (diffusers indexes it as given)
        noise = _per_block(cfg["decoder_inject_noise"], n + 1)
        if any(noise):
            raise NotImplementedError("LTX2VideoVAE: decoder_inject_noise is not supported (no released LTX-2 "
                                      "config enables it)")
        tc = bool(cfg["timestep_conditioning"])
        self.patch_size, self.causal = p, bool(cfg["decoder_causal"])
        width = channels[0]
        self.conv_in = CausalConv3d(cfg["latent_channels"], width, padding_mode=pad)
        self.mid_block = MidBlock(width, layers[0], eps, tc, pad)
        self.up_blocks = nn.ModuleList()
        for i in range(len(channels)):
            block_in, width = width // factors[i], channels[i] // factors[i]
            up = types[i] if scaling[i] else None
            self.up_blocks.append(
                UpBlock(block_in, width, layers[i + 1], eps, up, residual[i], factors[i], tc, pad))
        self.conv_out = CausalConv3d(width, cfg["out_channels"] * p * p, padding_mode=pad)
        self.timestep_scale_multiplier = self.time_embedder = self.scale_shift_table = None
        if tc:
            self.timestep_scale_multiplier = nn.Parameter(torch.tensor(1000.0))
            self.time_embedder = CombinedTimestepEmbedder(2 * width)
            self.scale_shift_table = nn.Parameter(torch.zeros(2, width))

    def forward(self, z, t=None, stream=None):
        causal = self.causal
        x = self.conv_in(z, causal, stream)
        if t is not None:
            t = t * self.timestep_scale_multiplier
        x = self.mid_block(x, t, causal, stream)
        for block in self.up_blocks:
            x = block(x, t, causal, stream)
        x = pixel_norm(x)
        if self.time_embedder is not None:
            mod = self.time_embedder(t, x.shape[0], x.dtype).unflatten(1, (2, -1))
            shift, scale = (mod + self.scale_shift_table[None, :, :, None, None, None]).unbind(1)
            x = x * (1 + scale) + shift
        x = self.conv_out(F.silu(x), causal, stream)
        return unpatchify(x, self.patch_size)


class _DecoderDtypeDevice:
    """``dtype`` / ``device`` of a VAE: those of its decoder's first convolution (shared with the audio VAE)."""

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.conv_in.conv.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.decoder.conv_in.conv.weight.device


class LTX2VideoVAE(_DecoderDtypeDevice, nn.Module):
    """LTX-2 / LTX-2.3 video VAE from a diffusers ``vae/config.json`` dict (unknown keys are ignored).

    State-dict keys equal diffusers' (``encoder.*``, ``decoder.*``, ``latents_mean``, ``latents_std``).
    """

    def __init__(self, config: dict):
        super().__init__()
        cfg = {**DEFAULT_CONFIG, **config}
        if cfg["patch_size_t"] != 1:
            raise ValueError("LTX2VideoVAE: only patch_size_t = 1 is supported")
        self.config = cfg
        self.latent_channels = cfg["latent_channels"]
        self.scaling_factor = float(cfg["scaling_factor"])
        self.timestep_conditioning = bool(cfg["timestep_conditioning"])
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.register_buffer("latents_mean", torch.zeros(self.latent_channels))
        self.register_buffer("latents_std", torch.ones(self.latent_channels))
        space, time = cfg["patch_size"], 1
        for on, kind in zip(_per_block(cfg["spatio_temporal_scaling"], len(cfg["layers_per_block"]) - 1),
                            cfg["downsample_type"]):
            if on:
                st, ss, _ = _STRIDES[kind]
                space, time = space * ss, time * st
        self.spatial_compression_ratio = cfg.get("spatial_compression_ratio") or space
        self.temporal_compression_ratio = cfg.get("temporal_compression_ratio") or time

    # ---------------------------------------------------------------------------------------------
    # Encode

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """[B, 3, 1 + 8k, H, W] in [-1, 1] -> raw (not normalised) posterior mean [B, C, 1 + k, H/32, W/32].

        Equals diffusers' ``encode(video).latent_dist.mode()``; call :meth:`normalize_latents` for the
        diffusion model's latents. Output in the VAE's dtype.
        """
        s, t = self.spatial_compression_ratio, self.temporal_compression_ratio
        if video.ndim != 5 or video.shape[1] != self.config["in_channels"] or video.shape[3] % s or video.shape[4] % s \
                or (video.shape[2] - 1) % t:
            raise ValueError(f"LTX2VideoVAE.encode: expected video [B, {self.config['in_channels']}, 1 + {t}k, H, W] "
                             f"with H and W multiples of {s}, got {list(video.shape)}")
        h = self.encoder(video.to(device=self.device, dtype=self.dtype))
        return h[:, : self.latent_channels]

    # ---------------------------------------------------------------------------------------------
    # Decode

    def _timestep(self, z: torch.Tensor, timestep) -> torch.Tensor | None:
        if not self.timestep_conditioning:
            return None
        if timestep is None:
            timestep = DEFAULT_DECODE_TIMESTEP
        t = torch.as_tensor(timestep, dtype=torch.float32, device=z.device).flatten()
        if t.numel() == 1:
            return t.expand(z.shape[0])
        if t.numel() != z.shape[0]:
            raise ValueError(f"LTX2VideoVAE.decode: timestep has {t.numel()} values for a batch of {z.shape[0]}")
        return t

    def _spatial_tiles(self, h: int, w: int, spatial_tile: int | None, spatial_overlap: int):
        """The latent tiles of an h x w latent as (row span, column span) pairs (see :func:`_tile_spans`),
        or None when tiling is off or one tile covers it all. Sizes are checked here."""
        if not spatial_tile:
            return None
        s = self.spatial_compression_ratio
        if isinstance(spatial_tile, bool) or not isinstance(spatial_tile, int) or spatial_tile % s \
                or spatial_tile < 2 * s:
            raise ValueError(f"LTX2VideoVAE.decode: spatial_tile must be a multiple of {s} of at least {2 * s} "
                             f"pixels (or None for no tiling), got {spatial_tile!r}")
        if isinstance(spatial_overlap, bool) or not isinstance(spatial_overlap, int) or spatial_overlap % s \
                or not 0 <= spatial_overlap < spatial_tile:
            raise ValueError(f"LTX2VideoVAE.decode: spatial_overlap must be a multiple of {s} from 0 to less than "
                             f"spatial_tile ({spatial_tile}) pixels, got {spatial_overlap!r}")
        size, overlap = spatial_tile // s, spatial_overlap // s
        longest = max(h, w)
        # The tile follows the image's aspect ratio; never below overlap + 1 cells (a tile must advance)
        # nor 2 (a reflect-padded convolution needs two cells).
        floor = max(2, overlap + 1)
        rows = _tile_spans(h, max(floor, round(size * h / longest)), overlap)
        cols = _tile_spans(w, max(floor, round(size * w / longest)), overlap)
        if len(rows) == len(cols) == 1:
            return None
        return [(r, c) for r in rows for c in cols]

    def _decode_rows(self, z: torch.Tensor, t: torch.Tensor | None, stream: Stream | None,
                     shard: distributed.RowShard | None) -> torch.Tensor:
        """The decoder on z (whole, or this rank's band of rows gathered whole afterwards when ``shard``)."""
        z = z.to(device=self.device, dtype=self.dtype)
        if shard is None:
            return self.decoder(z, t, stream)
        with distributed.rows_split(self.decoder, shard):
            x = self.decoder(shard.split(z), t, stream)
        return shard.gather(x)

    def _decode_pieces(self, z: torch.Tensor, t: torch.Tensor | None, temporal_chunk: int | None,
                       shard: distributed.RowShard | None = None):
        """Decode z in one pass or streamed ``temporal_chunk`` latent frames at a time; with ``shard`` (a
        distributed untiled decode) each rank decodes a band of rows and every piece is gathered whole.

        Yields (first output frame, decoded frames, latent frames done so far) after every pass.
        """
        total = z.shape[2]
        if not temporal_chunk or temporal_chunk >= total:
            yield 0, self._decode_rows(z, t, None, shard), total
            return
        stream, done = Stream(), 0
        frames = 1 + self.temporal_compression_ratio * (total - 1)
        for start in range(0, total, temporal_chunk):
            stop = min(start + temporal_chunk, total)
            stream.final = stop == total
            chunk = self._decode_rows(z[:, :, start:stop], t, stream, shard)
            yield done, chunk, stop
            done += chunk.shape[2]
        if done != frames:  # a bookkeeping error, never expected
            raise RuntimeError(f"LTX2VideoVAE.decode: streamed {done} frames, expected {frames}")

    @torch.no_grad()
    def decode(self, z: torch.Tensor, timestep: float | torch.Tensor | None = None,
               callback: Callable[[int, int], None] | None = None, temporal_chunk: int | None = None,
               dtype: torch.dtype | None = None, spatial_tile: int | None = None,
               spatial_overlap: int = 64) -> torch.Tensor:
        """Raw latents [B, C, T, h, w] -> frames [B, 3, 1 + 8 (T - 1), 32 h, 32 w] (not clamped).

        Equals diffusers' ``decode(z, temb=timestep).sample``. ``timestep`` is used only by
        timestep-conditioned decoders (default 0.05; no released config is one). With
        ``temporal_chunk=N`` the latents are fed N frames at a time through the streaming path
        (exact, see the module docstring); otherwise in one pass.

        ``spatial_tile`` (pixels, a multiple of 32, at least 64; None or 0 = off) decodes overlapping
        spatial tiles, ``spatial_overlap`` pixels apart (a multiple of 32, below the tile), and blends
        them as ltx-core's tiled decode does (see the module docstring); a latent that fits one tile
        is decoded untiled. Each tile is streamed through time when ``temporal_chunk`` is given too.

        ``callback(done, total)`` is called after each chunk: latent frames done / total, counted over
        all tiles when tiling (total = tiles x T). An exception it raises stops the decode. ``dtype``:
        the output's (default the VAE's); tiles are blended in it.
        """
        if z.ndim != 5 or z.shape[1] != self.latent_channels:
            raise ValueError(f"LTX2VideoVAE.decode: expected latents [B, {self.latent_channels}, T, h, w], "
                             f"got {list(z.shape)}")
        tiles = self._spatial_tiles(z.shape[3], z.shape[4], spatial_tile, spatial_overlap)
        total = z.shape[2]
        t = self._timestep(z, timestep)
        if t is not None:
            t = t.to(self.device)
        if tiles is None:
            out = None
            # Under torchrun the ranks split the rows (the tiled decode splits tiles instead).
            shard = distributed.RowShard.for_decode(z.shape[3], self.config["decoder_spatial_padding_mode"])
            for first, chunk, done in self._decode_pieces(z, t, temporal_chunk, shard):
                if done == total and first == 0:  # every frame in this piece (one pass)
                    out = chunk if dtype is None else chunk.to(dtype)
                else:
                    if out is None:
                        frames = 1 + self.temporal_compression_ratio * (total - 1)
                        out = chunk.new_empty(*chunk.shape[:2], frames, *chunk.shape[3:], dtype=dtype or chunk.dtype)
                    out[:, :, first : first + chunk.shape[2]] = chunk
                if callback is not None:
                    callback(done, total)
            return out

        # Tiled: sum weight * tile over the tiles, then divide by the summed weights.
        s = self.spatial_compression_ratio
        frames = 1 + self.temporal_compression_ratio * (total - 1)
        out = torch.zeros(z.shape[0], self.config["out_channels"], frames, s * z.shape[3], s * z.shape[4],
                          device=self.device, dtype=dtype or self.dtype)
        weight = torch.zeros(out.shape[3:], device=self.device)
        for i, ((h0, h1, top, bottom), (w0, w1, left, right)) in enumerate(tiles):
            rows, cols = slice(s * h0, s * h1), slice(s * w0, s * w1)
            mask = (_blend_ramp(s * (h1 - h0), s * top, s * bottom, self.device)[:, None]
                    * _blend_ramp(s * (w1 - w0), s * left, s * right, self.device)[None, :])
            weight[rows, cols] += mask
            if not distributed.mine(i):  # under torchrun the ranks share the tiles (summed below)
                continue
            for first, chunk, done in self._decode_pieces(z[:, :, :, h0:h1, w0:w1], t, temporal_chunk):
                out[:, :, first : first + chunk.shape[2], rows, cols] += chunk * mask
                if callback is not None:
                    callback(i * total + done, len(tiles) * total)
        return distributed.sum_over_ranks(out).div_(weight.clamp_(min=1e-8))

    # ---------------------------------------------------------------------------------------------
    # Latent statistics

    def _stats(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1) + (1,) * (z.ndim - 2)
        return (self.latents_mean.view(shape).to(z.device, z.dtype),
                self.latents_std.view(shape).to(z.device, z.dtype))

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Raw posterior mean -> the diffusion model's latents: (z - mean) * scaling_factor / std per channel."""
        mean, std = self._stats(z)
        return (z - mean) * self.scaling_factor / std

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of normalize_latents: z * std / scaling_factor + mean."""
        mean, std = self._stats(z)
        return z * std / self.scaling_factor + mean


# --------------------------------------------------------------------------------------------------
# Official single-file layout

_STATS = {"mean-of-means": "latents_mean", "std-of-means": "latents_std"}
_TOP_RENAMES = {"last_time_embedder": "time_embedder", "last_scale_shift_table": "scale_shift_table"}


def make_official_key_map(num_down_blocks: int = 4) -> Callable[[str], str | None]:
    """A key map for the official single file (``vae.*``): every other tensor, and the unused statistics
    (``channel``, ``mean-of-stds``), map to None.

    The official encoder lists its blocks flat: ``down_blocks.{2i}`` are stage i's resnets,
    ``down_blocks.{2i+1}`` its downsampler, ``down_blocks.{2n}`` the mid block. The decoder likewise:
    ``up_blocks.0`` is the mid block, ``up_blocks.{2i+1}`` stage i's upsampler, ``up_blocks.{2i+2}`` its
    resnets. ``res_blocks`` are ``resnets``. This holds for configs whose every stage resamples (all
    released ones).
    """

    def key_map(key: str) -> str | None:
        if key.startswith("vae.per_channel_statistics."):
            return _STATS.get(key[len("vae.per_channel_statistics."):])
        m = re.match(r"vae\.(encoder|decoder)\.(.*)$", key)
        if m is None:
            return None
        part, rest = m.groups()
        rest = rest.replace(".res_blocks.", ".resnets.")
        b = re.match(r"(down_blocks|up_blocks)\.(\d+)\.(.*)$", rest)
        if b is not None:
            kind, i, tail = b.group(1), int(b.group(2)), b.group(3)
            if kind == "down_blocks":
                head = ("mid_block" if i == 2 * num_down_blocks
                        else f"down_blocks.{i // 2}" if i % 2 == 0 else f"down_blocks.{i // 2}.downsamplers.0")
            else:
                head = ("mid_block" if i == 0
                        else f"up_blocks.{(i - 1) // 2}.upsamplers.0" if i % 2 == 1 else f"up_blocks.{i // 2 - 1}")
            rest = f"{head}.{tail}"
        else:
            first, dot, tail = rest.partition(".")
            if first in _TOP_RENAMES:
                rest = _TOP_RENAMES[first] + dot + tail
        return f"{part}.{rest}"

    return key_map


official_to_module_key = make_official_key_map(4)
official_to_module_key.__doc__ = "Official single-file key -> LTX2VideoVAE key (None = not ours), 4 encoder stages."


# --------------------------------------------------------------------------------------------------
# The official single file's config (ltx-core's block lists) -> ours

_ENCODER_DOWN = {"compress_space_res": "spatial", "compress_time_res": "temporal", "compress_all_res": "spatiotemporal"}
_DECODER_UP = {"compress_space": "spatial", "compress_time": "temporal", "compress_all": "spatiotemporal"}


def _block_list(blocks, where: str) -> list[tuple[str, dict]]:
    out = []
    for item in blocks:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise CheckpointError(f"{where}: malformed video VAE block entry {item!r}.")
        name, params = item
        out.append((str(name), {"num_layers": params} if isinstance(params, int) else dict(params or {})))
    return out


def config_from_official(vc: dict, *, decoder_conv_in_channels: int | None = None,
                                   where: str = "video VAE") -> dict:
    """diffusers-style :class:`LTX2VideoVAE` config from the official ``vae`` metadata section (ltx-core's
    ``encoder_blocks`` / ``decoder_blocks`` lists; ``decoder_blocks`` is listed in encoder order and built
    reversed). ``decoder_conv_in_channels``: the width after the decoder's ``conv_in`` when known from the
    checkpoint's tensor shapes; otherwise ``decoder_base_channels`` (default 128) times the product of the
    decoder's channel reductions."""
    if vc.get("norm_layer", "pixel_norm") != "pixel_norm" or vc.get("latent_log_var", "uniform") != "uniform":
        raise CheckpointError(f"{where}: only pixel_norm / uniform log-variance video VAEs are supported, got "
                              f"{vc.get('norm_layer')!r} / {vc.get('latent_log_var')!r}.")
    latent = int(vc.get("latent_channels", 128))
    pad = vc.get("spatial_padding_mode")
    enc = _block_list(vc.get("encoder_blocks", []), where)
    if len(enc) % 2 != 1 or any(n != "res_x" for n, _ in enc[::2]) or any(n not in _ENCODER_DOWN for n, _ in enc[1::2]):
        raise CheckpointError(f"{where}: unsupported encoder block layout {[n for n, _ in enc]} (expected res_x "
                              "blocks alternating with compress_*_res blocks).")
    width, block_out, layers, down = latent, [], [], []
    for (_, res), (name, comp) in zip(enc[::2], enc[1::2]):
        layers.append(int(res.get("num_layers", 1)))
        width *= int(comp.get("multiplier", 2))
        block_out.append(width)
        down.append(_ENCODER_DOWN[name])
    layers.append(int(enc[-1][1].get("num_layers", 1)))

    dec = _block_list(vc.get("decoder_blocks", []), where)[::-1]  # build order
    if len(dec) % 2 != 1 or any(n != "res_x" for n, _ in dec[::2]) or any(n not in _DECODER_UP for n, _ in dec[1::2]):
        raise CheckpointError(f"{where}: unsupported decoder block layout {[n for n, _ in dec[::-1]]} (expected res_x "
                              "blocks alternating with compress_* blocks).")
    noise = [bool(p.get("inject_noise", False)) for _, p in dec[::2]]
    factors = [int(p.get("multiplier", 1)) for _, p in dec[1::2]]
    if decoder_conv_in_channels is None:
        decoder_conv_in_channels = int(vc.get("decoder_base_channels", 128))
        for f in factors:
            decoder_conv_in_channels *= f
    width, chans, types, residual = decoder_conv_in_channels, [], [], []
    for (name, p), f in zip(dec[1::2], factors):
        chans.append(width)
        types.append(_DECODER_UP[name])
        residual.append(bool(p.get("residual", False)))
        width //= f
    dec_layers = [int(p.get("num_layers", 1)) for _, p in dec[::2]]
    n_up = len(chans)
    return {
        "in_channels": vc.get("in_channels", 3),
        "out_channels": vc.get("out_channels", 3),
        "latent_channels": latent,
        "block_out_channels": block_out,
        "down_block_types": ["LTX2VideoDownBlock3D"] * len(block_out),
        "layers_per_block": layers,
        "spatio_temporal_scaling": [True] * len(block_out),
        "downsample_type": down,
        "decoder_block_out_channels": chans[::-1],
        "decoder_layers_per_block": dec_layers[::-1],
        "decoder_spatio_temporal_scaling": [True] * n_up,
        "decoder_inject_noise": noise[::-1],
        "upsample_type": types,  # build order, as LTX2VideoVAE indexes it
        "upsample_residual": residual[::-1],
        "upsample_factor": factors[::-1],
        "timestep_conditioning": bool(vc.get("timestep_conditioning", True)),
        "patch_size": vc.get("patch_size", 4),
        "patch_size_t": 1,
        "encoder_causal": True,
        "decoder_causal": bool(vc.get("causal_decoder", False)),
        "encoder_spatial_padding_mode": vc.get("encoder_spatial_padding_mode", pad or "zeros"),
        "decoder_spatial_padding_mode": vc.get("decoder_spatial_padding_mode", pad or "reflect"),
    }
