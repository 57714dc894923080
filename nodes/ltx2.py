"""LTX-2.3 graph nodes (category ``LTX2``): thin adapters from ComfyUI types to the LTX-2 stage modules.

The graph the nodes make is the pipeline ``generate`` runs, one stage per node, with the same numbers: loaders
(checkpoint, Gemma-3, x2 upsampler, LoRA) -> Text Encode -> Empty Latent (-> Image Conditioning) -> Sampler
(-> Upsample + Refine for the two-stage pipelines) -> Decode (IMAGE frames and AUDIO for ComfyUI's CreateVideo).

What travels between them:

* ``LATENT``: ``samples`` is the video latent ``[B, 128, F, H/32, W/32]`` in ComfyUI's LTXV space (the VAE's
  normalised latents, as ComfyUI's own LTX nodes keep them), ``ltx2_audio`` the audio latent ``[B, 8, T, 16]``,
  ``ltx2_fps`` the frame rate; conditioning pictures ride along (``ltx2_pictures``, encoded at the latent's size in
  ``ltx2_images``); a sampled latent carries its ``ltx2_seed`` so the refiner continues the same noise stream.
* ``LTX2_CONDITIONING``: both prompts through Gemma-3 and the connectors, computed once (changing only the seed
  re-runs only the sampler).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..core.attention import set_backend as set_attention_backend
from ..core.checks import NonFiniteError, OptionError, integer, number, require_finite
from ..core.offload import enable_block_offload, park_streamed, streamed_blocks
from ..core.sampling.ltx_schedule import DISTILLED_SIGMAS, ltx2_sigmas
from ..ltx2 import options as O
from ..ltx2.conditioning import picture_latents, prepare_pictures
from ..ltx2.decoding import decode
from ..ltx2.denoiser import AUDIO_GUIDANCE, HQ_AUDIO_GUIDANCE, HQ_VIDEO_GUIDANCE, VIDEO_GUIDANCE, Guidance
from ..ltx2.image import DEFAULT_IMAGE_CRF
from ..ltx2.latents import LatentShape, pack_audio, pack_video, unpack_audio, unpack_video
from ..ltx2.sampling import SAMPLERS, SDE_NOISE, STAGE2_SIGMAS, doubled, refine, sample
from ..ltx2.text_encoding import PromptContexts, connect, gemma_states
from . import comfy

CATEGORY = "LTX2"
MODEL_FOLDER = "ltx2"  # models/ltx2: diffusers-format LTX-2 folders (model_index.json)
EMBEDDED = "ltx-2.3-tiny-random (embedded demo: noise)"
DTYPES = ["bf16", "fp16", "fp32"]
SCHEDULES = ["ltx2", "ltx2 token-shifted (HQ stage 1)", "distilled"]
PRESETS = {"LTX-2.3 one-stage": (VIDEO_GUIDANCE, AUDIO_GUIDANCE), "LTX-2.3 HQ": (HQ_VIDEO_GUIDANCE, HQ_AUDIO_GUIDANCE)}
STRATEGIES = ["split", "batched"]

comfy.register_model_folder(MODEL_FOLDER)


# ---------------------------------------------------------------------------------------------- model objects
@dataclass
class LTX2Model:
    """The transformer and text connectors of a checkpoint, and the LoRAs to merge while sampling
    (``(file, stage-1 strength, stage-2 strength)``)."""

    transformer: nn.Module
    connectors: nn.Module
    device: torch.device
    patcher: object = None
    loras: tuple = ()
    offload: object = None  # block offload (core.offload.BlockOffload): the loader placed it, blocks stream

    @property
    def streamed(self) -> bool:
        return self.offload is not None

    def load(self):
        park_streamed(keep=self.offload)
        if self.offload is not None:  # (ComfyUI must not move a streamed model whole: back where the loader put it)
            self.offload.unpark()
        else:
            comfy.load_to_device(self.patcher, self.transformer, self.device)
        return self.transformer


@dataclass
class LTX2VAE:
    """Video VAE, audio VAE and vocoder of a checkpoint."""

    video_vae: nn.Module
    audio_vae: nn.Module
    vocoder: nn.Module
    device: torch.device
    patcher: object = None

    def load(self):
        park_streamed()  # a streamed transformer leaves the device to it (ComfyUI cannot move one)
        comfy.load_to_device(self.patcher, self.video_vae, self.device)
        for m in (self.audio_vae, self.vocoder):  # (one patcher holds all three)
            if self.patcher is None and next(m.parameters()).device != self.device:
                m.to(self.device)
        return self


@dataclass
class LTX2TextEncoder:
    encoder: object  # ltx2.text_encoding.GemmaTextEncoder
    device: torch.device
    patcher: object = None


@dataclass
class LTX2Upsampler:
    module: nn.Module
    device: torch.device
    patcher: object = None

    def load(self):  # (a streamed transformer stays: the upsampler is small and runs between two stages)
        comfy.load_to_device(self.patcher, self.module, self.device)
        return self.module


@dataclass(frozen=True)
class LTX2Guidance:
    """What the guider nodes hand to the samplers: per-modality guidance and how the passes run."""

    video: Guidance
    audio: Guidance
    strategy: str = "split"


def _node_error(node: str, inputs: str, error: Exception) -> ValueError:
    if isinstance(error, OptionError):
        return ValueError(f"{node}: {error.describe()}")
    return ValueError(f"{node} ({inputs}): {error}")


def _verdict(check, **values):
    """``VALIDATE_INPUTS``' answer from a shared check: True or the message. Linked inputs arrive as None and are
    checked when the node runs; a value of the wrong type is left to ComfyUI's own conversion error."""
    if any(v is not None and (isinstance(v, bool) or not isinstance(v, (int, float, str))) for v in values.values()):
        return True
    try:
        check(**values)
    except OptionError as e:
        return e.describe()
    return True


