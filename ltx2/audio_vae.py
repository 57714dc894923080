"""The LTX-2 / LTX-2.3 audio VAE: log-mel spectrograms <-> small 2-D latents (4x in time and in mel bins).

Shape contract. A stereo log-mel spectrogram [B, 2, t, 64] (16 kHz audio, hop 160, so 100 mel frames
a second) is coded as latents [B, 8, T, 16] at 25 latent frames a second. Decoding T latent frames
gives 4 T - 3 mel frames (the first latent frame stands for one mel frame, every later one for four),
which the vocoder (``ltx2/vocoder.py``) turns into a waveform.

The diffusion model sees the latents flattened per frame, ``[B, T, C * M]`` with feature index
``c * M + m``, normalised by one mean / std per feature (``latents_mean`` / ``latents_std``, of length
C * M = 128). :meth:`LTX2AudioVAE.normalize_latents` / :meth:`denormalize_latents` accept either the
packed [B, T, C * M] form or the 4-D [B, C, T, M] form.

Structure (diffusers ``AutoencoderKLLTX2Audio`` layout, so an ``audio_vae/`` folder loads as is):

* every 3x3 convolution is causal along the time axis ("height"): two rows of zeros above, one column
  of zeros on each side of the mel axis (``causality_axis`` picks another axis for other configs);
* decoder: ``conv_in`` -> ``mid`` (resnet, optional attention, resnet) -> ``up[i]`` from the deepest
  level up (``num_res_blocks + 1`` resnets, then nearest x2 + causal conv + dropping the first row,
  which is what turns T into 2 T - 1) -> pixel-norm -> SiLU -> ``conv_out``, cropped/padded to
  [B, out_ch, 4 T - 3, mel_bins];
* encoder (mirror image, for audio-to-video conditioning): ``conv_in`` -> ``down[i]`` (resnets, then a
  stride-2 conv with causal padding) -> ``mid`` -> pixel-norm -> SiLU -> ``conv_out`` to 2 z channels
  (mean, log-variance; only the mean is used). Turning a waveform into the encoder's mel input needs
  an STFT front end that is not part of this module.

The official single file stores the same tensors as ``audio_vae.encoder.*``, ``audio_vae.decoder.*``
and ``audio_vae.per_channel_statistics.{mean-of-means,std-of-means}``; :func:`official_to_module_key`
renames them for ``core.checkpoint.load_into``. The official decoder un-normalises the latents
itself; here that is ``decode(z, normalized=True)`` (diffusers leaves it to the pipeline).

Inference only: dropout is ignored.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .video_vae import _DecoderDtypeDevice

__all__ = ["DEFAULT_CONFIG", "LTX2AudioVAE", "official_to_module_key", "config_from_official",
           "LATENT_DOWNSAMPLE_FACTOR"]

# Constructor defaults of diffusers' AutoencoderKLLTX2Audio; an audio_vae/config.json overrides them.
DEFAULT_CONFIG = {
    "base_channels": 128,
    "output_channels": 2,
    "ch_mult": [1, 2, 4],
    "num_res_blocks": 2,
    "attn_resolutions": None,
    "in_channels": 2,
    "resolution": 256,
    "latent_channels": 8,
    "norm_type": "pixel",
    "causality_axis": "height",
    "dropout": 0.0,
    "mid_block_add_attention": False,
    "sample_rate": 16000,
    "mel_hop_length": 160,
    "is_causal": True,
    "mel_bins": 64,
    "double_z": True,
}

# Time and mel compression of the audio VAE (fixed by its two x2 levels).
LATENT_DOWNSAMPLE_FACTOR = 4

_AXES = ("none", "width", "height", "width-compatibility")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "pixel":
        return PixelNorm()
    if kind == "group":
        return nn.GroupNorm(32, channels, eps=1e-6, affine=True)
    raise ValueError(f"LTX2AudioVAE: unknown norm_type {kind!r} (expected 'pixel' or 'group')")


class PixelNorm(nn.Module):
    """x / sqrt(mean over channels of x^2 + 1e-6) at every (row, column); no parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(1, keepdim=True) + 1e-6)


