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

from ..core.checkpoint import CheckpointError, list_keys, load_into, read_config, refuse_pickle, resolve_weight_files
from .config import Cosmos3Config
from .latent_format import WAN22_LATENTS_MEAN, WAN22_LATENTS_STD, Wan22LatentFormat, WanLatentFormat
from .prompt import load_tokenizer
from .sound import Cosmos3SoundDecoder, load_sound_decoder
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
    "latents_mean": list(WAN22_LATENTS_MEAN),
    "latents_std": list(WAN22_LATENTS_STD),
}

# Latent statistics by latent channel count, for VAE files that carry no config (Wan's original layout).
WAN_LATENT_STATS = {
    48: {k: WAN22_VAE_CONFIG[k] for k in ("latents_mean", "latents_std")},
    16: {k: WAN21_VAE_CONFIG[k] for k in ("latents_mean", "latents_std")},
}


# The Linear layers that may hold fp8 weights (from a quantized file, or stored so at load): those of the
# transformer blocks. The embeddings, the latent projections, the time embedder and the norms stay wide.
QUANT_LAYERS = ("layers.",)
WEIGHT_DTYPES = ("default", "fp8_e4m3fn")


def _weight_dtype(weight_dtype: str) -> str:
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype={weight_dtype!r} is not one of {list(WEIGHT_DTYPES)}")
    return weight_dtype


def load_transformer(path: str | Path, *, device="cpu", dtype="bf16", config: dict | None = None,
                     weight_dtype: str = "default") -> Cosmos3Transformer:
    """The GEN/UND transformer from a ``transformer/`` folder (single or sharded) or one safetensors file.

    ``config`` stands in for a single file that carries no config (e.g. the ``transformer/config.json`` of
    the matching checkpoint folder). Quantized files load (``core.quant``: ComfyUI's scaled fp8 files and the
    Cosmos3 FP8 release, whose fp8 block weights stay fp8 and are dequantized per layer in each call).
    ``weight_dtype="fp8_e4m3fn"`` stores the Linear weights of the transformer blocks of a high-precision file in
    fp8 (one scale per weight) at load; ``dtype`` is then the compute dtype.
    """
    path = Path(path)
    device, dtype = _device_dtype(device, dtype)
    fp8 = _weight_dtype(weight_dtype) == "fp8_e4m3fn"
    cfg_dict = dict(config) if config is not None else read_config(path)
    _check_class(cfg_dict, TRANSFORMER_CLASSES, "transformer", path)
    try:
        cfg = Cosmos3Config.from_dict(cfg_dict)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: {e}") from e
    files = resolve_weight_files(path)
    with torch.device("meta"):
        model = Cosmos3Transformer(cfg)
    load_into(model, files, device=device, dtype=dtype, keep_dtype=("time_embedder.",),
              key_map=FP8_KEY_ALIASES, ignore=model.unused_checkpoint_keys,
              quant_layers=QUANT_LAYERS, store_fp8=QUANT_LAYERS if fp8 else ())
    return model.eval().requires_grad_(False)


def load_vae(path: str | Path, *, device="cpu", dtype="fp32") -> WanVAE:
    """The Wan2.2 VAE from a ``vae/`` folder (or the checkpoint folder holding it) or one safetensors file:
    diffusers' layout (config in the metadata, beside it, or built in) or Wan's original layout, as ComfyUI ships
    it (config read from the shapes)."""
    path = Path(path)
    if path.is_dir() and (path / "model_index.json").is_file() and (path / "vae").is_dir():
        path = path / "vae"  # a whole checkpoint folder: its VAE
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
class Cosmos3Settings:
    """What a Cosmos3 folder says besides its weights: how to sample and prompt, and its latent space."""

    scheduler_config: dict = field(default_factory=dict)
    pipeline_config: dict = field(default_factory=dict)
    latent_format: WanLatentFormat = field(default_factory=Wan22LatentFormat)

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


@dataclass
class Cosmos3Checkpoint:
    """What a diffusers-format Cosmos3 folder holds, loaded (``vae`` is None when only the model was loaded;
    ``sound``, the sound tokenizer's decoder, is None unless the checkpoint generates sound)."""

    root: Path
    transformer: Cosmos3Transformer
    tokenizer: object
    settings: Cosmos3Settings
    vae: WanVAE | None = None
    sound: Cosmos3SoundDecoder | None = None


def read_model_index(root: str | Path) -> dict:
    root = Path(root)
    index = root / "model_index.json"
    refuse_pickle(root)
    if root.is_file():
        raise CheckpointError(
            f"{root}: is a file, but a Cosmos3 checkpoint folder is needed here (model_index.json, transformer/, vae/, "
            "text_tokenizer/, scheduler/); a lone transformer .safetensors file loads with the Cosmos3 Model Loader "
            "node or load_model(file, tokenizer=FOLDER)"
        )
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


def read_settings(root: str | Path) -> Cosmos3Settings:
    """The settings of a Cosmos3 folder: ``model_index.json`` (plus a distilled repo's ``modular_model_index.json``),
    the scheduler config, and the latent statistics of its ``vae/config.json`` (Wan2.2's when it has none).

    A folder without ``model_index.json`` (e.g. one holding only ``text_tokenizer/``) gives the defaults for
    what it lacks.
    """
    root = Path(root)
    pipeline_config = read_model_index(root) if (root / "model_index.json").is_file() else {}
    modular = root / "modular_model_index.json"
    if modular.is_file():  # distilled repos keep distilled_sigmas / is_distilled here
        extra = json.loads(modular.read_text())
        pipeline_config.update({k: extra[k] for k in ("distilled_sigmas", "is_distilled") if k in extra})
    latent_format = Wan22LatentFormat()
    vae_config = root / "vae" / "config.json"
    if vae_config.is_file():
        cfg = json.loads(vae_config.read_text())
        if "latents_mean" in cfg and "latents_std" in cfg:
            latent_format = WanLatentFormat(cfg["latents_mean"], cfg["latents_std"])
    return Cosmos3Settings(read_scheduler_config(root), pipeline_config, latent_format)


