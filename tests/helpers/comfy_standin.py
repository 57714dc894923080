"""A small STAND-IN for the three ComfyUI modules the pack touches (plus folder_paths and latent_preview).

This is not ComfyUI: it records what the pack asks of ComfyUI's public helpers, so the tests can check
the ComfyUI path (progress, interrupt, model management, model folders, previews) without a server.
"""

from __future__ import annotations

import importlib
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import torch


class InterruptProcessingException(BaseException):  # ComfyUI's derives from BaseException too
    pass


class Recorder:
    def __init__(self, models_dir: str):
        self.progress: list[tuple] = []
        self.loaded: list = []
        self.patchers: list = []
        self.folders: dict[str, list[str]] = {}
        self.previews: list[int] = []
        self.preview_shapes: list[tuple] = []
        self.interrupt_after_checks: int | None = None
        self.checks = 0
        self.models_dir = models_dir

    def build(self) -> dict[str, types.ModuleType]:
        rec = self
        comfy = types.ModuleType("comfy")
        utils = types.ModuleType("comfy.utils")
        mm = types.ModuleType("comfy.model_management")
        patcher_mod = types.ModuleType("comfy.model_patcher")
        folder_paths = types.ModuleType("folder_paths")
        latent_preview = types.ModuleType("latent_preview")

        def throw_if_interrupted():
            rec.checks += 1
            if rec.interrupt_after_checks is not None and rec.checks > rec.interrupt_after_checks:
                raise InterruptProcessingException()

        class ProgressBar:
            def __init__(self, total, node_id=None):
                self.total, self.current = total, 0
                rec.progress.append(("new", total))

            def update(self, n):
                throw_if_interrupted()  # ComfyUI's progress hook checks the interrupt flag too
                self.current += n
                rec.progress.append(("update", self.current, self.total))

            def update_absolute(self, value, total=None, preview=None):
                self.update(value - self.current)

        class ModelPatcher:
            def __init__(self, model, load_device, offload_device):
                self.model, self.load_device, self.offload_device = model, load_device, offload_device
                rec.patchers.append(self)

        def load_models_gpu(patchers, memory_required=0):
            for p in patchers:
                rec.loaded.append(p)
                p.model.to(p.load_device)

        def prepare_callback(patcher, steps, x0_output_dict=None):
            # Like ComfyUI's: the callback owns a progress bar and sends the preview with each update; the
            # preview maps the first latent frame of x0 to RGB with the format's factors (Latent2RGB).
            fmt = patcher.model.latent_format
            assert fmt.latent_channels == 48 and len(fmt.latent_rgb_factors) == 48
            factors = torch.tensor(fmt.latent_rgb_factors).T
            bias = torch.tensor(fmt.latent_rgb_factors_bias)
            bar = ProgressBar(steps)

            def callback(step, x0, x, total_steps):
                assert x0.shape == x.shape and total_steps == steps
                rgb = torch.nn.functional.linear(x0[0, :, 0].movedim(0, -1).float(), factors, bias)
                rec.previews.append(step)
                rec.preview_shapes.append(tuple(rgb.shape))
                bar.update_absolute(step + 1, total_steps)

            return callback

        def add_model_folder_path(name, path, is_default=False):
            rec.folders.setdefault(name, []).append(path)

        def get_folder_paths(name):
            return list(rec.folders[name])

        def get_filename_list(name):  # like ComfyUI: files below each folder, relative, sorted
            if name not in rec.folders:
                raise KeyError(name)
            found = set()
            for root in map(Path, rec.folders[name]):
                if root.is_dir():
                    found.update(str(f.relative_to(root)) for f in root.rglob("*") if f.is_file())
            return sorted(found)

        utils.ProgressBar = ProgressBar
        mm.InterruptProcessingException = InterruptProcessingException
        mm.throw_exception_if_processing_interrupted = throw_if_interrupted
        mm.get_torch_device = lambda: torch.device("cpu")
        mm.unet_offload_device = lambda: torch.device("cpu")
        mm.intermediate_device = lambda: torch.device("cpu")
        mm.load_models_gpu = load_models_gpu
        patcher_mod.ModelPatcher = ModelPatcher
        folder_paths.models_dir = self.models_dir
        folder_paths.add_model_folder_path = add_model_folder_path
        folder_paths.get_folder_paths = get_folder_paths
        folder_paths.get_filename_list = get_filename_list
        latent_preview.prepare_callback = prepare_callback
        comfy.utils, comfy.model_management, comfy.model_patcher = utils, mm, patcher_mod
        return {"comfy": comfy, "comfy.utils": utils, "comfy.model_management": mm,
                "comfy.model_patcher": patcher_mod, "folder_paths": folder_paths, "latent_preview": latent_preview}


@contextmanager
def comfyui_standin(models_dir: str):
    """Install the stand-in modules, reload the pack's ComfyUI glue against them, undo on exit."""
    rec = Recorder(models_dir)
    modules = rec.build()
    saved = {k: sys.modules.get(k) for k in modules}
    sys.modules.update(modules)
    glue = importlib.import_module("comfyui_cosmos3_ltx2.nodes.comfy")
    node_modules = [importlib.import_module(f"comfyui_cosmos3_ltx2.nodes.{m}") for m in ("cosmos3", "guardrails")]
    try:
        importlib.reload(glue)
        for module in node_modules:  # as importing the nodes does inside ComfyUI
            glue.register_model_folder(module.MODEL_FOLDER)
        yield rec
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
        importlib.reload(glue)
