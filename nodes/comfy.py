"""The one module of the pack that talks to ComfyUI.

Everything ComfyUI-specific the nodes need goes through here: progress bars, the interrupt check,
devices and model management, model folders, latent previews. Only public ComfyUI modules are used
(``comfy.utils``, ``comfy.model_management``, ``comfy.model_patcher``, ``folder_paths``,
``latent_preview``). When ComfyUI is not importable (tests, headless runs, scripts) every helper falls
back to plain-Python behaviour, so the nodes run the same everywhere.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
from torch import nn

try:  # ComfyUI present: the server or a script inside its environment
    import comfy.model_management as mm
    import comfy.model_patcher as model_patcher
    import comfy.utils as comfy_utils
    import folder_paths
except Exception:  # plain Python (or a ComfyUI that cannot start here, e.g. no GPU without --cpu)
    mm = model_patcher = comfy_utils = folder_paths = None

MODEL_FOLDER = "cosmos3"  # models/cosmos3: diffusers-format Cosmos3 checkpoint folders
GUARDRAILS_FOLDER = "guardrails"  # models/guardrails: guardrail weights (RetinaFace's Resnet50_Final.pth, ...)
EMBEDDED_CHECKPOINT = "cosmos3-tiny-random (embedded demo: noise)"
MODELS_DIR_ENV = "COSMOS3_LTX2_MODELS_DIR"  # where headless runs look for model folders without ComfyUI


def in_comfyui() -> bool:
    return mm is not None


# ---------------------------------------------------------------------------------------------- progress
class _NoProgress:
    """Progress outside ComfyUI: reported to the headless runner when one is running, else dropped."""

    def __init__(self, total: int):
        self.total, self.current = total, 0

    def update(self, n: int = 1) -> None:
        self.update_absolute(self.current + n)

    def update_absolute(self, value: int, total: int | None = None, preview=None) -> None:
        from .runner import report_progress

        self.current, self.total = value, total or self.total
        report_progress(self.current, self.total)


def progress_bar(total: int):
    """ComfyUI's progress bar (each update is also an interrupt check there), or a silent counter."""
    return comfy_utils.ProgressBar(total) if comfy_utils is not None else _NoProgress(total)


def check_interrupt() -> None:
    """Raise ComfyUI's interrupt exception if the user pressed Cancel (never swallowed by the pack)."""
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


def latent_preview_callback(patcher, steps: int):
    """ComfyUI's latent preview callback ``(step, x0, x, total)`` for this model, or None."""
    if patcher is None or mm is None:
        return None
    try:
        import latent_preview
    except ImportError:
        return None
    return latent_preview.prepare_callback(patcher, steps)


# ---------------------------------------------------------------------------------------------- devices
def compute_device(choice: str = "default") -> torch.device:
    if choice not in ("default", "", None):
        return torch.device(choice)
    if mm is not None:
        return mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device() -> torch.device:
    return mm.unet_offload_device() if mm is not None else torch.device("cpu")


def intermediate_device() -> torch.device:
    """Where outputs that travel between nodes live (CPU unless ComfyUI says otherwise)."""
    return mm.intermediate_device() if mm is not None else torch.device("cpu")


class ManagedModel(nn.Module):
    """A container ComfyUI's ModelPatcher can load, offload and unload like any of its own models."""

    def __init__(self, diffusion_model: nn.Module, latent_format=None):
        super().__init__()
        self.diffusion_model = diffusion_model
        self.latent_format = latent_format


def manage(module: nn.Module, device: torch.device, latent_format=None):
    """Hand ``module`` to ComfyUI's model management; returns the patcher (None without ComfyUI)."""
    if model_patcher is None:
        return None
    return model_patcher.ModelPatcher(ManagedModel(module, latent_format), load_device=device,
                                      offload_device=offload_device())


def load_to_device(patcher, module: nn.Module, device: torch.device) -> None:
    """Make sure the model is on its compute device before use (ComfyUI frees room for it first)."""
    if patcher is not None:
        mm.load_models_gpu([patcher])
    elif next(module.parameters()).device != device:
        module.to(device)


# ---------------------------------------------------------------------------------------------- folders
def register_model_folders() -> None:
    """Add ``models/cosmos3`` (diffusers-format checkpoint folders) and ``models/guardrails`` to ComfyUI's model folders."""
    if folder_paths is None:
        return
    for kind in (MODEL_FOLDER, GUARDRAILS_FOLDER):
        folder_paths.add_model_folder_path(kind, os.path.join(folder_paths.models_dir, kind))


