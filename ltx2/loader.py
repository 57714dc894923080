"""Loading a whole LTX-2 / LTX-2.3 checkpoint (official single file or diffusers folder) and the distilled LoRA.
The Gemma-3 text encoder loads in :mod:`.text_encoding`; each component module owns its config and key map.

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
    "load_ltx2_checkpoint",
    "detect_version",
    "load_distilled_lora",
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


def dtype_from_name(dtype) -> torch.dtype | None:
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
    dt = dtype_from_name(dtype)
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
    return _vvae.config_from_official(vc, decoder_conv_in_channels=conv_in[1][0] if conv_in else None,
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
