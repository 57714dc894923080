"""The one module of the pack that talks to ComfyUI.

Everything ComfyUI-specific the nodes need goes through here: progress bars, the interrupt check,
devices and model management, model folders, latent previews, and the few hooks a headless run needs
(ComfyUI's I/O node classes, its input/output folders, its progress hook). Only public ComfyUI modules are
used (``comfy.utils``, ``comfy.model_management``, ``comfy.model_patcher``, ``folder_paths``,
``latent_preview``, and ``nodes``/``comfy_extras.nodes_video`` for the I/O nodes). When ComfyUI is not
importable (tests, headless runs, scripts) every helper falls back to plain-Python behaviour, so the nodes
run the same everywhere.

This module knows no model and imports nothing of the pack: a model's nodes register their model folder
(:func:`register_model_folder`), and a headless run registers where progress goes (:func:`progress_hook`).
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
try:  # ComfyUI's sampler stack, for our SAMPLER / GUIDER on its own models
    import comfy.samplers as comfy_samplers
except Exception:
    comfy_samplers = None

MODELS_DIR_ENV = "COSMOS3_LTX2_MODELS_DIR"  # where headless runs look for model folders without ComfyUI


def in_comfyui() -> bool:
    return mm is not None


def attention_backend() -> str:
    """The attention ComfyUI was started with (``--use-sage-attention`` / ``--use-flash-attention``; its
    model_management helpers), as a :mod:`..core.attention` backend name; ``"sdpa"`` otherwise and outside ComfyUI."""
    if mm is None:
        return "sdpa"
    if getattr(mm, "sage_attention_enabled", lambda: False)():
        return "sage"
    if getattr(mm, "flash_attention_enabled", lambda: False)():
        return "flash"
    return "sdpa"


# ---------------------------------------------------------------------------------------------- progress
_progress_sink = None  # report(value, total, node_id) of the headless run under way (progress_hook), or None


class _NoProgress:
    """Progress outside ComfyUI: reported to the headless run's sink when one is running, else dropped."""

    def __init__(self, total: int):
        self.total, self.current = total, 0

    def update(self, n: int = 1) -> None:
        self.update_absolute(self.current + n)

    def update_absolute(self, value: int, total: int | None = None, preview=None) -> None:
        self.current, self.total = value, total or self.total
        if _progress_sink is not None:
            _progress_sink(self.current, self.total, None)


def progress_bar(total: int):
    """ComfyUI's progress bar (each update is also an interrupt check there), or a silent counter."""
    return comfy_utils.ProgressBar(total) if comfy_utils is not None else _NoProgress(total)


def check_interrupt() -> None:
    """Raise ComfyUI's interrupt exception if the user pressed Cancel (never swallowed by the pack)."""
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


def comfyui_latent_format(name: str):
    """An instance of ComfyUI's own latent format ``comfy.latent_formats.<name>`` (e.g. ``"Wan22"``), so that
    its previewer (Latent2RGB factors, a tiny preview decoder in ``models/vae_approx``) treats a model of ours
    as one of its own; None without ComfyUI or when this ComfyUI lacks it."""
    try:
        import comfy.latent_formats as formats

        return getattr(formats, name)()
    except Exception:  # noqa: BLE001 - no ComfyUI, or one without that format
        return None


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


# The model loaders' block-offload input (the same for both models).
OFFLOAD_BLOCKS_INPUT = ("INT", {"default": 0, "min": -1, "max": 1000, "tooltip":
                        "Transformer blocks kept in system memory and streamed to the GPU one at a time as they run "
                        "(the next one copied while the current one computes): for a model larger than the GPU. 0 = "
                        "all on the GPU; -1 = as many as the GPU's free memory requires when the model loads (a "
                        "quarter of it is left to activations). The output is the same; each streamed block costs a "
                        "transfer per step."})


def free_memory(device: torch.device) -> int | None:
    """Free bytes on ``device`` as ComfyUI counts them (its cache included); None outside ComfyUI or for the CPU."""
    if mm is None or torch.device(device).type == "cpu":
        return None
    return int(mm.get_free_memory(device))


def load_for_node(node: str, inputs: str, device: str, load, *, on_host: bool = False):
    """A loader node's body: ``(compute device, load(where))``. ``where`` is the compute device, or ComfyUI's offload
    device inside ComfyUI (its model management moves the model when a node needs it) or when ``on_host`` (block
    offload places the model itself). A file or folder that does not load becomes one error naming the node and the
    inputs it concerns."""
    dev = compute_device(device)
    where = offload_device() if in_comfyui() or on_host else dev
    try:
        return dev, load(where)
    except (ValueError, OSError, ImportError) as e:  # the pack's CheckpointError is a ValueError
        raise ValueError(f"{node} ({inputs}): {e}") from e


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


def unload(patcher, module: nn.Module) -> None:
    """Take a model off its compute device once it is no longer needed (a text encoder after encoding):
    through ComfyUI's model management when it manages the model, else by moving it to the CPU."""
    if patcher is not None:
        if hasattr(mm, "unload_model_and_clones"):
            mm.unload_model_and_clones(patcher)
        return
    first = next(module.parameters(), None)
    if first is not None and first.device.type != "cpu":
        module.to("cpu")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------- folders
def register_model_folder(name: str) -> None:
    """Add ``models/<name>`` to ComfyUI's model folders (a model's own folder kind, e.g. checkpoint folders), and
    create it when missing."""
    if folder_paths is None:
        return
    folder = os.path.join(folder_paths.models_dir, name)
    folder_paths.add_model_folder_path(name, folder)
    with contextlib.suppress(OSError):  # made empty, as ComfyUI makes its own, so users see where files go
        os.makedirs(folder, exist_ok=True)


