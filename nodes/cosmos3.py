"""Cosmos3 graph nodes: thin adapters from ComfyUI types to the Cosmos3 pipeline stages.

Each node converts its inputs, calls one function of :mod:`..cosmos3.pipeline` (or the loader), and
converts back. Anything ComfyUI-specific goes through :mod:`.comfy`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch

from ..core.checkpoint import CheckpointError, read_config
from ..core.weight_storage import store_linear_weights
from ..cosmos3 import pipeline as P
from ..cosmos3.loader import (
    load_transformer,
    load_vae,
    read_model_index,
    read_scheduler_config,
)
from ..cosmos3.preview import Cosmos3LatentFormat
from ..cosmos3.prompt import PromptOptions, load_tokenizer
from . import comfy

CATEGORY = "Cosmos3"
MAX_RESOLUTION = 8192
WEIGHT_DTYPES = ["bf16", "fp16", "fp32", "fp8_e4m3fn"]
SAMPLERS = ["auto", "uni_pc_bh2", "uni_pc_bh1", "euler"]
FROM_CHECKPOINT = "(from the checkpoint folder)"
MODEL_FOLDER = "cosmos3"  # models/cosmos3: diffusers-format Cosmos3 checkpoint folders
EMBEDDED_CHECKPOINT = "cosmos3-tiny-random (embedded demo: noise)"

comfy.register_model_folder(MODEL_FOLDER)


def resolve_model_path(kind: str, name: str):
    """Like :func:`.comfy.resolve_model_path`; the embedded demo checkpoint resolves to its cache folder
    (written on first use; nothing is downloaded)."""
    if name == EMBEDDED_CHECKPOINT:
        from ..cosmos3.tiny import default_checkpoint

        return default_checkpoint()
    return comfy.resolve_model_path(kind, name)


@dataclass
class Cosmos3Model:
    """What the model loader hands to the other nodes."""

    transformer: object
    tokenizer: object
    scheduler_config: dict
    pipeline_config: dict
    device: torch.device
    patcher: object = None  # ComfyUI's ModelPatcher around the transformer (None outside ComfyUI)
    source: str = ""

    def load(self):
        comfy.load_to_device(self.patcher, self.transformer, self.device)
        return self.transformer


@dataclass
class Cosmos3VAE:
    vae: object
    device: torch.device
    patcher: object = None

    def load(self):
        comfy.load_to_device(self.patcher, self.vae, self.device)
        return self.vae


@dataclass
class Cosmos3TextConditioning:
    """Cached per-layer prompt keys/values (on the intermediate device) and what they were made for."""

    conditioning: P.Cosmos3Conditioning
    meta: dict = field(default_factory=dict)


def _has_own_config(file) -> bool:
    try:
        read_config(file)
        return True
    except CheckpointError:
        return False


def _check_choice(field: str, value, choices: list[str]):
    """A listed name, or an absolute path that exists (scripts and the API may name files directly)."""
    if value is None or value in choices or (os.path.isabs(value) and os.path.exists(value)):
        return True
    return f"{field}={value!r} is neither in the model folders nor an existing absolute path"


def _checkpoint_choices() -> list[str]:
    return [EMBEDDED_CHECKPOINT] + comfy.checkpoint_folders(MODEL_FOLDER) + comfy.safetensors_files("diffusion_models")


def _resolve_checkpoint(name: str):
    kind = "diffusion_models" if name.endswith(".safetensors") and not name.startswith(EMBEDDED_CHECKPOINT) else MODEL_FOLDER
    return resolve_model_path(kind, name)


def _vae_choices() -> list[str]:
    return [EMBEDDED_CHECKPOINT] + comfy.checkpoint_folders(MODEL_FOLDER) + comfy.safetensors_files("vae")


class Cosmos3ModelLoader:
    DESCRIPTION = "Loads a Cosmos3 transformer (and its tokenizer and sampling config) for text/image-to-video."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("COSMOS3_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The Cosmos3 transformer with its tokenizer and scheduler settings.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "checkpoint": (_checkpoint_choices(), {
                    "tooltip": "A diffusers-format Cosmos3 folder from models/cosmos3, or a transformer .safetensors "
                               "file from models/diffusion_models. The embedded demo is a tiny random model: noise."}),
                "weight_dtype": (WEIGHT_DTYPES, {"default": "bf16", "tooltip":
                                 "Weight precision. fp8_e4m3fn stores the linear weights in 8 bits and computes in bf16."}),
                "device": (["default", "cpu"], {"default": "default",
                           "tooltip": "default: ComfyUI's compute device (the GPU when there is one)."}),
            },
            "optional": {
                "tokenizer": ([FROM_CHECKPOINT] + comfy.checkpoint_folders(MODEL_FOLDER, marker="text_tokenizer/tokenizer_config.json"), {
                    "default": FROM_CHECKPOINT,
                    "tooltip": "For a single-file transformer: a Cosmos3 folder whose text_tokenizer/ to use."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, checkpoint=None):
        return _check_choice("checkpoint", checkpoint, _checkpoint_choices())

    def load(self, checkpoint, weight_dtype="bf16", device="default", tokenizer=FROM_CHECKPOINT):
        path = _resolve_checkpoint(checkpoint)
        dev = comfy.compute_device(device)
        dtype = "bf16" if weight_dtype == "fp8_e4m3fn" else weight_dtype
        is_folder = path.is_dir() and (path / "model_index.json").is_file()
        if not is_folder and tokenizer == FROM_CHECKPOINT:
            raise ValueError(
                "Cosmos3ModelLoader: a single-file transformer needs the 'tokenizer' input (a Cosmos3 folder "
                "with text_tokenizer/)"
            )
        tok_folder = None if tokenizer == FROM_CHECKPOINT else resolve_model_path(MODEL_FOLDER, tokenizer)
        root = path if is_folder else tok_folder  # supplies the scheduler and pipeline settings
        tok_root = tok_folder or root
        transformer_path = path / "transformer" if is_folder else path
        pipeline_config = read_model_index(root) if (root / "model_index.json").is_file() else {}
        load_device = comfy.offload_device() if comfy.in_comfyui() else dev
        config = None
        if transformer_path.is_file():  # a lone file may carry no config: take the tokenizer folder's
            folder_config = tok_root / "transformer" / "config.json"
            if not _has_own_config(transformer_path) and folder_config.is_file():
                config = json.loads(folder_config.read_text())
        transformer = load_transformer(transformer_path, device=load_device, dtype=dtype, config=config)
        if weight_dtype == "fp8_e4m3fn":
            store_linear_weights(transformer.layers)
        tok = load_tokenizer(tok_root / "text_tokenizer")
        patcher = comfy.manage(transformer, dev, Cosmos3LatentFormat())
        return (Cosmos3Model(transformer, tok, read_scheduler_config(root), pipeline_config, dev, patcher, str(path)),)


class Cosmos3VAELoader:
    DESCRIPTION = "Loads the Wan2.2 VAE of a Cosmos3 checkpoint (48 latent channels)."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("COSMOS3_VAE",)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("The Wan2.2 VAE used to encode the I2V image and decode latents to frames.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": (_vae_choices(), {
                    "tooltip": "A Cosmos3 folder (its vae/ is used) or a Wan2.2 VAE .safetensors file from models/vae."}),
                "dtype": (["bf16", "fp32", "fp16"], {"default": "bf16", "tooltip": "VAE compute precision."}),
                "device": (["default", "cpu"], {"default": "default", "tooltip": "default: ComfyUI's compute device."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, vae=None):
        return _check_choice("vae", vae, _vae_choices())

    def load(self, vae, dtype="bf16", device="default"):
        kind = "vae" if vae.endswith(".safetensors") else MODEL_FOLDER
        path = resolve_model_path(kind, vae)
        if path.is_dir() and (path / "vae").is_dir():
            path = path / "vae"
        dev = comfy.compute_device(device)
        model = load_vae(path, device=comfy.offload_device() if comfy.in_comfyui() else dev, dtype=dtype)
        return (Cosmos3VAE(model, dev, comfy.manage(model, dev)),)


def _latent_meta(latent: dict) -> tuple[int, int, int]:
    """Pixel (frames, height, width) a Cosmos3 latent stands for."""
    t, h, w = latent["samples"].shape[2:]
    return P.TEMPORAL_FACTOR * (t - 1) + 1, h * P.SPATIAL_FACTOR, w * P.SPATIAL_FACTOR


class Cosmos3TextEncode:
    DESCRIPTION = ("Encodes the prompt and negative prompt once (the model's understanding path); every sampling "
                   "step reuses the result. The latent tells the duration/resolution sentences of the templates.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("COSMOS3_CONDITIONING",)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("Cached prompt keys/values of both prompts.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("COSMOS3_MODEL", {"tooltip": "From Cosmos3 Model Loader."}),
                "latent": ("LATENT", {"tooltip": "The latent to be sampled: its size and length fill the templates."}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "What to generate."}),
                "negative_prompt": ("STRING", {"multiline": True, "default": "",
                                               "tooltip": "What to steer away from (used when cfg != 1)."}),
                "fps": ("FLOAT", {"default": 24.0, "min": 1.0, "max": 240.0, "step": 0.5,
                                  "tooltip": "Frame rate: goes into the duration sentence and the time positions."}),
                "use_system_prompt": ("BOOLEAN", {"default": True, "tooltip": "Prepend the Cosmos3 system prompt."}),
                "add_duration_template": ("BOOLEAN", {"default": True,
                                                      "tooltip": "Append 'The video is N seconds long and is of F FPS.'"}),
                "add_resolution_template": ("BOOLEAN", {"default": True,
                                                        "tooltip": "Append 'This video is of HxW resolution.'"}),
            }
        }

    def encode(self, model, latent, prompt, negative_prompt, fps, use_system_prompt=True,
               add_duration_template=True, add_resolution_template=True):
        frames, height, width = _latent_meta(latent)
        options = PromptOptions(use_system_prompt, add_duration_template, add_resolution_template)
        transformer = model.load()
        cond = P.encode_prompts(transformer, model.tokenizer, prompt, negative_prompt, num_frames=frames,
                                height=height, width=width, fps=fps, options=options)
        keep = comfy.intermediate_device()  # nothing stays on the GPU behind ComfyUI's back
        cond.cond, cond.uncond = cond.cond.to(keep), cond.uncond.to(keep)
        return (Cosmos3TextConditioning(cond, dict(frames=frames, height=height, width=width)),)


def _latent(samples: torch.Tensor, condition_frames: list[int]) -> dict:
    mask = torch.ones(samples.shape[0], 1, *samples.shape[2:])
    mask[:, :, condition_frames] = 0.0
    return {"samples": samples, "noise_mask": mask, "cosmos3_condition_frames": list(condition_frames)}


_SIZE = dict(min=16, max=MAX_RESOLUTION, step=16)


def _validate_size(width=None, height=None, frames=None, min_frames=1):
    """ComfyUI's up-front check of the size widgets (it skips its own range checks for inputs named here).

    Values fed by a link are unknown at validation time and arrive as None.
    """
    for name, value in (("width", width), ("height", height)):
        if value is not None and (value < _SIZE["min"] or value > _SIZE["max"] or value % P.SPATIAL_FACTOR):
            return f"{name}={value} must be a multiple of {P.SPATIAL_FACTOR} between {_SIZE['min']} and {_SIZE['max']}"
    if frames is not None and not min_frames <= frames <= 1025:
        return f"frames={frames} must be between {min_frames} and 1025"
    return True


class Cosmos3EmptyLatent:
    DESCRIPTION = "An empty Cosmos3 latent for text-to-video, or text-to-image with frames = 1."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("Latent [B, 48, (frames-1)/4+1, H/16, W/16].",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "width": ("INT", {"default": 1280, **_SIZE, "tooltip": "Output width in pixels (multiple of 16)."}),
                "height": ("INT", {"default": 720, **_SIZE, "tooltip": "Output height in pixels (multiple of 16)."}),
                "frames": ("INT", {"default": 121, "min": 1, "max": 1025, "step": 4,
                                   "tooltip": "Frame count 4k+1 (others are rounded down); 1 makes an image."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Videos per run."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None, frames=None):
        return _validate_size(width, height, frames)

    def make(self, width, height, frames, batch_size=1):
        frames = P.check_size(width, height, frames)
        samples = P.empty_latents(frames, height, width, batch_size).to(comfy.intermediate_device())
        return (_latent(samples, []),)


class Cosmos3ImageToVideoLatent:
    DESCRIPTION = "Image-to-video start latent: encodes the one image as latent frame 0, which sampling keeps."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("Latent with frame 0 = the encoded image, marked as a clean conditioning frame.",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": ("COSMOS3_VAE", {"tooltip": "From Cosmos3 VAE Loader."}),
                "image": ("IMAGE", {"tooltip": "The first frame (the first image of a batch is used)."}),
                "width": ("INT", {"default": 1280, **_SIZE, "tooltip": "Output width; the image is scaled and centre-cropped."}),
                "height": ("INT", {"default": 720, **_SIZE, "tooltip": "Output height; the image is scaled and centre-cropped."}),
                "frames": ("INT", {"default": 121, "min": 5, "max": 1025, "step": 4,
                                   "tooltip": "Frame count 4k+1 (others are rounded down)."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Videos per run."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None, frames=None):
        return _validate_size(width, height, frames, min_frames=5)

    def make(self, vae, image, width, height, frames, batch_size=1):
        frames = P.check_size(width, height, frames)
        if frames < 5:
            raise ValueError(f"Cosmos3ImageToVideoLatent: frames={frames} makes no video; use at least 5")
        model = vae.load()
        samples, cond = P.image_latents(model, image[:1].float().cpu(), frames, height, width, batch_size)
        return (_latent(samples.to(comfy.intermediate_device()), cond),)


class Cosmos3Sampler:
    DESCRIPTION = "Denoises a Cosmos3 latent: UniPC (or flow Euler) with classifier-free guidance."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The denoised latent.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("COSMOS3_MODEL", {"tooltip": "From Cosmos3 Model Loader."}),
                "conditioning": ("COSMOS3_CONDITIONING", {"tooltip": "From Cosmos3 Text Encode."}),
                "latent": ("LATENT", {"tooltip": "From Cosmos3 Empty Latent or Image To Video Latent."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                                 "tooltip": "Noise seed (same seed, same video as diffusers' Cosmos3 pipeline)."}),
                "steps": ("INT", {"default": 35, "min": 1, "max": 1000, "tooltip": "Denoising steps (ignored for distilled checkpoints)."}),
                "cfg": ("FLOAT", {"default": 6.0, "min": 1.0, "max": 30.0, "step": 0.1,
                                  "tooltip": "Classifier-free guidance; 1 turns it off (one model call per step)."}),
                "shift": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.1,
                                    "tooltip": "Flow shift; 0 = the checkpoint's scheduler config. 10 suits 720p video, 3 images."}),
                "sampler": (SAMPLERS, {"default": "auto", "tooltip":
                            "auto: the checkpoint's scheduler (UniPC, or the distilled Euler list). euler: flow Euler."}),
            },
            "optional": {
                "sigmas": ("SIGMAS", {"tooltip": "Custom sigmas in (0, 1], overriding steps and shift."}),
            },
        }

    def sample(self, model, conditioning, latent, seed, steps, cfg, shift, sampler="auto", sigmas=None):
        x0 = latent["samples"]
        frames, height, width = _latent_meta(latent)
        meta = conditioning.meta
        if (meta.get("frames"), meta.get("height"), meta.get("width")) != (frames, height, width):
            raise ValueError(
                f"Cosmos3Sampler: the conditioning was encoded for {meta.get('width')}x{meta.get('height')}, "
                f"{meta.get('frames')} frames, but the latent is {width}x{height}, {frames} frames; connect the "
                "same latent to Cosmos3 Text Encode"
            )
        condition_frames = list(latent.get("cosmos3_condition_frames", []))
        distilled = model.pipeline_config.get("distilled_sigmas") if sampler == "auto" else None
        sched_cfg = dict(model.scheduler_config)
        if sampler == "uni_pc_bh1":
            sched_cfg["solver_type"] = "bh1"
        elif sampler == "uni_pc_bh2":
            sched_cfg["solver_type"] = "bh2"
        if sigmas is not None:
            sig = [float(s) for s in torch.as_tensor(sigmas).flatten().tolist()]
            sig = sig[:-1] if sig and sig[-1] == 0.0 else sig
            schedule = P.make_schedule(len(sig), sched_cfg, sigmas=sig)
        elif distilled:
            schedule = P.make_schedule(len(distilled), sched_cfg, sigmas=distilled)
            cfg = 1.0
        else:
            schedule = P.make_schedule(steps, sched_cfg, shift=shift or None,
                                       native=bool(model.pipeline_config.get("use_native_flow_schedule", False)))
            if sampler == "euler":
                schedule = P.make_schedule(len(schedule.sigmas) - 1, sched_cfg, sigmas=schedule.sigmas[:-1])
        n_steps = len(schedule.sigmas) - 1
        transformer = model.load()
        generator = P.noise_generator(seed)
        x = P.start_latents(x0, P.initial_noise(x0.shape, generator), condition_frames)
        # ComfyUI's preview callback advances its own progress bar (with the preview image); without
        # ComfyUI a silent bar stands in. Either way: one update and one interrupt check per step.
        preview = comfy.latent_preview_callback(model.patcher, n_steps)
        bar = comfy.progress_bar(n_steps) if preview is None else None

        def on_step(info):
            comfy.check_interrupt()
            if preview is not None:
                preview(info["i"], info["denoised"], info["x"], n_steps)
            else:
                bar.update(1)

        out = P.denoise(transformer, conditioning.conditioning, x, schedule, guidance=cfg,
                        condition_frames=condition_frames, callback=on_step, generator=generator)
        result = {k: v for k, v in latent.items() if k != "noise_mask"}
        result["samples"] = out.to(comfy.intermediate_device())
        result["cosmos3_fps"] = conditioning.conditioning.fps
        return (result,)


class Cosmos3VAEDecode:
    DESCRIPTION = "Decodes a Cosmos3 latent to frames, one latent frame at a time (memory does not grow with length)."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("images", "fps")
    OUTPUT_TOOLTIPS = ("All frames as an IMAGE batch (videos of a batch one after another).",
                       "The frame rate the prompt was encoded with.")
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": ("COSMOS3_VAE", {"tooltip": "From Cosmos3 VAE Loader."}),
                "latent": ("LATENT", {"tooltip": "From Cosmos3 Sampler."}),
            }
        }

    def decode(self, vae, latent):
        model = vae.load()
        z = latent["samples"]
        bar = comfy.progress_bar(z.shape[0] * z.shape[2])

        def on_frame(i, n):
            comfy.check_interrupt()
            bar.update(1)

        videos = [P.decode(model, z[b : b + 1], callback=on_frame)[0] for b in range(z.shape[0])]
        images = torch.cat(videos).to(comfy.intermediate_device())
        return (images, float(latent.get("cosmos3_fps", 24.0)))


NODE_CLASS_MAPPINGS = {
    "Cosmos3ModelLoader": Cosmos3ModelLoader,
    "Cosmos3VAELoader": Cosmos3VAELoader,
    "Cosmos3TextEncode": Cosmos3TextEncode,
    "Cosmos3EmptyLatent": Cosmos3EmptyLatent,
    "Cosmos3ImageToVideoLatent": Cosmos3ImageToVideoLatent,
    "Cosmos3Sampler": Cosmos3Sampler,
    "Cosmos3VAEDecode": Cosmos3VAEDecode,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "Cosmos3ModelLoader": "Cosmos3 Model Loader",
    "Cosmos3VAELoader": "Cosmos3 VAE Loader",
    "Cosmos3TextEncode": "Cosmos3 Text Encode",
    "Cosmos3EmptyLatent": "Cosmos3 Empty Latent",
    "Cosmos3ImageToVideoLatent": "Cosmos3 Image To Video Latent",
    "Cosmos3Sampler": "Cosmos3 Sampler",
    "Cosmos3VAEDecode": "Cosmos3 VAE Decode",
}
