"""Cosmos3's latent space: raw Wan VAE latents outside the sampler, normalised ones inside it.

A ``LATENT`` between graph nodes holds what the VAE's encoder gives (its posterior mean), the convention
of ComfyUI's own Wan2.2 nodes, so the core VAE and latent nodes work on it. The transformer was trained
on latents normalised per channel, ``(raw - mean) / std``; the sampler converts on the way in
(:meth:`WanLatentFormat.process_in`) and out (:meth:`WanLatentFormat.process_out`), the names ComfyUI's
``LatentFormat`` gives the same two steps.

Facts used here (numbers only, cited):

* Wan2.2's 48 ``latents_mean`` / ``latents_std``: diffusers' Wan2.2 ``AutoencoderKLWan`` ``vae/config.json``
  (Wan2.2-TI2V-5B, the VAE of Cosmos3); ComfyUI 0.27.0 ``comfy/latent_formats.py`` class ``Wan22`` holds the
  same 48 + 48 values, with ``scale_factor`` 1.0.
* The latent-to-RGB preview map of Wan2.2 (48 x 3 factors and a bias of 3): ComfyUI 0.27.0
  ``comfy/latent_formats.py`` class ``Wan22`` (``latent_rgb_factors``, ``latent_rgb_factors_bias``). ComfyUI's
  previewer (``latent_preview.py``, ``Latent2RGBPreviewer``) applies it to the *normalised* x0 of a sampling
  step, first latent frame of the first video, as ``rgb = x0 @ factors + bias`` in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# Wan2.2 latent statistics (see the module docstring for the sources).
WAN22_LATENTS_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
    0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
    -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)
WAN22_LATENTS_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)

# Wan2.2 latent-to-RGB preview map: one (r, g, b) row per latent channel, and the bias (ComfyUI's Wan22).
WAN22_LATENT_RGB_FACTORS = (
    (0.0119, 0.0103, 0.0046), (-0.1062, -0.0504, 0.0165), (0.0140, 0.0409, 0.0491), (-0.0813, -0.0677, 0.0607),
    (0.0656, 0.0851, 0.0808), (0.0264, 0.0463, 0.0912), (0.0295, 0.0326, 0.0590), (-0.0244, -0.0270, 0.0025),
    (0.0443, -0.0102, 0.0288), (-0.0465, -0.0090, -0.0205), (0.0359, 0.0236, 0.0082), (-0.0776, 0.0854, 0.1048),
    (0.0564, 0.0264, 0.0561), (0.0006, 0.0594, 0.0418), (-0.0319, -0.0542, -0.0637), (-0.0268, 0.0024, 0.0260),
    (0.0539, 0.0265, 0.0358), (-0.0359, -0.0312, -0.0287), (-0.0285, -0.1032, -0.1237), (0.1041, 0.0537, 0.0622),
    (-0.0086, -0.0374, -0.0051), (0.0390, 0.0670, 0.2863), (0.0069, 0.0144, 0.0082), (0.0006, -0.0167, 0.0079),
    (0.0313, -0.0574, -0.0232), (-0.1454, -0.0902, -0.0481), (0.0714, 0.0827, 0.0447), (-0.0304, -0.0574, -0.0196),
    (0.0401, 0.0384, 0.0204), (-0.0758, -0.0297, -0.0014), (0.0568, 0.1307, 0.1372), (-0.0055, -0.0310, -0.0380),
    (0.0239, -0.0305, 0.0325), (-0.0663, -0.0673, -0.0140), (-0.0416, -0.0047, -0.0023), (0.0166, 0.0112, -0.0093),
    (-0.0211, 0.0011, 0.0331), (0.1833, 0.1466, 0.2250), (-0.0368, 0.0370, 0.0295), (-0.3441, -0.3543, -0.2008),
    (-0.0479, -0.0489, -0.0420), (-0.0660, -0.0153, 0.0800), (-0.0101, 0.0068, 0.0156), (-0.0690, -0.0452, -0.0927),
    (-0.0145, 0.0041, 0.0015), (0.0421, 0.0451, 0.0373), (0.0504, -0.0483, -0.0356), (-0.0837, 0.0168, 0.0055),
)
WAN22_LATENT_RGB_BIAS = (0.0317, -0.0878, -0.1388)


class WanLatentFormat:
    """Per-channel normalisation between a Wan VAE's raw latents and the diffusion model's.

    ``process_in(raw) = (raw - mean) * (1 / std)`` and ``process_out(z) = z / (1 / std) + mean``, in the
    dtype and on the device of the input; the reciprocal is taken in float32 first, the op order of
    diffusers' Cosmos3 pipeline (ComfyUI divides by ``std`` instead: equal to float rounding).
    """

    latent_dimensions = 3  # [B, C, T, H, W]
    scale_factor = 1.0

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        if len(mean) != len(std):
            raise ValueError(f"latents_mean has {len(mean)} values but latents_std has {len(std)}")
        self.latents_mean = tuple(float(v) for v in mean)
        self.latents_std = tuple(float(v) for v in std)

    @property
    def latent_channels(self) -> int:
        return len(self.latents_mean)

    def _stats(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if z.ndim < 2 or z.shape[1] != self.latent_channels:
            raise ValueError(f"expected latents [B, {self.latent_channels}, ...], got {list(z.shape)}")
        mean = torch.tensor(self.latents_mean, dtype=torch.float32)
        inv_std = 1.0 / torch.tensor(self.latents_std, dtype=torch.float32)
        shape = (1, -1) + (1,) * (z.ndim - 2)
        return mean.view(shape).to(z.device, z.dtype), inv_std.view(shape).to(z.device, z.dtype)

    def process_in(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents -> the transformer's normalised latents."""
        mean, inv_std = self._stats(raw)
        return (raw - mean) * inv_std

    def process_out(self, z: torch.Tensor) -> torch.Tensor:
        """The transformer's normalised latents -> raw VAE latents (what the VAE decodes)."""
        mean, inv_std = self._stats(z)
        return z / inv_std + mean

    def __eq__(self, other) -> bool:
        return (isinstance(other, WanLatentFormat) and self.latents_mean == other.latents_mean
                and self.latents_std == other.latents_std)

    def __hash__(self) -> int:
        return hash((self.latents_mean, self.latents_std))


