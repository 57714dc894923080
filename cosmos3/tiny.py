"""The embedded default: tiny, randomly initialised Cosmos3 checkpoints in the real on-disk formats.

No real weights ship with the pack. So that every command runs out of the box, this module writes a
complete diffusers-format Cosmos3 folder (``model_index.json``, ``transformer/``, ``vae/``,
``text_tokenizer/``, ``scheduler/``) whose networks are tiny and random. Generation from it runs the
real code path end to end, but the frames are noise: give a real checkpoint folder for real videos.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]

TINY_TRANSFORMER_CONFIG = {
    "_class_name": "Cosmos3OmniTransformer",
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 16,
    "intermediate_size": 64,
    "rope_axes_dim": [4, 2, 2],
    "vocab_size": 272,
}

TINY_VAE_CONFIG = {
    "_class_name": "AutoencoderKLWan",
    "base_dim": 8,
    "decoder_base_dim": 8,
    "z_dim": 48,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
    "is_residual": True,
    "in_channels": 12,
    "out_channels": 12,
    "patch_size": 2,
    "scale_factor_spatial": 16,
    "scale_factor_temporal": 4,
    "latents_mean": [0.0] * 48,
    "latents_std": [1.0] * 48,
}

# The sound-capable demo (``sound=True``): the transformer's sound heads and a decoder-only ``sound_tokenizer/``
# (Oobleck, tiny widths). 8 kHz so that the waveform muxes into an MP4's AAC track; strides 8 x 8 x 5 = 320 samples
# per latent frame, so 25 latent frames a second as the released tokenizer (48 kHz / 1920).
TINY_SOUND_TRANSFORMER = {"sound_gen": True, "sound_dim": 8, "sound_latent_fps": 25.0}
TINY_SOUND_TOKENIZER_CONFIG = {
    "_class_name": "Cosmos3AVAEAudioTokenizer",
    "sampling_rate": 8000,
    "vocoder_input_dim": 8,
    "dec_dim": 4,
    "dec_c_mults": [1, 2, 2],
    "dec_strides": [8, 8, 5],
    "dec_out_channels": 2,
}

SCHEDULER_CONFIG = {
    "_class_name": "UniPCMultistepScheduler",
    "num_train_timesteps": 1000,
    "solver_order": 2,
    "solver_type": "bh2",
    "predict_x0": True,
    "prediction_type": "flow_prediction",
    "use_flow_sigmas": True,
    "flow_shift": 10.0,
    "lower_order_final": True,
    "final_sigmas_type": "zero",
}


def write_tokenizer(folder: str | Path) -> Path:
    """A byte-level tokenizer (every UTF-8 text encodes, no merges) with Qwen's special tokens and ChatML."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(SPECIAL_TOKENS)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None
    )
    tok.chat_template = CHAT_TEMPLATE
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(folder))
    return folder


def _random_state(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Random weights for every tensor of ``module`` (norm gains around 1, the rest small)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in module.state_dict().items():
        if not t.is_floating_point():
            out[name] = t.clone()
            continue
        noise = torch.randn(t.shape, generator=g, dtype=torch.float32)
        is_gain = name.endswith(("norm.weight", "layernorm.weight", "gamma")) or ".norm_" in name
        scale = 1.0 / max(1.0, float(t.shape[-1] if t.ndim > 1 else 1)) ** 0.5
        out[name] = (1.0 + 0.1 * noise) if is_gain else noise * scale
    return out


def _save(state: dict[str, torch.Tensor], config: dict, folder: Path) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "diffusion_pytorch_model.safetensors"))


def write_tiny_checkpoint(folder: str | Path, seed: int = 0, sound: bool = False) -> Path:
    """Write a complete, tiny, random Cosmos3 checkpoint (diffusers layout) into ``folder``; ``sound``: a
    sound-capable one (the transformer's sound heads and ``sound_tokenizer/``)."""
    from .sound import Cosmos3SoundDecoder
    from .transformer import Cosmos3Transformer
    from .vae import WanVAE

    folder = Path(folder)
    write_tokenizer(folder / "text_tokenizer")
    config = {**TINY_TRANSFORMER_CONFIG, **(TINY_SOUND_TRANSFORMER if sound else {})}
    transformer = Cosmos3Transformer(config)
    state = _random_state(transformer, seed)
    d = TINY_TRANSFORMER_CONFIG["hidden_size"]
    g = torch.Generator().manual_seed(seed + 1)
    # The keys generation never reads still belong to the on-disk format.
    state["norm.weight"] = torch.ones(d)
    state["lm_head.weight"] = torch.randn(TINY_TRANSFORMER_CONFIG["vocab_size"], d, generator=g) * d**-0.5
    _save(state, config, folder / "transformer")
    _save(_random_state(WanVAE(TINY_VAE_CONFIG), seed + 2), TINY_VAE_CONFIG, folder / "vae")
    if sound:  # the decoder half only: generation never encodes sound
        decoder = Cosmos3SoundDecoder(TINY_SOUND_TOKENIZER_CONFIG)
        _save(_random_state(decoder, seed + 3), TINY_SOUND_TOKENIZER_CONFIG, folder / "sound_tokenizer")
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=2))
    model_index = {
        "_class_name": "Cosmos3OmniPipeline",
        "_diffusers_version": "0.42.1",
        "default_use_system_prompt": True,
        "enable_safety_checker": False,
        "use_native_flow_schedule": False,
        "transformer": ["diffusers", "Cosmos3OmniTransformer"],
        "vae": ["diffusers", "AutoencoderKLWan"],
        "text_tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "scheduler": ["diffusers", "UniPCMultistepScheduler"],
        "sound_tokenizer": ["diffusers", "Cosmos3AVAEAudioTokenizer"] if sound else [None, None],
        "safety_checker": [None, None],
    }
    (folder / "model_index.json").write_text(json.dumps(model_index, indent=2))
    return folder


def default_checkpoint(cache_dir: str | Path | None = None, sound: bool = False) -> Path:
    """The embedded default checkpoint (``sound``: its sound-capable twin), written once into a cache folder and
    reused afterwards.

    The folder is ``$COMFYUI_COSMOS3_LTX2_CACHE`` or ``~/.cache/comfyui_cosmos3_ltx2``; a finished
    checkpoint is marked by a ``.complete`` file so an interrupted write is redone.
    """
    import os

    base = Path(cache_dir or os.environ.get("COMFYUI_COSMOS3_LTX2_CACHE") or Path.home() / ".cache" / "comfyui_cosmos3_ltx2")
    folder = base / ("cosmos3-tiny-random-sound" if sound else "cosmos3-tiny-random")
    if not (folder / ".complete").is_file():
        write_tiny_checkpoint(folder, sound=sound)
        (folder / ".complete").write_text("tiny random Cosmos3 checkpoint: frames are noise\n")
    return folder
