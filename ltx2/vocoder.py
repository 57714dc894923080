"""LTX-2 / LTX-2.3 vocoders: the audio VAE's log-mel spectrogram -> stereo waveform in [-1, 1].

Input: mel [B, 2, t, 64] as ``LTX2AudioVAE.decode`` returns it. The two channels' mel bins are stacked
channel-major into 128 features per frame (feature s * 64 + m) and upsampled by transposed
convolutions to audio samples.

* LTX-2.0 (:class:`LTX2Vocoder`, ``act_fn="leaky_relu"``): HiFi-GAN. ``conv_in`` (k 7), then per
  stage: LeakyReLU(0.1) -> ``upsamplers[i]`` (ConvTranspose1d, halving the width) -> mean of
  ``len(resnet_kernel_sizes)`` residual blocks (each: act -> dilated conv -> act -> conv, added),
  then ``act_out`` (a LeakyReLU with PyTorch's default slope 0.01, not 0.1), ``conv_out`` (k 7) and tanh.
  Rates 6*5*2*2*2 = 240 samples per mel frame: 24 kHz from 100 mel frames a second.
* LTX-2.3 (:class:`LTX2VocoderWithBWE`): a BigVGAN-v2-style ``vocoder`` (``act_fn="snakebeta"``: every
  activation is SnakeBeta run at twice the rate between a Kaiser-sinc up- and down-sampler; no
  LeakyReLU before the upsamplers) makes 16 kHz audio (rates 5*2^5 = 160); a causal STFT + mel
  filterbank (``mel_stft``, buffers from the checkpoint) turns it back into a 64-bin log-mel at hop 80,
  a second generator (``bwe_generator``, rates 240) predicts a 48 kHz residual, added to a
  Hann-windowed sinc x3 resampling of the 16 kHz audio, clamped to [-1, 1] and cropped to 3x the
  16 kHz length.

Final activation of the 2.3 stage-1 vocoder (reference disagreement). ltx-core always applies one to
the 16 kHz waveform: clamp(-1, 1) for the released config (``use_tanh_at_final=False``), tanh
otherwise. diffusers' converted config has ``final_act_fn=None`` and applies none, so any stage-1
sample beyond +-1 differs. We follow ltx-core: inside :class:`LTX2VocoderWithBWE` a stage-1
``final_act_fn`` of None means clamp. The BWE generator has no final activation in either.

Module attribute names are diffusers' (``LTX2Vocoder`` / ``LTX2VocoderWithBWE``), so a ``vocoder/``
folder loads as is. The official single file stores the same tensors under ``vocoder.*`` with older
names (``conv_pre``, ``ups``, ``resblocks``, ``act_post``, ``conv_post``, ``downsample.lowpass``):
:func:`official_to_module_key` renames them for ``core.checkpoint.load_into``. The anti-aliasing
filters are saved in both layouts; only the BWE resampler's filter is rebuilt on load.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "DEFAULT_CONFIG", "DEFAULT_BWE_CONFIG", "LTX2Vocoder", "LTX2VocoderWithBWE", "build_vocoder",
    "official_to_module_key", "config_from_official", "kaiser_sinc_filter", "hann_sinc_filter",
]

# Constructor defaults of diffusers' LTX2Vocoder (the LTX-2.0 vocoder).
DEFAULT_CONFIG = {
    "in_channels": 128,
    "hidden_channels": 1024,
    "out_channels": 2,
    "upsample_kernel_sizes": [16, 15, 8, 4, 4],
    "upsample_factors": [6, 5, 2, 2, 2],
    "resnet_kernel_sizes": [3, 7, 11],
    "resnet_dilations": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "act_fn": "leaky_relu",
    "leaky_relu_negative_slope": 0.1,
    "antialias": False,
    "antialias_ratio": 2,
    "antialias_kernel_size": 12,
    "final_act_fn": "tanh",
    "final_bias": True,
    "output_sampling_rate": 24000,
}

_GENERATOR_KEYS = [k for k in DEFAULT_CONFIG if k != "output_sampling_rate"]

# The LTX-2.3 stage-1 generator: the LTX-2.0 one widened, 16 kHz rates, anti-aliased SnakeBeta, no final bias.
_BWE_STAGE1 = {
    **{k: DEFAULT_CONFIG[k] for k in _GENERATOR_KEYS},
    "hidden_channels": 1536,
    "upsample_kernel_sizes": [11, 4, 4, 4, 4, 4],
    "upsample_factors": [5, 2, 2, 2, 2, 2],
    "act_fn": "snakebeta",
    "antialias": True,
    "final_act_fn": None,
    "final_bias": False,
}
# The LTX-2.3 bandwidth extender: stage 1 narrowed, with the LTX-2.0 rates (240 samples a frame).
_BWE_GENERATOR = {
    **_BWE_STAGE1,
    "hidden_channels": 512,
    "upsample_kernel_sizes": [12, 11, 4, 4, 4],
    "upsample_factors": [6, 5, 2, 2, 2],
}

# Constructor defaults of diffusers' LTX2VocoderWithBWE (the LTX-2.3 vocoder). Keys without the
# ``bwe_`` prefix configure the 16 kHz stage-1 vocoder, ``bwe_*`` the bandwidth extender.
DEFAULT_BWE_CONFIG = {
    **_BWE_STAGE1,
    **{"bwe_" + k: v for k, v in _BWE_GENERATOR.items()},
    "filter_length": 512,
    "hop_length": 80,
    "window_length": 512,
    "num_mel_channels": 64,
    "input_sampling_rate": 16000,
    "output_sampling_rate": 48000,
}


# --------------------------------------------------------------------------------------------------
# Filters


def kaiser_sinc_filter(cutoff: float, half_width: float, kernel_size: int) -> torch.Tensor:
    """Kaiser-windowed sinc low-pass of ``kernel_size`` taps (cutoff and transition half-width as
    fractions of the sample rate), normalised to unit DC gain. The Kaiser beta follows the usual
    attenuation formula for a transition band of 4 * half_width."""
    half = kernel_size // 2
    atten = 2.285 * (half - 1) * math.pi * (4 * half_width) + 7.95
    if atten > 50.0:
        beta = 0.1102 * (atten - 8.7)
    elif atten >= 21.0:
        beta = 0.5842 * (atten - 21.0) ** 0.4 + 0.07886 * (atten - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, periodic=False, beta=beta)
    if kernel_size % 2 == 0:  # taps sit half-way between samples
        t = torch.arange(-half, half) + 0.5
    else:
        t = (torch.arange(kernel_size) - half).to(torch.float32)
    if cutoff == 0.0:
        return torch.zeros_like(t)
    taps = 2 * cutoff * window * torch.sinc(2 * cutoff * t)
    return taps / taps.sum()


def hann_sinc_filter(ratio: int, rolloff: float = 0.99, zero_crossings: int = 6) -> tuple[torch.Tensor, int]:
    """Hann-windowed sinc interpolation filter for integer upsampling by ``ratio`` (the kernel
    torchaudio's resample uses). Returns (taps [2 * width * ratio + 1], width in input samples)."""
    width = math.ceil(zero_crossings / rolloff)
    t = (torch.arange(2 * width * ratio + 1) / ratio - width) * rolloff
    window = torch.cos(t.clamp(-zero_crossings, zero_crossings) * (math.pi / (2 * zero_crossings))) ** 2
    return torch.sinc(t) * window * (rolloff / ratio), width


class DownSample1d(nn.Module):
    """Anti-aliased decimation by ``ratio``: replicate-pad, depthwise Kaiser-sinc low-pass, stride ratio."""

    def __init__(self, ratio: int = 2, kernel_size: int | None = None):
        super().__init__()
        k = kernel_size or int(6 * ratio // 2) * 2
        self.ratio = ratio
        self.pads = (k // 2 + k % 2 - 1, k // 2)
        self.register_buffer("filter", kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, k).view(1, 1, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        w = self.filter.to(x.dtype).expand(c, -1, -1)
        return F.conv1d(F.pad(x, self.pads, mode="replicate"), w, stride=self.ratio, groups=c)


class UpSample1d(nn.Module):
    """Band-limited upsampling by ``ratio``: replicate-pad, zero-stuff + depthwise sinc filter (a
    transposed conv), crop. ``window="kaiser"`` is BigVGAN's anti-aliasing filter (saved with the
    weights); ``"hann"`` is the BWE skip-path resampler (not saved: rebuilt on load)."""

    def __init__(self, ratio: int = 2, kernel_size: int | None = None, window: str = "kaiser"):
        super().__init__()
        self.ratio, self.window = ratio, window
        if window == "hann":
            taps, width = hann_sinc_filter(ratio)
            k = taps.numel()
            self.pad, self.crop = width, (2 * width * ratio, k - ratio)
            self.register_buffer("filter", taps.view(1, 1, k), persistent=False)
        elif window == "kaiser":
            k = kernel_size or int(6 * ratio // 2) * 2
            self.pad = k // ratio - 1
            self.crop = (self.pad * ratio + (k - ratio) // 2, self.pad * ratio + (k - ratio + 1) // 2)
            self.register_buffer("filter", kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, k).view(1, 1, k))
        else:
            raise ValueError(f"UpSample1d: window must be 'kaiser' or 'hann', got {window!r}")

    def reset_non_persistent_buffers(self, device) -> None:
        if self.window == "hann":
            taps, _ = hann_sinc_filter(self.ratio)
            self.filter = taps.view(1, 1, -1).to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        w = self.filter.to(x.dtype).expand(c, -1, -1)
        y = F.conv_transpose1d(F.pad(x, (self.pad, self.pad), mode="replicate"), w, stride=self.ratio, groups=c)
        return y[..., self.crop[0] : y.shape[-1] - self.crop[1]] * self.ratio


# --------------------------------------------------------------------------------------------------
# Activations and residual blocks


class SnakeBeta(nn.Module):
    """x + sin^2(a x) / b per channel, with a = exp(alpha), b = exp(beta) (log-scale parameters).
    ``use_beta=False`` is plain Snake (b = a)."""

    def __init__(self, channels: int, use_beta: bool = True):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        if use_beta:
            self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.alpha.exp()[:, None]
        b = (self.beta if hasattr(self, "beta") else self.alpha).exp()[:, None]
        return x + torch.sin(x * a).square() * (1.0 / (b + 1e-9))


class AntiAliasAct1d(nn.Module):
    """Run an activation at ``ratio`` times the sample rate: upsample, act, downsample."""

    def __init__(self, act: nn.Module, ratio: int = 2, kernel_size: int = 12):
        super().__init__()
        self.upsample = UpSample1d(ratio, kernel_size)
        self.act = act
        self.downsample = DownSample1d(ratio, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.act(self.upsample(x)))


def _activation(cfg: dict, channels: int) -> nn.Module:
    kind = cfg["act_fn"]
    if kind == "leaky_relu":
        act = nn.LeakyReLU(cfg["leaky_relu_negative_slope"])
    else:
        act = SnakeBeta(channels, use_beta=kind == "snakebeta")
    if cfg["antialias"]:
        act = AntiAliasAct1d(act, cfg["antialias_ratio"], cfg["antialias_kernel_size"])
    return act


class ResBlock(nn.Module):
    """Per dilation d: x += conv2(act2(conv1_d(act1(x)))), "same" length convolutions."""

    def __init__(self, channels: int, kernel_size: int, dilations, cfg: dict):
        super().__init__()
        self.convs1 = nn.ModuleList(nn.Conv1d(channels, channels, kernel_size, dilation=d, padding="same")
                                    for d in dilations)
        self.convs2 = nn.ModuleList(nn.Conv1d(channels, channels, kernel_size, padding="same") for _ in dilations)
        self.acts1 = nn.ModuleList(_activation(cfg, channels) for _ in dilations)
        self.acts2 = nn.ModuleList(_activation(cfg, channels) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for a1, c1, a2, c2 in zip(self.acts1, self.convs1, self.acts2, self.convs2):
            x = x + c2(a2(c1(a1(x))))
        return x


# --------------------------------------------------------------------------------------------------
# Generators


class LTX2Vocoder(nn.Module):
    """HiFi-GAN / BigVGAN-v2 generator from a diffusers ``vocoder/config.json`` dict (unknown keys
    are ignored): the LTX-2.0 vocoder, and the two generators inside :class:`LTX2VocoderWithBWE`."""

    def __init__(self, config: dict | None = None):
        super().__init__()
        cfg = {**DEFAULT_CONFIG, **(config or {})}
        if cfg["act_fn"] not in ("leaky_relu", "snake", "snakebeta"):
            raise ValueError(f"LTX2Vocoder: act_fn must be 'leaky_relu', 'snake' or 'snakebeta', got {cfg['act_fn']!r}")
        if cfg["final_act_fn"] not in (None, "tanh", "clamp"):
            raise ValueError(f"LTX2Vocoder: final_act_fn must be 'tanh', 'clamp' or None, got {cfg['final_act_fn']!r}")
        rates, kernels = list(cfg["upsample_factors"]), list(cfg["upsample_kernel_sizes"])
        if len(rates) != len(kernels) or len(cfg["resnet_kernel_sizes"]) != len(cfg["resnet_dilations"]):
            raise ValueError("LTX2Vocoder: upsample_factors / upsample_kernel_sizes and resnet_kernel_sizes / "
                             "resnet_dilations must have matching lengths")
        self.config = cfg
        self.final_act_fn = cfg["final_act_fn"]
        self.pre_slope = cfg["leaky_relu_negative_slope"] if cfg["act_fn"] == "leaky_relu" else None
        self.resnets_per_stage = len(cfg["resnet_kernel_sizes"])
        self.upsample_factor = math.prod(rates)
        self.sampling_rate = int(cfg["output_sampling_rate"])
        self.in_channels = int(cfg["in_channels"])
        self.out_channels = int(cfg["out_channels"])

        width = cfg["hidden_channels"]
        self.conv_in = nn.Conv1d(cfg["in_channels"], width, 7, padding=3)
        self.upsamplers, self.resnets = nn.ModuleList(), nn.ModuleList()
        for r, k in zip(rates, kernels):
            self.upsamplers.append(nn.ConvTranspose1d(width, width // 2, k, stride=r, padding=(k - r) // 2))
            width //= 2
            for rk, dil in zip(cfg["resnet_kernel_sizes"], cfg["resnet_dilations"]):
                self.resnets.append(ResBlock(width, rk, dil, cfg))
        if cfg["act_fn"] == "leaky_relu":
            self.act_out = nn.LeakyReLU()  # slope 0.01, as in the released model
        else:  # always anti-aliased SnakeBeta, whatever ``antialias`` says
            self.act_out = AntiAliasAct1d(SnakeBeta(width, use_beta=True), cfg["antialias_ratio"],
                                          cfg["antialias_kernel_size"])
        self.conv_out = nn.Conv1d(width, cfg["out_channels"], 7, padding=3, bias=cfg["final_bias"])

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv_in.weight.device

    def generate(self, feats: torch.Tensor, final_act: str | None) -> torch.Tensor:
        """Features [B, in_channels, frames] -> waveform [B, out_channels, frames * upsample_factor]."""
        x = self.conv_in(feats)
        n = self.resnets_per_stage
        for i, up in enumerate(self.upsamplers):
            if self.pre_slope is not None:
                x = F.leaky_relu(x, self.pre_slope)
            x = up(x)
            acc = self.resnets[i * n](x)
            for j in range(i * n + 1, (i + 1) * n):
                acc = acc + self.resnets[j](x)
            x = acc / n
        x = self.conv_out(self.act_out(x))
        if final_act == "tanh":
            x = torch.tanh(x)
        elif final_act == "clamp":
            x = x.clamp(-1.0, 1.0)
        return x

    @staticmethod
    def mel_to_features(mel: torch.Tensor) -> torch.Tensor:
        """[B, S, t, M] mel -> [B, S * M, t] (channel-major stacking of the stereo mels)."""
        return mel.transpose(2, 3).flatten(1, 2)

    def _check(self, mel: torch.Tensor, who: str) -> None:
        if mel.ndim != 4 or mel.shape[1] * mel.shape[3] != self.in_channels:
            raise ValueError(f"{who}: expected mel [B, S, frames, M] with S * M = {self.in_channels}, "
                             f"got {list(mel.shape)}")

    @torch.no_grad()
    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [B, 2, t, M] -> waveform [B, out_channels, t * upsample_factor] at ``sampling_rate``."""
        self._check(mel, "LTX2Vocoder")
        feats = self.mel_to_features(mel.to(device=self.device, dtype=self.dtype))
        return self.generate(feats, self.final_act_fn)


class CausalSTFT(nn.Module):
    """Magnitude STFT as a strided conv with the stored windowed DFT basis, left padding only."""

    def __init__(self, filter_length: int, hop_length: int, window_length: int):
        super().__init__()
        self.hop_length, self.window_length = hop_length, window_length
        bins = filter_length // 2 + 1
        self.register_buffer("forward_basis", torch.zeros(2 * bins, 1, filter_length))
        self.register_buffer("inverse_basis", torch.zeros(2 * bins, 1, filter_length))  # saved, unused here

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """[N, samples] -> magnitude [N, bins, samples // hop]."""
        x = F.pad(wave.unsqueeze(1), (max(0, self.window_length - self.hop_length), 0))
        spec = F.conv1d(x, self.forward_basis.to(x.dtype), stride=self.hop_length)
        re, im = spec.chunk(2, dim=1)
        return torch.sqrt(re.square() + im.square())


class MelSTFT(nn.Module):
    """Causal log-mel: log(clamp(mel_basis @ |STFT|, 1e-5))."""

    def __init__(self, filter_length: int, hop_length: int, window_length: int, num_mel_channels: int):
        super().__init__()
        self.stft_fn = CausalSTFT(filter_length, hop_length, window_length)
        self.register_buffer("mel_basis", torch.zeros(num_mel_channels, filter_length // 2 + 1))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """[N, samples] -> log-mel [N, mels, frames]."""
        mag = self.stft_fn(wave)
        return torch.matmul(self.mel_basis.to(mag.dtype), mag).clamp_(min=1e-5).log_()


class LTX2VocoderWithBWE(nn.Module):
    """LTX-2.3 vocoder: 16 kHz BigVGAN-style vocoder + bandwidth extension to 48 kHz, from a diffusers
    ``vocoder/config.json`` dict (unknown keys are ignored)."""

    def __init__(self, config: dict | None = None):
        super().__init__()
        cfg = {**DEFAULT_BWE_CONFIG, **(config or {})}
        self.config = cfg
        stage1 = {k: cfg[k] for k in _GENERATOR_KEYS}
        bwe = {k: cfg["bwe_" + k] for k in _GENERATOR_KEYS}
        self.vocoder = LTX2Vocoder({**stage1, "output_sampling_rate": cfg["input_sampling_rate"]})
        self.bwe_generator = LTX2Vocoder({**bwe, "output_sampling_rate": cfg["output_sampling_rate"]})
        self.mel_stft = MelSTFT(cfg["filter_length"], cfg["hop_length"], cfg["window_length"], cfg["num_mel_channels"])
        self.input_sampling_rate = int(cfg["input_sampling_rate"])
        self.sampling_rate = int(cfg["output_sampling_rate"])
        if self.sampling_rate % self.input_sampling_rate:
            raise ValueError("LTX2VocoderWithBWE: output_sampling_rate must be a multiple of input_sampling_rate")
        self.ratio = self.sampling_rate // self.input_sampling_rate
        self.hop_length = int(cfg["hop_length"])
        if self.bwe_generator.upsample_factor != self.ratio * self.hop_length:
            raise ValueError("LTX2VocoderWithBWE: the BWE generator's total upsampling must equal "
                             "hop_length * output_sampling_rate / input_sampling_rate")
        self.resampler = UpSample1d(self.ratio, window="hann")
        # ltx-core always ends stage 1 with an activation (clamp unless tanh is asked for); see the module docstring.
        self.stage1_final_act = cfg["final_act_fn"] or "clamp"

    @property
    def dtype(self) -> torch.dtype:
        return self.vocoder.dtype

    @property
    def device(self) -> torch.device:
        return self.vocoder.device

    @property
    def upsample_factor(self) -> int:
        """Output samples per input mel frame."""
        return self.vocoder.upsample_factor * self.ratio

    @torch.no_grad()
    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [B, 2, t, M] -> waveform [B, 2, 3 * 160 t] at 48 kHz (released config), in [-1, 1]."""
        self.vocoder._check(mel, "LTX2VocoderWithBWE")
        feats = self.vocoder.mel_to_features(mel.to(device=self.device, dtype=self.dtype))
        low = self.vocoder.generate(feats, self.stage1_final_act)  # [B, C, n] at 16 kHz
        b, c, n = low.shape
        short = -n % self.hop_length
        if short:
            low = F.pad(low, (0, short))
        logmel = self.mel_stft(low.flatten(0, 1))  # [B * C, mels, frames]
        bwe_feats = logmel.unflatten(0, (b, c)).flatten(1, 2)  # [B, C * mels, frames], channel-major
        out = self.bwe_generator.generate(bwe_feats, self.bwe_generator.final_act_fn)
        out = out.add_(self.resampler(low)).clamp_(-1.0, 1.0)
        return out[..., : n * self.ratio]


def build_vocoder(config: dict) -> LTX2Vocoder | LTX2VocoderWithBWE:
    """The right vocoder class for a diffusers ``vocoder/config.json`` (BWE when it has ``bwe_*`` keys
    or names ``LTX2VocoderWithBWE``)."""
    if config.get("_class_name") == "LTX2VocoderWithBWE" or any(k.startswith("bwe_") for k in config):
        return LTX2VocoderWithBWE(config)
    return LTX2Vocoder(config)


# --------------------------------------------------------------------------------------------------
# Official single-file layout

_RENAMES = [
    (re.compile(r"^conv_pre\."), "conv_in."),
    (re.compile(r"^conv_post\."), "conv_out."),
    (re.compile(r"^act_post\."), "act_out."),
    (re.compile(r"^ups\."), "upsamplers."),
    (re.compile(r"^resblocks\."), "resnets."),
    (re.compile(r"\.downsample\.lowpass\.filter$"), ".downsample.filter"),
]


def _rename_generator(key: str) -> str:
    for pattern, new in _RENAMES:
        key = pattern.sub(new, key)
    return key


def official_to_module_key(key: str) -> str | None:
    """Official single-file key -> vocoder key (None = not the vocoder's).

    The leading ``vocoder.`` is removed once. LTX-2.3 files then hold ``vocoder.*`` (stage 1),
    ``bwe_generator.*`` and ``mel_stft.*``; LTX-2.0 files the generator directly. Generator names:
    ``conv_pre`` -> ``conv_in``, ``ups`` -> ``upsamplers``, ``resblocks`` -> ``resnets``,
    ``act_post`` -> ``act_out``, ``conv_post`` -> ``conv_out``, ``downsample.lowpass.filter`` ->
    ``downsample.filter``.
    """
    if not key.startswith("vocoder."):
        return None
    rest = key[len("vocoder."):]
    if rest.startswith("mel_stft."):
        return rest
    for head in ("vocoder.", "bwe_generator."):
        if rest.startswith(head):
            return head + _rename_generator(rest[len(head):])
    return _rename_generator(rest)


def _generator_config(off: dict, final_act: str | None) -> dict:
    amp = off.get("resblock", "1") == "AMP1"
    return {
        "in_channels": 128,  # hard-wired in the official code: 2 channels x 64 mel bins
        "hidden_channels": off.get("upsample_initial_channel", 1024),
        "out_channels": 2,
        "upsample_kernel_sizes": off.get("upsample_kernel_sizes", [16, 15, 8, 4, 4]),
        "upsample_factors": off.get("upsample_rates", [6, 5, 2, 2, 2]),
        "resnet_kernel_sizes": off.get("resblock_kernel_sizes", [3, 7, 11]),
        "resnet_dilations": off.get("resblock_dilation_sizes", [[1, 3, 5]] * 3),
        "act_fn": off.get("activation", "snake") if amp else "leaky_relu",
        "leaky_relu_negative_slope": 0.1,
        "antialias": amp,
        "antialias_ratio": 2,
        "antialias_kernel_size": 12,
        "final_act_fn": final_act,
        "final_bias": off.get("use_bias_at_final", True),
    }


def config_from_official(metadata_config: dict) -> dict:
    """The diffusers-style vocoder config equivalent to an official single file's ``config`` metadata
    (its ``"vocoder"`` entry: flat for LTX-2.0, ``{"vocoder": ..., "bwe": ...}`` for LTX-2.3)."""
    voc = metadata_config.get("vocoder", metadata_config)
    if "bwe" not in voc:
        final = "tanh" if voc.get("use_tanh_at_final", True) else "clamp"
        return {"_class_name": "LTX2Vocoder", **_generator_config(voc, final),
                "output_sampling_rate": voc.get("output_sampling_rate", 24000)}
    stage1, bwe = voc.get("vocoder", {}), voc["bwe"]
    cfg = {"_class_name": "LTX2VocoderWithBWE",
           **_generator_config(stage1, "tanh" if stage1.get("use_tanh_at_final", True) else "clamp")}
    cfg.update({"bwe_" + k: v for k, v in _generator_config(bwe, None).items()})
    cfg.update({
        "filter_length": bwe["n_fft"],
        "hop_length": bwe["hop_length"],
        "window_length": bwe["n_fft"],
        "num_mel_channels": bwe["num_mels"],
        "input_sampling_rate": bwe["input_sampling_rate"],
        "output_sampling_rate": bwe["output_sampling_rate"],
    })
    return cfg
