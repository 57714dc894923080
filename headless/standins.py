"""Stand-ins for the few ComfyUI core I/O nodes the shipped workflows use, for headless runs without ComfyUI.

These are NOT ComfyUI's nodes: they are small look-alikes with the same node ids, input names and types
(``LoadImage``, ``SaveImage``, ``CreateVideo``, ``SaveVideo``) so an API-format workflow made in ComfyUI
runs unchanged in a plain Python process. When ComfyUI is importable the runner prefers ComfyUI's own
classes (:func:`io_node_classes`).

Files are written through :mod:`.media` (atomically, so a failure never leaves a half-written file behind).
``SaveVideo`` writes MP4 (H.264, plus AAC audio when given) through PyAV when it is installed, otherwise an
animated WebP with a printed note.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from ..core.images import rgb_and_alpha
from ..nodes import comfy
from . import media

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")

_DIRS = {"input": None, "output": None}  # None: the current directory / ./output


def input_directory() -> Path:
    return Path(_DIRS["input"] or os.getcwd())


def output_directory() -> Path:
    return Path(_DIRS["output"] or os.path.join(os.getcwd(), "output"))


@contextlib.contextmanager
def directories(output_dir=None, input_dir=None):
    """Point the stand-ins at ``output_dir`` / ``input_dir`` for the duration of a run."""
    saved = dict(_DIRS)
    if output_dir is not None:
        _DIRS["output"] = os.path.abspath(output_dir)
    if input_dir is not None:
        _DIRS["input"] = os.path.abspath(input_dir)
    try:
        yield
    finally:
        _DIRS.update(saved)


@contextlib.contextmanager
def run_directories(output_dir=None, input_dir=None):
    """Point the I/O nodes of a run at its folders: the stand-ins, and ComfyUI's own when ComfyUI is loaded."""
    with comfy.run_folders(output_dir, input_dir), directories(output_dir, input_dir):
        yield


# ---------------------------------------------------------------------------------------------- helpers
def save_path(filename_prefix: str, extension: str, output_dir=None):
    """Next free ``<subfolder>/<name>_NNNNN_.<ext>`` for ``filename_prefix`` (ComfyUI's naming scheme).

    Returns ``(folder, name, counter, subfolder)``. The prefix may name a subfolder (``video/ComfyUI``) but
    may not leave the output folder.
    """
    root = Path(output_dir) if output_dir is not None else output_directory()
    root = root.resolve()
    prefix = filename_prefix.replace("\\", "/")
    subfolder, _, name = prefix.rpartition("/")
    folder = (root / subfolder).resolve()
    if folder != root and root not in folder.parents:
        raise ValueError(f"filename_prefix {filename_prefix!r} points outside the output folder {root}")
    name = name or "ComfyUI"
    folder.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(re.escape(name) + r"_(\d{5,})_")
    used = [int(m.group(1)) for f in os.listdir(folder) if (m := pattern.match(f))]
    return folder, name, max(used, default=0) + 1, subfolder


def _result(filename: str, subfolder: str) -> dict:
    return {"filename": filename, "subfolder": subfolder, "type": "output"}


# ---------------------------------------------------------------------------------------------- nodes
class LoadImage:
    """Stand-in for ComfyUI's ``LoadImage``: an image file from the input folder (or an absolute path).

    Returns IMAGE ``[frames, H, W, 3]`` float32 in 0..1 and MASK ``[frames, H, W]`` (1 - alpha; zeros when the
    file has no alpha). Every frame of an animated file of one size is loaded, like ComfyUI.
    """

    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"

    @classmethod
    def INPUT_TYPES(cls):
        folder = input_directory()
        try:
            files = sorted(f for f in os.listdir(folder)
                           if f.lower().endswith(IMAGE_EXTENSIONS) and (folder / f).is_file())
        except OSError:
            files = []
        return {"required": {"image": (files, {"image_upload": True})}}

    @staticmethod
    def resolve(image: str) -> Path:
        path = Path(image)
        return path if path.is_absolute() else input_directory() / path

    @classmethod
    def VALIDATE_INPUTS(cls, image):
        if not isinstance(image, str):
            return f"expects a file name, got {image!r}"
        path = cls.resolve(image)
        if not path.is_file():
            return f"image file {image!r} was not found (looked for {path})"
        return True

    def load_image(self, image):
        from PIL import Image, ImageOps, ImageSequence

        frames, masks = [], []
        with Image.open(self.resolve(image)) as img:
            for frame in ImageSequence.Iterator(img):
                frame = ImageOps.exif_transpose(frame)
                rgb, alpha = rgb_and_alpha(frame)  # 16-bit greyscale scaled, not clipped white
                if frames and rgb.shape[:2] != frames[0].shape[:2]:
                    break
                frames.append(rgb / 255.0)
                if "A" in frame.getbands():
                    masks.append(1.0 - alpha)
                else:
                    masks.append(np.zeros(frames[-1].shape[:2], dtype=np.float32))
        return torch.from_numpy(np.stack(frames)), torch.from_numpy(np.stack(masks))