class CausalConv2d(nn.Module):
    """Conv2d with explicit zero padding that looks only backwards along the causal axis.

    (kh, kw) kernel: the causal axis gets all k - 1 padding in front, the other axis k // 2 ... split
    as (k - 1) // 2 in front and the rest behind; ``none`` centres both.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, causality_axis: str):
        super().__init__()
        ph = pw = kernel_size - 1
        centred_w = (pw // 2, pw - pw // 2)
        centred_h = (ph // 2, ph - ph // 2)
        if causality_axis == "height":
            self.padding = (*centred_w, ph, 0)
        elif causality_axis in ("width", "width-compatibility"):
            self.padding = (pw, 0, *centred_h)
        elif causality_axis == "none":
            self.padding = (*centred_w, *centred_h)
        else:
            raise ValueError(f"LTX2AudioVAE: causality_axis must be one of {_AXES}, got {causality_axis!r}")
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.padding))


class ResnetBlock(nn.Module):
    """norm -> SiLU -> conv -> norm -> SiLU -> conv, plus the input (1x1 conv when the width changes)."""

    def __init__(self, in_channels: int, out_channels: int, norm_type: str, axis: str):
        super().__init__()
        self.norm1 = _norm(norm_type, in_channels)
        self.conv1 = CausalConv2d(in_channels, out_channels, 3, axis)
        self.norm2 = _norm(norm_type, out_channels)
        self.conv2 = CausalConv2d(out_channels, out_channels, 3, axis)
        if in_channels != out_channels:
            self.nin_shortcut = CausalConv2d(in_channels, out_channels, 1, axis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all (row, column) positions, 1x1 convs for q/k/v/out, residual."""

    def __init__(self, channels: int, norm_type: str):
        super().__init__()
        self.norm = _norm(norm_type, channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        # [B, 1, HW, C] for q, k, v: one head of width C.
        q, k, v = (m(n).flatten(2).transpose(1, 2).unsqueeze(1) for m in (self.q, self.k, self.v))
        o = F.scaled_dot_product_attention(q, k, v)
        o = o.squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return x + self.proj_out(o)


class Upsample(nn.Module):
    """Nearest x2 on both axes, causal 3x3 conv, then drop the first row (or column) on the causal axis."""

    def __init__(self, channels: int, axis: str):
        super().__init__()
        self.axis = axis
        self.conv = CausalConv2d(channels, channels, 3, axis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        if self.axis == "height":
            return x[:, :, 1:]
        if self.axis == "width":
            return x[:, :, :, 1:]
        return x


class Downsample(nn.Module):
    """Stride-2 3x3 conv after zero padding that keeps the causal axis causal."""

    _PAD = {"none": (0, 1, 0, 1), "width": (2, 0, 0, 1), "height": (0, 1, 2, 0), "width-compatibility": (1, 0, 0, 1)}

    def __init__(self, channels: int, axis: str):
        super().__init__()
        self.pad = self._PAD[axis]
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad))


def _mid(channels: int, cfg: dict) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels, cfg["norm_type"], cfg["causality_axis"])
    mid.attn_1 = AttnBlock(channels, cfg["norm_type"]) if cfg["mid_block_add_attention"] else nn.Identity()
    mid.block_2 = ResnetBlock(channels, channels, cfg["norm_type"], cfg["causality_axis"])
    return mid


