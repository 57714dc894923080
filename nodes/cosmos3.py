"""Cosmos3 graph nodes: thin adapters from ComfyUI types to the Cosmos3 pipeline stages.

Each node converts its inputs, calls one function of :mod:`..cosmos3.pipeline` (or the loader), and
converts back. Anything ComfyUI-specific goes through :mod:`.comfy`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.attention import set_backend as set_attention_backend
from ..core.checks import NonFiniteError, OptionError
from ..core.offload import enable_block_offload, park_streamed, streamed_blocks
from ..cosmos3 import options as O
from ..cosmos3 import pipeline as P
from ..cosmos3.latent_format import Wan22LatentFormat
from ..cosmos3.loader import Cosmos3Checkpoint, load_model, load_vae
from ..cosmos3.sound import load_sound_decoder
from ..cosmos3.preview import apply_fitted_factors
from ..cosmos3.prompt import PromptOptions
from . import comfy

CATEGORY = "Cosmos3"
WEIGHT_DTYPES = ["bf16", "fp16", "fp32", "fp8_e4m3fn"]
SAMPLERS = list(O.SAMPLERS)
FROM_CHECKPOINT = "(from the checkpoint folder)"
MODEL_FOLDER = "cosmos3"  # models/cosmos3: diffusers-format Cosmos3 checkpoint folders
EMBEDDED_CHECKPOINT = "cosmos3-tiny-random (embedded demo: noise)"
EMBEDDED_SOUND_CHECKPOINT = "cosmos3-tiny-random-sound (embedded demo: noise and noise sound)"

comfy.register_model_folder(MODEL_FOLDER)


def wan22_latent_format():
    """What ComfyUI's latent previewer reads from the model: ComfyUI's own ``Wan22`` format when ComfyUI is there
    (its Latent2RGB factors and its tiny preview decoder work as for its own Wan2.2 models), else the pack's object
    with the same attributes and numbers. A fitted ``cosmos3/latent_rgb_factors.json`` (``fit-preview``) replaces
    the RGB map."""
    return apply_fitted_factors(comfy.comfyui_latent_format("Wan22") or Wan22LatentFormat())


def resolve_model_path(kind: str, name: str):
    """Like :func:`.comfy.resolve_model_path`; the embedded demo checkpoint resolves to its cache folder
    (written on first use; nothing is downloaded)."""
    if name in (EMBEDDED_CHECKPOINT, EMBEDDED_SOUND_CHECKPOINT):
        from ..cosmos3.tiny import default_checkpoint

        return default_checkpoint(sound=name == EMBEDDED_SOUND_CHECKPOINT)
    return comfy.resolve_model_path(kind, name)


@dataclass
class Cosmos3Model:
    """What the model loader hands to the other nodes: the loaded checkpoint (transformer, tokenizer, settings)."""

    checkpoint: Cosmos3Checkpoint
    device: torch.device
    patcher: object = None  # ComfyUI's ModelPatcher around the transformer (None outside ComfyUI)
    offload: object = None  # block offload (core.offload.BlockOffload): the loader placed it, blocks stream

    @property
    def streamed(self) -> bool:
        return self.offload is not None

    @property
    def transformer(self):
        return self.checkpoint.transformer

    @property
    def settings(self):
        return self.checkpoint.settings

    def load(self):
        park_streamed(keep=self.offload)
        if self.offload is not None:  # (ComfyUI must not move a streamed model whole: back where the loader put it)
            self.offload.unpark()
        else:
            comfy.load_to_device(self.patcher, self.transformer, self.device)
        return self.transformer


@dataclass
class Cosmos3VAE:
    vae: object
    device: torch.device
    patcher: object = None

    def load(self):
        park_streamed()  # a streamed transformer leaves the device to it (ComfyUI cannot move one)
        comfy.load_to_device(self.patcher, self.vae, self.device)
        return self.vae


@dataclass
class Cosmos3SoundVAE:
    """The sound tokenizer's decoder of a sound-capable checkpoint (what the sound nodes pass around)."""

    decoder: object
    device: torch.device
    patcher: object = None

    def load(self):
        park_streamed()  # a streamed transformer leaves the device to it (ComfyUI cannot move one)
        comfy.load_to_device(self.patcher, self.decoder, self.device)
        return self.decoder


