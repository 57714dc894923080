"""Live previews of the LTX-2 video stream in ComfyUI.

ComfyUI 0.27 shows no previews for LTX-2 audio+video models: its ``LTXAV`` latent format sets the RGB map to
None (comfyui.md 5.1), and the map of the older ``LTXV`` format belongs to LTX-Video's VAE, not LTX-2's. So the
map is fitted on the checkpoint's own video VAE (:func:`~..core.preview.fit_latent_rgb`: synthetic colour fields
encoded by the VAE, least squares from the normalised latents to their RGB), once per checkpoint file: the result
is kept in the cache folder under a name made of the file's path, size and modification time, and reused.
"""

from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path

from ..core.preview import fit_latent_rgb, read_factors, write_factors

FIT_COUNT = 32  # synthetic pictures: 32 x (256/32)^2 = 2048 latent pixels for 129 unknowns per colour
FIT_SIZE = 256


def cache_file(checkpoint, cache_dir: str | Path | None = None) -> Path:
    """Where the fitted map of ``checkpoint`` is kept."""
    p = Path(checkpoint).resolve()
    stat = p.stat()
    key = hashlib.sha256(f"{p}|{stat.st_size}|{stat.st_mtime_ns}|{FIT_COUNT}|{FIT_SIZE}".encode()).hexdigest()[:16]
    base = Path(cache_dir or os.environ.get("COMFYUI_COSMOS3_LTX2_CACHE")
                or Path.home() / ".cache" / "comfyui_cosmos3_ltx2")
    return base / f"ltx2-preview-{key}.json"


def fitted_factors(video_vae, checkpoint, cache_dir: str | Path | None = None) -> tuple[list, list]:
    """The checkpoint's RGB map: read from the cache, or fitted on ``video_vae`` and written there."""
    path = cache_file(checkpoint, cache_dir)
    found = read_factors(path)
    if found is not None:
        return found
    factors, bias = fit_latent_rgb(video_vae, count=FIT_COUNT, size=FIT_SIZE)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    write_factors(factors, bias, tmp, source=f"fitted on the video VAE of {checkpoint}")
    os.replace(tmp, path)
    return factors, bias


def preview_format(base, factors: tuple[list, list] | None = None):
    """A copy of ComfyUI's latent format ``base`` (its ``LTXV``) carrying the fitted map; None without ComfyUI or
    without a map (ComfyUI then shows no preview)."""
    if base is None or factors is None:
        return None
    fmt = copy.copy(base)
    fmt.latent_rgb_factors, fmt.latent_rgb_factors_bias = factors
    fmt.taesd_decoder_name = None  # LTX-Video's tiny decoders do not fit LTX-2's latents
    return fmt
