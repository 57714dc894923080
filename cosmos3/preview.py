"""Live previews: a linear map from the 48 latent channels to RGB, and the latent description ComfyUI reads.

The map is fitted, not guessed: :func:`fit_latent_rgb` encodes synthetic colour fields with a VAE and
solves a least-squares problem from normalised latents to the images' RGB at latent resolution.
Fitted factors live in ``latent_rgb_factors.json`` beside this file; ``python -m comfyui_cosmos3_ltx2
fit-preview --vae PATH`` writes it from a real Wan2.2 VAE. Without that file ComfyUI shows no preview
(the progress bar still advances every step).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

FACTORS_FILE = Path(__file__).with_name("latent_rgb_factors.json")


class Cosmos3LatentFormat:
    """The attributes ComfyUI's latent previewer looks up on a model's latent format."""

    latent_channels = 48
    latent_dimensions = 3
    scale_factor = 1.0
    taesd_decoder_name = None
    latent_rgb_factors_reshape = None

    def __init__(self, factors_file: Path = FACTORS_FILE):
        self.latent_rgb_factors = None
        self.latent_rgb_factors_bias = None
        if factors_file.is_file():
            data = json.loads(factors_file.read_text())
            self.latent_rgb_factors = data["factors"]  # [48][3]
            self.latent_rgb_factors_bias = data["bias"]  # [3]

    def process_in(self, latent):  # the pack's latents are already normalised
        return latent

    def process_out(self, latent):
        return latent


def synthetic_images(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random colour fields and gradients ``[count, 3, size, size]`` in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 4, 4, generator=g) * 2 - 1
    fields = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return fields.clamp(-1, 1)


@torch.no_grad()
def fit_latent_rgb(vae, count: int = 64, size: int = 128, seed: int = 0) -> tuple[list, list]:
    """Least-squares ``rgb ~ latent @ factors + bias`` over ``count`` synthetic images encoded by ``vae``.

    ``vae`` needs ``encode(video [B,3,1,H,W]) -> mean latents`` and ``normalize_latents``.
    Returns ``(factors [C][3], bias [3])`` as lists, ready for :class:`Cosmos3LatentFormat`.
    """
    images = synthetic_images(count, size, seed)
    dtype = next(vae.parameters()).dtype
    device = next(vae.parameters()).device
    latents = vae.normalize_latents(vae.encode(images.to(device, dtype).unsqueeze(2))).float().cpu()[:, :, 0]
    factor = size // latents.shape[-1]
    targets = F.avg_pool2d(images, factor)  # RGB at latent resolution
    x = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    y = targets.permute(0, 2, 3, 1).reshape(-1, 3)
    design = torch.cat((x, torch.ones(x.shape[0], 1)), dim=1).double()
    solution = torch.linalg.lstsq(design, y.double()).solution
    return solution[:-1].tolist(), solution[-1].tolist()


def write_factors(factors, bias, path: Path = FACTORS_FILE, source: str = "") -> Path:
    path.write_text(json.dumps({"source": source, "factors": factors, "bias": bias}, indent=1) + "\n")
    return path
