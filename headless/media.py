"""Writing frames and sound to files: PNG (and other stills), animated WebP / GIF, MP4, WAV.

The one place that knows the file formats, used by the stand-ins of ComfyUI's I/O nodes and by the command
line alike. Frames are ComfyUI ``IMAGE`` values, ``[T, H, W, C]`` floats in 0..1 (C = 3, or 4 with alpha);
:func:`to_uint8` turns them into the 8-bit pixels every writer takes. Sound is ``[channels, samples]`` floats
in -1..1. Every writer is atomic: it writes a hidden temporary file beside the target and renames it only
once the file is complete, so a failure never leaves a half-written file.

MP4 (H.264, plus AAC sound) needs PyAV (``pip install av``); everything else needs only Pillow and the
standard library.
"""

from __future__ import annotations

import contextlib
import json
import os
import wave
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from ..core.checks import OptionError, require_finite

STILL_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
CLIP_SUFFIXES = (".webp", ".gif")


def have_av() -> bool:
    """Whether PyAV (MP4 writing) is installed."""
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``[T, H, W, C]`` (or one ``[H, W, C]``) floats in 0..1 -> uint8 numpy ``[T, H, W, C]``.

    Frames holding NaN or infinities raise :class:`~..core.checks.NonFiniteError` (they would be written black)."""
    x = require_finite(images.detach().to("cpu", torch.float32), "the frames to write")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    return x.clamp(0, 1).mul(255).round().to(torch.uint8).numpy()


@contextlib.contextmanager
def atomic(path: Path):
    """Yield a hidden temporary path next to ``path``; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _format(path: Path) -> str:
    from PIL import Image

    suffix = path.suffix.lower()
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None:
        raise ValueError(f"{path}: unknown image format {suffix!r}")
    return fmt


def write_image(pixels: np.ndarray, path, *, text: dict[str, str] | None = None,
                compress_level: int | None = None) -> Path:
    """One frame ``[H, W, C]`` uint8 as a still image, its format from the suffix (.png, .jpg, .webp, ...).

    ``text``: PNG text chunks; ``compress_level``: PNG's zlib level (Pillow's default when None).
    """
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    path = Path(path)
    options = {}
    if text is not None:
        info = PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
        options["pnginfo"] = info
    if compress_level is not None:
        options["compress_level"] = compress_level
    with atomic(path) as tmp:
        Image.fromarray(pixels).save(tmp, format=_format(path), **options)
    return path


def write_animation(pixels: np.ndarray, path, fps: float, *, lossless: bool = False,
                    quality: int | None = None) -> Path:
    """Frames ``[T, H, W, C]`` uint8 as an animated WebP (lossy at ``quality``, or ``lossless``) or GIF."""
    from PIL import Image

    path = Path(path)
    options = {"lossless": True} if lossless else {}
    if quality is not None:
        options["quality"] = quality
    images = [Image.fromarray(p) for p in pixels]
    with atomic(path) as tmp:
        images[0].save(tmp, format=_format(path), save_all=True, append_images=images[1:],
                       duration=max(1, int(round(1000 / float(fps)))), loop=0, **options)
    return path