# The Python API's names of the options, as the nodes' inputs call them.
INPUT_NAMES = {"num_frames": "frames", "guidance": "cfg", "video_keep": "keep",
               "video_latent_frames": "keep_latent_frames"}


def _node_error(node: str, inputs: str, error: Exception) -> ValueError:
    """The stage's error, naming the node and the inputs it concerns (an OptionError names its own)."""
    if isinstance(error, OptionError):
        return ValueError(f"{node}: {error.describe(INPUT_NAMES)}")
    return ValueError(f"{node} ({inputs}): {error}")


def _verdict(check, **values):
    """A node's ``VALIDATE_INPUTS`` answer from one of the shared Cosmos3 checks: True, or the message naming the
    input. Inputs fed by a link arrive as None (the checks skip them; the node checks them when it runs). A value
    of the wrong type is left alone: ComfyUI (and the headless runner) report its failed conversion on the input
    itself, once, where a message from here would be listed under every input this node's check takes."""
    if any(v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))) for v in values.values()):
        return True
    try:
        check(**values)
    except OptionError as e:
        return e.describe(INPUT_NAMES)
    return True


def _checkpoint_choices() -> list[str]:
    return ([EMBEDDED_CHECKPOINT, EMBEDDED_SOUND_CHECKPOINT] + comfy.checkpoint_folders(MODEL_FOLDER)
            + comfy.safetensors_files("diffusion_models"))


def _resolve_checkpoint(name: str):
    kind = "diffusion_models" if name.endswith(".safetensors") else MODEL_FOLDER
    return resolve_model_path(kind, name)


def _sound_choices() -> list[str]:
    return [EMBEDDED_SOUND_CHECKPOINT] + comfy.checkpoint_folders(MODEL_FOLDER, "sound_tokenizer")


def _vae_choices() -> list[str]:
    return ([EMBEDDED_CHECKPOINT, EMBEDDED_SOUND_CHECKPOINT] + comfy.checkpoint_folders(MODEL_FOLDER)
            + comfy.safetensors_files("vae"))


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
                                 "Weight precision. fp8_e4m3fn stores the transformer blocks' linear weights in 8 bits "
                                 "(one scale per weight) and computes in bf16. Scaled fp8 files (ComfyUI's, the Cosmos3 "
                                 "FP8 release) load as fp8 with any choice."}),
                "device": (["default", "cpu"], {"default": "default",
                           "tooltip": "default: ComfyUI's compute device (the GPU when there is one)."}),
            },
            "optional": {
                "tokenizer": ([FROM_CHECKPOINT] + comfy.checkpoint_folders(MODEL_FOLDER, marker="text_tokenizer/tokenizer_config.json"), {
                    "default": FROM_CHECKPOINT,
                    "tooltip": "For a single-file transformer: a Cosmos3 folder whose text_tokenizer/ to use."}),
                "offload_blocks": comfy.OFFLOAD_BLOCKS_INPUT,
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, checkpoint=None):
        return comfy.check_choice("checkpoint", checkpoint, _checkpoint_choices())

    def load(self, checkpoint, weight_dtype="bf16", device="default", tokenizer=FROM_CHECKPOINT, offload_blocks=0):
        set_attention_backend(comfy.attention_backend())  # ComfyUI's --use-flash-attention / --use-sage-attention
        path = _resolve_checkpoint(checkpoint)
        tok_folder = None if tokenizer == FROM_CHECKPOINT else resolve_model_path(MODEL_FOLDER, tokenizer)
        dev, ckpt = comfy.load_for_node(
            "Cosmos3ModelLoader", "checkpoint / tokenizer", device, on_host=bool(offload_blocks),
            load=lambda where: load_model(path, tokenizer=tok_folder, device=where, dtype=weight_dtype))
        patcher = comfy.manage(ckpt.transformer, dev, wan22_latent_format())
        layers = ckpt.transformer.layers
        streamed = streamed_blocks(offload_blocks, ckpt.transformer, layers, dev, free_bytes=comfy.free_memory(dev))
        state = enable_block_offload(ckpt.transformer, layers, dev, len(layers) - streamed) if streamed else None
        return (Cosmos3Model(ckpt, dev, patcher, offload=state),)


