"""Conditioning images for LTX-2: any picture -> the video VAE's normalised one-frame latent.

The official preparation (ltx-pipelines ``load_image_conditioning``), step by step:

1. the picture as RGB values 0..255 (alpha dropped);
2. optional H.264 round trip of that one frame at constant rate factor ``crf`` (libx264, preset
   "veryfast", yuv420p, odd sizes cropped to even; 33 in the official pipelines, 0 = skip). The model was
   trained on compressed video, and a slightly compressed first frame moves more; needs PyAV;
3. scale to cover the target size (bilinear, aspect kept, sizes rounded up), centre crop;
4. ``value / 127.5 - 1`` -> [1, 3, 1, H, W];
5. VAE encode (posterior mean) and normalise with the VAE's per-channel statistics (:func:`encode_image`).

Pictures come as ComfyUI IMAGE tensors ([H, W, 3] or [1, H, W, 3], float in [0, 1]), uint8 tensors or
arrays, PIL images or file paths.
"""

from __future__ import annotations

import math
from io import BytesIO

import numpy as np
import torch
import torch.nn.functional as F

from ..core.images import to_rgb255

__all__ = ["DEFAULT_IMAGE_CRF", "conditioning_pixels", "encode_image", "h264_round_trip", "prepare_image",
           "resize_and_center_crop", "source_rgb", "to_rgb255"]

DEFAULT_IMAGE_CRF = 33


def h264_round_trip(rgb255: torch.Tensor, crf: float) -> torch.Tensor:
    """Encode one frame with libx264 at ``crf`` and decode it again (odd sizes cropped to even)."""
    try:
        import av
    except ImportError:
        raise ImportError("image_crf > 0 compresses the conditioning image with H.264 as the official pipelines "
                          "do, which needs PyAV (`pip install av`); pass image_crf=0 to skip it") from None
    frame = rgb255.round().clamp(0, 255).to(torch.uint8).numpy()
    h, w = frame.shape[0] // 2 * 2, frame.shape[1] // 2 * 2
    frame = np.ascontiguousarray(frame[:h, :w])
    buf = BytesIO()
    out = av.open(buf, "w", format="mp4")
    try:
        stream = out.add_stream("libx264", rate=1, options={"crf": str(crf), "preset": "veryfast"})
        stream.height, stream.width = h, w
        out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")))
        out.mux(stream.encode())
    finally:
        out.close()
    src = av.open(BytesIO(buf.getvalue()))
    try:
        decoded = next(src.decode(next(s for s in src.streams if s.type == "video")))
        back = decoded.to_ndarray(format="rgb24")
    finally:
        src.close()
    return torch.from_numpy(back).float()


def resize_and_center_crop(rgb255: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[H, W, 3] -> [1, 3, 1, height, width]: bilinear scale to cover (sizes rounded up), centre crop."""
    x = rgb255.permute(2, 0, 1)[None].float()
    src_h, src_w = x.shape[-2:]
    scale = max(height / src_h, width / src_w)
    new_h, new_w = math.ceil(src_h * scale), math.ceil(src_w * scale)
    x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return x[:, :, top : top + height, left : left + width].unsqueeze(2)


def source_rgb(image, crf: float = DEFAULT_IMAGE_CRF) -> torch.Tensor:
    """Steps 1-2, the part that does not depend on the target size: a picture -> float32 [H, W, 3] in
    0..255, after the H.264 round trip when ``crf > 0``. Prepare once, size with :func:`conditioning_pixels`."""
    if crf < 0:
        raise ValueError(f"image_crf must be >= 0 (0 = no compression), got {crf!r}")
    rgb = to_rgb255(image)
    return h264_round_trip(rgb, crf) if crf > 0 else rgb


def conditioning_pixels(rgb255: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Steps 3-4: [H, W, 3] in 0..255 -> float32 [1, 3, 1, height, width] in [-1, 1]."""
    return resize_and_center_crop(rgb255, height, width) / 127.5 - 1.0


def prepare_image(image, height: int, width: int, crf: float = DEFAULT_IMAGE_CRF) -> torch.Tensor:
    """A picture -> float32 [1, 3, 1, height, width] in [-1, 1], ready for the VAE encoder."""
    return conditioning_pixels(source_rgb(image, crf), height, width)


@torch.no_grad()
def encode_image(video_vae, pixels: torch.Tensor) -> torch.Tensor:
    """[1, 3, 1, H, W] in [-1, 1] -> the diffusion model's (normalised) latent [1, C, 1, H/32, W/32], float32."""
    z = video_vae.encode(pixels.to(device=video_vae.device, dtype=video_vae.dtype))
    return video_vae.normalize_latents(z.float())