def _search_roots(kind: str) -> list[Path]:
    if folder_paths is not None:
        try:
            return [Path(p) for p in folder_paths.get_folder_paths(kind)]
        except KeyError:
            return []
    base = os.environ.get(MODELS_DIR_ENV)
    return [Path(base) / kind] if base else []


def checkpoint_folders(kind: str = MODEL_FOLDER, marker: str = "model_index.json") -> list[str]:
    """Names of the checkpoint folders (holding ``marker``) directly inside the ``kind`` model folders."""
    names = []
    for root in _search_roots(kind):
        if root.is_dir():
            names += sorted(p.name for p in root.iterdir() if (p / marker).is_file())
    return names


def safetensors_files(kind: str) -> list[str]:
    """``.safetensors`` files of a ComfyUI model folder kind (e.g. ``diffusion_models``, ``vae``)."""
    return model_files(kind, (".safetensors",))


def model_files(kind: str, suffixes: tuple[str, ...]) -> list[str]:
    """Files ending in one of ``suffixes`` in a ComfyUI model folder kind, relative to their folder."""
    if folder_paths is not None:
        try:
            return [f for f in folder_paths.get_filename_list(kind) if f.endswith(suffixes)]
        except KeyError:
            return []
    names = []
    for root in _search_roots(kind):
        if root.is_dir():
            names += sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name.endswith(suffixes))
    return names


def resolve_model_path(kind: str, name: str) -> Path:
    """Full path of a folder or file listed by :func:`checkpoint_folders` / :func:`safetensors_files`.

    The embedded demo checkpoint resolves to its cache folder (written on first use; nothing is
    downloaded). An absolute path is taken as it is.
    """
    if name == EMBEDDED_CHECKPOINT:
        from ..cosmos3.tiny import default_checkpoint

        return default_checkpoint()
    if os.path.isabs(name):
        return Path(name)
    for root in _search_roots(kind):
        candidate = root / name
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{name!r} was not found in the {kind!r} model folders {[str(r) for r in _search_roots(kind)]}")


# ---------------------------------------------------------------------------------------------- headless runs
def comfyui_io_classes():
    """ComfyUI's own ``LoadImage``/``SaveImage``/``CreateVideo``/``SaveVideo``, or None without ComfyUI.

    ``CreateVideo``/``SaveVideo`` are V3 nodes in recent ComfyUI; the headless runner calls them through
    their V1 compatibility surface. Both video nodes come from one place so their VIDEO values match.
    """
    if mm is None:
        return None
    try:
        import nodes as comfy_nodes  # ComfyUI's base nodes (its top-level ``nodes`` module)
        from comfy_extras import nodes_video
    except Exception as e:  # noqa: BLE001 - a half-working ComfyUI install: the runner uses stand-ins
        print(f"[cosmos3-ltx2] ComfyUI's I/O nodes did not import ({type(e).__name__}: {e}); using stand-ins")
        return None
    return {"LoadImage": comfy_nodes.LoadImage, "SaveImage": comfy_nodes.SaveImage,
            "CreateVideo": nodes_video.CreateVideo, "SaveVideo": nodes_video.SaveVideo}


@contextlib.contextmanager
def run_folders(output_dir, input_dir):
    """Point ComfyUI's output/input folders at a headless run's folders (nothing to do without ComfyUI)."""
    if folder_paths is None or not hasattr(folder_paths, "set_output_directory"):
        yield
        return
    saved = folder_paths.get_output_directory(), folder_paths.get_input_directory()
    if output_dir is not None:
        folder_paths.set_output_directory(os.path.abspath(output_dir))
    if input_dir is not None:
        folder_paths.set_input_directory(os.path.abspath(input_dir))
    try:
        yield
    finally:
        folder_paths.set_output_directory(saved[0])
        folder_paths.set_input_directory(saved[1])


@contextlib.contextmanager
def progress_hook(report):
    """Route ComfyUI's progress bars to ``report(value, total, node_id)`` for the length of a headless run."""
    if comfy_utils is None or not hasattr(comfy_utils, "set_progress_bar_global_hook"):
        yield
        return
    previous = getattr(comfy_utils, "PROGRESS_BAR_HOOK", None)
    comfy_utils.set_progress_bar_global_hook(
        lambda value, total, preview=None, *args, node_id=None, **kw: report(value, total, node_id))
    try:
        yield
    finally:
        comfy_utils.set_progress_bar_global_hook(previous)
