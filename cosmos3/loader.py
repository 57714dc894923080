"""Loading Cosmos3 checkpoints: a diffusers-format folder, or a transformer / VAE as one safetensors file.

Networks are built on the ``meta`` device and filled straight from the memory-mapped safetensors at
their target device and dtype (``core.checkpoint.load_into``), so no random init and no full extra
copy of the weights is ever made. Nothing is unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.checkpoint import CheckpointError, load_into, read_config, resolve_weight_files
from .config import Cosmos3Config
from .prompt import load_tokenizer
from .transformer import Cosmos3Transformer
from .vae import WanVAE

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


def load_transformer(path: str | Path, *, device="cpu", dtype="bf16") -> Cosmos3Transformer:
    """The GEN/UND transformer from a ``transformer/`` folder (single or sharded) or one safetensors file."""
    path = Path(path)
    device, dtype = _device_dtype(device, dtype)
    cfg_dict = read_config(path)
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
    """The Wan2.2 VAE from a ``vae/`` folder or one safetensors file (config in metadata or beside it)."""
    path = Path(path)
    device, dtype = _device_dtype(device, dtype)
    cfg = read_config(path)
    _check_class(cfg, VAE_CLASSES, "VAE", path)
    files = resolve_weight_files(path)
    with torch.device("meta"):
        vae = WanVAE(cfg)
    load_into(vae, files, device=device, dtype=dtype)
    return vae.eval().requires_grad_(False)


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


def load_checkpoint(root: str | Path, *, device="cpu", dtype="bf16", vae_dtype=None) -> Cosmos3Checkpoint:
    """Every component of a diffusers-format Cosmos3 folder (transformer, VAE, tokenizer, scheduler)."""
    root = Path(root)
    pipeline_config = read_model_index(root)
    modular = root / "modular_model_index.json"
    if modular.is_file():  # distilled repos keep distilled_sigmas / is_distilled here
        extra = json.loads(modular.read_text())
        pipeline_config.update({k: extra[k] for k in ("distilled_sigmas", "is_distilled") if k in extra})
    transformer = load_transformer(root / "transformer", device=device, dtype=dtype)
    vae = load_vae(root / "vae", device=device, dtype=vae_dtype or dtype)
    if vae.z_dim != transformer.config.latent_channel:
        raise CheckpointError(
            f"{root}: the VAE has {vae.z_dim} latent channels but the transformer expects "
            f"{transformer.config.latent_channel}"
        )
    tokenizer = load_tokenizer(root / "text_tokenizer")
    if len(tokenizer) > transformer.config.vocab_size:
        raise CheckpointError(
            f"{root}: the tokenizer has {len(tokenizer)} tokens but the transformer embeds only "
            f"{transformer.config.vocab_size}"
        )
    return Cosmos3Checkpoint(root, transformer, vae, tokenizer, read_scheduler_config(root), pipeline_config)
