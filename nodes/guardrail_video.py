"""Video guardrail node: pixelates the faces in IMAGE frames, as the Cosmos guardrail's face filter does.

The detector is chosen on the node: RetinaFace (the reference's detector) with a weight file from
``models/guardrails``, or OpenCV's bundled Haar cascade, which needs no weights but OpenCV. The math
lives in :mod:`..core.guardrails.faces`; the network in :mod:`..core.guardrails.retinaface`.
"""

from __future__ import annotations

import os

import torch

from ..core.guardrails import faces
from ..core.guardrails.retinaface import WEIGHT_SUFFIXES, load_retinaface
from . import comfy

CATEGORY = "Guardrails"
NODE = "VideoGuardrail"
RETINAFACE = "retinaface: "  # + a file of models/guardrails
HAAR = "opencv haar cascade (no weights)"
WEIGHTS_HINT = ("put the Cosmos guardrail's face_blur_filter/Resnet50_Final.pth (Hugging Face repository "
                "nvidia/Cosmos-1.0-Guardrail), or a safetensors copy of it, into ComfyUI/models/guardrails/")


def _detector_choices() -> list[str]:
    return [RETINAFACE + f for f in comfy.model_files(comfy.GUARDRAILS_FOLDER, WEIGHT_SUFFIXES)] + [HAAR]


class _NetworkCache:
    """The last RetinaFace loaded (weights stay in memory between runs; ComfyUI places them)."""

    key = None
    net = None
    patcher = None

    @classmethod
    def get(cls, path, device: torch.device):
        stat = os.stat(path)
        key = (str(path), stat.st_mtime_ns, stat.st_size, str(device))
        if cls.key != key:
            cls.key = None
            net = load_retinaface(path, comfy.offload_device() if comfy.in_comfyui() else device)
            cls.key, cls.net, cls.patcher = key, net, comfy.manage(net, device)
        comfy.load_to_device(cls.patcher, cls.net, device)
        return cls.net


def make_detector(choice: str, device: torch.device):
    """The face detector a ``detector`` value names (loading RetinaFace weights when needed)."""
    if choice == HAAR:
        try:
            return faces.HaarCascadeDetector()
        except ImportError as e:
            raise ImportError(f"{NODE}: detector={HAAR!r}: {e}. For the RetinaFace detector instead, {WEIGHTS_HINT}") from None
    if not choice.startswith(RETINAFACE):
        raise ValueError(f"{NODE}: detector={choice!r} is not one of {_detector_choices()}")
    path = comfy.resolve_model_path(comfy.GUARDRAILS_FOLDER, choice[len(RETINAFACE):])
    return faces.RetinaFaceDetector(_NetworkCache.get(path, device))


class VideoGuardrail:
    DESCRIPTION = ("Video guardrail of the Cosmos pipelines: finds faces in every frame and pixelates them (each "
                   "face reduced to a 5x5 block grid), with the reference's RetinaFace thresholds. Frames without "
                   "faces pass unchanged.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "BOOLEAN")
    RETURN_NAMES = ("images", "changed")
    OUTPUT_TOOLTIPS = ("The frames, faces pixelated; every pixel outside a face box is unchanged.",
                       "True when at least one face was pixelated.")
    FUNCTION = "filter"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Frames to check (e.g. the decoded video)."}),
                "detector": (_detector_choices(), {
                    "tooltip": "RetinaFace (ResNet-50), the reference's detector, with a weight file from "
                               "models/guardrails (Resnet50_Final.pth from nvidia/Cosmos-1.0-Guardrail, or a "
                               "safetensors copy); or OpenCV's bundled Haar cascade: no weights, frontal faces "
                               "only, misses more faces."}),
                "batch_size": ("INT", {"default": 4, "min": 1, "max": 256,
                                       "tooltip": "Frames detected at once (about 250 MB of GPU memory per 720p frame). 1 "
                                                  "reproduces the reference exactly; on a GPU larger batches "
                                                  "may move a box edge by a pixel."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, detector=None, batch_size=None):
        if detector is not None and detector not in _detector_choices():
            name = detector[len(RETINAFACE):] if detector.startswith(RETINAFACE) else ""
            if not (os.path.isabs(name) and os.path.isfile(name)):
                return f"detector={detector!r} is not available; choose one of {_detector_choices()}"
        if batch_size is not None and batch_size < 1:
            return f"batch_size={batch_size} must be at least 1"
        return True

    def filter(self, images, detector, batch_size=4):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"{NODE}: images must be an IMAGE batch [frames, height, width, 3], got {list(images.shape)}")
        face_detector = make_detector(detector, comfy.compute_device())
        bar = comfy.progress_bar(images.shape[0])

        def on_batch(done, total):
            comfy.check_interrupt()
            bar.update_absolute(done, total)

        result = faces.pixelate_faces(images, face_detector, batch_size, on_batch)
        return (result.frames, result.changed)


NODE_CLASS_MAPPINGS = {NODE: VideoGuardrail}
NODE_DISPLAY_NAME_MAPPINGS = {NODE: "Video Guardrail (Face Pixelation)"}