class Cosmos3SoundVAELoader:
    DESCRIPTION = ("Loads the sound tokenizer (sound_tokenizer/, its audio decoder) of a sound-capable Cosmos3 "
                   "checkpoint, for joint sound: Cosmos3 Sound Latent and Cosmos3 Sound Decode.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("COSMOS3_SOUND_VAE",)
    RETURN_NAMES = ("sound_vae",)
    OUTPUT_TOOLTIPS = ("The audio decoder: sound latents to a stereo waveform.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "checkpoint": (_sound_choices(), {
                    "tooltip": "A sound-capable Cosmos3 folder in models/cosmos3 (one with sound_tokenizer/)."}),
                "dtype": (["fp32", "bf16", "fp16"], {"default": "fp32", "tooltip": "Decoder compute precision."}),
                "device": (["default", "cpu"], {"default": "default", "tooltip": "default: ComfyUI's compute device."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, checkpoint=None):
        return comfy.check_choice("checkpoint", checkpoint, _sound_choices())

    def load(self, checkpoint, dtype="fp32", device="default"):
        path = resolve_model_path(MODEL_FOLDER, checkpoint)
        dev, model = comfy.load_for_node(  # (a folder without sound_tokenizer/ is an error too)
            "Cosmos3SoundVAELoader", "checkpoint", device,
            load=lambda where: load_sound_decoder(path, device=where, dtype=dtype))
        return (Cosmos3SoundVAE(model, dev, comfy.manage(model, dev)),)


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
        return comfy.check_choice("vae", vae, _vae_choices())

    def load(self, vae, dtype="bf16", device="default"):
        kind = "vae" if vae.endswith(".safetensors") else MODEL_FOLDER
        path = resolve_model_path(kind, vae)
        dev, model = comfy.load_for_node("Cosmos3VAELoader", "vae", device,
                                         load=lambda where: load_vae(path, device=where, dtype=dtype))
        return (Cosmos3VAE(model, dev, comfy.manage(model, dev)),)


def _latent_meta(latent: dict) -> tuple[int, int, int]:
    """Pixel (frames, height, width) a Cosmos3 latent stands for."""
    samples = latent["samples"]
    if samples.ndim != 5:
        raise ValueError(f"expected a video LATENT [B, 48, T, H/16, W/16], got {list(samples.shape)}")
    t, h, w = samples.shape[2:]
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
                "fps": ("FLOAT", {"default": 24.0, "min": O.FPS[0], "max": O.FPS[1], "step": 0.5,
                                  "tooltip": "Frame rate: goes into the duration sentence and the time positions."}),
                "use_system_prompt": ("BOOLEAN", {"default": True, "tooltip": "Prepend the Cosmos3 system prompt."}),
                "add_duration_template": ("BOOLEAN", {"default": True,
                                                      "tooltip": "Append 'The video is N seconds long and is of F FPS.'"}),
                "add_resolution_template": ("BOOLEAN", {"default": True,
                                                        "tooltip": "Append 'This video is of HxW resolution.'"}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, fps=None):
        return _verdict(lambda fps: fps is None or O.check_fps(fps), fps=fps)

    def encode(self, model, latent, prompt, negative_prompt, fps, use_system_prompt=True,
               add_duration_template=True, add_resolution_template=True):
        frames, height, width = _latent_meta(latent)
        options = PromptOptions(use_system_prompt, add_duration_template, add_resolution_template)
        transformer = model.load()
        cond = P.encode_prompts(transformer, model.checkpoint.tokenizer, prompt, negative_prompt, num_frames=frames,
                                height=height, width=width, fps=fps, options=options)
        keep = comfy.intermediate_device()  # nothing stays on the GPU behind ComfyUI's back
        cond.cond, cond.uncond = cond.cond.to(keep), cond.uncond.to(keep)
        return (cond,)


def _latent(samples: torch.Tensor, condition_frames: list[int]) -> dict:
    """A LATENT of raw latents; clean conditioning frames are marked the ComfyUI way, noise_mask 0 (keep)."""
    if not condition_frames:
        return {"samples": samples}
    mask = torch.ones(samples.shape[0], 1, *samples.shape[2:], device=samples.device)
    mask[:, :, condition_frames] = 0.0
    return {"samples": samples, "noise_mask": mask}


def _condition_frames(latent: dict) -> list[int]:
    """The clean latent frames of a LATENT: those its ``noise_mask`` keeps whole (0), ComfyUI's convention (our
    image-to-video latent and the core ``Wan22ImageToVideoLatent`` both mark the start frame so). No mask: none."""
    mask = latent.get("noise_mask")
    if mask is None:
        return []
    frames = latent["samples"].shape[2]
    if mask.ndim != 5 or mask.shape[2] != frames:
        raise ValueError(
            f"Cosmos3Sampler (latent): its noise_mask {list(mask.shape)} does not mark the latent's {frames} frames "
            "one by one ([B, 1, T, h, w]); it was made for other latents (cut or joined by a latent node?) or is an "
            "inpainting mask, which Cosmos3 does not support"
        )
    per_frame = mask.movedim(2, 0).reshape(frames, -1)
    keep, noise = (per_frame == 0).all(dim=1), (per_frame == 1).all(dim=1)
    if not bool((keep | noise).all()):
        raise ValueError("Cosmos3Sampler (latent): its noise_mask must be 0 (a clean conditioning frame) or 1 over "
                         "each whole latent frame; partial masks (inpainting) are not supported")
    return [t for t in range(frames) if bool(keep[t])]


_SIZE = dict(min=O.SPATIAL_FACTOR, max=O.MAX_SIDE, step=O.SPATIAL_FACTOR)
_FRAMES = dict(max=O.MAX_FRAMES, step=O.TEMPORAL_FACTOR)


def _validate_size(width=None, height=None, frames=None, min_frames=1):
    """ComfyUI's up-front check of the size widgets (it skips its own range checks for inputs named here), with
    the checks ``generate`` makes; the size cap waits until all three are known."""

    def check(width, height, frames):
        if None not in (width, height, frames):
            return O.check_size(width, height, frames, min_frames=min_frames)
        for field, value in (("width", width), ("height", height)):
            if value is not None:
                O.check_side(field, value)
        if frames is not None:
            O.check_frames(frames, min_frames)

    return _verdict(check, width=width, height=height, frames=frames)


def _checked_size(node: str, width, height, frames, min_frames=1):
    try:
        O.check_size(width, height, frames, min_frames=min_frames)
    except OptionError as e:
        raise _node_error(node, "width / height / frames", e) from None


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
                "frames": ("INT", {"default": 121, "min": 1, **_FRAMES,
                                   "tooltip": "Frame count 4k+1 (1, 5, 9, ...; others are refused); 1 makes an image."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": O.MAX_BATCH, "tooltip": "Videos per run."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None, frames=None):
        return _validate_size(width, height, frames)

    def make(self, width, height, frames, batch_size=1):
        _checked_size("Cosmos3EmptyLatent", width, height, frames)
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
                "frames": ("INT", {"default": 121, "min": 5, **_FRAMES,
                                   "tooltip": "Frame count 4k+1 (5, 9, 13, ...; others are refused)."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": O.MAX_BATCH, "tooltip": "Videos per run."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None, frames=None):
        return _validate_size(width, height, frames, min_frames=5)

    def make(self, vae, image, width, height, frames, batch_size=1):
        _checked_size("Cosmos3ImageToVideoLatent", width, height, frames, min_frames=5)
        try:
            pixels = P.preprocess_image(image[:1].float().cpu(), height, width)
        except OptionError as e:
            raise _node_error("Cosmos3ImageToVideoLatent", "image", e) from None
        model = vae.load()
        samples, cond = P.first_frame_latents(model, pixels, frames, batch_size)
        return (_latent(samples.to(comfy.intermediate_device()), cond),)


class Cosmos3VideoToVideoLatent:
    DESCRIPTION = ("Video-to-video start latent: continues a clip. Its first (or last) frames, stretched to the size, "
                   "are encoded as the first latent frames, which sampling keeps; the rest is generated.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("Latent whose first keep_latent_frames frames hold the encoded clip (kept clean).",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": ("COSMOS3_VAE", {"tooltip": "From Cosmos3 VAE Loader."}),
                "video": ("IMAGE", {"tooltip": "The clip to continue, as an IMAGE batch (e.g. from a video loader): "
                                               "only the frames kept are used."}),
                "width": ("INT", {"default": 1280, **_SIZE, "tooltip": "Output width; the clip's frames are "
                                                                       "stretched to it (no crop), as in diffusers."}),
                "height": ("INT", {"default": 720, **_SIZE, "tooltip": "Output height; the clip's frames are "
                                                                       "stretched to it (no crop), as in diffusers."}),
                "frames": ("INT", {"default": 121, "min": 5, **_FRAMES,
                                   "tooltip": "Frame count of the video made, 4k+1, the kept frames included; it "
                                              "needs more latent frames than are kept."}),
                "keep": (list(O.VIDEO_KEEP), {"default": O.VIDEO_KEEP[0],
                                              "tooltip": "Condition on the clip's first frames, or on its last ones "
                                                         "(to carry the clip on from its end)."}),
                "keep_latent_frames": ("INT", {"default": O.VIDEO_LATENT_FRAMES, "min": 1,
                                               "max": (O.MAX_FRAMES - 1) // O.TEMPORAL_FACTOR,
                                               "tooltip": "Latent frames of the clip to keep: k takes 4(k-1)+1 frames "
                                                          "of it (2: 5 frames, the reference's default)."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": O.MAX_BATCH, "tooltip": "Videos per run."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None, frames=None, keep_latent_frames=None):
        verdict = _validate_size(width, height, frames)
        if verdict is not True:
            return verdict

        def check(frames, keep_latent_frames):
            if keep_latent_frames is not None:
                O.check_video_options(video_latent_frames=keep_latent_frames, num_frames=frames)

        return _verdict(check, frames=frames, keep_latent_frames=keep_latent_frames)

    def make(self, vae, video, width, height, frames, keep="first", keep_latent_frames=O.VIDEO_LATENT_FRAMES,
             batch_size=1):
        node = "Cosmos3VideoToVideoLatent"
        _checked_size(node, width, height, frames)
        try:
            O.check_video_options(video_keep=keep, video_latent_frames=keep_latent_frames, num_frames=frames)
            pixels = P.preprocess_video(video, height, width, keep=keep, latent_frames=keep_latent_frames)
        except OptionError as e:
            raise _node_error(node, "video / keep / keep_latent_frames", e) from None
        model = vae.load()
        samples, cond = P.video_latents(model, pixels, frames, batch_size)
        return (_latent(samples.to(comfy.intermediate_device()), cond),)


class Cosmos3SoundLatent:
    DESCRIPTION = ("Adds a sound track to a Cosmos3 latent (empty, image- or video-to-video): zero sound latents "
                   "the length of the clip, which Cosmos3 Sampler denoises with the video (sound-capable "
                   "checkpoints only).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The same latent carrying sound latents [B, channels, frames] under 'cosmos3_sound'.",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "latent": ("LATENT", {"tooltip": "A Cosmos3 video latent (Cosmos3 Empty / Image / Video To Video "
                                                 "Latent)."}),
                "sound_vae": ("COSMOS3_SOUND_VAE", {"tooltip": "From Cosmos3 Sound VAE Loader."}),
                "fps": ("FLOAT", {"default": 24.0, "min": O.FPS[0], "max": O.FPS[1], "step": 0.5,
                                  "tooltip": "The clip's frame rate, which sets the sound's length; the same as "
                                             "Cosmos3 Text Encode's fps (the sampler checks)."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, fps=None):
        return _verdict(lambda fps: fps is None or O.check_fps(fps), fps=fps)

    def make(self, latent, sound_vae, fps):
        frames, _, _ = _latent_meta(latent)
        samples = latent["samples"]
        sound = P.empty_sound_latents(sound_vae.decoder, frames, float(fps), samples.shape[0])
        return ({**latent, "cosmos3_sound": sound.to(comfy.intermediate_device()), "cosmos3_sound_fps": float(fps)},)


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
                "latent": ("LATENT", {"tooltip": "Raw Wan2.2 latents: from Cosmos3 Empty Latent, Image or Video To "
                                                 "Video Latent, or ComfyUI's own (e.g. Wan22ImageToVideoLatent; "
                                                 "noise_mask 0 marks clean start frames)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": O.MAX_SEED, "control_after_generate": True,
                                 "tooltip": "Noise seed (same seed, same video as diffusers' Cosmos3 pipeline)."}),
                "steps": ("INT", {"default": 35, "min": O.STEPS[0], "max": O.STEPS[1], "tooltip": "Denoising steps. A distilled checkpoint with sampler auto "
                                  "takes exactly its own count (4)."}),
                "cfg": ("FLOAT", {"default": 6.0, "min": O.GUIDANCE[0], "max": O.GUIDANCE[1], "step": 0.1,
                                  "tooltip": "Classifier-free guidance; 1 turns it off (one model call per step). A distilled "
                                             "checkpoint with sampler auto needs 1."}),
                "shift": ("FLOAT", {"default": 0.0, "min": 0.0, "max": O.MAX_SHIFT, "step": 0.1,
                                    "tooltip": "Flow shift; 0 = the checkpoint's scheduler config. 10 suits 720p video, 3 images."}),
                "sampler": (SAMPLERS, {"default": "auto", "tooltip":
                            "auto: the checkpoint's scheduler (UniPC, or the distilled Euler list). euler: flow Euler."}),
            },
            "optional": {
                "sigmas": ("SIGMAS", {"tooltip": "Custom sigmas in (0, 1], run with flow Euler; they override steps, "
                                                 "and a shift other than 0 is applied to them."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, cfg=None):
        # ComfyUI's own range check lets NaN through. Only cfg is named: ComfyUI lists a message under every input
        # named here, and checks the others (steps, seed, shift) itself; a NaN shift is refused when the node runs.
        return _verdict(lambda cfg: O.check_sampling(guidance=cfg), cfg=cfg)

    def sample(self, model, conditioning, latent, seed, steps, cfg, shift, sampler="auto", sigmas=None):
        samples = latent["samples"]
        frames = _condition_frames(latent)
        try:
            P.check_conditioning(conditioning, samples)
        except ValueError as e:
            raise _node_error("Cosmos3Sampler", "conditioning / latent", e) from e
        try:
            schedule, guidance = P.sampling_schedule(model.settings, steps=steps, guidance=cfg, shift=shift or None,
                                                     sampler=sampler, sigmas=sigmas)
        except ValueError as e:
            raise _node_error("Cosmos3Sampler", "steps / cfg / sampler / sigmas", e) from e
        n_steps = len(schedule.sigmas) - 1
        transformer = model.load()
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

        sound = latent.get("cosmos3_sound")
        if sound is not None:
            sound_fps = latent.get("cosmos3_sound_fps", conditioning.fps)
            if not transformer.config.sound_gen:
                raise ValueError("Cosmos3Sampler (model / latent): the latent carries sound (Cosmos3 Sound Latent) "
                                 "but this checkpoint generates no sound; drop the Sound Latent node or load a "
                                 "sound-capable checkpoint")
            if float(sound_fps) != float(conditioning.fps) or sound.shape[1] != transformer.config.sound_dim:
                raise ValueError(
                    f"Cosmos3Sampler (conditioning / latent): the latent's sound was made for {sound_fps} fps and "
                    f"{sound.shape[1]} channels, but the prompt was encoded at {conditioning.fps} fps and the model "
                    f"makes {transformer.config.sound_dim} channels; use the same fps in Cosmos3 Sound Latent and "
                    "Cosmos3 Text Encode, and the sound VAE of this checkpoint"
                )
        out = P.sample(transformer, conditioning, samples, schedule, latent_format=model.settings.latent_format,
                       guidance=guidance, seed=seed, condition_frames=frames, callback=on_step, sound=sound)
        result = {k: v for k, v in latent.items() if k != "noise_mask"}
        if sound is not None:
            out, sound_out = out
            result["cosmos3_sound"] = sound_out.to(comfy.intermediate_device())
        result["samples"] = out.to(comfy.intermediate_device())
        result["cosmos3_fps"] = conditioning.fps
        return (result,)


class Cosmos3VAEDecode:
    DESCRIPTION = ("Decodes raw Wan2.2 latents to frames, one latent frame at a time (memory does not grow with "
                   "length). ComfyUI's own VAE Decode with wan2.2_vae.safetensors decodes the same latents.")
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
                "latent": ("LATENT", {"tooltip": "Raw Wan2.2 latents: from Cosmos3 Sampler, Cosmos3 VAE Encode, or "
                                                 "ComfyUI's own Wan2.2 nodes."}),
            }
        }

    def decode(self, vae, latent):
        model = vae.load()
        z = latent["samples"]
        bar = comfy.progress_bar(z.shape[0] * z.shape[2])

        def on_frame(i, n):
            comfy.check_interrupt()
            bar.update(1)

        try:
            videos = [P.decode(model, z[b : b + 1], callback=on_frame)[0] for b in range(z.shape[0])]
        except NonFiniteError as e:
            raise _node_error("Cosmos3VAEDecode", "latent", e) from e
        images = torch.cat(videos).to(comfy.intermediate_device())
        return (images, float(latent.get("cosmos3_fps", 24.0)))


class Cosmos3SoundDecode:
    DESCRIPTION = ("Decodes the sound a Cosmos3 Sampler made with the video (a latent from Cosmos3 Sound Latent) to "
                   "an AUDIO waveform, for ComfyUI's Create Video (with its audio input) and Save Audio.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    OUTPUT_TOOLTIPS = ("Stereo waveform [B, 2, samples] in [-1, 1] at the sound tokenizer's sample rate.",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "sound_vae": ("COSMOS3_SOUND_VAE", {"tooltip": "From Cosmos3 Sound VAE Loader."}),
                "latent": ("LATENT", {"tooltip": "From Cosmos3 Sampler, run on a latent with sound."}),
            }
        }

    def decode(self, sound_vae, latent):
        sound = latent.get("cosmos3_sound")
        if sound is None:
            raise ValueError("Cosmos3SoundDecode (latent): this latent carries no sound; add Cosmos3 Sound Latent "
                             "before the sampler")
        model = sound_vae.load()
        comfy.check_interrupt()
        try:
            waveform = P.decode_sound(model, sound)
        except NonFiniteError as e:
            raise _node_error("Cosmos3SoundDecode", "latent", e) from e
        return ({"waveform": waveform.to(comfy.intermediate_device()), "sample_rate": model.sample_rate},)


class Cosmos3VAEEncode:
    DESCRIPTION = ("Encodes frames (an IMAGE batch, as one video) to raw Wan2.2 latents, as ComfyUI's VAE Encode does "
                   "with wan2.2_vae.safetensors; sizes are centre-cropped to multiples of 16.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("Raw latents [1, 48, (frames-1)/4+1, H/16, W/16] (frames past the last 4k+1 are dropped).",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": ("COSMOS3_VAE", {"tooltip": "From Cosmos3 VAE Loader."}),
                "images": ("IMAGE", {"tooltip": "The frames of one video (one image makes a one-frame latent)."}),
            }
        }

    def encode(self, vae, images):
        model = vae.load()
        bar = comfy.progress_bar(1 + (images.shape[0] - 1) // P.TEMPORAL_FACTOR)

        def on_frame(i, n):
            comfy.check_interrupt()
            bar.update(1)

        try:
            samples = P.encode_video(model, images, callback=on_frame)
        except ValueError as e:
            raise _node_error("Cosmos3VAEEncode", "images", e) from e
        return ({"samples": samples.to(comfy.intermediate_device())},)


NODE_CLASS_MAPPINGS = {
    "Cosmos3ModelLoader": Cosmos3ModelLoader,
    "Cosmos3VAELoader": Cosmos3VAELoader,
    "Cosmos3SoundVAELoader": Cosmos3SoundVAELoader,
    "Cosmos3TextEncode": Cosmos3TextEncode,
    "Cosmos3EmptyLatent": Cosmos3EmptyLatent,
    "Cosmos3ImageToVideoLatent": Cosmos3ImageToVideoLatent,
    "Cosmos3VideoToVideoLatent": Cosmos3VideoToVideoLatent,
    "Cosmos3Sampler": Cosmos3Sampler,
    "Cosmos3VAEDecode": Cosmos3VAEDecode,
    "Cosmos3VAEEncode": Cosmos3VAEEncode,
    "Cosmos3SoundLatent": Cosmos3SoundLatent,
    "Cosmos3SoundDecode": Cosmos3SoundDecode,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "Cosmos3ModelLoader": "Cosmos3 Model Loader",
    "Cosmos3VAELoader": "Cosmos3 VAE Loader",
    "Cosmos3TextEncode": "Cosmos3 Text Encode",
    "Cosmos3EmptyLatent": "Cosmos3 Empty Latent",
    "Cosmos3ImageToVideoLatent": "Cosmos3 Image To Video Latent",
    "Cosmos3VideoToVideoLatent": "Cosmos3 Video To Video Latent",
    "Cosmos3Sampler": "Cosmos3 Sampler",
    "Cosmos3VAEDecode": "Cosmos3 VAE Decode",
    "Cosmos3VAEEncode": "Cosmos3 VAE Encode",
    "Cosmos3SoundVAELoader": "Cosmos3 Sound VAE Loader",
    "Cosmos3SoundLatent": "Cosmos3 Sound Latent",
    "Cosmos3SoundDecode": "Cosmos3 Sound Decode",
}
