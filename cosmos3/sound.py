"""The Cosmos3 sound tokenizer's decoder: sound latents ``[B, 64, T_s]`` -> stereo waveform in [-1, 1].

Sound-capable Cosmos3 checkpoints ship it as ``sound_tokenizer/`` (diffusers' ``Cosmos3AVAEAudioTokenizer``:
``config.json`` + ``diffusion_pytorch_model.safetensors``). Only the decoder is built: generation never encodes
audio, so any ``encoder.*`` tensors of the checkpoint are skipped.

Architecture (an Oobleck decoder, per diffusers ``autoencoder_cosmos3_audio.py``), attribute names being the
checkpoint's keys under ``decoder.``:

* ``conv1``: weight-normed Conv1d k7 from ``vocoder_input_dim`` latent channels to ``dec_dim * dec_c_mults[-1]``;
* ``block.{i}`` for the strides of ``dec_strides`` taken in reverse: Snake -> weight-normed ConvTranspose1d
  (kernel ``2 s``, stride ``s``, padding ``ceil(s / 2)``, output padding ``s % 2``) narrowing the channels one
  multiplier step, then three residual units (Snake -> weight-normed Conv1d k7 dilated 1, 3, 9 -> Snake ->
  weight-normed Conv1d k1, added to the input);
* ``snake1`` and ``conv2`` (weight-normed Conv1d k7 to ``dec_out_channels``, no bias); the result is clamped
  to [-1, 1].

Snake here is ``x + sin^2(a x) / (b + 1e-9)`` with ``a = exp(alpha)``, ``b = exp(beta)`` (log-scale parameters
shaped ``[1, C, 1]`` as saved). Weight norm keeps the checkpoint's ``weight_g`` / ``weight_v`` (``weight =
g v / ||v||``, the norm taken over every axis but the first, PyTorch's ``weight_norm(dim=0)``); the weight is
formed at each call, a negligible cost beside the convolution it feeds.

The latent frame rate is ``sampling_rate / hop`` with ``hop = prod(dec_strides)`` (48000 / 1920 = 25 on the
released model, the transformer's ``sound_latent_fps``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core.checkpoint import CheckpointError, load_into, read_config, resolve_weight_files

__all__ = ["DEFAULT_CONFIG", "Cosmos3SoundDecoder", "load_sound_decoder"]

SOUND_CLASSES = ("Cosmos3AVAEAudioTokenizer",)

# Constructor defaults of diffusers' Cosmos3AVAEAudioTokenizer that shape the decoder.
DEFAULT_CONFIG = {
    "sampling_rate": 48000,
    "vocoder_input_dim": 64,
    "dec_dim": 320,
    "dec_c_mults": [1, 2, 4, 8, 16],
    "dec_strides": [2, 4, 5, 6, 8],
    "dec_out_channels": 2,
    "hop_size": None,
}

# Switches the decoder supports only at these values (diffusers refuses any other one too).
_FIXED = {"model_type": "autoencoder_v2", "dec_type": "oobleck", "dec_use_snake": True, "dec_final_tanh": False,
          "dec_anti_aliasing": False, "dec_use_nearest_upsample": False, "dec_use_tanh_at_final": False,
          "activation": "snakebeta", "snake_logscale": True, "anti_aliasing": False, "latent_mean": None,
          "latent_std": None}


class Snake(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(1, channels, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.alpha.exp()
        inv_b = (self.beta.exp() + 1e-9).reciprocal()
        return x + inv_b * torch.sin(a * x).square()


def _norm_weight(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``g v / ||v||`` with the norm over every axis but the first (``weight_norm(dim=0)``)."""
    norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.ndim - 1)))
    return v * (g / norm)


class WNConv1d(nn.Module):
    """A weight-normed Conv1d holding the checkpoint's ``weight_g`` / ``weight_v`` (and ``bias``)."""

    def __init__(self, cin: int, cout: int, kernel: int, *, dilation: int = 1, padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(cout, 1, 1))
        self.weight_v = nn.Parameter(torch.zeros(cout, cin, kernel))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.dilation, self.padding = dilation, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = _norm_weight(self.weight_g, self.weight_v)
        return F.conv1d(x, w, self.bias, padding=self.padding, dilation=self.dilation)


