"""Cosmos3's preview map (``python -m comfyui_cosmos3_ltx2 fit-preview``).

Cosmos3's previews use Wan2.2's published map (:mod:`.latent_format`). :func:`~..core.preview.fit_latent_rgb` fits
one for any other VAE, or checks the published one; a fitted ``latent_rgb_factors.json`` beside this file, if
someone writes one, replaces the published map in previews.
"""

from __future__ import annotations

from pathlib import Path

from ..core import preview as _fit
from ..core.preview import fit_latent_rgb, synthetic_images  # noqa: F401 - the fit-preview command's tools

FACTORS_FILE = Path(__file__).with_name("latent_rgb_factors.json")


def read_factors(path: Path = FACTORS_FILE) -> tuple[list, list] | None:
    """``(factors [C][3], bias [3])`` from a fitted file, or None when there is none."""
    return _fit.read_factors(path)


def apply_fitted_factors(latent_format, path: Path = FACTORS_FILE):
    """``latent_format`` with its RGB preview map replaced by a fitted file's (when there is one of its width)."""
    fitted = read_factors(path)
    if fitted is not None and len(fitted[0]) == len(latent_format.latent_rgb_factors):
        latent_format.latent_rgb_factors, latent_format.latent_rgb_factors_bias = fitted
    return latent_format


def write_factors(factors, bias, path: Path = FACTORS_FILE, source: str = "") -> Path:
    return _fit.write_factors(factors, bias, path, source)
