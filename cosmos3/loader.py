"""Loading Cosmos3 checkpoints: a diffusers-format folder, or a transformer / VAE as one safetensors file.

Networks are built on the ``meta`` device and filled straight from the memory-mapped safetensors at
their target device and dtype (``core.checkpoint.load_into``), so no random init and no full extra
copy of the weights is ever made. Nothing is unpickled.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.checkpoint import CheckpointError, list_keys, load_into, read_config, resolve_weight_files
from .config import Cosmos3Config
from .prompt import load_tokenizer
from .transformer import Cosmos3Transformer
from .vae import DEFAULT_CONFIG as WAN21_VAE_CONFIG
from .vae import WanVAE
from .vae_wan_layout import is_wan_layout, read_wan_layout

# Names the FP8 (ModelOpt) export gives the latent projections.
FP8_KEY_ALIASES = {"vae2llm.": "proj_in.", "llm2vae.": "proj_out."}

TRANSFORMER_CLASSES = ("Cosmos3OmniTransformer",)
VAE_CLASSES = ("AutoencoderKLWan",)
PIPELINE_CLASSES = ("Cosmos3OmniPipeline", "Cosmos3OmniDiffusersPipeline")


def _check_class(config: dict, expected: tuple[str, ...], what: str, where) -> None:
    name = config.get("_class_name")
    if name is not None and name not in expected:
        raise CheckpointError(
            f"{where}: this {what} is a {name!r}, not a Cosmos3 {what} ({' / '.join(expected)}); "
            "pick a Cosmos3 checkpoint"
        )


def _device_dtype(device, dtype) -> tuple[torch.device, torch.dtype]:
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "fp32": torch.float32, "float32": torch.float32}
    if isinstance(dtype, str):
        if dtype not in names:
            raise ValueError(f"dtype={dtype!r} is not one of {sorted(names)}")
        dtype = names[dtype]
    return torch.device(device), dtype


# The Wan2.2 VAE of Cosmos3 (the architecture is fixed; mean/std are the public Wan2.2 latent statistics).
# Used only for a lone diffusers-layout VAE file that carries no config of its own.
WAN22_VAE_CONFIG = {
    "_class_name": "AutoencoderKLWan", "base_dim": 160, "decoder_base_dim": 256, "z_dim": 48,
    "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [], "temperal_downsample": [False, True, True],
    "dropout": 0.0, "is_residual": True, "in_channels": 12, "out_channels": 12, "patch_size": 2,
    "scale_factor_spatial": 16, "scale_factor_temporal": 4,
    "latents_mean": [
        -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
        0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
        -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
        -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
    ],
    "latents_std": [
        0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
        0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
        0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
        0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
    ],
}

# Latent statistics by latent channel count, for VAE files that carry no config (Wan's original layout).
WAN_LATENT_STATS = {
    48: {k: WAN22_VAE_CONFIG[k] for k in ("latents_mean", "latents_std")},
    16: {k: WAN21_VAE_CONFIG[k] for k in ("latents_mean", "latents_std")},
}


def load_transformer(path: str | Path, *, device="cpu", dtype="bf16", config: dict | None = None) -> Cosmos3Transformer:
    """The GEN/UND transformer from a ``transformer/`` folder (single or sharded) or one safetensors file.

    ``config`` stands in for a single file that carries no config (e.g. the ``transformer/config.json`` of
    the matching checkpoint folder).
    """
    path = Path(path)
    device, dtype = _device_dtype(device, dtype)
    cfg_dict = dict(config) if config is not None else read_config(path)
    _check_class(cfg_dict, TRANSFORMER_CLASSES, "transformer", path)
    if "quantization_config" in cfg_dict:
        raise CheckpointError(
            f"{path}: this is a quantized (FP8 ModelOpt) Cosmos3 export, which this version does not load yet; "
            "use the bf16 checkpoint"
        )
    try:
        cfg = Cosmos3Config.from_dict(cfg_dict)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: {e}") from e
    files = resolve_weight_files(path)
    with torch.device("meta"):
        model = Cosmos3Transformer(cfg)
    load_into(model, files, device=device, dtype=dtype, keep_dtype=("time_embedder.",),
              key_map=FP8_KEY_ALIASES, ignore=Cosmos3Transformer.unused_checkpoint_keys)
    return model.eval().requires_grad_(False)


def load_vae(path: str | Path, *, device="cpu", dtype="fp32") -> WanVAE:
    """The Wan2.2 VAE from a ``vae/`` folder or one safetensors file: diffusers' layout (config in the metadata,
    beside it, or built in) or Wan's original layout, as ComfyUI ships it (config read from the shapes)."""
    path = Path(path)
    device, dtype = _device_dtype(device, dtype)
    cfg, key_map = _vae_config(path)
    _check_class(cfg, VAE_CLASSES, "VAE", path)
    files = resolve_weight_files(path)
    with torch.device("meta"):
        vae = WanVAE(cfg)
    load_into(vae, files, device=device, dtype=dtype, key_map=key_map)
    return vae.eval().requires_grad_(False)