def _search_roots(kind: str) -> list[Path]:
    if folder_paths is not None:
        try:
            return [Path(p) for p in folder_paths.get_folder_paths(kind)]
        except KeyError:
            return []
    base = os.environ.get(MODELS_DIR_ENV)
    return [Path(base) / kind] if base else []


def model_folder_paths(kind: str) -> list[Path]:
    """The folders of a model folder kind (ComfyUI's, or ``$COSMOS3_LTX2_MODELS_DIR/<kind>`` without it)."""
    return _search_roots(kind)


def checkpoint_folders(kind: str, marker: str = "model_index.json") -> list[str]:
    """Names of the folders holding ``marker`` (a file or folder) directly inside the ``kind`` model folders."""
    names = []
    for root in _search_roots(kind):
        if root.is_dir():
            names += sorted(p.name for p in root.iterdir() if p.is_dir() and (p / marker).exists())
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


def check_choice(field: str, value, choices: list[str]):
    """A loader's ``VALIDATE_INPUTS`` answer: True for a listed name, or an absolute path that exists (scripts and
    the API may name files directly), else the message."""
    if value is None or value in choices or (os.path.isabs(value) and os.path.exists(value)):
        return True
    return f"{field}={value!r} is neither in the model folders nor an existing absolute path"


def resolve_model_path(kind: str, name: str) -> Path:
    """Full path of a folder or file listed by :func:`checkpoint_folders` / :func:`safetensors_files`.

    An absolute path is taken as it is.
    """
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
    """Route all progress to ``report(value, total, node_id)`` for the length of a headless run: ComfyUI's
    progress bars when ComfyUI is loaded, the plain counters of :func:`progress_bar` otherwise.

    This is how a headless runner registers itself; the bridge never imports it.
    """
    global _progress_sink
    previous_sink, _progress_sink = _progress_sink, report
    hooked = comfy_utils is not None and hasattr(comfy_utils, "set_progress_bar_global_hook")
    if hooked:
        previous = getattr(comfy_utils, "PROGRESS_BAR_HOOK", None)
        comfy_utils.set_progress_bar_global_hook(
            lambda value, total, preview=None, *args, node_id=None, **kw: report(value, total, node_id))
    try:
        yield
    finally:
        _progress_sink = previous_sink
        if hooked:
            comfy_utils.set_progress_bar_global_hook(previous)


# ---------------------------------------------------------------------------------------------- ComfyUI's own models
# Our samplers and guiders on ComfyUI's own MODEL, through its public sampler surfaces: a SAMPLER is a
# ``comfy.samplers.KSAMPLER`` around a k-diffusion-style function, a GUIDER a ``comfy.samplers.CFGGuider``
# whose prediction is ours, and per-pass model switches travel in ``transformer_options``.
class PlainSampler:
    """What :func:`ksampler` returns without ComfyUI: the function and its options, for scripts and tests."""

    def __init__(self, function, options: dict):
        self.sampler_function, self.extra_options = function, options


def ksampler(function, options: dict | None = None):
    """A ComfyUI SAMPLER running ``function(model, x, sigmas, extra_args, callback, disable, **options)``."""
    if comfy_samplers is None:
        return PlainSampler(function, dict(options or {}))
    return comfy_samplers.KSAMPLER(function, extra_options=dict(options or {}))


def _require_comfyui(what: str) -> None:
    if comfy_samplers is None:
        raise RuntimeError(f"{what} works on ComfyUI's own models and needs a running ComfyUI")


def patch_forward(model, name: str, make_forward):
    """A clone of the ModelPatcher ``model`` whose sub-module ``name`` (e.g.
    ``"diffusion_model.transformer_blocks.3.attn1"``) runs ``make_forward(module)`` in place of its forward
    (an object patch: ComfyUI applies it when it loads the model and takes it off when it unloads)."""
    _require_comfyui("patch_forward")
    try:
        module = model.get_model_object(name)
    except AttributeError:
        raise ValueError(f"this model has no {name!r}") from None
    patched = model.clone()
    patched.add_object_patch(name + ".forward", make_forward(module))
    return patched


def guider(model, conds: dict, predict):
    """A ComfyUI GUIDER over ``model`` and ``conds`` (name -> CONDITIONING) whose denoised prediction is
    ``predict(run, x, latent_shapes)``.

    ``run(names, **switches)`` evaluates the model on the packed sample ``x`` once per named conditioning (one
    batched call, as ComfyUI batches conditionings), with ``switches`` added to the model's
    ``transformer_options`` for that call, and returns one denoised tensor per name. ``latent_shapes`` is the
    list of shapes packed into ``x`` (video then audio for an audio+video model) or None for a single latent.
    """
    _require_comfyui("guider")
    g = _PassGuider(model, predict)
    g.inner_set_conds(conds)
    return g


if comfy_samplers is not None:
    class _PassGuider(comfy_samplers.CFGGuider):
        def __init__(self, model_patcher, predict):
            super().__init__(model_patcher)
            self.predict = predict

        def predict_noise(self, x, timestep, model_options={}, seed=None):  # noqa: B006 - ComfyUI's signature
            def run(names, **switches):
                options = model_options
                if switches:
                    options = model_patcher.create_model_options_clone(model_options)
                    options.setdefault("transformer_options", {}).update(switches)
                conds = [self.conds.get(n) for n in names]
                return comfy_samplers.calc_cond_batch(self.inner_model, conds, x, timestep, options)

            return self.predict(run, x, _latent_shapes(self.conds))

    def _latent_shapes(conds: dict):
        """The shapes ComfyUI packed into the sample (its ``latent_shapes`` model condition), or None."""
        for entries in conds.values():
            for entry in entries or ():
                shapes = entry.get("model_conds", {}).get("latent_shapes")
                if shapes is not None:
                    return list(shapes.cond)
        return None
