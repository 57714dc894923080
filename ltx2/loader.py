"""Loading a whole LTX-2 / LTX-2.3 model: the checkpoint, the Gemma-3 text encoder and the distilled LoRA.

Two checkpoint layouts are read (ltx2.md 2.1 and 2.3):

* the official single file (the "ComfyUI" checkpoint): every component in one ``.safetensors`` file under
  its own prefix (``model.diffusion_model.*``, ``text_embedding_projection.*``, ``vae.*``, ``audio_vae.*``,
  ``vocoder.*``), the config as JSON in the header metadata ``config`` and the release in ``model_version``;
* a diffusers folder: ``model_index.json`` beside ``transformer/``, ``connectors/``, ``vae/``, ``audio_vae/``
  and ``vocoder/``, each with its ``config.json`` and safetensors weights.

Each module is built on the ``meta`` device and filled by :func:`core.checkpoint.load_into` with its
component's key map, strictly, so a missing or foreign tensor is an error rather than a silent random
weight. Everything that can be checked from the headers (is it an LTX-2 file, which release, does it hold
the requested components) is checked before any tensor is read.

LTX-2.0 and LTX-2.3 are told apart by their tensors (2.3 has the per-modality text projections and the
prompt AdaLN; 2.0 the single ``aggregate_embed`` and the DiT caption projection), cross-checked with the
``model_version`` metadata when the file has one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ..core.checkpoint import (
    CheckpointError,
    list_keys,
    load_into,
    metadata_config,
    read_config,
    safetensors_metadata,
)
from ..core.lora import LoraHandle, merge_lora
from . import audio_vae as _avae
from . import text as _text
from . import transformer as _tr
from . import video_vae as _vvae
from . import vocoder as _voc

__all__ = [
    "COMPONENTS",
    "LTX2Checkpoint",
    "GemmaTextEncoder",
    "load_ltx2_checkpoint",
    "detect_version",
    "load_gemma_text_encoder",
    "load_distilled_lora",
    "video_vae_config_from_official",
]

COMPONENTS = ("transformer", "connectors", "video_vae", "audio_vae", "vocoder")
_SUBFOLDERS = {"transformer": "transformer", "connectors": "connectors", "video_vae": "vae",
               "audio_vae": "audio_vae", "vocoder": "vocoder"}
# A key of each component in the official single file (used to report a missing component).
_OFFICIAL_HEADS = {
    "transformer": ("model.diffusion_model.",),
    "connectors": ("text_embedding_projection.", "model.diffusion_model.video_embeddings_connector."),
    "video_vae": ("vae.",),
    "audio_vae": ("audio_vae.",),
    "vocoder": ("vocoder.",),
}
_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
           "half": torch.float16, "fp32": torch.float32, "float32": torch.float32, "float": torch.float32}
_SUPPORTED = ("2.0", "2.3")
_GEMMA_WIDTH, _GEMMA_STATES = 3840, 49  # Gemma-3-12B, the text encoder of both releases


def _dtype(dtype) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower().removeprefix("torch.")]
    except KeyError:
        raise CheckpointError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}.") from None


@dataclass
class LTX2Checkpoint:
    """The loaded modules (None for components not requested), the release and the configs."""

    path: Path
    version: str  # "2.0" or "2.3"
    layout: str  # "single_file" or "diffusers"
    config: dict  # single file: the metadata config; diffusers: {"model_index": ..., component: config}
    configs: dict = field(default_factory=dict)  # component -> the config its module was built from
    transformer: Any = None
    connectors: Any = None
    video_vae: Any = None
    audio_vae: Any = None
    vocoder: Any = None
    metadata: dict = field(default_factory=dict)

    @property
    def is_v23(self) -> bool:
        return self.version == "2.3"


# --------------------------------------------------------------------------------------------------
# Release detection


def _parse_version(text: str, where: Path) -> tuple[int, int]:
    m = re.match(r"\s*v?(\d+)(?:\.(\d+))?", str(text))
    if m is None:
        raise CheckpointError(f"{where}: model_version {text!r} is not a version number.")
    return int(m.group(1)), int(m.group(2) or 0)


def _unsupported(text: str, where: Path) -> CheckpointError:
    return CheckpointError(
        f"{where}: LTX model_version {text!r} is not supported; this loader reads LTX-2.0 and LTX-2.3 "
        "checkpoints (LTX-Video 0.9.x and later LTX releases use other architectures)."
    )


def _version_from_official_keys(keys, where: Path) -> str | None:
    p = "model.diffusion_model."
    if (f"{p}prompt_adaln_single.linear.weight" in keys
            or "text_embedding_projection.video_aggregate_embed.weight" in keys
            or any(k.endswith(".to_gate_logits.weight") and k.startswith(p) for k in keys)):
        return "2.3"
    if f"{p}caption_projection.linear_1.weight" in keys or "text_embedding_projection.aggregate_embed.weight" in keys:
        return "2.0"
    return None


def _check_official_is_ltx2(keys, where: Path) -> None:
    p = "model.diffusion_model."
    audio = any(k.startswith((f"{p}audio_", "audio_vae.", "vocoder.")) for k in keys)
    video = any(k.startswith((f"{p}patchify_proj.", f"{p}transformer_blocks.", "vae.")) for k in keys)
    if audio:
        return
    if video:
        raise CheckpointError(
            f"{where}: this is an LTX-Video checkpoint without the audio stream (LTXV 0.9.x style), not "
            "LTX-2; its version is not supported. Use an LTX-2.0 or LTX-2.3 checkpoint "
            "(e.g. ltx-2.3-22b-dev.safetensors)."
        )
    few = ", ".join(sorted(keys)[:3])
    raise CheckpointError(
        f"{where}: not an LTX-2 checkpoint (no 'model.diffusion_model.audio_*', 'audio_vae.*' or 'vocoder.*' "
        f"tensors; first keys: {few}). It probably belongs to another model; pick the LTX-2 file."
    )


def detect_version(path) -> str:
    """'2.0' or '2.3' for an LTX-2 single file or diffusers folder (errors as :func:`load_ltx2_checkpoint`)."""
    p = Path(path).expanduser()
    if p.is_dir():
        return _diffusers_version(p, _read_index(p))
    return _official_version(p, list_keys([p]), safetensors_metadata(p))


def _official_version(file: Path, keys, metadata: dict) -> str:
    """The release from the tensors, checked against ``model_version``: a 2.x other than 2.0 / 2.3 is
    refused, as is a 2.0 / 2.3 that contradicts the tensors. Another major version with the LTX-2 audio-video
    tensors is read by its tensors (they decide the architecture; strict loading checks the rest)."""
    _check_official_is_ltx2(keys, file)
    version = _version_from_official_keys(keys, file)
    text = metadata.get("model_version")
    if text:
        major, minor = _parse_version(text, file)
        meta = f"{major}.{minor}"
        if major == 2 and meta not in _SUPPORTED:
            raise _unsupported(text, file)
        if major == 2 and version is not None and version != meta:
            raise CheckpointError(
                f"{file}: model_version says {text!r} but the tensors are LTX-{version}'s; the file is "
                "inconsistent (re-download it, or fix its metadata).")
        if major != 2 and version is None:
            raise _unsupported(text, file)
        version = version or meta
    if version is None:
        cfg = _metadata_config(file)
        tc = cfg.get("transformer", {})
        version = "2.3" if tc.get("cross_attention_adaln") or any(k in tc for k in _text._V2_KEYS) else "2.0"
    return version


def _read_index(folder: Path) -> dict:
    index = folder / "model_index.json"
    if not index.is_file():
        raise CheckpointError(
            f"{folder}: no model_index.json, so this is not a diffusers pipeline folder; point the loader at "
            "the LTX-2 single .safetensors file or at the diffusers folder that holds model_index.json."
        )
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{index}: not valid JSON ({e}).") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{index}: not a JSON object.")
    return data


def _diffusers_version(folder: Path, index: dict) -> str:
    name = str(index.get("_class_name", ""))
    if not name.startswith("LTX2"):
        if name.startswith("LTX"):
            raise CheckpointError(
                f"{folder / 'model_index.json'}: pipeline {name!r} is LTX-Video (0.9.x style), not LTX-2; its "
                "version is not supported. Use an LTX-2.0 or LTX-2.3 diffusers folder."
            )
        raise CheckpointError(
            f"{folder / 'model_index.json'}: pipeline {name or '(no _class_name)'!r} is not an LTX-2 pipeline; "
            "this folder belongs to another model."
        )
    for sub in ("connectors", "transformer"):
        cfg_file = folder / sub / "config.json"
        if cfg_file.is_file():
            cfg = read_config(folder / sub)
            if sub == "connectors":
                return "2.3" if cfg.get("per_modality_projections") else "2.0"
            return "2.3" if (cfg.get("cross_attn_mod") or cfg.get("gated_attn")) else "2.0"
    raise CheckpointError(f"{folder}: neither connectors/config.json nor transformer/config.json; the folder "
                          "is incomplete.")


def _metadata_config(file: Path) -> dict:
    cfg = metadata_config(file)
    if cfg is None:
        raise CheckpointError(
            f"{file}: no 'config' entry in the safetensors metadata; an official LTX-2 single file carries its "
            "config there. Re-download the checkpoint (or use the diffusers folder)."
        )
    return cfg


# --------------------------------------------------------------------------------------------------
# Loading


def load_ltx2_checkpoint(path, *, device="cpu", dtype="bf16", components: Sequence[str] = COMPONENTS,
                         text_hidden_size: int | None = None,
                         text_num_hidden_states: int | None = None,
                         weight_dtype: str = "default") -> LTX2Checkpoint:
    """Load an LTX-2.0 / LTX-2.3 checkpoint: an official single ``.safetensors`` file or a diffusers folder.

    ``components``: any of ``"transformer"``, ``"connectors"``, ``"video_vae"``, ``"audio_vae"``,
    ``"vocoder"``. ``dtype``: a torch dtype or "bf16" / "fp16" / "fp32" (None keeps the file's dtypes).

    ``text_hidden_size`` / ``text_num_hidden_states``: Gemma's width and number of hidden states, needed only
    for an official LTX-2.3 file with a text encoder other than Gemma-3-12B (3840, 49); the 2.0 layout and
    diffusers folders carry them.

    Quantized files load (``core.quant``: ComfyUI's scaled fp8 files, e.g. ``ltx-2.3-22b-dev-fp8.safetensors``): the
    fp8 Linear weights of the transformer blocks stay fp8 and are dequantized per layer in each call (or multiplied
    in fp8 where the GPU can); quantized tensors elsewhere are dequantized at load. ``weight_dtype="fp8_e4m3fn"``
    stores the transformer blocks' Linear weights of a high-precision file in fp8 (one scale per weight) at load.
    """
    comps = tuple(components)
    unknown = [c for c in comps if c not in COMPONENTS]
    if unknown:
        raise CheckpointError(f"unknown LTX-2 component(s) {unknown}; choose from {list(COMPONENTS)}.")
    dt = _dtype(dtype)
    if weight_dtype not in WEIGHT_DTYPES:
        raise CheckpointError(f"weight_dtype={weight_dtype!r} is not one of {list(WEIGHT_DTYPES)}.")
    quant = _quant_options(weight_dtype)
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"{p}: no such file or folder. Check the path of the LTX-2 checkpoint.")
    if p.is_dir():
        return _load_diffusers(p, comps, device, dt, quant)
    if p.name == "model_index.json":
        return _load_diffusers(p.parent, comps, device, dt, quant)
    if p.suffix != ".safetensors":
        raise CheckpointError(
            f"{p}: not a .safetensors file; point the loader at the LTX-2 single-file checkpoint or at a "
            "diffusers folder with model_index.json.")
    return _load_single_file(p, comps, device, dt, text_hidden_size, text_num_hidden_states, quant)


# The Linear layers that may hold fp8 weights: those of the transformer blocks (the embeddings, AdaLN and time
# embedders, projections, norms and the other components stay wide; quantized tensors there are dequantized at load).
QUANT_LAYERS = ("transformer_blocks.",)
WEIGHT_DTYPES = ("default", "fp8_e4m3fn")


def _quant_options(weight_dtype: str) -> dict:
    """load_into options per component: fp8 Linear layers only in the transformer's blocks."""
    fp8 = QUANT_LAYERS if weight_dtype == "fp8_e4m3fn" else ()
    return {"transformer": {"quant_layers": QUANT_LAYERS, "store_fp8": fp8}}


def _load(module_name: str, file: Path, module: torch.nn.Module, quant: dict | None = None, **kw) -> torch.nn.Module:
    kw.update((quant or {}).get(module_name, {"quant_layers": ()}))
    try:
        load_into(module, file, **kw)
    except CheckpointError as e:
        raise CheckpointError(f"LTX-2 {module_name} from {file}: {e}") from None
    return module.eval()


def _gemma_dims(file: Path, keys, version: str, hidden: int | None, states: int | None) -> tuple[int, int]:
    if version == "2.0":
        entry = keys.get("text_embedding_projection.aggregate_embed.weight")
        if entry is not None:
            out_f, in_f = entry[1]
            return out_f, in_f // out_f
        return hidden or _GEMMA_WIDTH, states or _GEMMA_STATES
    entry = keys.get("text_embedding_projection.video_aggregate_embed.weight")
    in_f = entry[1][1] if entry is not None else _GEMMA_WIDTH * _GEMMA_STATES
    if hidden is None and states is None:
        hidden = _GEMMA_WIDTH
    if hidden is None:
        hidden = in_f // states
    if states is None:
        states = in_f // hidden
    if not hidden or not states or hidden * states != in_f:
        raise CheckpointError(
            f"{file}: the LTX-2.3 text projection takes {in_f} features, which is not {hidden} (Gemma width) x "
            f"{states} (hidden states); pass text_hidden_size / text_num_hidden_states for this text encoder.")
    return hidden, states


_ENCODER_DOWN = {"compress_space_res": "spatial", "compress_time_res": "temporal", "compress_all_res": "spatiotemporal"}
_DECODER_UP = {"compress_space": "spatial", "compress_time": "temporal", "compress_all": "spatiotemporal"}


def _block_list(blocks, where: str) -> list[tuple[str, dict]]:
    out = []
    for item in blocks:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise CheckpointError(f"{where}: malformed video VAE block entry {item!r}.")
        name, params = item
        out.append((str(name), {"num_layers": params} if isinstance(params, int) else dict(params or {})))
    return out


def video_vae_config_from_official(vc: dict, *, decoder_conv_in_channels: int | None = None,
                                   where: str = "video VAE") -> dict:
    """diffusers-style :class:`LTX2VideoVAE` config from the official ``vae`` metadata section (ltx-core's
    ``encoder_blocks`` / ``decoder_blocks`` lists; ``decoder_blocks`` is listed in encoder order and built
    reversed). ``decoder_conv_in_channels``: the width after the decoder's ``conv_in`` when known from the
    checkpoint's tensor shapes; otherwise ``decoder_base_channels`` (default 128) times the product of the
    decoder's channel reductions."""
    if vc.get("norm_layer", "pixel_norm") != "pixel_norm" or vc.get("latent_log_var", "uniform") != "uniform":
        raise CheckpointError(f"{where}: only pixel_norm / uniform log-variance video VAEs are supported, got "
                              f"{vc.get('norm_layer')!r} / {vc.get('latent_log_var')!r}.")
    latent = int(vc.get("latent_channels", 128))
    pad = vc.get("spatial_padding_mode")
    enc = _block_list(vc.get("encoder_blocks", []), where)
    if len(enc) % 2 != 1 or any(n != "res_x" for n, _ in enc[::2]) or any(n not in _ENCODER_DOWN for n, _ in enc[1::2]):
        raise CheckpointError(f"{where}: unsupported encoder block layout {[n for n, _ in enc]} (expected res_x "
                              "blocks alternating with compress_*_res blocks).")
    width, block_out, layers, down = latent, [], [], []
    for (_, res), (name, comp) in zip(enc[::2], enc[1::2]):
        layers.append(int(res.get("num_layers", 1)))
        width *= int(comp.get("multiplier", 2))
        block_out.append(width)
        down.append(_ENCODER_DOWN[name])
    layers.append(int(enc[-1][1].get("num_layers", 1)))

    dec = _block_list(vc.get("decoder_blocks", []), where)[::-1]  # build order
    if len(dec) % 2 != 1 or any(n != "res_x" for n, _ in dec[::2]) or any(n not in _DECODER_UP for n, _ in dec[1::2]):
        raise CheckpointError(f"{where}: unsupported decoder block layout {[n for n, _ in dec[::-1]]} (expected res_x "
                              "blocks alternating with compress_* blocks).")
    noise = [bool(p.get("inject_noise", False)) for _, p in dec[::2]]
    factors = [int(p.get("multiplier", 1)) for _, p in dec[1::2]]
    if decoder_conv_in_channels is None:
        decoder_conv_in_channels = int(vc.get("decoder_base_channels", 128))
        for f in factors:
            decoder_conv_in_channels *= f
    width, chans, types, residual = decoder_conv_in_channels, [], [], []
    for (name, p), f in zip(dec[1::2], factors):
        chans.append(width)
        types.append(_DECODER_UP[name])
        residual.append(bool(p.get("residual", False)))
        width //= f
    dec_layers = [int(p.get("num_layers", 1)) for _, p in dec[::2]]
    n_up = len(chans)
    return {
        "in_channels": vc.get("in_channels", 3),
        "out_channels": vc.get("out_channels", 3),
        "latent_channels": latent,
        "block_out_channels": block_out,
        "down_block_types": ["LTX2VideoDownBlock3D"] * len(block_out),
        "layers_per_block": layers,
        "spatio_temporal_scaling": [True] * len(block_out),
        "downsample_type": down,
        "decoder_block_out_channels": chans[::-1],
        "decoder_layers_per_block": dec_layers[::-1],
        "decoder_spatio_temporal_scaling": [True] * n_up,
        "decoder_inject_noise": noise[::-1],
        "upsample_type": types,  # build order, as LTX2VideoVAE indexes it
        "upsample_residual": residual[::-1],
        "upsample_factor": factors[::-1],
        "timestep_conditioning": bool(vc.get("timestep_conditioning", True)),
        "patch_size": vc.get("patch_size", 4),
        "patch_size_t": 1,
        "encoder_causal": True,
        "decoder_causal": bool(vc.get("causal_decoder", False)),
        "encoder_spatial_padding_mode": vc.get("encoder_spatial_padding_mode", pad or "zeros"),
        "decoder_spatial_padding_mode": vc.get("decoder_spatial_padding_mode", pad or "reflect"),
    }


def _video_vae_config(file: Path, cfg: dict, keys) -> dict:
    vc = cfg.get("vae")
    if not isinstance(vc, dict):
        raise CheckpointError(f"{file}: the metadata config has no 'vae' section, so the video VAE cannot be built.")
    if "block_out_channels" in vc or "decoder_block_out_channels" in vc:  # already diffusers-style
        return vc
    if "encoder_blocks" not in vc or "decoder_blocks" not in vc:
        raise CheckpointError(f"{file}: the 'vae' config has neither 'encoder_blocks'/'decoder_blocks' nor a "
                              "diffusers-style layout; the video VAE cannot be built.")
    conv_in = keys.get("vae.decoder.conv_in.conv.weight")
    return video_vae_config_from_official(vc, decoder_conv_in_channels=conv_in[1][0] if conv_in else None,
                                          where=f"{file} (video VAE)")


def _load_single_file(file: Path, comps, device, dtype, text_hidden: int | None,
                      text_states: int | None, quant: dict | None = None) -> LTX2Checkpoint:
    keys = list_keys([file])
    metadata = safetensors_metadata(file)
    version = _official_version(file, keys, metadata)
    cfg = _metadata_config(file)
    for c in comps:
        if not any(k.startswith(_OFFICIAL_HEADS[c]) for k in keys):
            raise CheckpointError(
                f"{file}: this LTX-{version} file has no {c} tensors (no keys starting with "
                f"{' or '.join(repr(h) for h in _OFFICIAL_HEADS[c])}); load that component from another file, "
                "or leave it out of components.")
    out = LTX2Checkpoint(path=file, version=version, layout="single_file", config=cfg, metadata=metadata)
    common = dict(device=device, dtype=dtype)
    for c in comps:
        if c == "transformer":
            cap = keys.get("model.diffusion_model.caption_projection.linear_1.weight")
            mcfg = _tr.config_from_official(cfg, has_caption_projection=cap is not None,
                                            caption_channels=cap[1][1] if cap is not None else (text_hidden or _GEMMA_WIDTH))
            with torch.device("meta"):
                module = _tr.LTX2Transformer(mcfg)
            kmap = _tr.official_to_module_key
        elif c == "connectors":
            hidden, states = _gemma_dims(file, keys, version, text_hidden, text_states)
            mcfg = _text.config_from_official(cfg, caption_channels=hidden, text_proj_in_factor=states)
            with torch.device("meta"):
                module = _text.LTX2TextConnectors(mcfg)
            kmap = _text.official_to_module_key
        elif c == "video_vae":
            mcfg = _video_vae_config(file, cfg, keys)
            with torch.device("meta"):
                module = _vvae.LTX2VideoVAE(mcfg)
            n_down = len(module.config["block_out_channels"])
            kmap = _vvae.make_official_key_map(n_down)
        elif c == "audio_vae":
            mcfg = _avae.config_from_official(cfg)
            if mcfg.get("mel_bins") is None:
                mcfg["mel_bins"] = 64
            with torch.device("meta"):
                module = _avae.LTX2AudioVAE(mcfg)
            kmap = _avae.official_to_module_key
        else:
            mcfg = _voc.config_from_official(cfg)
            with torch.device("meta"):
                module = _voc.build_vocoder(mcfg)
            kmap = _voc.official_to_module_key
        out.configs[c] = mcfg
        setattr(out, c, _load(c, file, module, quant, key_map=kmap, **common))
    return out


def _build_from_folder(component: str, sub: Path) -> torch.nn.Module:
    cfg = read_config(sub)
    with torch.device("meta"):
        if component == "transformer":
            return _tr.LTX2Transformer(cfg)
        if component == "connectors":
            return _text.LTX2TextConnectors(cfg)
        if component == "video_vae":
            return _vvae.LTX2VideoVAE(cfg)
        if component == "audio_vae":
            return _avae.LTX2AudioVAE(cfg)
        return _voc.build_vocoder(cfg)


def _load_diffusers(folder: Path, comps, device, dtype, quant: dict | None = None) -> LTX2Checkpoint:
    index = _read_index(folder)
    version = _diffusers_version(folder, index)
    for c in comps:
        sub = folder / _SUBFOLDERS[c]
        if not (sub / "config.json").is_file():
            raise CheckpointError(
                f"{folder}: the LTX-{version} diffusers folder has no {_SUBFOLDERS[c]}/config.json, so the {c} "
                "cannot be loaded; the download is incomplete or leave it out of components.")
    out = LTX2Checkpoint(path=folder, version=version, layout="diffusers", config={"model_index": index})
    for c in comps:
        sub = folder / _SUBFOLDERS[c]
        module = _build_from_folder(c, sub)
        out.config[c] = out.configs[c] = dict(read_config(sub))
        setattr(out, c, _load(c, sub, module, quant, device=device, dtype=dtype))
    return out


# --------------------------------------------------------------------------------------------------
# Gemma-3 text encoder


class GemmaTextEncoder:
    """Gemma-3 + its tokenizer, used the way LTX-2 does (ltx2.md 3.1): the prompt is stripped, tokenized
    with left padding to ``max_length`` (1024) with truncation, and the inner model (no LM head) returns
    every hidden state (embeddings + each layer)."""

    def __init__(self, model, tokenizer, *, max_length: int = 1024):
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def num_hidden_states(self) -> int:
        cfg = self.model.config
        text = getattr(cfg, "text_config", None) or cfg
        return int(text.num_hidden_layers) + 1

    @property
    def hidden_size(self) -> int:
        cfg = self.model.config
        text = getattr(cfg, "text_config", None) or cfg
        return int(text.hidden_size)

    def tokenize(self, prompt: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        enc = self.tokenizer([p.strip() for p in prompts], padding="max_length", max_length=self.max_length,
                             truncation=True, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    @torch.inference_mode()
    def encode(self, prompt: str | Sequence[str]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """(all hidden states, each [B, max_length, hidden], attention mask [B, max_length])."""
        ids, mask = self.tokenize(prompt)
        ids, mask = ids.to(self.device), mask.to(self.device)
        inner = getattr(self.model, "model", self.model)
        out = inner(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
        return tuple(out.hidden_states), mask

    __call__ = encode


def load_gemma_text_encoder(path, *, device="cpu", dtype="bf16", max_length: int = 1024,
                            tokenizer=None) -> GemmaTextEncoder:
    """Gemma-3 (the LTX-2 / LTX-2.3 text encoder) from a Hugging Face folder or from one ``.safetensors`` file.

    * Folder (config.json, safetensors weights, tokenizer files), read with ``local_files_only=True``: a full
      ``Gemma3ForConditionalGeneration`` folder (as LTX-2 ships) and a text-only ``gemma3_text`` folder both
      work.
    * Single file, e.g. ComfyUI's ``models/text_encoders/gemma_3_12B_it.safetensors``: the text weights under
      ``model.`` (or ``model.language_model.`` / ``language_model.model.`` as transformers saves them; vision
      tensors are ignored) and the SentencePiece tokenizer in its ``spiece_model`` tensor (needs the
      ``sentencepiece`` package). The config is the file's ``config`` metadata or, without one, read from the
      tensor shapes with Gemma-3-12B's other settings. fp8 / quantised files are refused. See
      :mod:`.gemma_file`.

    ``tokenizer``: a Hugging Face tokenizer folder, ``tokenizer.json`` or ``tokenizer.model`` (or a tokenizer
    object) to use instead of the one in the folder / file; a single file without ``spiece_model`` otherwise
    uses a tokenizer found beside it. Either way the prompt is stripped, BOS prepended (no EOS), truncated to
    ``max_length`` and left-padded with the pad id.
    """
    p = Path(path).expanduser()
    dt = _dtype(dtype)
    if p.is_file() and p.suffix == ".safetensors":
        from .gemma_file import load_gemma_single_file

        model, tok = load_gemma_single_file(p, device=device, dtype=dt, tokenizer=tokenizer)
        return GemmaTextEncoder(model, tok, max_length=max_length)
    if not p.exists():
        raise CheckpointError(
            f"{p}: no such file or folder. Point it at the Gemma-3 folder (config.json, *.safetensors, "
            "tokenizer files) or at a single gemma_3_12B_it.safetensors file.")
    if not p.is_dir():
        raise CheckpointError(
            f"{p}: expected a Gemma-3 folder (config.json, *.safetensors, tokenizer.json / tokenizer.model) or a "
            "single .safetensors file (e.g. ComfyUI's gemma_3_12B_it.safetensors).")
    if not (p / "config.json").is_file():
        raise CheckpointError(f"{p}: no config.json; this is not a Hugging Face Gemma-3 folder.")
    import transformers

    config = transformers.AutoConfig.from_pretrained(str(p), local_files_only=True)
    kind = getattr(config, "model_type", "")
    if kind == "gemma3":
        cls = transformers.Gemma3ForConditionalGeneration
    elif kind == "gemma3_text":
        cls = transformers.Gemma3ForCausalLM
    else:
        raise CheckpointError(f"{p}: config.json describes a {kind!r} model, not Gemma-3; LTX-2 needs Gemma-3.")
    if tokenizer is not None:
        from .gemma_file import load_tokenizer

        tok = load_tokenizer(tokenizer)
    else:
        try:
            tok = transformers.AutoTokenizer.from_pretrained(str(p), local_files_only=True)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{p}: the Gemma tokenizer could not be loaded ({e}).") from None
    try:
        model = cls.from_pretrained(str(p), local_files_only=True, dtype=dt, use_safetensors=True)
    except OSError as e:
        raise CheckpointError(f"{p}: the Gemma-3 weights could not be loaded ({e}).") from None
    model = model.to(device).eval()
    model.requires_grad_(False)
    return GemmaTextEncoder(model, tok, max_length=max_length)


# --------------------------------------------------------------------------------------------------
# Distilled LoRA


def _lora_key_map(name: str) -> str | None:
    return _tr.official_to_module_key("model.diffusion_model." + name)


def load_distilled_lora(transformer: torch.nn.Module, lora, strength: float = 1.0) -> LoraHandle:
    """Merge an official-layout LoRA (``diffusion_model.<official name>.lora_A/B.weight``, e.g.
    ``ltx-2.3-22b-distilled-lora-384.safetensors``) into the transformer: W += strength * (B @ A).
    ``lora``: a path, several paths or a state dict. Returns the handle; ``handle.set_strength(s)``
    changes the strength later and ``handle.remove()`` restores the weights exactly. LoRA tensors for the
    text connectors (``video/audio_embeddings_connector``) are skipped."""
    return merge_lora(transformer, lora, strength, key_prefix="diffusion_model.", key_map=_lora_key_map)