def write_mp4(pixels: np.ndarray, path, fps, *, audio: dict | None = None, metadata: dict | None = None) -> Path:
    """Frames ``[T, H, W, C]`` uint8 as H.264 MP4 (CRF 19, yuv420p) with PyAV; ``audio`` (ComfyUI's AUDIO dict,
    first item of the batch, up to two channels) as AAC; ``metadata`` as container tags (JSON unless a string).

    Raises ImportError without PyAV.
    """
    import av

    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    pixels = pixels[..., :3]
    # yuv420p needs even sizes: repeat the last row / column when odd.
    h, w = pixels.shape[1:3]
    pixels = np.pad(pixels, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    options = {"movflags": "use_metadata_tags"} if metadata else {}
    with atomic(path) as tmp, av.open(str(tmp), mode="w", format="mp4", options=options) as container:
        for key, value in (metadata or {}).items():
            container.metadata[key] = value if isinstance(value, str) else json.dumps(value)
        stream = container.add_stream("h264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = pixels.shape[2], pixels.shape[1], "yuv420p"
        stream.options = {"crf": "19"}
        audio_stream = waveform = None
        if audio is not None:
            waveform = audio["waveform"][0].detach().to("cpu", torch.float32).numpy()  # [C, T]
            layout = "mono" if waveform.shape[0] == 1 else "stereo"
            waveform = waveform[:2]
            audio_stream = container.add_stream("aac", rate=int(audio["sample_rate"]), layout=layout)
        for frame in pixels:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio_stream is not None:
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(waveform), format="fltp",
                                               layout=audio_stream.layout.name)
            frame.sample_rate = int(audio["sample_rate"])
            for packet in audio_stream.encode(frame):
                container.mux(packet)
            for packet in audio_stream.encode():
                container.mux(packet)
    return path


def write_wav(waveform: torch.Tensor, sample_rate: int, path) -> Path:
    """``[channels, samples]`` floats in -1..1 as 16-bit PCM WAV."""
    path = Path(path)
    pcm = (waveform.clamp(-1, 1).mul(32767).round().to("cpu").numpy().astype(np.int16)).T  # [samples, channels]
    with atomic(path) as tmp, wave.open(str(tmp), "wb") as w:
        w.setnchannels(pcm.shape[1])
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(np.ascontiguousarray(pcm).tobytes())
    return path


def check_output(path, num_frames: int, sound: bool = False) -> Path:
    """Whether :func:`write_frames` can write ``num_frames`` frames (and a sound track) to ``path``; checked before
    any work, so a run never ends on a file it cannot write. Raises :class:`~..core.checks.OptionError` (field
    ``output``): a suffix that cannot hold the frames, MP4 without PyAV, a path that is a folder, or a folder that
    cannot be made or written (missing folders are made when writing)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        if not have_av():
            raise OptionError("output", str(path), "MP4 needs PyAV (pip install av); or write .webp"
                                                   + (" (the sound goes into a .wav beside it)" if sound else ""))
    elif not (suffix in CLIP_SUFFIXES or (num_frames == 1 and suffix in STILL_SUFFIXES)):
        kinds = ".png/.jpg/.webp for one frame, " if num_frames == 1 else ""
        raise OptionError("output", str(path), f"unknown kind of file {suffix or '(no suffix)'!r}; use {kinds}"
                                               ".webp, .gif or .mp4 for a clip")
    if path.is_dir():
        raise OptionError("output", str(path), "is a folder; give a file name")
    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise OptionError("output", str(path), f"{folder} is a file, so no folder can be made there")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OptionError("output", str(path), f"cannot write into {folder} (no permission)")
    return path


def write_frames(frames: torch.Tensor, path, fps: float, sound: tuple | None = None) -> list[Path]:
    """The command line's writer: frames (and ``sound = (waveform, sample_rate)``) to ``path`` by its suffix.

    ``.mp4``: H.264 (+ AAC) with PyAV. Otherwise one frame as a still (.png/.jpg/.webp) or a clip as a lossless
    animated WebP or a GIF, with the sound as a ``.wav`` beside it. Returns the files written; a path that
    :func:`check_output` refuses raises its OptionError, and frames that are not finite a NonFiniteError
    (nothing written either way).
    """
    pixels = to_uint8(frames)
    path = check_output(path, len(pixels), sound is not None)
    suffix = path.suffix.lower()
    if sound is not None:
        require_finite(sound[0], "the sound to write")
    if suffix == ".mp4":
        audio = None if sound is None else {"waveform": sound[0][None], "sample_rate": sound[1]}
        return [write_mp4(pixels, path, fps, audio=audio)]
    if len(pixels) == 1 and suffix in STILL_SUFFIXES:
        written = [write_image(pixels[0], path)]
    else:
        written = [write_animation(pixels, path, fps, lossless=suffix == ".webp")]
    if sound is not None:
        written.append(write_wav(sound[0], sound[1], path.with_suffix(".wav")))
    return written
