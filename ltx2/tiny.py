"""The embedded LTX-2.3 demo: tiny, randomly initialised files in the real on-disk formats.

No real weights ship with the pack. So that every LTX command and shipped graph runs out of the box, this
module writes the four files an LTX-2.3 run needs, each in the format users download, with tiny random
networks inside:

* ``ltx-2.3-tiny-random.safetensors``: the official single-file checkpoint (``model.diffusion_model.*``
  transformer and text connectors, ``text_embedding_projection.*``, ``vae.*``, ``audio_vae.*``,
  ``vocoder.*``, the ``config`` JSON and ``model_version`` in the header metadata) with the LTX-2.3
  switches on: gated attention, cross-attention AdaLN, split RoPE, the V2 text projection and the
  BigVGAN vocoder with bandwidth extension (ltx2.md 1.1, 2.1). The latent widths are the real ones
  (video 128 channels, audio 8 channels x 16 mel bins, so 64 mel bins and 128 audio statistics), which
  ComfyUI's native LTX code hard-codes (comfyui.md 5.6); only the hidden widths are tiny. The
  transformer has 29 blocks (the real one 48), the fewest that hold the official STG block 28. The
  metadata config has every section and key of the released LTX-2.3 config.
* ``gemma-3-tiny-random.safetensors``: a Gemma-3 text encoder in ComfyUI's single-file layout
  (``models/text_encoders/gemma_3_12B_it.safetensors``: text weights under ``model.``, the SentencePiece
  tokenizer as the uint8 tensor ``spiece_model``, no config: the loader reads the sizes from the shapes,
  see :mod:`.gemma_file`). Its width is Gemma-3-12B's 3840, so the checkpoint loader's default text width
  fits and no text sizes need passing; it has 1 layer (2 hidden states) with 2 heads of 16. The
  tokenizer is built here (a byte-fallback BPE model over single characters), no download.
* ``ltx-2.3-tiny-spatial-upscaler-x2.safetensors``: the x2 latent upsampler (official key names, config in
  the metadata; :mod:`.upsampler`).
* ``ltx-2.3-tiny-distilled-lora.safetensors``: a rank-4 LoRA in the official layout
  (``diffusion_model.<module>.lora_A/B.weight``) over every linear weight of the transformer blocks.

Generation from them runs the real code path end to end, but the frames and the sound are noise: give
real files for real videos. :func:`default_demo` writes them once into the cache folder
(``$COMFYUI_COSMOS3_LTX2_CACHE`` or ``~/.cache/comfyui_cosmos3_ltx2``, as the Cosmos3 demo), in a folder
whose name carries :data:`DEMO_VERSION` and a hash of every size, written under a temporary name and
renamed when complete. Reading the tokenizer (``spiece_model``) needs the ``sentencepiece`` package, as
ComfyUI's own Gemma file does.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "DEMO_VERSION",
    "LTX2Demo",
    "cache_folder",
    "checkpoint_config",
    "default_demo",
    "spiece_model",
    "write_demo",
]

# Bump when the values written change in a way the sizes below do not show (the way weights are drawn,
# a key renamed): the cache folder name changes with it, so old caches are not reused.
DEMO_VERSION = 1

CHECKPOINT_NAME = "ltx-2.3-tiny-random.safetensors"
TEXT_ENCODER_NAME = "gemma-3-tiny-random.safetensors"
UPSAMPLER_NAME = "ltx-2.3-tiny-spatial-upscaler-x2.safetensors"
LORA_NAME = "ltx-2.3-tiny-distilled-lora.safetensors"

# Sizes. Latent widths are the real ones; the rest is tiny.
NUM_LAYERS = 29  # the fewest blocks that hold the official STG block (28); the real model has 48
VIDEO_HEADS, VIDEO_HEAD_DIM = 2, 32  # split RoPE needs heads to agree across video and audio (ltx2.md 11)
AUDIO_HEADS, AUDIO_HEAD_DIM = 2, 16
GEMMA_WIDTH = 3840  # Gemma-3-12B's width: the checkpoint loader's default
GEMMA_LAYERS = 1
GEMMA_HEADS, GEMMA_KV_HEADS, GEMMA_HEAD_DIM, GEMMA_MLP = 2, 1, 16, 32
LORA_RANK = 4

_RES = ["res_x", {"num_layers": 1}]


def checkpoint_config() -> dict:
    """The checkpoint's metadata ``config``: the released LTX-2.3 config's sections and keys
    (tests/ltx2/data/ltx2_real_configs/ltx-2.3-22b.config.json) with tiny hidden sizes."""
    video, audio = VIDEO_HEADS * VIDEO_HEAD_DIM, AUDIO_HEADS * AUDIO_HEAD_DIM
    transformer = {
        "_class_name": "AVTransformer3DModel", "activation_fn": "gelu-approximate", "attention_bias": True,
        "attention_head_dim": VIDEO_HEAD_DIM, "attention_type": "default", "caption_channels": GEMMA_WIDTH,
        "cross_attention_dim": video, "double_self_attention": False, "dropout": 0.0, "in_channels": 128,
        "norm_elementwise_affine": False, "norm_eps": 1e-06, "norm_num_groups": 32,
        "num_attention_heads": VIDEO_HEADS, "num_embeds_ada_norm": 1000, "num_layers": NUM_LAYERS,
        "num_vector_embeds": None, "only_cross_attention": False, "cross_attention_norm": True,
        "out_channels": 128, "upcast_attention": False, "use_linear_projection": False, "qk_norm": "rms_norm",
        "standardization_norm": "rms_norm", "positional_embedding_type": "rope",
        "positional_embedding_theta": 10000.0, "positional_embedding_max_pos": [20, 2048, 2048],
        "timestep_scale_multiplier": 1000, "av_ca_timestep_scale_multiplier": 1000.0,
        "causal_temporal_positioning": True, "audio_num_attention_heads": AUDIO_HEADS,
        "audio_attention_head_dim": AUDIO_HEAD_DIM, "use_audio_video_cross_attention": True, "share_ff": False,
        "audio_out_channels": 128, "audio_cross_attention_dim": audio, "audio_positional_embedding_max_pos": [20],
        "av_cross_ada_norm": True, "use_embeddings_connector": True,
        "connector_attention_head_dim": VIDEO_HEAD_DIM, "connector_num_attention_heads": VIDEO_HEADS,
        "connector_num_layers": 2, "connector_positional_embedding_max_pos": [4096],
        "connector_num_learnable_registers": 128, "connector_norm_output": True, "use_middle_indices_grid": True,
        "apply_gated_attention": True, "connector_apply_gated_attention": True,
        # LTX-2.3's text path: the per-modality projection runs before the connectors (ltx2.md 1.1)
        "caption_projection_first_linear": False, "caption_projection_second_linear": False,
        "caption_proj_input_norm": False, "connector_learnable_registers_std": 1,
        "caption_proj_before_connector": True, "audio_connector_attention_head_dim": AUDIO_HEAD_DIM,
        "audio_connector_num_attention_heads": AUDIO_HEADS, "cross_attention_adaln": True,
        "text_encoder_norm_type": "per_token_rms", "rope_type": "split", "frequencies_precision": "float64",
    }
    # Video VAE in ltx-core's block-list form with 2.3's stage kinds (space, time, all, all: x32 spatial,
    # x8 temporal). The encoder keeps 128 channels throughout (its first width is the latent width in our
    # loader and ``encoder_base_channels`` in ComfyUI); the decoder starts from 8 base channels.
    vae = {
        "_class_name": "CausalVideoAutoencoder", "dims": 3, "in_channels": 3, "out_channels": 3,
        "latent_channels": 128,
        "encoder_blocks": [_RES, ["compress_space_res", {"multiplier": 1}], _RES,
                           ["compress_time_res", {"multiplier": 1}], _RES,
                           ["compress_all_res", {"multiplier": 1}], _RES,
                           ["compress_all_res", {"multiplier": 1}], _RES],
        "decoder_blocks": [_RES, ["compress_space", {"multiplier": 2}], _RES,
                           ["compress_time", {"multiplier": 2}], _RES, ["compress_all", {"multiplier": 1}],
                           _RES, ["compress_all", {"multiplier": 2}], _RES],
        "scaling_factor": 1.0, "norm_layer": "pixel_norm", "patch_size": 4, "latent_log_var": "uniform",
        "use_quant_conv": False, "causal_decoder": False, "timestep_conditioning": False,
        "normalize_latent_channels": False, "encoder_base_channels": 128, "decoder_base_channels": 8,
        "spatial_padding_mode": "zeros",
    }
    # Audio VAE: 8 latent channels over 64 mel bins (16 after x4): 128 statistics, as ``ch``.
    audio_vae = {
        "model": {"params": {"ddconfig": {
            "double_z": True, "mel_bins": 64, "z_channels": 8, "resolution": 256, "downsample_time": False,
            "in_channels": 2, "out_ch": 2, "ch": 128, "ch_mult": [1, 1, 1], "num_res_blocks": 1,
            "attn_resolutions": [], "dropout": 0.0, "mid_block_add_attention": False, "norm_type": "pixel",
            "causality_axis": "height"}, "sampling_rate": 16000}},
        "preprocessing": {"stft": {"filter_length": 1024, "hop_length": 160, "win_length": 1024, "causal": True},
                          "mel": {"n_mel_channels": 64, "mel_fmin": 0, "mel_fmax": 8000}},
    }
    # Vocoder: BigVGAN-v2 (AMP1, snakebeta) at 16 kHz + bandwidth extension to 48 kHz with the real
    # up-sampling rates (x160 and x240), narrow channels and one residual kernel per stage.
    amp = {"resblock": "AMP1", "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3, 5]],
           "stereo": True, "use_tanh_at_final": False, "activation": "snakebeta", "use_bias_at_final": False}
    vocoder = {
        "vocoder": dict(amp, upsample_initial_channel=64, upsample_rates=[5, 2, 2, 2, 2, 2],
                        upsample_kernel_sizes=[11, 4, 4, 4, 4, 4]),
        "bwe": dict(amp, upsample_initial_channel=32, upsample_rates=[6, 5, 2, 2, 2],
                    upsample_kernel_sizes=[12, 11, 4, 4, 4], apply_final_activation=False,
                    input_sampling_rate=16000, output_sampling_rate=48000, hop_length=80, n_fft=512,
                    win_size=512, num_mels=64),
    }
    scheduler = {"_class_name": "RectifiedFlowScheduler", "num_train_timesteps": 1000, "sampler": "LinearQuadratic"}
    return {"transformer": transformer, "vae": vae, "audio_vae": audio_vae, "vocoder": vocoder,
            "scheduler": scheduler}


UPSAMPLER_CONFIG = {
    "in_channels": 128, "mid_channels": 32, "num_blocks_per_stage": 1, "dims": 3, "spatial_upsample": True,
    "temporal_upsample": False, "spatial_scale": 2.0, "rational_resampler": False,
}


# --------------------------------------------------------------------------------------------------
# Random weights


def _random_like(name: str, t: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A random value for one tensor, scaled so that deep stacks stay finite: gains around 1, biases and
    log-scale activation parameters small, matrices and kernels ~ 1/sqrt(fan-in)."""
    noise = torch.randn(t.shape, generator=g, dtype=torch.float32)
    if name.endswith(("latents_std", "std-of-means")):
        return 0.5 + torch.rand(t.shape, generator=g)
    if name.endswith(("latents_mean", "mean-of-means")) or t.ndim == 1 and not name.endswith("weight"):
        return 0.05 * noise  # biases, statistics, snake alpha / beta (log scale)
    if t.ndim == 1:
        return 1.0 + 0.1 * noise  # norm gains
    return noise * (t.numel() // t.shape[0]) ** -0.5


def _randomise(module: torch.nn.Module, seed: int, keep=()) -> dict[str, torch.Tensor]:
    """Random values for every floating tensor of ``module``'s state dict, except the buffers named in
    ``keep`` (constants the module computed, such as anti-aliasing filters)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in module.state_dict().items():
        keep_it = not t.is_floating_point() or name.endswith(keep)
        out[name] = t.clone() if keep_it else _random_like(name, t, g)
    return out


def _stft_bases(n_fft: int, n_mels: int, sample_rate: int) -> dict[str, torch.Tensor]:
    """The BWE's stored STFT and mel tensors (ltx2.md 8.7): a periodic-Hann-windowed DFT basis, real rows
    then imaginary rows, [2 (n_fft/2 + 1), 1, n_fft] (``inverse_basis``, unused at inference: the same
    with the sine's sign flipped, over n_fft), and triangular filters evenly spaced on the HTK mel scale
    up to Nyquist."""
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
    window = 0.5 * (1.0 - torch.cos(2.0 * math.pi * n / n_fft))
    phase = 2.0 * math.pi * k * n / n_fft
    forward = torch.cat([torch.cos(phase), -torch.sin(phase)]) * window
    inverse = torch.cat([torch.cos(phase), torch.sin(phase)]) * window / n_fft

    def mel(f):
        return 2595.0 * torch.log10(1.0 + f / 700.0)

    freqs = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges_mel = torch.linspace(0.0, float(mel(torch.tensor(sample_rate / 2.0))), n_mels + 2, dtype=torch.float64)
    edges = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    tri = torch.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)).clamp(min=0.0)
    return {"stft_fn.forward_basis": forward[:, None].float(), "stft_fn.inverse_basis": inverse[:, None].float(),
            "mel_basis": tri.float()}


# --------------------------------------------------------------------------------------------------
# Our module names -> the official single-file names (ltx2.md 2.1, 2.2); each is checked against the
# loader's own official -> module map when the file is written.

_TRANSFORMER_TOP = (
    ("av_cross_attn_video_scale_shift.", "av_ca_video_scale_shift_adaln_single."),
    ("av_cross_attn_audio_scale_shift.", "av_ca_audio_scale_shift_adaln_single."),
    ("av_cross_attn_video_a2v_gate.", "av_ca_a2v_gate_adaln_single."),
    ("av_cross_attn_audio_v2a_gate.", "av_ca_v2a_gate_adaln_single."),
    ("audio_prompt_adaln.", "audio_prompt_adaln_single."),
    ("prompt_adaln.", "prompt_adaln_single."),
    ("audio_time_embed.", "audio_adaln_single."),
    ("time_embed.", "adaln_single."),
    ("audio_proj_in.", "audio_patchify_proj."),
    ("proj_in.", "patchify_proj."),
)
_BLOCK_NAMES = ((".norm_q.", ".q_norm."), (".norm_k.", ".k_norm."),
                (".video_a2v_cross_attn_scale_shift_table", ".scale_shift_table_a2v_ca_video"),
                (".audio_a2v_cross_attn_scale_shift_table", ".scale_shift_table_a2v_ca_audio"))
_CONNECTOR_TOP = (("video_connector.", "model.diffusion_model.video_embeddings_connector."),
                  ("audio_connector.", "model.diffusion_model.audio_embeddings_connector."),
                  ("video_text_proj_in.", "text_embedding_projection.video_aggregate_embed."),
                  ("audio_text_proj_in.", "text_embedding_projection.audio_aggregate_embed."))
_CONNECTOR_NAMES = ((".transformer_blocks.", ".transformer_1d_blocks."), (".norm_q.", ".q_norm."),
                    (".norm_k.", ".k_norm."))
_VOCODER_NAMES = (("conv_in.", "conv_pre."), ("conv_out.", "conv_post."), ("act_out.", "act_post."),
                  ("upsamplers.", "ups."), ("resnets.", "resblocks."))
_STATS = {"latents_mean": "per_channel_statistics.mean-of-means",
          "latents_std": "per_channel_statistics.std-of-means"}


def _renamed(name: str, tops, inner=()) -> str:
    for ours, official in tops:
        if name.startswith(ours):
            name = official + name[len(ours):]
            break
    for ours, official in inner:
        name = name.replace(ours, official)
    return name


def _transformer_name(name: str) -> str:
    inner = _BLOCK_NAMES if name.startswith("transformer_blocks.") else ()
    return "model.diffusion_model." + _renamed(name, _TRANSFORMER_TOP, inner)


def _connector_name(name: str) -> str:
    return _renamed(name, _CONNECTOR_TOP, _CONNECTOR_NAMES)


def _video_vae_name(name: str, num_down: int) -> str:
    """Our stage-wise VAE names -> the official flat block lists (encoder ``down_blocks.{2i}`` resnets,
    ``{2i+1}`` downsampler, ``{2n}`` mid block; decoder ``up_blocks.0`` mid block, ``{2i+1}`` upsampler,
    ``{2i+2}`` resnets), ``resnets`` -> ``res_blocks``."""
    if name in _STATS:
        return "vae." + _STATS[name]
    part, rest = name.split(".", 1)
    head, _, tail = rest.partition(".")
    if head == "mid_block":
        rest = (f"down_blocks.{2 * num_down}." if part == "encoder" else "up_blocks.0.") + tail
    elif head in ("down_blocks", "up_blocks"):
        stage, _, tail = tail.partition(".")
        i = int(stage)
        for sampler in ("downsamplers.0.", "upsamplers.0."):
            if tail.startswith(sampler):
                flat = 2 * i + 1
                tail = tail[len(sampler):]
                break
        else:
            flat = 2 * i if head == "down_blocks" else 2 * i + 2
        rest = f"{head}.{flat}.{tail}"
    elif part == "decoder" and head in ("time_embedder", "scale_shift_table"):
        rest = "last_" + rest
    return f"vae.{part}.{rest.replace('resnets.', 'res_blocks.')}"


def _audio_vae_name(name: str) -> str:
    return "audio_vae." + _STATS.get(name, name)


def _vocoder_name(name: str) -> str:
    head, _, rest = name.partition(".")
    if head in ("vocoder", "bwe_generator"):
        rest = _renamed(rest, _VOCODER_NAMES).replace(".downsample.filter", ".downsample.lowpass.filter")
        return f"vocoder.{head}.{rest}"
    return "vocoder." + name  # mel_stft.*


def _official(state: dict[str, torch.Tensor], to_official, from_official, what: str) -> dict[str, torch.Tensor]:
    """``state`` under its official names, each checked to map back through the loader's own key map."""
    out = {}
    for name, t in state.items():
        official = to_official(name)
        back = from_official(official)
        if back != name or official in out:
            raise RuntimeError(f"LTX-2.3 demo: {what} tensor {name!r} -> {official!r} -> {back!r}; the writer "
                               "and the loader disagree on the official key names.")
        out[official] = t
    return out


# --------------------------------------------------------------------------------------------------
# The files


def _checkpoint_state(config: dict, seed: int) -> tuple[dict[str, torch.Tensor], torch.nn.Module]:
    """(official tensors of the single-file checkpoint, the transformer they were drawn for)."""
    from . import audio_vae as _avae
    from . import text as _text
    from . import transformer as _tr
    from . import video_vae as _vvae
    from . import vocoder as _voc

    transformer = _tr.LTX2Transformer(_tr.config_from_official(
        config, has_caption_projection=False, caption_channels=GEMMA_WIDTH))
    connectors = _text.LTX2TextConnectors(_text.config_from_official(
        config, caption_channels=GEMMA_WIDTH, text_proj_in_factor=GEMMA_LAYERS + 1))
    video_vae = _vvae.LTX2VideoVAE(_vvae.config_from_official(config["vae"]))
    audio_vae = _avae.LTX2AudioVAE({**_avae.config_from_official(config), "mel_bins": 64})
    vocoder = _voc.build_vocoder(_voc.config_from_official(config))
    num_down = len(video_vae.config["block_out_channels"])

    tensors: dict[str, torch.Tensor] = {}
    tensors.update(_official(_randomise(transformer, seed), _transformer_name, _tr.official_to_module_key,
                             "transformer"))
    tensors.update(_official(_randomise(connectors, seed + 1), _connector_name, _text.official_to_module_key,
                             "connector"))
    tensors.update(_official(_randomise(video_vae, seed + 2), lambda n: _video_vae_name(n, num_down),
                             _vvae.make_official_key_map(num_down), "video VAE"))
    tensors.update(_official(_randomise(audio_vae, seed + 3), _audio_vae_name, _avae.official_to_module_key,
                             "audio VAE"))
    voc = _randomise(vocoder, seed + 4, keep=("filter",))
    for name, t in voc.items():  # damped residual blocks and output: quiet noise, not a clipped square wave
        if ".resnets." in name and t.ndim == 3 or name.endswith("conv_out.weight"):
            voc[name] = 0.3 * t
    bwe = config["vocoder"]["bwe"]
    for name, t in _stft_bases(bwe["n_fft"], bwe["num_mels"], bwe["input_sampling_rate"]).items():
        voc["mel_stft." + name] = t
    tensors.update(_official(voc, _vocoder_name, _voc.official_to_module_key, "vocoder"))
    return tensors, transformer


def _lora_state(transformer: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A rank-``LORA_RANK`` LoRA over every linear weight of the transformer blocks, official names."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, p in transformer.named_parameters():
        if not (name.startswith("transformer_blocks.") and name.endswith(".weight") and p.ndim == 2):
            continue
        path = _transformer_name(name)[len("model."):-len(".weight")]
        n_out, n_in = p.shape
        out[path + ".lora_A.weight"] = torch.randn(LORA_RANK, n_in, generator=g) * n_in ** -0.5
        out[path + ".lora_B.weight"] = torch.randn(n_out, LORA_RANK, generator=g) * 0.1 * LORA_RANK ** -0.5
    return out


# SentencePiece tokenizer (the ``spiece_model`` tensor). Ids as Gemma's: pad 0, eos 1, bos 2, unk 3.
_SPECIAL_PIECES = (("<pad>", 3), ("<eos>", 3), ("<bos>", 3), ("<unk>", 2), ("<mask>", 3),
                   ("<start_of_turn>", 4), ("<end_of_turn>", 4))  # (piece, type: 2 unknown, 3 control, 4 user)


def _pieces() -> list[tuple[str, float, int]]:
    """(piece, score, type) in id order: Gemma's specials, the 256 byte pieces (type 6), then the word
    boundary mark and printable ASCII (type 1, normal). Every other character falls back to bytes."""
    out = [(p, 0.0, t) for p, t in _SPECIAL_PIECES]
    out += [(f"<0x{b:02X}>", 0.0, 6) for b in range(256)]
    chars = ["\u2581"] + [chr(c) for c in range(0x21, 0x7F)]
    out += [(c, -float(i), 1) for i, c in enumerate(chars)]
    return out


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value) -> bytes:
    """One protobuf field: bool / int as a varint, float as fixed32, str / bytes length-delimited."""
    if isinstance(value, float):
        return _varint(number << 3 | 5) + struct.pack("<f", value)
    if isinstance(value, (bool, int)):
        return _varint(number << 3) + _varint(int(value))
    data = value.encode("utf-8") if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def spiece_model() -> bytes:
    """The serialized SentencePiece ``ModelProto`` of the demo tokenizer.

    Field numbers of sentencepiece_model.proto: ModelProto pieces 1, trainer_spec 2, normalizer_spec 3;
    SentencePiece piece 1, score 2, type 3; TrainerSpec model_type 3 (BPE = 2), vocab_size 4,
    byte_fallback 35, unk/bos/eos/pad ids 40-43, unk/bos/eos/pad pieces 45-48; NormalizerSpec name 1,
    add_dummy_prefix 3, remove_extra_whitespaces 4, escape_whitespaces 5. Like Gemma's: BPE, byte
    fallback, no dummy prefix, spaces kept (as the word boundary mark).
    """
    pieces = _pieces()
    proto = b"".join(_field(1, _field(1, p) + _field(2, s) + _field(3, t)) for p, s, t in pieces)
    trainer = b"".join(_field(n, v) for n, v in (
        (3, 2), (4, len(pieces)), (35, True), (40, 3), (41, 2), (42, 1), (43, 0),
        (45, "<unk>"), (46, "<bos>"), (47, "<eos>"), (48, "<pad>")))
    normalizer = b"".join(_field(n, v) for n, v in ((1, "identity"), (3, False), (4, False), (5, True)))
    return proto + _field(2, trainer) + _field(3, normalizer)


def _gemma_state(seed: int) -> dict[str, torch.Tensor]:
    """Gemma-3 text weights in ComfyUI's single-file names (``model.*``) plus ``spiece_model``."""
    import transformers

    from .gemma_file import GEMMA3_12B_DEFAULTS

    vocab = len(_pieces())
    cfg = dict(GEMMA3_12B_DEFAULTS, vocab_size=vocab, hidden_size=GEMMA_WIDTH, intermediate_size=GEMMA_MLP,
               num_hidden_layers=GEMMA_LAYERS, num_attention_heads=GEMMA_HEADS,
               num_key_value_heads=GEMMA_KV_HEADS, head_dim=GEMMA_HEAD_DIM, query_pre_attn_scalar=GEMMA_HEAD_DIM,
               layer_types=["sliding_attention"] * GEMMA_LAYERS)
    with torch.device("meta"):
        model = transformers.Gemma3TextModel(transformers.Gemma3TextConfig.from_dict(cfg))
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in model.state_dict().items():
        # Gemma's RMS norms scale by (1 + weight): gains near 1 are weights near 0.
        value = _random_like(name, t, g)
        out["model." + name] = value - 1.0 if t.ndim == 1 else value
    out["spiece_model"] = torch.frombuffer(bytearray(spiece_model()), dtype=torch.uint8)
    return out


def _save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    save_file({k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()},
              str(path), metadata=metadata)


@dataclass(frozen=True)
class LTX2Demo:
    """Paths of the demo files: checkpoint (single file), Gemma-3 text encoder (single file), x2 latent
    upsampler and distilled LoRA."""

    checkpoint: Path
    text_encoder: Path
    upsampler: Path
    lora: Path

    @classmethod
    def in_folder(cls, folder: str | Path) -> "LTX2Demo":
        folder = Path(folder)
        return cls(folder / CHECKPOINT_NAME, folder / TEXT_ENCODER_NAME, folder / UPSAMPLER_NAME, folder / LORA_NAME)

    @property
    def files(self) -> tuple[Path, Path, Path, Path]:
        return self.checkpoint, self.text_encoder, self.upsampler, self.lora


def write_demo(folder: str | Path, seed: int = 0) -> LTX2Demo:
    """Write the four demo files into ``folder`` (created if needed); the same ``seed`` writes the same
    tensors and metadata."""
    from .upsampler import LTX2LatentUpsampler

    demo = LTX2Demo.in_folder(folder)
    demo.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    config = checkpoint_config()
    with torch.no_grad():
        tensors, transformer = _checkpoint_state(config, seed)
        _save(tensors, demo.checkpoint, {"config": json.dumps(config), "model_version": "2.3.0"})
        _save(_lora_state(transformer, seed + 5), demo.lora)
        _save(_randomise(LTX2LatentUpsampler(UPSAMPLER_CONFIG), seed + 6), demo.upsampler,
              {"config": json.dumps(UPSAMPLER_CONFIG)})
        _save(_gemma_state(seed + 7), demo.text_encoder)
    return demo


def _tag() -> str:
    sizes = json.dumps([checkpoint_config(), UPSAMPLER_CONFIG, GEMMA_WIDTH, GEMMA_LAYERS, GEMMA_HEADS,
                        GEMMA_KV_HEADS, GEMMA_HEAD_DIM, GEMMA_MLP, LORA_RANK, _pieces()], sort_keys=True)
    return f"v{DEMO_VERSION}-{hashlib.sha256(sizes.encode()).hexdigest()[:8]}"


def cache_folder(cache_dir: str | Path | None = None) -> Path:
    """Where :func:`default_demo` keeps the files: ``<cache>/ltx2-tiny-random-<version>-<hash>``."""
    base = Path(cache_dir or os.environ.get("COMFYUI_COSMOS3_LTX2_CACHE")
                or Path.home() / ".cache" / "comfyui_cosmos3_ltx2")
    return base / f"ltx2-tiny-random-{_tag()}"


def default_demo(cache_dir: str | Path | None = None) -> LTX2Demo:
    """The embedded demo, written once into the cache folder (see :func:`cache_folder`) and reused.

    The files are written into a temporary folder beside it that is renamed when complete, so an
    interrupted write is never taken for a finished one and two processes never read half a file.
    """
    folder = cache_folder(cache_dir)
    demo = LTX2Demo.in_folder(folder)
    if all(p.is_file() for p in demo.files):
        return demo
    tmp = folder.with_name(f"{folder.name}.tmp-{uuid.uuid4().hex}")
    try:
        write_demo(tmp)
        if folder.exists():  # an incomplete copy (a file deleted by hand)
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not all(p.is_file() for p in demo.files):  # not another writer's finished copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return demo