def _demo():
    from ..ltx2.tiny import default_demo

    return default_demo()


def _resolve(name: str, kinds: tuple[str, ...], demo_file: str):
    """A listed name -> path: the embedded demo's file, an absolute path, or the first model folder kind that
    holds it."""
    if name == EMBEDDED:
        return getattr(_demo(), demo_file)
    if os.path.isabs(name):
        return name
    for kind in kinds:
        try:
            return comfy.resolve_model_path(kind, name)
        except FileNotFoundError:
            continue
    raise FileNotFoundError(f"{name!r} is in none of the model folders {list(kinds)}")


def _checkpoint_choices() -> list[str]:
    return ([EMBEDDED] + comfy.checkpoint_folders(MODEL_FOLDER) + comfy.safetensors_files("checkpoints")
            + comfy.safetensors_files("diffusion_models"))


def _text_encoder_choices() -> list[str]:
    return ([EMBEDDED] + comfy.checkpoint_folders("text_encoders", marker="config.json")
            + comfy.safetensors_files("text_encoders"))


def _upsampler_choices() -> list[str]:
    return [EMBEDDED] + comfy.safetensors_files("latent_upscale_models")


def _lora_choices() -> list[str]:
    return [EMBEDDED] + comfy.safetensors_files("loras")


# ---------------------------------------------------------------------------------------------- loaders
class LTX2CheckpointLoader:
    DESCRIPTION = ("Loads an LTX-2 / LTX-2.3 checkpoint: the official single file (e.g. ltx-2.3-22b-dev.safetensors) or "
                   "a diffusers folder. Gives the transformer with its text connectors, and the video VAE, audio VAE "
                   "and vocoder.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LTX2_MODEL", "LTX2_VAE")
    RETURN_NAMES = ("model", "vae")
    OUTPUT_TOOLTIPS = ("The transformer and its text connectors.", "Video VAE, audio VAE and vocoder.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "checkpoint": (_checkpoint_choices(), {"tooltip":
                           "An official single file from models/checkpoints or models/diffusion_models, or a diffusers "
                           "folder from models/ltx2. The embedded demo is a tiny random model: its output is noise."}),
            "weight_dtype": (DTYPES + ["fp8_e4m3fn"], {"default": "bf16", "tooltip":
                             "Weight and compute precision. fp8_e4m3fn stores the transformer blocks' linear weights in "
                             "8 bits (one scale per weight) and computes in bf16. Scaled fp8 files load as fp8 with "
                             "any choice."}),
            "device": (["default", "cpu"], {"default": "default",
                       "tooltip": "default: ComfyUI's compute device (the GPU when there is one)."}),
        }, "optional": {"offload_blocks": comfy.OFFLOAD_BLOCKS_INPUT}}

    @classmethod
    def VALIDATE_INPUTS(cls, checkpoint=None):
        return comfy.check_choice("checkpoint", checkpoint, _checkpoint_choices())

    def load(self, checkpoint, weight_dtype="bf16", device="default", offload_blocks=0):
        from ..ltx2.loader import load_ltx2_checkpoint

        set_attention_backend(comfy.attention_backend())  # ComfyUI's --use-flash-attention / --use-sage-attention
        fp8 = weight_dtype == "fp8_e4m3fn"

        def load(where):
            path = _resolve(checkpoint, (MODEL_FOLDER, "checkpoints", "diffusion_models"), "checkpoint")
            return path, load_ltx2_checkpoint(path, device=where, dtype="bf16" if fp8 else weight_dtype,
                                              weight_dtype="fp8_e4m3fn" if fp8 else "default")

        dev, (path, ck) = comfy.load_for_node("LTX2CheckpointLoader", "checkpoint", device, load,
                                              on_host=bool(offload_blocks))
        codecs = nn.ModuleDict({"video_vae": ck.video_vae, "audio_vae": ck.audio_vae, "vocoder": ck.vocoder})
        vae = LTX2VAE(ck.video_vae, ck.audio_vae, ck.vocoder, dev, comfy.manage(codecs, dev))
        core = nn.ModuleDict({"transformer": ck.transformer, "connectors": ck.connectors})
        blocks = ck.transformer.transformer_blocks
        streamed = streamed_blocks(offload_blocks, core, blocks, dev, free_bytes=comfy.free_memory(dev))
        state = enable_block_offload(core, blocks, dev, len(blocks) - streamed) if streamed else None
        model = LTX2Model(ck.transformer, ck.connectors, dev, comfy.manage(core, dev, _preview_format(vae, path)),
                          offload=state)
        return (model, vae)