class Wan22LatentFormat(WanLatentFormat):
    """Wan2.2's 48-channel latent space with the attributes ComfyUI's latent previewer reads.

    Without ComfyUI this object stands in for ComfyUI's own ``comfy.latent_formats.Wan22`` (same statistics,
    same preview map, same tiny-decoder name for ``models/vae_approx``).
    """

    spacial_downscale_ratio = 16  # ComfyUI's attribute name (sic)
    taesd_decoder_name = "lighttaew2_2"
    latent_rgb_factors = [list(row) for row in WAN22_LATENT_RGB_FACTORS]
    latent_rgb_factors_bias = list(WAN22_LATENT_RGB_BIAS)
    latent_rgb_factors_reshape = None

    def __init__(self, mean: Sequence[float] = WAN22_LATENTS_MEAN, std: Sequence[float] = WAN22_LATENTS_STD):
        super().__init__(mean, std)
        if self.latent_channels != len(self.latent_rgb_factors):
            raise ValueError(f"Wan2.2 latents have {len(self.latent_rgb_factors)} channels, not {self.latent_channels}")


def latent_to_rgb(x0: torch.Tensor, factors=WAN22_LATENT_RGB_FACTORS, bias=WAN22_LATENT_RGB_BIAS) -> torch.Tensor:
    """A preview picture of normalised latents: uint8 ``[h, w, 3]`` at latent resolution.

    Takes the first latent frame of the first video of ``x0`` (``[B, C, T, h, w]``, or ``[B, C, h, w]``),
    maps its channels to RGB in [-1, 1] with ``factors`` / ``bias`` and scales that to 0..255, as ComfyUI's
    Latent2RGB previewer does.
    """
    frame = x0[0, :, 0] if x0.ndim == 5 else x0[0]
    weight = torch.tensor(factors, dtype=torch.float32)
    rgb = frame.detach().float().cpu().permute(1, 2, 0) @ weight + torch.tensor(bias, dtype=torch.float32)
    return ((rgb + 1.0) * 0.5).clamp(0, 1).mul(255).to(torch.uint8)