def _vae_config(path: Path) -> tuple[dict, Callable[[str], str] | None]:
    """The VAE's config and key renaming (None: the file uses our names).

    A lone file without a config is either a diffusers-layout Wan2.2 VAE (the built-in config) or a VAE in
    Wan's original layout, as ComfyUI ships ``wan2.2_vae.safetensors`` (config read from its shapes).
    """
    try:
        return read_config(path), None
    except CheckpointError:
        if not (path.is_file() and path.suffix == ".safetensors"):
            raise
        keys = list_keys([path])
        if is_wan_layout(keys):
            return read_wan_layout(path, {k: v[1] for k, v in keys.items()}, WAN_LATENT_STATS)
        shape = keys.get("post_quant_conv.weight", (None, ()))[1]
        if tuple(shape[:2]) == (48, 48):
            return dict(WAN22_VAE_CONFIG), None
        raise CheckpointError(
            f"{path}: not a Wan VAE: the file has no config, and its keys are in neither diffusers' "
            "AutoencoderKLWan layout nor Wan's original one. Cosmos3 needs the Wan2.2 VAE (the vae/ folder of "
            "its checkpoint, or ComfyUI's wan2.2_vae.safetensors)"
        ) from None


@dataclass
class Cosmos3Checkpoint:
    """What a diffusers-format Cosmos3 folder holds, loaded."""

    root: Path
    transformer: Cosmos3Transformer
    vae: WanVAE
    tokenizer: object
    scheduler_config: dict
    pipeline_config: dict = field(default_factory=dict)

    @property
    def default_use_system_prompt(self) -> bool:
        return bool(self.pipeline_config.get("default_use_system_prompt", True))

    @property
    def use_native_flow_schedule(self) -> bool:
        return bool(self.pipeline_config.get("use_native_flow_schedule", False))

    @property
    def distilled_sigmas(self) -> list[float] | None:
        """The fixed sigma list of a distilled checkpoint (from ``modular_model_index.json``), else None."""
        sigmas = self.pipeline_config.get("distilled_sigmas")
        return [float(s) for s in sigmas] if sigmas else None


def read_model_index(root: str | Path) -> dict:
    root = Path(root)
    index = root / "model_index.json"
    if not root.is_dir():
        raise CheckpointError(f"{root}: checkpoint folder does not exist")
    if not index.is_file():
        raise CheckpointError(
            f"{root}: no model_index.json; a Cosmos3 checkpoint folder holds model_index.json, transformer/, vae/, "
            "text_tokenizer/ and scheduler/"
        )
    try:
        cfg = json.loads(index.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{index}: not valid JSON ({e})") from e
    name = cfg.get("_class_name")
    if name not in PIPELINE_CLASSES:
        raise CheckpointError(f"{root}: model_index.json describes a {name!r}, not a Cosmos3 pipeline")
    return cfg


def read_scheduler_config(root: str | Path) -> dict:
    root = Path(root)
    for name in ("scheduler/scheduler_config.json", "scheduler/config.json"):
        f = root / name
        if f.is_file():
            return json.loads(f.read_text())
    return {}


def load_checkpoint(root: str | Path, *, device="cpu", dtype="bf16", vae_dtype=None,
                    vae: str | Path | None = None) -> Cosmos3Checkpoint:
    """Every component of a diffusers-format Cosmos3 folder (transformer, VAE, tokenizer, scheduler).

    ``vae``: a VAE folder or file to use instead of the folder's ``vae/`` (e.g. ComfyUI's
    ``wan2.2_vae.safetensors``); the folder then needs no ``vae/``.
    """
    root = Path(root)
    pipeline_config = read_model_index(root)
    modular = root / "modular_model_index.json"
    if modular.is_file():  # distilled repos keep distilled_sigmas / is_distilled here
        extra = json.loads(modular.read_text())
        pipeline_config.update({k: extra[k] for k in ("distilled_sigmas", "is_distilled") if k in extra})
    transformer = load_transformer(root / "transformer", device=device, dtype=dtype)
    vae_path = root / "vae" if vae is None else Path(vae)
    vae = load_vae(vae_path, device=device, dtype=vae_dtype or dtype)
    if vae.z_dim != transformer.config.latent_channel:
        raise CheckpointError(
            f"{vae_path}: the VAE has {vae.z_dim} latent channels but the transformer of {root} expects "
            f"{transformer.config.latent_channel}"
        )
    tokenizer = load_tokenizer(root / "text_tokenizer")
    if len(tokenizer) > transformer.config.vocab_size:
        raise CheckpointError(
            f"{root}: the tokenizer has {len(tokenizer)} tokens but the transformer embeds only "
            f"{transformer.config.vocab_size}"
        )
    return Cosmos3Checkpoint(root, transformer, vae, tokenizer, read_scheduler_config(root), pipeline_config)