def _has_own_config(path: Path) -> bool:
    try:
        read_config(path)
        return True
    except CheckpointError:
        return False


def load_model(checkpoint: str | Path, *, tokenizer: str | Path | None = None, device="cpu",
               dtype="bf16", weight_dtype: str = "default") -> Cosmos3Checkpoint:
    """The transformer, tokenizer and settings of a Cosmos3 checkpoint (no VAE).

    ``checkpoint`` is a diffusers-format folder, or a lone transformer (a ``.safetensors`` file or a
    ``transformer/`` folder); a lone transformer needs ``tokenizer``, a Cosmos3 folder that supplies the
    tokenizer, the settings, and the transformer's config when the file carries none. ``tokenizer`` given with
    a folder replaces only the folder's tokenizer. ``weight_dtype="fp8_e4m3fn"`` stores the Linear weights of the
    transformer blocks in fp8 with a per-weight scale (see :func:`load_transformer`); ``dtype="fp8_e4m3fn"`` is
    short for that with bf16 compute.
    """
    path = Path(checkpoint)
    refuse_pickle(path)
    is_folder = path.is_dir() and (path / "model_index.json").is_file()
    if not is_folder and not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint folder or file")
    if not is_folder and tokenizer is None:
        raise CheckpointError(
            f"{path}: a lone transformer needs a tokenizer folder (a Cosmos3 folder with text_tokenizer/), which "
            "also supplies the scheduler settings"
        )
    tok_root = Path(tokenizer) if tokenizer is not None else path
    root = path if is_folder else tok_root
    settings = read_settings(root)
    transformer_path = path / "transformer" if is_folder else path
    config = None
    if transformer_path.is_file():  # a lone file may carry no config: take the tokenizer folder's
        folder_config = tok_root / "transformer" / "config.json"
        if not _has_own_config(transformer_path) and folder_config.is_file():
            config = json.loads(folder_config.read_text())
    if dtype == "fp8_e4m3fn":
        dtype, weight_dtype = "bf16", "fp8_e4m3fn"
    transformer = load_transformer(transformer_path, device=device, dtype=dtype, config=config,
                                   weight_dtype=weight_dtype)
    tok = load_tokenizer(tok_root / "text_tokenizer")
    if len(tok) > transformer.config.vocab_size:
        raise CheckpointError(
            f"{tok_root}: the tokenizer has {len(tok)} tokens but the transformer embeds only "
            f"{transformer.config.vocab_size}"
        )
    return Cosmos3Checkpoint(root, transformer, tok, settings)


def folder_has_sound(root: str | Path) -> bool:
    """Whether a Cosmos3 folder generates sound: ``sound_gen`` in ``transformer/config.json`` and a
    ``sound_tokenizer/`` beside it (per diffusers' pipeline, which needs both for ``enable_sound``)."""
    root = Path(root)
    config = root / "transformer" / "config.json"
    if not (root / "sound_tokenizer").is_dir() or not config.is_file():
        return False
    return bool(json.loads(config.read_text()).get("sound_gen", False))


def load_checkpoint(root: str | Path, *, device="cpu", dtype="bf16", vae_dtype=None,
                    vae: str | Path | None = None, sound: bool = True,
                    weight_dtype: str = "default") -> Cosmos3Checkpoint:
    """Every component of a diffusers-format Cosmos3 folder (transformer, VAE, tokenizer, settings, and the sound
    tokenizer's decoder when the checkpoint generates sound, unless ``sound=False``).

    ``vae``: a VAE folder or file to use instead of the folder's ``vae/`` (e.g. ComfyUI's
    ``wan2.2_vae.safetensors``); the folder then needs no ``vae/``. The sound decoder takes the VAE's dtype.
    """
    root = Path(root)
    read_model_index(root)
    ckpt = load_model(root, device=device, dtype=dtype, weight_dtype=weight_dtype)
    vae_path = root / "vae" if vae is None else Path(vae)
    decoder_dtype = vae_dtype or ("bf16" if dtype == "fp8_e4m3fn" else dtype)
    ckpt.vae = load_vae(vae_path, device=device, dtype=decoder_dtype)
    if sound and ckpt.transformer.config.sound_gen and (root / "sound_tokenizer").is_dir():
        ckpt.sound = load_sound_decoder(root / "sound_tokenizer", device=device,
                                        dtype=_device_dtype(device, decoder_dtype)[1])
        if ckpt.sound.latent_channels != ckpt.transformer.config.sound_dim:
            raise CheckpointError(
                f"{root / 'sound_tokenizer'}: the sound decoder takes {ckpt.sound.latent_channels} latent channels but "
                f"the transformer makes {ckpt.transformer.config.sound_dim} (sound_dim)"
            )
    if ckpt.vae.z_dim != ckpt.transformer.config.latent_channel:
        raise CheckpointError(
            f"{vae_path}: the VAE has {ckpt.vae.z_dim} latent channels but the transformer of {root} expects "
            f"{ckpt.transformer.config.latent_channel}"
        )
    return ckpt
