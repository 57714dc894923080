"""Guardrail graph nodes (category ``Guardrails``), for the Cosmos3 and the LTX-2.3 graphs alike.

Text Guardrail: wired between the prompt and the text encode node. It passes the prompt on unchanged
when :func:`..core.guardrails.check_prompt` allows it, and otherwise raises, so nothing downstream runs.
Blocklists and guard models come from ``models/guardrails``; nothing is downloaded.

Video Guardrail: pixelates the faces in IMAGE frames, as the Cosmos guardrail's face filter does. The detector is
chosen on the node: RetinaFace (the reference's detector) with a weight file from ``models/guardrails``, or
OpenCV's bundled Haar cascade, which needs no weights but OpenCV. The math lives in
:mod:`..core.guardrails.faces`, the network in :mod:`..core.guardrails.retinaface`.
"""

from __future__ import annotations

import os

import torch

from ..core.guardrails import PromptBlocked, check_prompt, faces
from ..core.guardrails.retinaface import WEIGHT_SUFFIXES, load_retinaface
from . import comfy

CATEGORY = "Guardrails"
MODEL_FOLDER = "guardrails"  # models/guardrails: blocklist folders, guard-model folders, nltk_data/

comfy.register_model_folder(MODEL_FOLDER)
DEFAULT_BLOCKLIST = "default (shipped)"
NO_GUARD_MODEL = "none"

_said: set[str] = set()  # notes already printed (what is skipped and how to add it), once per process


def _say_once(note: str) -> None:
    if note not in _said:
        _said.add(note)
        print(f"[guardrails] {note}")


def _blocklist_choices() -> list[str]:
    """Folders that are a blocklist (custom/, exact_match/) or hold one (blocklist/, the guardrail repository)."""
    found = []
    for marker in ("custom", "exact_match", "blocklist"):
        found += [n for n in comfy.checkpoint_folders(MODEL_FOLDER, marker=marker) if n not in found]
    return [DEFAULT_BLOCKLIST] + sorted(found)


def _guard_model_choices() -> list[str]:
    return [NO_GUARD_MODEL] + comfy.checkpoint_folders(MODEL_FOLDER, marker="config.json")


def _listed_or_absolute(field: str, value, choices: list[str]):
    if value is None or value in choices or (os.path.isabs(value) and os.path.isdir(value)):
        return True
    return f"{field}={value!r} is neither a folder in models/{MODEL_FOLDER} nor an existing absolute path"


class TextGuardrail:
    DESCRIPTION = ("Checks the prompt before it is encoded, as the Cosmos guardrail does: empty prompt, blocklist "
                   "(leetspeak-aware censor, lemmatised censor, exact and fuzzy matches), then optionally a guard "
                   "language model. An allowed prompt passes on unchanged; a blocked one stops the run with the "
                   "check that fired. A guard model that fails blocks (fail closed).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("prompt",)
    OUTPUT_TOOLTIPS = ("The same prompt, passed on only when every check allowed it: wire it into the text encode "
                       "node's prompt.",)
    FUNCTION = "check"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "prompt": ("STRING", {"multiline": True, "default": "",
                                      "tooltip": "The prompt to check (type it here, or wire a STRING in)."}),
                "blocklist": (_blocklist_choices(), {
                    "default": DEFAULT_BLOCKLIST,
                    "tooltip": "Word lists: the small list shipped with the pack, or a folder from models/guardrails "
                               "in the Cosmos guardrail's layout (custom/, whitelist/, exact_match/, nltk_data/)."}),
                "guard_model": (_guard_model_choices(), {
                    "default": NO_GUARD_MODEL,
                    "tooltip": "Optional guard language model folder from models/guardrails (e.g. Qwen3Guard-Gen-0.6B): "
                               "its 'Safety: Unsafe' verdict blocks; if it cannot load or run, the prompt is blocked."}),
                "device": (["default", "cpu"], {"default": "default",
                           "tooltip": "Where the guard model runs. default: ComfyUI's compute device."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, blocklist=None, guard_model=None):
        for field, value, choices in (("blocklist", blocklist, _blocklist_choices()),
                                      ("guard_model", guard_model, _guard_model_choices())):
            verdict = _listed_or_absolute(field, value, choices)
            if verdict is not True:
                return verdict
        return True

    def check(self, prompt, blocklist=DEFAULT_BLOCKLIST, guard_model=NO_GUARD_MODEL, device="default"):
        folder = None if blocklist == DEFAULT_BLOCKLIST else comfy.resolve_model_path(MODEL_FOLDER, blocklist)
        guard = None if guard_model == NO_GUARD_MODEL else comfy.resolve_model_path(MODEL_FOLDER, guard_model)
        nltk_data = [root / "nltk_data" for root in comfy.model_folder_paths(MODEL_FOLDER)]
        verdict = check_prompt(prompt, folder, guard, device=comfy.compute_device(device) if guard else None,
                               nltk_data=nltk_data)
        for note in verdict.notes:
            _say_once(note)
        if not verdict.allowed:
            raise PromptBlocked(verdict)
        return (prompt,)



# ---------------------------------------------------------------------------------------------- video
VIDEO_NODE = "Cosmos3LTX2VideoGuardrail"
RETINAFACE = "retinaface: "  # + a file of models/guardrails
HAAR = "opencv haar cascade (no weights)"
WEIGHTS_HINT = ("put the Cosmos guardrail's face_blur_filter/Resnet50_Final.pth (Hugging Face repository "
                "nvidia/Cosmos-1.0-Guardrail), or a safetensors copy of it, into ComfyUI/models/guardrails/")


def _detector_choices() -> list[str]:
    return [RETINAFACE + f for f in comfy.model_files(MODEL_FOLDER, WEIGHT_SUFFIXES)] + [HAAR]


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
            raise ImportError(f"{VIDEO_NODE}: detector={HAAR!r}: {e}. For the RetinaFace detector instead, {WEIGHTS_HINT}") from None
    if not choice.startswith(RETINAFACE):
        raise ValueError(f"{VIDEO_NODE}: detector={choice!r} is not one of {_detector_choices()}")
    path = comfy.resolve_model_path(MODEL_FOLDER, choice[len(RETINAFACE):])
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
            raise ValueError(f"{VIDEO_NODE}: images must be an IMAGE batch [frames, height, width, 3], got {list(images.shape)}")
        face_detector = make_detector(detector, comfy.compute_device())
        bar = comfy.progress_bar(images.shape[0])

        def on_batch(done, total):
            comfy.check_interrupt()
            bar.update_absolute(done, total)

        result = faces.pixelate_faces(images, face_detector, batch_size, on_batch)
        return (result.frames, result.changed)


NODE_CLASS_MAPPINGS = {"Cosmos3LTX2TextGuardrail": TextGuardrail, VIDEO_NODE: VideoGuardrail}
NODE_DISPLAY_NAME_MAPPINGS = {"Cosmos3LTX2TextGuardrail": "Text Guardrail",
                              VIDEO_NODE: "Video Guardrail (Face Pixelation)"}