class LTX2TextEncoderLoader:
    DESCRIPTION = ("Loads the Gemma-3 text encoder of LTX-2: ComfyUI's single gemma_3_12B_it.safetensors from "
                   "models/text_encoders, or a Hugging Face Gemma-3 folder there. It is taken off the GPU again as "
                   "soon as the prompts are encoded.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LTX2_TEXT_ENCODER",)
    RETURN_NAMES = ("text_encoder",)
    OUTPUT_TOOLTIPS = ("Gemma-3 with its tokenizer.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": (_text_encoder_choices(), {"tooltip":
                             "gemma_3_12B_it.safetensors (its tokenizer inside, needs sentencepiece) or a Gemma-3 "
                             "folder, from models/text_encoders."}),
            "dtype": (DTYPES + ["fp8_e4m3fn"], {"default": "bf16", "tooltip":
                      "Gemma's precision. fp8_e4m3fn stores the decoder layers' linear weights of a single bf16 file "
                      "in 8 bits (one scale per weight) and computes in bf16. Scaled fp8 files (e.g. "
                      "gemma_3_12B_it_fp8_scaled.safetensors) load as fp8 with any choice."}),
            "device": (["default", "cpu"], {"default": "default", "tooltip": "default: ComfyUI's compute device."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, text_encoder=None):
        return comfy.check_choice("text_encoder", text_encoder, _text_encoder_choices())

    def load(self, text_encoder, dtype="bf16", device="default"):
        from ..ltx2.text_encoding import load_gemma_text_encoder

        fp8 = dtype == "fp8_e4m3fn"
        dev, enc = comfy.load_for_node(
            "LTX2TextEncoderLoader", "text_encoder", device,
            load=lambda where: load_gemma_text_encoder(_resolve(text_encoder, ("text_encoders",), "text_encoder"),
                                                       device=where, dtype="bf16" if fp8 else dtype,
                                                       weight_dtype="fp8_e4m3fn" if fp8 else "default"))
        return (LTX2TextEncoder(enc, dev, comfy.manage(enc.model, dev)),)


class LTX2UpsamplerLoader:
    DESCRIPTION = "Loads the LTX-2 x2 spatial latent upsampler (e.g. ltx-2.3-spatial-upscaler-x2-1.0.safetensors)."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LTX2_UPSAMPLER",)
    RETURN_NAMES = ("upsampler",)
    OUTPUT_TOOLTIPS = ("The x2 latent upsampler for Upsample + Refine.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "upsampler": (_upsampler_choices(), {"tooltip": "A .safetensors file from models/latent_upscale_models."}),
            "dtype": (DTYPES, {"default": "bf16", "tooltip": "Precision (use the checkpoint's)."}),
            "device": (["default", "cpu"], {"default": "default", "tooltip": "default: ComfyUI's compute device."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, upsampler=None):
        return comfy.check_choice("upsampler", upsampler, _upsampler_choices())

    def load(self, upsampler, dtype="bf16", device="default"):
        from ..ltx2.upsampler import load_latent_upsampler

        dev, module = comfy.load_for_node(
            "LTX2UpsamplerLoader", "upsampler", device,
            load=lambda where: load_latent_upsampler(_resolve(upsampler, ("latent_upscale_models",), "upsampler"),
                                                     device=where, dtype=dtype))
        return (LTX2Upsampler(module, dev, comfy.manage(module, dev)),)


class LTX2LoraLoader:
    DESCRIPTION = ("Adds a LoRA (e.g. the distilled LoRA of the HQ pipeline) with one strength for the sampler (stage 1) "
                   "and one for Upsample + Refine (stage 2). It is merged while a node samples and taken out after, so "
                   "the loaded model itself never changes.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LTX2_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with the LoRA to merge.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("LTX2_MODEL", {"tooltip": "From LTX2 Checkpoint Loader (or another LoRA loader)."}),
            "lora": (_lora_choices(), {"tooltip": "A LoRA in the official layout, from models/loras."}),
            "strength_stage1": ("FLOAT", {"default": 0.25, "min": -10.0, "max": 10.0, "step": 0.05,
                                "tooltip": "Strength while LTX2 Sampler runs (official HQ: 0.25)."}),
            "strength_stage2": ("FLOAT", {"default": 0.5, "min": -10.0, "max": 10.0, "step": 0.05,
                                "tooltip": "Strength while LTX2 Upsample + Refine runs (official HQ: 0.5)."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, lora=None):
        return comfy.check_choice("lora", lora, _lora_choices())

    def apply(self, model, lora, strength_stage1=0.25, strength_stage2=0.5):
        for field, value in (("strength_stage1", strength_stage1), ("strength_stage2", strength_stage2)):
            try:
                number(field, value)
            except OptionError as e:
                raise _node_error("LTX2LoraLoader", field, e) from None
        try:
            path = _resolve(lora, ("loras",), "lora")
        except (ValueError, OSError) as e:
            raise _node_error("LTX2LoraLoader", "lora", e) from e
        return (replace(model, loras=model.loras + ((str(path), float(strength_stage1), float(strength_stage2)),)),)


@contextlib.contextmanager
def _merged_loras(model: LTX2Model, stage: int, node: str):
    """Merge the model's LoRAs at their strengths for ``stage`` (1 or 2) for the duration of a sampling run."""
    from ..ltx2.loader import load_distilled_lora

    handles = []
    try:
        for path, s1, s2 in model.loras:
            try:
                handles.append(load_distilled_lora(model.transformer, path, strength=s1 if stage == 1 else s2))
            except (ValueError, OSError) as e:
                raise _node_error(node, "model (LoRA)", e) from e
        yield
    finally:
        for h in reversed(handles):
            h.remove()


# ---------------------------------------------------------------------------------------------- text
class LTX2TextEncode:
    DESCRIPTION = ("Encodes the prompt and the negative prompt once with Gemma-3 and the checkpoint's text connectors; "
                   "every sampling step reuses them, and Gemma leaves the GPU when it is done.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LTX2_CONDITIONING",)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("Video and audio contexts of both prompts.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": ("LTX2_TEXT_ENCODER", {"tooltip": "From LTX2 Text Encoder Loader."}),
            "model": ("LTX2_MODEL", {"tooltip": "The checkpoint whose text connectors turn Gemma's states into contexts."}),
            "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "What to generate, sound included."}),
            "negative_prompt": ("STRING", {"multiline": True, "default": "",
                                           "tooltip": "What to steer away from (used by a guider with cfg above 1)."}),
        }}

    def encode(self, text_encoder, model, prompt, negative_prompt):
        enc = text_encoder.encoder
        park_streamed()  # a streamed transformer leaves the device to Gemma (ComfyUI cannot move one)
        comfy.load_to_device(text_encoder.patcher, enc.model, text_encoder.device)
        try:
            states = gemma_states(enc, prompt, negative_prompt)
        finally:
            comfy.unload(text_encoder.patcher, enc.model)
        model.load()
        try:
            prompts = connect(model.connectors, states)
        except (ValueError, RuntimeError) as e:
            raise _node_error("LTX2TextEncode", "text_encoder / model", ValueError(
                f"{e} (is the text encoder the one this checkpoint was trained with?)")) from e
        move = lambda ctx: tuple(t.to(comfy.intermediate_device()) for t in ctx)  # noqa: E731
        return (PromptContexts(move(prompts.positive), move(prompts.negative)),)


# ---------------------------------------------------------------------------------------------- latents
def _shape(latent: dict, node: str) -> LatentShape:
    """The :class:`LatentShape` of an LTX2 LATENT."""
    video, audio = latent.get("samples"), latent.get("ltx2_audio")
    if not isinstance(video, torch.Tensor) or video.ndim != 5 or not isinstance(audio, torch.Tensor) or audio.ndim != 4:
        raise ValueError(f"{node} (latent): expected an LTX2 latent (video [B, C, F, H, W] and its audio) from LTX2 Empty "
                         "Latent or an LTX2 node; got " + (f"samples {list(video.shape)}" if isinstance(video, torch.Tensor)
                                                          else "no samples") + ("" if audio is not None else " without audio"))
    b, c, f, h, w = video.shape
    return LatentShape(batch=b, video_channels=c, frames=f, height=h, width=w, audio_channels=audio.shape[1],
                       audio_frames=audio.shape[2], mel_bins=audio.shape[3], fps=float(latent.get("ltx2_fps", 24.0)))


def _check_size(width, height, frames, fps):
    if width is not None:
        O.check_side("width", width)
    if height is not None:
        O.check_side("height", height)
    if frames is not None:
        O.check_frames(frames)
    if fps is not None:
        O.check_fps(fps)


_SIZE = dict(min=O.SPATIAL_FACTOR, max=O.MAX_SIDE, step=O.SPATIAL_FACTOR)


class LTX2EmptyLatent:
    DESCRIPTION = ("An empty video + audio latent. For the two-stage pipelines (HQ, distilled) give half the final size: "
                   "Upsample + Refine doubles it.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("Video latent (ComfyUI's LTXV space) with its audio latent and frame rate.",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("LTX2_VAE", {"tooltip": "From LTX2 Checkpoint Loader: sets the latent channels."}),
            "width": ("INT", {"default": 768, **_SIZE, "tooltip": "Width in pixels, a multiple of 32."}),
            "height": ("INT", {"default": 512, **_SIZE, "tooltip": "Height in pixels, a multiple of 32."}),
            "frames": ("INT", {"default": 121, "min": 1, "max": O.MAX_FRAMES, "step": O.TEMPORAL_FACTOR,
                               "tooltip": "Frame count 8k+1 (9, 17, ..., 121); others are refused."}),
            "fps": ("FLOAT", {"default": 24.0, "min": O.FPS[0], "max": O.FPS[1], "step": 1.0,
                              "tooltip": "Frame rate: sets the sound's length and the time positions."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": O.MAX_BATCH, "tooltip": "Clips per run."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None, frames=None, fps=None):
        return _verdict(_check_size, width=width, height=height, frames=frames, fps=fps)

    def make(self, vae, width, height, frames, fps=24.0, batch_size=1):
        from ..ltx2.latents import latent_shape

        try:
            _check_size(width, height, frames, fps)
            integer("batch_size", batch_size, low=1, high=O.MAX_BATCH)
        except OptionError as e:
            raise _node_error("LTX2EmptyLatent", "", e) from None
        av = vae.audio_vae
        shape = latent_shape(frames, height, width, fps, batch=batch_size, video_channels=vae.video_vae.latent_channels,
                             audio_channels=av.latent_channels, mel_bins=av.mel_bins // av.mel_compression_ratio)
        dev = comfy.intermediate_device()
        return ({"samples": torch.zeros(shape.video_5d, device=dev), "ltx2_audio": torch.zeros(shape.audio_4d, device=dev),
                 "ltx2_fps": float(fps)},)


class LTX2ImageConditioning:
    DESCRIPTION = ("Conditions the clip on a picture at a frame: frame 0 is image-to-video (the picture replaces the first "
                   "latent frame), later frames are keyframes. Chain several. The picture is prepared as the official "
                   "pipelines do (resized to cover, centre-cropped, optionally passed through H.264).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The latent with the picture attached (the sampler and the refiner use it).",)
    FUNCTION = "condition"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("LTX2_VAE", {"tooltip": "Encodes the picture."}),
            "latent": ("LATENT", {"tooltip": "From LTX2 Empty Latent (or another Image Conditioning)."}),
            "image": ("IMAGE", {"tooltip": "The picture (the first of a batch is used)."}),
            "frame_idx": ("INT", {"default": 0, "min": 0, "max": O.MAX_FRAMES - 1,
                                  "tooltip": "The pixel frame it stands for: 0 = first frame (image-to-video)."}),
            "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05,
                                   "tooltip": "1 keeps the picture as it is; lower lets the model change it."}),
            "crf": ("INT", {"default": DEFAULT_IMAGE_CRF, "min": 0, "max": 51, "tooltip":
                            "H.264 rate factor of the official preparation (33), which makes the picture look like a "
                            "video frame; 0 skips it. Needs PyAV."}),
        }}

    def condition(self, vae, latent, image, frame_idx=0, strength=1.0, crf=DEFAULT_IMAGE_CRF):
        node = "LTX2ImageConditioning"
        shape = _shape(latent, node)
        frames = (shape.frames - 1) * O.TEMPORAL_FACTOR + 1
        try:
            integer("frame_idx", frame_idx, low=0, high=frames - 1)
            number("strength", strength, low=0.0, high=1.0)
            number("crf", crf, low=0.0, high=51.0)
        except OptionError as e:
            raise _node_error(node, "", OptionError(e.fields, e.values, e.problem + f" (the clip has {frames} frames)"
                                                    if e.fields == ("frame_idx",) else e.problem)) from None
        pictures = list(latent.get("ltx2_pictures", ()))
        if frame_idx == 0 and any(p.frame_idx == 0 for p in pictures):
            raise ValueError(f"{node} (frame_idx): the latent already has a frame-0 picture")
        try:
            new = prepare_pictures([(image[:1].float().cpu(), frame_idx, strength)], crf)
        except (ValueError, ImportError) as e:
            raise _node_error(node, "image / crf", e) from e
        pictures = sorted(pictures + new, key=lambda p: p.frame_idx != 0)
        vae.load()
        images = picture_latents(vae.video_vae, pictures, shape)
        return ({**latent, "ltx2_pictures": pictures, "ltx2_images": images},)


# ---------------------------------------------------------------------------------------------- guidance
class LTX2GuiderPreset:
    DESCRIPTION = "The official multi-pass guidance of LTX-2.3 (conditional, negative, perturbed and modality passes)."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LTX2_GUIDER",)
    RETURN_NAMES = ("guider",)
    OUTPUT_TOOLTIPS = ("Guidance for LTX2 Sampler.",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "preset": (list(PRESETS), {"default": "LTX-2.3 one-stage", "tooltip":
                       "one-stage: video cfg 3 / audio cfg 7, STG 1 on block 28, modality 3, rescale 0.7. HQ (stage 1 "
                       "of the two-stage HQ pipeline): STG off, rescale 0.45 video / 1.0 audio."}),
            "strategy": (STRATEGIES, {"default": "split", "tooltip":
                         "split: one model call per pass (least memory); batched: the passes in one batch (faster on "
                         "a large GPU)."}),
        }}

    def make(self, preset, strategy="split"):
        if preset not in PRESETS:
            raise ValueError(f"LTX2GuiderPreset (preset): {preset!r} is not one of {list(PRESETS)}")
        video, audio = PRESETS[preset]
        return (LTX2Guidance(video, audio, strategy),)


class LTX2Guider:
    DESCRIPTION = "Multi-pass guidance with every number: cfg, STG, modality and rescale per modality."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LTX2_GUIDER",)
    RETURN_NAMES = ("guider",)
    OUTPUT_TOOLTIPS = ("Guidance for LTX2 Sampler.",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        def scale(default, low, high, tip):
            return ("FLOAT", {"default": default, "min": low, "max": high, "step": 0.05, "tooltip": tip})

        inputs = {}
        for m, g in (("video", VIDEO_GUIDANCE), ("audio", AUDIO_GUIDANCE)):
            inputs[f"{m}_cfg"] = scale(g.cfg, O.SCALE[0], O.SCALE[1], f"Classifier-free guidance of the {m} (1 = off).")
            inputs[f"{m}_stg"] = scale(g.stg, 0.0, O.MAX_STG, f"Spatio-temporal guidance of the {m}: self-attention "
                                                              "skipped in stg_blocks (0 = off).")
            inputs[f"{m}_modality"] = scale(g.modality, O.SCALE[0], O.SCALE[1], f"Audio-video cross-attention guidance "
                                                                                 f"of the {m} (1 = off).")
            inputs[f"{m}_rescale"] = scale(g.rescale, 0.0, 1.0, f"Rescales the guided {m} toward the conditional "
                                                                 "estimate's spread (0 = off).")
        inputs["stg_blocks"] = ("STRING", {"default": "28", "tooltip": "Transformer blocks whose self-attention STG "
                                                                       "skips, e.g. 28 or 20, 28."})
        inputs["strategy"] = (STRATEGIES, {"default": "split", "tooltip": "split: one call per pass (least memory); "
                                                                          "batched: one batch."})
        return {"required": inputs}

    @classmethod
    def VALIDATE_INPUTS(cls, stg_blocks=None):
        return _verdict(lambda stg_blocks: stg_blocks is None or O.parse_blocks(stg_blocks), stg_blocks=stg_blocks)

    def make(self, video_cfg, video_stg, video_modality, video_rescale, audio_cfg, audio_stg, audio_modality,
             audio_rescale, stg_blocks="28", strategy="split"):
        try:
            blocks = O.parse_blocks(stg_blocks)
            O.check_guidance_numbers("video", video_cfg, video_stg, video_modality, video_rescale)
            O.check_guidance_numbers("audio", audio_cfg, audio_stg, audio_modality, audio_rescale)
        except OptionError as e:
            raise _node_error("LTX2Guider", "", e) from None
        make = lambda cfg, stg, mod, rs: Guidance(cfg, stg, blocks if stg else (), mod, rs)  # noqa: E731
        return (LTX2Guidance(make(video_cfg, video_stg, video_modality, video_rescale),
                             make(audio_cfg, audio_stg, audio_modality, audio_rescale), strategy),)


# ---------------------------------------------------------------------------------------------- sampling
def _preview_format(vae: LTX2VAE, checkpoint):
    """ComfyUI's LTXV latent format with the RGB map fitted on this checkpoint's video VAE (:mod:`..ltx2.preview`),
    for live previews of the video stream; None outside ComfyUI (nothing shows previews there)."""
    from ..ltx2.preview import fitted_factors, preview_format

    base = comfy.comfyui_latent_format("LTXV")
    if base is None:
        return None
    try:
        vae.load()
        factors = fitted_factors(vae.video_vae, checkpoint)
    except Exception as e:  # noqa: BLE001 - previews are a convenience: sampling goes on without them
        print(f"[LTX2] no live previews: fitting the preview map failed ({type(e).__name__}: {e})")
        return None
    return preview_format(base, factors)


def _step_callback(model: LTX2Model, shape: LatentShape, steps: int):
    """One progress update, interrupt check and (in ComfyUI) live preview of the video per sampler step."""
    preview = comfy.latent_preview_callback(model.patcher, steps)
    bar = comfy.progress_bar(steps) if preview is None else None

    def on_step(info):
        comfy.check_interrupt()
        if preview is not None:
            video = info["denoised"][0][:, : shape.video_tokens]
            preview(info["i"], unpack_video(video.float(), shape.frames, shape.height, shape.width), None, steps)
        else:
            bar.update(1)

    return on_step


def _sampler_inputs(sampler_default: str) -> dict:
    return {
        "sampler": (list(SAMPLERS), {"default": sampler_default, "tooltip":
                    "res2s: the HQ pipeline's second-order SDE sampler (two model calls per step); euler: the one-stage "
                    "and distilled pipelines' sampler."}),
        "eta": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05,
                          "tooltip": "res2s: share of the noise renewed at each step (0 = deterministic)."}),
        "sde_noise": (list(SDE_NOISE), {"default": "seeded", "tooltip":
                      "res2s noise: seeded (from the seed) or reference (the official pipelines' fixed seeds)."}),
    }


def _pictures_device(images, dev):
    return [replace(i, latent=i.latent.to(dev)) for i in images]


def _prompts_on(conditioning: PromptContexts, dev):
    move = lambda ctx: None if ctx is None else tuple(t.to(dev) for t in ctx)  # noqa: E731
    return PromptContexts(move(conditioning.positive), move(conditioning.negative))


def _out_latent(latent: dict, video: torch.Tensor, audio: torch.Tensor, shape: LatentShape, seed: int) -> dict:
    dev = comfy.intermediate_device()
    out = {k: v for k, v in latent.items() if k not in ("noise_mask", "ltx2_images")}
    out["samples"] = unpack_video(video, shape.frames, shape.height, shape.width).float().to(dev)
    out["ltx2_audio"] = unpack_audio(audio, shape.audio_channels).float().to(dev)
    out["ltx2_seed"] = int(seed)
    return out


def _sigmas(node: str, shape: LatentShape, steps, schedule, sigmas):
    if sigmas is not None:
        values = [float(s) for s in (sigmas.tolist() if isinstance(sigmas, torch.Tensor) else sigmas)]
        if len(values) < 2 or not all(a > b for a, b in zip(values, values[1:])) or values[0] > 1.0 or values[-1] < 0:
            raise ValueError(f"{node} (sigmas): need at least two decreasing values in [0, 1], got {values}")
        return values
    if schedule == "distilled":
        if steps != len(DISTILLED_SIGMAS) - 1:
            raise ValueError(f"{node}: steps={steps}: the distilled schedule has exactly {len(DISTILLED_SIGMAS) - 1} "
                             "steps; set steps to that, or pick another schedule")
        return list(DISTILLED_SIGMAS)
    if schedule not in SCHEDULES:
        raise ValueError(f"{node} (schedule): {schedule!r} is not one of {SCHEDULES}")
    return ltx2_sigmas(steps, tokens=shape.video_tokens if schedule != "ltx2" else None)


class LTX2Sampler:
    DESCRIPTION = ("Samples video and sound together from the seed's noise at the latent's size: the one-stage pipeline, "
                   "or stage 1 of the HQ / distilled pipelines. Progress, live previews of the video and Cancel per step.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The sampled video + audio latent (it remembers its seed for Upsample + Refine).",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("LTX2_MODEL", {"tooltip": "From LTX2 Checkpoint Loader (or LTX2 LoRA Loader: stage-1 strength)."}),
                "conditioning": ("LTX2_CONDITIONING", {"tooltip": "From LTX2 Text Encode."}),
                "latent": ("LATENT", {"tooltip": "From LTX2 Empty Latent or LTX2 Image Conditioning."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": O.MAX_SEED, "control_after_generate": True,
                                 "tooltip": "Noise seed (the same seed gives the same clip as the generate command)."}),
                "steps": ("INT", {"default": 30, "min": O.STEPS[0], "max": O.STEPS[1], "tooltip":
                                  "Sampling steps (one-stage 30, HQ stage 1 15, distilled exactly 8)."}),
                "schedule": (SCHEDULES, {"default": "ltx2", "tooltip":
                             "ltx2: the one-stage schedule; token-shifted: shifted by this latent's size (the HQ "
                             "pipeline's stage 1); distilled: the distilled checkpoint's fixed 8 sigmas."}),
                **_sampler_inputs("euler"),
            },
            "optional": {
                "guider": ("LTX2_GUIDER", {"tooltip": "Multi-pass guidance; without one only the prompt is used (the "
                                                      "distilled pipeline)."}),
                "sigmas": ("SIGMAS", {"tooltip": "Custom sigmas (decreasing, in [0, 1]); they replace steps and schedule."}),
            },
        }

    def sample(self, model, conditioning, latent, seed, steps, schedule="ltx2", sampler="euler", eta=0.5,
               sde_noise="seeded", guider=None, sigmas=None):
        node = "LTX2Sampler"
        shape = _shape(latent, node)
        try:
            integer("seed", seed, low=0, high=O.MAX_SEED)
            integer("steps", steps, low=O.STEPS[0], high=O.STEPS[1])
            number("eta", eta, low=0.0, high=1.0)
        except OptionError as e:
            raise _node_error(node, "", e) from None
        sig = _sigmas(node, shape, steps, schedule, sigmas)
        if guider is not None and conditioning.negative is None:
            raise ValueError(f"{node} (conditioning): a guider needs the negative prompt's contexts")
        transformer = model.load()
        dev = model.device
        images = _pictures_device(latent.get("ltx2_images", ()), dev)
        try:
            with _merged_loras(model, 1, node):
                video, audio = sample(
                    transformer, _prompts_on(conditioning, dev), shape, sig, seed=seed, images=images,
                    sampler=sampler, guidance=None if guider is None else (guider.video, guider.audio), eta=eta,
                    sde_noise=sde_noise, strategy="split" if guider is None else guider.strategy, device=dev,
                    callback=_step_callback(model, shape, len(sig) - 1))
        except ValueError as e:
            raise _node_error(node, "inputs", e) from e
        return (_out_latent(latent, video, audio, shape, seed),)


class LTX2UpsampleRefine:
    DESCRIPTION = ("Stage 2 of the two-stage pipelines: the x2 latent upsampler doubles the sampled video latent, then a "
                   "short second pass (the distilled 3-step sigmas) refines video and sound at full size. It continues "
                   "the sampler's seed.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The refined latent at twice the width and height.",)
    FUNCTION = "refine"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("LTX2_MODEL", {"tooltip": "The same model as the sampler's (a LoRA loader's stage-2 strength "
                                                    "applies here)."}),
                "conditioning": ("LTX2_CONDITIONING", {"tooltip": "From LTX2 Text Encode (stage 2 uses the prompt only "
                                                                  "unless a guider is given)."}),
                "latent": ("LATENT", {"tooltip": "From LTX2 Sampler."}),
                "upsampler": ("LTX2_UPSAMPLER", {"tooltip": "From LTX2 Upsampler Loader."}),
                "vae": ("LTX2_VAE", {"tooltip": "Its latent statistics frame the upsampler; re-encodes the pictures at "
                                                "full size."}),
                **_sampler_inputs("res2s"),
            },
            "optional": {
                "guider": ("LTX2_GUIDER", {"tooltip": "Optional guidance (the official pipelines use none here)."}),
                "sigmas": ("SIGMAS", {"tooltip": "Custom stage-2 sigmas (default: the official 0.909375, 0.725, "
                                                 "0.421875, 0)."}),
            },
        }

    def refine(self, model, conditioning, latent, upsampler, vae, sampler="res2s", eta=0.5, sde_noise="seeded",
               guider=None, sigmas=None):
        node = "LTX2UpsampleRefine"
        shape = _shape(latent, node)
        if "ltx2_seed" not in latent:
            raise ValueError(f"{node} (latent): connect the output of LTX2 Sampler (the refiner continues its seed)")
        try:
            number("eta", eta, low=0.0, high=1.0)
        except OptionError as e:
            raise _node_error(node, "", e) from None
        sig = list(STAGE2_SIGMAS) if sigmas is None else _sigmas(node, shape, 0, None, sigmas)
        up = upsampler.load()
        if up.config["in_channels"] != shape.video_channels:
            raise ValueError(f"{node} (upsampler): it takes {up.config['in_channels']} latent channels, the latent has "
                             f"{shape.video_channels} (an upsampler of another model?)")
        vae.load()
        full = doubled(shape)
        images = picture_latents(vae.video_vae, latent.get("ltx2_pictures", ()), full)
        transformer = model.load()
        dev = model.device
        video = pack_video(latent["samples"].to(dev))
        audio = pack_audio(latent["ltx2_audio"].to(dev))
        vv = vae.video_vae
        try:
            with _merged_loras(model, 2, node):
                video, audio = refine(
                    transformer, up, vv.latents_mean, vv.latents_std, _prompts_on(conditioning, dev), video, audio,
                    shape, sig, seed=latent["ltx2_seed"], images=_pictures_device(images, dev), sampler=sampler,
                    guidance=None if guider is None else (guider.video, guider.audio), eta=eta, sde_noise=sde_noise,
                    strategy="split" if guider is None else guider.strategy, device=dev,
                    callback=_step_callback(model, full, len(sig) - 1))
        except ValueError as e:
            raise _node_error(node, "inputs", e) from e
        return (_out_latent(latent, video, audio, full, latent["ltx2_seed"]),)


# ---------------------------------------------------------------------------------------------- decode
class LTX2Decode:
    DESCRIPTION = ("Decodes the video latent to frames (in temporal chunks, optionally in spatial tiles) and the audio "
                   "latent to sound, ready for ComfyUI's Create Video (with audio) and Save Video.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT")
    RETURN_NAMES = ("images", "audio", "fps")
    OUTPUT_TOOLTIPS = ("All frames (clips of a batch one after another).", "The sound track of each clip.",
                       "The frame rate of the latent.")
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("LTX2_VAE", {"tooltip": "From LTX2 Checkpoint Loader."}),
            "latent": ("LATENT", {"tooltip": "From LTX2 Sampler or LTX2 Upsample + Refine."}),
            "temporal_chunk": ("INT", {"default": 4, "min": 0, "max": 1024, "tooltip":
                               "Latent frames per decode chunk (exact; memory stays flat with length). 0 = all at once."}),
            "spatial_tile": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 32, "tooltip":
                             "Spatial tiles of this many pixels (long side), blended over tile_overlap; 0 = no tiles. "
                             "512 suits large frames on small GPUs."}),
            "tile_overlap": ("INT", {"default": 64, "min": 0, "max": 1024, "step": 32,
                             "tooltip": "Overlap of spatial tiles in pixels."}),
        }}

    def decode(self, vae, latent, temporal_chunk=4, spatial_tile=0, tile_overlap=64):
        node = "LTX2Decode"
        shape = _shape(latent, node)
        vae.load()
        comfy.check_interrupt()
        try:
            frames, wave, rate = decode(vae.video_vae, vae.audio_vae, vae.vocoder, latent["samples"],
                                        latent["ltx2_audio"], shape, temporal_chunk=temporal_chunk or None,
                                        spatial_tile=spatial_tile or None, spatial_overlap=tile_overlap)
            require_finite(frames, "the decoded frames")
            require_finite(wave, "the decoded sound")
        except NonFiniteError as e:
            raise _node_error(node, "latent", e) from e
        comfy.check_interrupt()
        dev = comfy.intermediate_device()
        return (frames.to(dev), {"waveform": wave.to(dev), "sample_rate": int(rate)}, float(shape.fps))


