"""Pictures in: one reader for the conditioning images of every model (files, PIL images, arrays, tensors).

Everything comes out as float32 RGB ``[H, W, 3]`` with values 0..255 on the CPU. Pillow's plain
``convert("RGB")`` clips 16-bit greyscale (mode ``I;16``) at 255, so such a PNG came out white, and drops an
alpha channel without a word; here:

* 16-bit greyscale is scaled (0..65535 -> 0..255); Pillow itself reads 16-bit colour PNGs as 8-bit RGB / RGBA.
  ``uint16`` arrays are scaled the same way.
* Greyscale, palette, CMYK, ... become RGB as usual; a palette's transparent entry counts as alpha.
* Alpha: fully opaque is simply dropped (nothing is lost). Any transparent pixel is refused with an
  :class:`~.checks.OptionError`: a video model takes no transparency, and any background we filled in would be
  a guess; flatten the picture onto the background you want first.
* 32-bit integer (``I``) and float (``F``) pictures are refused: their value range is not known.

An animated file gives its first frame.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .checks import OptionError

__all__ = ["rgb_and_alpha", "to_rgb01", "to_rgb255"]

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def rgb_and_alpha(picture) -> tuple[np.ndarray, np.ndarray | None]:
    """One PIL picture -> (RGB float32 ``[H, W, 3]`` in 0..255, alpha float32 ``[H, W]`` in 0..1 or None).

    (ComfyUI's ``LoadImage`` keeps alpha apart, as a mask, where a model's conditioning image refuses it.)
    """
    mode = picture.mode
    if mode in _SIXTEEN_BIT:
        grey = np.asarray(picture).astype(np.float32) / 257.0  # 65535 / 257 = 255
        return np.repeat(grey[..., None], 3, axis=-1), None
    if mode in ("I", "F"):
        raise ValueError(f"{'32-bit integer' if mode == 'I' else 'floating-point'} pictures (mode {mode}) have no "
                         "known value range; save it as an 8- or 16-bit PNG or JPEG")
    with_alpha = "A" in picture.getbands() or (mode == "P" and "transparency" in picture.info)
    if with_alpha:
        rgba = np.asarray(picture.convert("RGBA"))
        return rgba[..., :3].astype(np.float32), rgba[..., 3].astype(np.float32) / 255.0
    return np.asarray(picture.convert("RGB")).astype(np.float32), None


def _open(path, field: str):
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise OptionError(field, str(path), "no such file")
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (UnidentifiedImageError, OSError) as e:
        raise OptionError(field, str(path), f"is not a picture Pillow can read ({e})") from None


def _refuse_transparency(alpha, opaque, field: str, shown):
    if alpha is not None and bool((alpha < opaque).any()):
        share = float((alpha < opaque).float().mean() if isinstance(alpha, torch.Tensor) else (alpha < opaque).mean())
        raise OptionError(field, shown, f"has transparent pixels ({share:.1%} of them); the models take RGB "
                                        "pictures, so flatten it onto the background you want first")


def to_rgb255(image, field: str = "image") -> torch.Tensor:
    """Any supported picture -> float32 ``[H, W, 3]`` with values in 0..255 (CPU).

    ``image``: a file path, a PIL image, or an array / tensor ``[H, W]``, ``[H, W, C]`` or ``[1, H, W, C]``
    (C = 1, 3 or 4): uint8 (0..255), uint16 (0..65535) or floats in 0..1 (ComfyUI's IMAGE). Problems raise
    :class:`~.checks.OptionError` naming ``field`` (TypeError for an object that is no picture at all).
    """
    return _to_rgb(image, field, 255.0)


def to_rgb01(image, field: str = "image") -> torch.Tensor:
    """:func:`to_rgb255`, but with values in 0..1: floats in 0..1 come back as they are (clamped, float32), integer
    pixels divided by their full scale (uint8 ``x / 255``, as diffusers' image processor reads PIL pictures)."""
    return _to_rgb(image, field, 1.0)


def _to_rgb(image, field: str, unit: float) -> torch.Tensor:
    shown = str(image) if isinstance(image, (str, os.PathLike)) else None
    if shown is not None:
        image = _open(image, field)
    if type(image).__module__.startswith("PIL"):
        try:
            rgb, alpha = rgb_and_alpha(image)
        except ValueError as e:
            raise OptionError(field, shown or f"<{image.mode} picture>", str(e)) from None
        _refuse_transparency(alpha, 1.0, field, shown or f"<{image.mode} picture>")
        return torch.from_numpy(rgb) if unit == 255.0 else torch.from_numpy(rgb / np.float32(255.0))
    if isinstance(image, np.ndarray):
        sixteen = image.dtype == np.uint16
        image = torch.from_numpy(np.ascontiguousarray(image.astype(np.int32) if sixteen else image))
    elif isinstance(image, torch.Tensor):
        sixteen = image.dtype == torch.uint16
        image = image.to(torch.int32) if sixteen else image
    else:
        raise TypeError(f"{field}: expected a tensor, array, PIL image or path, got {type(image).__name__}")
    shown = tuple(image.shape)
    if image.ndim == 4:
        if image.shape[0] != 1:
            raise OptionError(field, shown, f"expected one picture, got a batch of {image.shape[0]}")
        image = image[0]
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise OptionError(field, shown, "the shape must be [H, W, 3] (or [1, H, W, 3]) pixels")
    if image.dtype == torch.uint8:
        scale, full = 1.0, 255
    elif sixteen:
        scale, full = 257.0, 65535  # 65535 / 257 = 255
    elif image.is_floating_point():
        scale, full = None, 1.0
        if not bool(torch.isfinite(image).all()):
            raise OptionError(field, shown, "holds NaN or infinite values")
    else:
        raise OptionError(field, shown, f"unsupported dtype {image.dtype} (use uint8, uint16 or floats in 0..1)")
    if image.shape[-1] == 4:
        _refuse_transparency(image[..., 3], full, field, shown)
    image = image[..., :3] if image.shape[-1] != 1 else image.expand(-1, -1, 3)
    if scale is None:
        image = image.float().cpu().clamp(0.0, 1.0)
        return image * 255.0 if unit == 255.0 else image
    if unit != 255.0:
        return image.float().cpu() / float(full)
    return image.float().cpu() if scale == 1.0 else image.float().cpu() / scale
