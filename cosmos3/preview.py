"""Fitting a latent-to-RGB preview map on a VAE (``python -m comfyui_cosmos3_ltx2 fit-preview``).

Cosmos3's previews use Wan2.2's published map (:mod:`.latent_format`). This module fits one for any other
VAE, or to check the published one: :func:`fit_latent_rgb` encodes synthetic colour fields with the VAE and
solves a least-squares problem from normalised latents to the images' RGB at latent resolution. A fitted
``latent_rgb_factors.json`` beside this file, if someone writes one, replaces the published map in previews.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

FACTORS_FILE = Path(__file__).with_name("latent_rgb_factors.json")


def read_factors(path: Path = FACTORS_FILE) -> tuple[list, list] | None:
    """``(factors [C][3], bias [3])`` from a fitted file, or None when there is none."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return data["factors"], data["bias"]


def apply_fitted_factors(latent_format, path: Path = FACTORS_FILE):
    """``latent_format`` with its RGB preview map replaced by a fitted file's (when there is one of its width)."""
    fitted = read_factors(path)
    if fitted is not None and len(fitted[0]) == len(latent_format.latent_rgb_factors):
        latent_format.latent_rgb_factors, latent_format.latent_rgb_factors_bias = fitted
    return latent_format


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
    Returns ``(factors [C][3], bias [3])`` as lists (the layout of ComfyUI's ``latent_rgb_factors``).
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