def _run_stage(stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
    for i, block in enumerate(stage.block):
        x = block(x)
        if len(stage.attn):
            x = stage.attn[i](x)
    return x


class Encoder(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        ch, mult, axis, norm = cfg["base_channels"], list(cfg["ch_mult"]), cfg["causality_axis"], cfg["norm_type"]
        attn_res = set(cfg["attn_resolutions"] or ())
        self.conv_in = CausalConv2d(cfg["in_channels"], ch, 3, axis)
        self.down = nn.ModuleList()
        width, res = ch, cfg["resolution"]
        for level, m in enumerate(mult):
            stage = nn.Module()
            stage.block, stage.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(cfg["num_res_blocks"]):
                stage.block.append(ResnetBlock(width, ch * m, norm, axis))
                width = ch * m
                if res in attn_res:
                    stage.attn.append(AttnBlock(width, norm))
            if level != len(mult) - 1:
                stage.downsample = Downsample(width, axis)
                res //= 2
            self.down.append(stage)
        self.mid = _mid(width, cfg)
        self.norm_out = _norm(norm, width)
        z = cfg["latent_channels"] * (2 if cfg["double_z"] else 1)
        self.conv_out = CausalConv2d(width, z, 3, axis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for stage in self.down:
            x = _run_stage(stage, x)
            if hasattr(stage, "downsample"):
                x = stage.downsample(x)
        x = self.mid.block_2(self.mid.attn_1(self.mid.block_1(x)))
        return self.conv_out(F.silu(self.norm_out(x)))


class Decoder(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        ch, mult, axis, norm = cfg["base_channels"], list(cfg["ch_mult"]), cfg["causality_axis"], cfg["norm_type"]
        attn_res = set(cfg["attn_resolutions"] or ())
        width = ch * mult[-1]
        res = cfg["resolution"] // 2 ** (len(mult) - 1)
        self.conv_in = CausalConv2d(cfg["latent_channels"], width, 3, axis)
        self.mid = _mid(width, cfg)
        stages = []
        for level in reversed(range(len(mult))):
            stage = nn.Module()
            stage.block, stage.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(cfg["num_res_blocks"] + 1):
                stage.block.append(ResnetBlock(width, ch * mult[level], norm, axis))
                width = ch * mult[level]
                if res in attn_res:
                    stage.attn.append(AttnBlock(width, norm))
            if level != 0:
                stage.upsample = Upsample(width, axis)
                res *= 2
            stages.insert(0, stage)
        self.up = nn.ModuleList(stages)  # up[0] is the finest level, run last
        self.norm_out = _norm(norm, width)
        self.conv_out = CausalConv2d(width, cfg["output_channels"], 3, axis)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(z)
        x = self.mid.block_2(self.mid.attn_1(self.mid.block_1(x)))
        for stage in reversed(self.up):
            x = _run_stage(stage, x)
            if hasattr(stage, "upsample"):
                x = stage.upsample(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class LTX2AudioVAE(_DecoderDtypeDevice, nn.Module):
    """LTX-2 / LTX-2.3 audio VAE from a diffusers ``audio_vae/config.json`` dict (unknown keys are ignored).

    State-dict keys equal diffusers' (``encoder.*``, ``decoder.*``, ``latents_mean``, ``latents_std``).
    """

    def __init__(self, config: dict):
        super().__init__()
        cfg = {**DEFAULT_CONFIG, **config}
        if cfg["causality_axis"] not in _AXES:
            raise ValueError(f"LTX2AudioVAE: causality_axis must be one of {_AXES}, got {cfg['causality_axis']!r}")
        if cfg["norm_type"] == "group" and cfg["causality_axis"] != "none":
            raise ValueError("LTX2AudioVAE: a causal audio VAE needs norm_type 'pixel' (group norm mixes time steps)")
        self.config = cfg
        self.latent_channels = int(cfg["latent_channels"])
        self.mel_bins = cfg["mel_bins"]
        self.output_channels = int(cfg["output_channels"])
        self.causal = cfg["causality_axis"] != "none"
        self.temporal_compression_ratio = LATENT_DOWNSAMPLE_FACTOR
        self.mel_compression_ratio = LATENT_DOWNSAMPLE_FACTOR
        self.sample_rate = int(cfg["sample_rate"])
        self.mel_hop_length = int(cfg["mel_hop_length"])
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        # One entry per packed latent feature (c * M + m); sized by base_channels like the checkpoints.
        self.register_buffer("latents_mean", torch.zeros(cfg["base_channels"]))
        self.register_buffer("latents_std", torch.ones(cfg["base_channels"]))

    @property
    def latents_per_second(self) -> float:
        """Latent frames per second of audio (25 for the released models)."""
        return self.sample_rate / self.mel_hop_length / self.temporal_compression_ratio

    def mel_frames(self, latent_frames: int) -> int:
        """Mel frames that ``decode`` returns for ``latent_frames`` latent frames."""
        n = latent_frames * LATENT_DOWNSAMPLE_FACTOR
        return max(n - (LATENT_DOWNSAMPLE_FACTOR - 1), 1) if self.causal else n

    # ---------------------------------------------------------------------------------------------
    # Decode / encode

    @torch.no_grad()
    def decode(self, z: torch.Tensor, normalized: bool = False, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Latents [B, C, T, M] -> log-mel spectrogram [B, output_channels, 4 T - 3, mel_bins].

        With ``normalized=False`` (default) ``z`` is the raw latent and the result equals diffusers'
        ``decode(z).sample``; with ``normalized=True`` ``z`` is the diffusion model's latent and is
        un-normalised first (the official decoder's behaviour). Packed [B, T, C * M] latents must be
        unpacked first (:meth:`unpack_latents`).
        """
        if z.ndim != 4 or z.shape[1] != self.latent_channels:
            raise ValueError(f"LTX2AudioVAE.decode: expected latents [B, {self.latent_channels}, T, M], "
                             f"got {list(z.shape)}")
        z = z.to(device=self.device, dtype=self.dtype)
        if normalized:
            z = self.denormalize_latents(z)
        mel = self.decoder(z)
        frames = self.mel_frames(z.shape[2])
        bins = self.mel_bins if self.mel_bins is not None else z.shape[3]
        mel = mel[:, : self.output_channels, :frames, :bins]
        short_t, short_f = frames - mel.shape[2], bins - mel.shape[3]
        if short_t > 0 or short_f > 0:  # never for the released configs
            mel = F.pad(mel, (0, max(short_f, 0), 0, max(short_t, 0)))
        return mel if dtype is None else mel.to(dtype)

    @torch.no_grad()
    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel [B, in_channels, t, mel_bins] -> raw posterior mean [B, C, T, M] (diffusers' ``latent_dist.mode()``).

        Call :meth:`normalize_latents` for the diffusion model's latents.
        """
        if mel.ndim != 4 or mel.shape[1] != self.config["in_channels"]:
            raise ValueError(f"LTX2AudioVAE.encode: expected mel [B, {self.config['in_channels']}, t, bins], "
                             f"got {list(mel.shape)}")
        h = self.encoder(mel.to(device=self.device, dtype=self.dtype))
        return h[:, : self.latent_channels]

    # ---------------------------------------------------------------------------------------------
    # Packing and latent statistics

    @staticmethod
    def pack_latents(z: torch.Tensor) -> torch.Tensor:
        """[B, C, T, M] -> [B, T, C * M] (feature index c * M + m), the diffusion model's audio tokens."""
        return z.transpose(1, 2).flatten(2)

    def unpack_latents(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, T, C * M] -> [B, C, T, M]."""
        b, t, f = tokens.shape
        return tokens.reshape(b, t, self.latent_channels, f // self.latent_channels).transpose(1, 2)

    def _stats(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.latents_mean.to(z.device, z.dtype)
        std = self.latents_std.to(z.device, z.dtype)
        if z.ndim == 4:  # [B, C, T, M]: feature c * M + m sits at [c, m]
            c, m = z.shape[1], z.shape[3]
            mean, std = mean.view(c, 1, m), std.view(c, 1, m)
        elif z.ndim != 3:
            raise ValueError(f"LTX2AudioVAE: expected audio latents [B, C, T, M] or [B, T, C*M], got {list(z.shape)}")
        return mean, std

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents -> the diffusion model's latents: (z - mean) / std per packed feature."""
        mean, std = self._stats(z)
        return (z - mean) / std

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of normalize_latents: z * std + mean."""
        mean, std = self._stats(z)
        return z * std + mean


# --------------------------------------------------------------------------------------------------
# Official single-file layout

_STATS = {"mean-of-means": "latents_mean", "std-of-means": "latents_std"}


def official_to_module_key(key: str) -> str | None:
    """Official single-file key -> LTX2AudioVAE key; None for every other tensor (video VAE, vocoder,
    transformer, ...) and for the unused statistics.

    ``audio_vae.decoder.X`` -> ``decoder.X``, ``audio_vae.encoder.X`` -> ``encoder.X`` (the module
    names are the same on both sides), ``audio_vae.per_channel_statistics.mean-of-means`` ->
    ``latents_mean``, ``...std-of-means`` -> ``latents_std``.
    """
    if key.startswith("audio_vae.per_channel_statistics."):
        return _STATS.get(key[len("audio_vae.per_channel_statistics."):])
    for part in ("decoder.", "encoder."):
        if key.startswith("audio_vae." + part):
            return key[len("audio_vae."):]
    return None


def config_from_official(metadata_config: dict) -> dict:
    """The diffusers-style config equivalent to an official single file's ``config`` metadata (its
    ``audio_vae.model.params.ddconfig`` etc.), with the official code's defaults for absent entries
    (note: attention at resolutions {8, 16, 32} and in the mid block unless the file says otherwise)."""
    a = metadata_config.get("audio_vae", {})
    params = a.get("model", {}).get("params", {})
    dd = params.get("ddconfig", {})
    pre = a.get("preprocessing", {})
    mel_bins = dd.get("mel_bins") or pre.get("mel", {}).get("n_mel_channels") or a.get("variables", {}).get("mel_bins")
    return {
        "base_channels": dd.get("ch", 128),
        "output_channels": dd.get("out_ch", 2),
        "ch_mult": list(dd.get("ch_mult", (1, 2, 4))),
        "num_res_blocks": dd.get("num_res_blocks", 2),
        "attn_resolutions": sorted(dd.get("attn_resolutions", (8, 16, 32))),
        "in_channels": dd.get("in_channels", 2),
        "resolution": dd.get("resolution", 256),
        "latent_channels": dd.get("z_channels", 8),
        "norm_type": dd.get("norm_type", "pixel"),
        "causality_axis": dd.get("causality_axis", "height"),
        "dropout": dd.get("dropout", 0.0),
        "mid_block_add_attention": dd.get("mid_block_add_attention", True),
        "sample_rate": params.get("sampling_rate", 16000),
        "mel_hop_length": pre.get("stft", {}).get("hop_length", 160),
        "is_causal": pre.get("stft", {}).get("causal", True),
        "mel_bins": mel_bins,
        "double_z": dd.get("double_z", True),
    }