class SaveImage:
    """Stand-in for ComfyUI's ``SaveImage``: one PNG per image, ``<prefix>_00001_.png``, prompt embedded."""

    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)  # ComfyUI 0.27's SaveImage passes its images on
    FUNCTION = "save_images"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def save_images(self, images, filename_prefix="ComfyUI", prompt=None, extra_pnginfo=None):
        text = {} if prompt is None else {"prompt": json.dumps(prompt)}
        text.update({key: json.dumps(value) for key, value in (extra_pnginfo or {}).items()})
        folder, name, counter, subfolder = save_path(filename_prefix, "png")
        results = []
        try:
            for pixels in media.to_uint8(images):
                file = f"{name}_{counter:05}_.png"
                media.write_image(pixels, folder / file, text=text, compress_level=4)
                results.append(_result(file, subfolder))
                counter += 1
        except BaseException:  # all of the batch or nothing
            for r in results:
                (folder / r["filename"]).unlink(missing_ok=True)
            raise
        return {"ui": {"images": results}, "result": (images,)}


class Video:
    """Stand-in for ComfyUI's VIDEO value: frames ``[T, H, W, C]`` in 0..1, a frame rate and optional AUDIO."""

    def __init__(self, images: torch.Tensor, frame_rate, audio=None):
        self.images, self.frame_rate, self.audio = images, Fraction(frame_rate).limit_denominator(1001), audio

    def get_components(self):
        return self

    def get_dimensions(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[1])

    def get_frame_count(self) -> int:
        return int(self.images.shape[0])

    def get_frame_rate(self) -> Fraction:
        return self.frame_rate

    def get_duration(self) -> float:
        return self.get_frame_count() / float(self.frame_rate)

    def save_to(self, path, format="auto", codec="auto", metadata=None) -> None:
        """Write MP4 (H.264 + AAC) with PyAV; raises ImportError without it."""
        media.write_mp4(media.to_uint8(self.images), path, self.frame_rate, audio=self.audio, metadata=metadata)


class CreateVideo:
    """Stand-in for ComfyUI's ``CreateVideo``: IMAGE frames + fps (+ optional AUDIO) -> VIDEO."""

    CATEGORY = "image/video"
    RETURN_TYPES = ("VIDEO",)
    FUNCTION = "create_video"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",),
                             "fps": ("FLOAT", {"default": 30.0, "min": 1.0, "max": 120.0, "step": 1.0})},
                "optional": {"audio": ("AUDIO",),
                             "bit_depth": ("INT", {"default": 8, "min": 8, "max": 10, "step": 2})}}

    def create_video(self, images, fps, audio=None, bit_depth=8):
        return (Video(images, fps, audio),)


class SaveVideo:
    """Stand-in for ComfyUI's ``SaveVideo``: MP4 through PyAV when installed, else an animated WebP."""

    CATEGORY = "image/video"
    RETURN_TYPES = ("VIDEO",)  # ComfyUI 0.27's SaveVideo passes its video on
    FUNCTION = "save_video"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"video": ("VIDEO",),
                             "filename_prefix": ("STRING", {"default": "video/ComfyUI"}),
                             "format": (["auto", "mp4"], {"default": "auto"}),
                             "codec": (["auto", "h264"], {"default": "auto"})},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def save_video(self, video, filename_prefix="video/ComfyUI", format="auto", codec="auto",
                   prompt=None, extra_pnginfo=None):
        use_av = media.have_av()
        ext = "mp4" if use_av else "webp"
        folder, name, counter, subfolder = save_path(filename_prefix, ext)
        file = f"{name}_{counter:05}_.{ext}"
        if use_av:
            metadata = dict(extra_pnginfo or {})
            if prompt is not None:
                metadata["prompt"] = prompt
            video.save_to(folder / file, format=format, codec=codec, metadata=metadata)
        else:
            parts = video.get_components()
            print(f"[standins] PyAV is not installed: writing {file} as animated WebP instead of MP4"
                  + (" (audio dropped)" if getattr(parts, "audio", None) is not None else ""))
            media.write_animation(media.to_uint8(parts.images), folder / file, parts.frame_rate, quality=90)
        return {"ui": {"images": [_result(file, subfolder)], "animated": [True]}, "result": (video,)}


STANDIN_CLASS_MAPPINGS = {"LoadImage": LoadImage, "SaveImage": SaveImage,
                          "CreateVideo": CreateVideo, "SaveVideo": SaveVideo}


def io_node_classes(use_comfyui: bool | None = None) -> dict:
    """The I/O node classes for a headless run: ComfyUI's when importable (``use_comfyui`` None = auto,
    True = required), otherwise the stand-ins of this module."""
    if use_comfyui is False:
        return dict(STANDIN_CLASS_MAPPINGS)
    classes = comfy.comfyui_io_classes()
    if classes is None:
        if use_comfyui:
            raise RuntimeError("ComfyUI's I/O nodes were requested but ComfyUI is not importable")
        return dict(STANDIN_CLASS_MAPPINGS)
    return classes
