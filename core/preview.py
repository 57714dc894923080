"""Latent-to-RGB preview maps fitted on a VAE: the linear map ComfyUI's Latent2RGB previewer applies to the first
latent frame of each step's x0.

:func:`fit_latent_rgb` encodes synthetic colour fields with the VAE and solves a least-squares problem from
normalised latents to the images' RGB at latent resolution. Any VAE with ``encode(video [B, 3, 1, H, W])`` and
``normalize_latents`` fits (Cosmos3's Wan2.2 VAE, LTX-2's video VAE).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F


def read_factors(path: Path) -> tuple[list, list] | None:
    """``(factors [C][3], bias [3])`` from a fitted file, or None when there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return data["factors"], data["bias"]


def write_factors(factors, bias, path: Path, source: str = "") -> Path:
    path = Path(path)
    path.write_text(json.dumps({"source": source, "factors": factors, "bias": bias}, indent=1) + "\n")
    return path


def synthetic_images(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random colour fields and gradients ``[count, 3, size, size]`` in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 4, 4, generator=g) * 2 - 1
    fields = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return fields.clamp(-1, 1)


@torch.no_grad()
def fit_latent_rgb(vae, count: int = 64, size: int = 128, seed: int = 0, batch: int = 8) -> tuple[list, list]:
    """Least-squares ``rgb ~ latent @ factors + bias`` over ``count`` synthetic images encoded by ``vae``.

    ``vae`` needs ``encode(video [B,3,1,H,W]) -> mean latents`` and ``normalize_latents``.
    Returns ``(factors [C][3], bias [3])`` as lists (the layout of ComfyUI's ``latent_rgb_factors``). The
    images are encoded ``batch`` at a time.
    """
    images = synthetic_images(count, size, seed)
    dtype = next(vae.parameters()).dtype
    device = next(vae.parameters()).device
    latents = torch.cat([vae.normalize_latents(vae.encode(part.to(device, dtype).unsqueeze(2)).float()).cpu()[:, :, 0]
                         for part in images.split(batch)])
    factor = size // latents.shape[-1]
    targets = F.avg_pool2d(images, factor)  # RGB at latent resolution
    x = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    y = targets.permute(0, 2, 3, 1).reshape(-1, 3)
    design = torch.cat((x, torch.ones(x.shape[0], 1)), dim=1).double()
    solution = torch.linalg.lstsq(design, y.double()).solution
    return solution[:-1].tolist(), solution[-1].tolist()