class WNConvTranspose1d(nn.Module):
    """A weight-normed ConvTranspose1d (weight ``[in, out, k]``; the norm is per input channel, as saved)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        kernel = 2 * stride
        self.weight_g = nn.Parameter(torch.ones(cin, 1, 1))
        self.weight_v = nn.Parameter(torch.zeros(cin, cout, kernel))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.stride, self.padding, self.output_padding = stride, math.ceil(stride / 2), stride % 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = _norm_weight(self.weight_g, self.weight_v)
        return F.conv_transpose1d(x, w, self.bias, stride=self.stride, padding=self.padding,
                                  output_padding=self.output_padding)


class ResidualUnit(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.snake1 = Snake(channels)
        self.conv1 = WNConv1d(channels, channels, 7, dilation=dilation, padding=3 * dilation)
        self.snake2 = Snake(channels)
        self.conv2 = WNConv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.snake2(self.conv1(self.snake1(x))))  # "same" length: no crop needed


class DecoderBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.snake1 = Snake(cin)
        self.conv_t1 = WNConvTranspose1d(cin, cout, stride)
        self.res_unit1 = ResidualUnit(cout, 1)
        self.res_unit2 = ResidualUnit(cout, 3)
        self.res_unit3 = ResidualUnit(cout, 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_t1(self.snake1(x))
        return self.res_unit3(self.res_unit2(self.res_unit1(x)))


class OobleckDecoder(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        dim, mults = int(cfg["dec_dim"]), [1] + [int(m) for m in cfg["dec_c_mults"]]
        strides = [int(s) for s in reversed(cfg["dec_strides"])]
        if len(strides) != len(mults) - 1:
            raise ValueError(f"sound tokenizer config: dec_strides {cfg['dec_strides']} and dec_c_mults "
                             f"{cfg['dec_c_mults']} must have the same length")
        n = len(strides)
        self.conv1 = WNConv1d(int(cfg["vocoder_input_dim"]), dim * mults[-1], 7, padding=3)
        self.block = nn.ModuleList(DecoderBlock(dim * mults[n - i], dim * mults[n - i - 1], s)
                                   for i, s in enumerate(strides))
        self.snake1 = Snake(dim)
        self.conv2 = WNConv1d(dim, int(cfg["dec_out_channels"]), 7, padding=3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for block in self.block:
            x = block(x)
        return self.conv2(self.snake1(x))


class Cosmos3SoundDecoder(nn.Module):
    """The decoder half of ``sound_tokenizer/``: :meth:`decode` takes latents ``[B, C, T_s]`` (or ``[C, T_s]``) to
    a waveform ``[B, channels, T_s * hop]`` in [-1, 1] at :attr:`sample_rate`."""

    def __init__(self, config: dict | None = None):
        super().__init__()
        cfg = {**DEFAULT_CONFIG, **(config or {})}
        for key, value in _FIXED.items():
            if key in cfg and cfg[key] != value:
                raise ValueError(f"sound tokenizer config: {key}={cfg[key]!r} is not supported (only {value!r})")
        bottleneck = cfg.get("bottleneck") or {}
        if cfg.get("bottleneck_type", "vae") != "vae" or bottleneck.get("type", "vae") != "vae":
            raise ValueError("sound tokenizer config: only the 'vae' bottleneck is supported")
        self.config = cfg
        self.decoder = OobleckDecoder(cfg)

    @property
    def sample_rate(self) -> int:
        return int(self.config["sampling_rate"])

    @property
    def hop(self) -> int:
        """Waveform samples per latent frame."""
        hop = self.config.get("hop_size")
        return int(hop) if hop is not None else math.prod(int(s) for s in self.config["dec_strides"])

    @property
    def latent_channels(self) -> int:
        return int(self.config["vocoder_input_dim"])

    @property
    def audio_channels(self) -> int:
        return int(self.config["dec_out_channels"])

    def latent_frames(self, num_frames: int, fps: float) -> int:
        """Sound latent frames that cover ``num_frames`` video frames at ``fps``: the clip's sample count
        ``int(num_frames / fps * sample_rate)`` rounded up to whole hops (per diffusers' ``prepare_latents``)."""
        samples = int(num_frames / fps * self.sample_rate)
        return (samples + self.hop - 1) // self.hop

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        squeeze = latents.ndim == 2
        if squeeze:
            latents = latents.unsqueeze(0)
        w = self.decoder.conv1.weight_v
        audio = self.decoder(latents.to(device=w.device, dtype=w.dtype)).clamp_(-1.0, 1.0)
        return audio[0] if squeeze else audio


def _key_map(key: str) -> str | None:
    if key.startswith("encoder."):
        return None  # generation never encodes audio
    # PyTorch's newer parametrized weight norm saves g and v under other names.
    return key.replace(".parametrizations.weight.original0", ".weight_g").replace(
        ".parametrizations.weight.original1", ".weight_v")


def load_sound_decoder(path: str | Path, *, device="cpu", dtype: torch.dtype | str = torch.float32
                       ) -> Cosmos3SoundDecoder:
    """The decoder of a ``sound_tokenizer/`` folder (or the checkpoint folder holding one)."""
    path = Path(path)
    if path.is_dir() and (path / "sound_tokenizer").is_dir():
        path = path / "sound_tokenizer"
    cfg = read_config(path)
    name = cfg.get("_class_name")
    if name is not None and name not in SOUND_CLASSES:
        raise CheckpointError(f"{path}: this is a {name!r}, not a Cosmos3 sound tokenizer ({SOUND_CLASSES[0]})")
    try:
        with torch.device("meta"):
            model = Cosmos3SoundDecoder(cfg)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from e
    load_into(model, resolve_weight_files(path), device=device, dtype=dtype, key_map=_key_map)
    return model.eval().requires_grad_(False)
