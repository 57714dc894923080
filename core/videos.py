"""Clips in: the frames of a conditioning video, whatever form it comes in, as a list of single pictures.

A clip is one of:

* an array or tensor ``[F, H, W, C]`` (ComfyUI's IMAGE batch: floats in 0..1; or uint8 / uint16 pixels);
* a list or tuple of pictures (each anything :func:`~.images.to_rgb255` reads: PIL images, arrays, file paths);
* a folder of pictures (taken in the natural order of their names: ``frame2`` before ``frame10``);
* a video file, decoded with PyAV (``pip install av``; optional: without it a clear error says so).

The frames are not converted here (that is each model's recipe: sizes and filters differ): pictures read from
files come back as PIL images, array and tensor clips as views of their frames. Problems raise
:class:`~.checks.OptionError` naming ``field``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from .checks import OptionError

__all__ = ["PICTURE_SUFFIXES", "frames_of", "read_video_file"]

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def _natural_key(name: str):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _read_folder(folder: Path, field: str) -> list:
    from PIL import Image, UnidentifiedImageError

    files = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PICTURE_SUFFIXES),
                   key=lambda p: _natural_key(p.name))
    if not files:
        raise OptionError(field, str(folder), f"this folder holds no pictures ({', '.join(PICTURE_SUFFIXES)})")
    frames = []
    for path in files:
        try:
            with Image.open(path) as im:
                im.load()
                frames.append(im.copy())
        except (UnidentifiedImageError, OSError) as e:
            raise OptionError(field, str(path), f"is not a picture Pillow can read ({e})") from None
    return frames


def read_video_file(path, field: str = "video") -> list:
    """The frames of a video file as RGB PIL images (PyAV decodes it; its first video stream)."""
    try:
        import av
    except ImportError:
        raise OptionError(field, str(path), "reading a video file needs PyAV (pip install av); or give a folder of "
                                            "its frames as pictures") from None
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise OptionError(field, str(path), "has no video stream")
            frames = [frame.to_image() for frame in container.decode(video=0)]
    except av.error.FFmpegError as e:
        raise OptionError(field, str(path), f"is not a video PyAV can read ({e})") from None
    if not frames:
        raise OptionError(field, str(path), "has no frames")
    return frames


def frames_of(video, field: str = "video") -> list:
    """The frames of a clip (see the module's note), first to last; an empty clip is refused."""
    if isinstance(video, (str, os.PathLike)):
        path = Path(video)
        if path.is_dir():
            return _read_folder(path, field)
        if not path.is_file():
            raise OptionError(field, str(path), "no such file or folder")
        return read_video_file(path, field)
    if isinstance(video, (np.ndarray, torch.Tensor)):
        if video.ndim != 4:
            raise OptionError(field, tuple(video.shape), "a clip as one array must be [frames, H, W, C] pixels; give a "
                                                         "single picture as the image instead")
        frames = list(video)
    elif isinstance(video, (list, tuple)):
        frames = list(video)
    else:
        raise TypeError(f"{field}: expected frames [F, H, W, C], a list of pictures, a folder or a video file, got "
                        f"{type(video).__name__}")
    if not frames:
        raise OptionError(field, "[]" if isinstance(video, (list, tuple)) else tuple(video.shape), "holds no frames")
    return frames