NODE_CLASS_MAPPINGS = {
    "LTX2CheckpointLoader": LTX2CheckpointLoader,
    "LTX2TextEncoderLoader": LTX2TextEncoderLoader,
    "LTX2UpsamplerLoader": LTX2UpsamplerLoader,
    "LTX2LoraLoader": LTX2LoraLoader,
    "LTX2TextEncode": LTX2TextEncode,
    "LTX2EmptyLatent": LTX2EmptyLatent,
    "LTX2ImageConditioning": LTX2ImageConditioning,
    "LTX2GuiderPreset": LTX2GuiderPreset,
    "LTX2Guider": LTX2Guider,
    "LTX2Sampler": LTX2Sampler,
    "LTX2UpsampleRefine": LTX2UpsampleRefine,
    "LTX2Decode": LTX2Decode,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LTX2CheckpointLoader": "LTX2 Checkpoint Loader",
    "LTX2TextEncoderLoader": "LTX2 Text Encoder Loader (Gemma-3)",
    "LTX2UpsamplerLoader": "LTX2 Upsampler Loader",
    "LTX2LoraLoader": "LTX2 LoRA Loader",
    "LTX2TextEncode": "LTX2 Text Encode",
    "LTX2EmptyLatent": "LTX2 Empty Latent (video + audio)",
    "LTX2ImageConditioning": "LTX2 Image Conditioning",
    "LTX2GuiderPreset": "LTX2 Guider (preset)",
    "LTX2Guider": "LTX2 Guider",
    "LTX2Sampler": "LTX2 Sampler",
    "LTX2UpsampleRefine": "LTX2 Upsample + Refine",
    "LTX2Decode": "LTX2 Decode (video + audio)",
}
