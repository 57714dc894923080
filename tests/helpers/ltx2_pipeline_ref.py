"""The one-stage pipeline oracle set-up: tiny LTX-2 / LTX-2.3 components saved with ``save_pretrained``,
diffusers' ``LTX2Pipeline`` over them and ours loaded from the same files, the shared latent shape, Gemma-like
prompt states and packed noise; and ``CoreX0``, ltx-core's X0-model interface over our transformer."""

from __future__ import annotations

import torch

from comfyui_cosmos3_ltx2.core.checkpoint import load_into, read_config
from comfyui_cosmos3_ltx2.ltx2.audio_vae import LTX2AudioVAE
from comfyui_cosmos3_ltx2.ltx2.latents import LatentShape, latent_shape
from comfyui_cosmos3_ltx2.ltx2.text import LTX2TextConnectors
from comfyui_cosmos3_ltx2.ltx2.transformer import LTX2Transformer
from comfyui_cosmos3_ltx2.ltx2.video_vae import LTX2VideoVAE
from comfyui_cosmos3_ltx2.ltx2.vocoder import build_vocoder
from helpers.ltx2_audio_ref import stft_buffers

FRAMES, HEIGHT, WIDTH, FPS = 33, 64, 96, 24.0

TEXT_LEN, GEMMA_WIDTH, GEMMA_STATES = 256, 32, 3

_DIT = dict(
    in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=32, cross_attention_dim=64,
    audio_in_channels=32, audio_out_channels=32, audio_num_attention_heads=2, audio_attention_head_dim=16,
    audio_cross_attention_dim=32, num_layers=2, rope_type="split", rope_double_precision=True,
    rope_theta=10000.0, timestep_scale_multiplier=1000, cross_attn_timestep_scale_multiplier=1000,
    perturbed_attn=True, caption_channels=GEMMA_WIDTH,
)

_CONN = dict(
    caption_channels=GEMMA_WIDTH, text_proj_in_factor=GEMMA_STATES, video_connector_num_layers=2,
    audio_connector_num_layers=2, video_connector_num_learnable_registers=128,
    audio_connector_num_learnable_registers=128, connector_rope_base_seq_len=4096, rope_double_precision=True,
    rope_type="split",
)

_VAE_ENC = dict(
    latent_channels=16, layers_per_block=[1, 1, 1, 1, 1],
    downsample_type=["spatial", "temporal", "spatiotemporal", "spatiotemporal"],
    spatio_temporal_scaling=[True, True, True, True], encoder_causal=True, encoder_spatial_padding_mode="zeros",
    patch_size=4, spatial_compression_ratio=32, temporal_compression_ratio=8, decoder_causal=False,
    timestep_conditioning=False,
)

_AVAE = dict(base_channels=32, output_channels=2, ch_mult=[1, 2, 4], num_res_blocks=1, latent_channels=2,
             mel_bins=64, norm_type="pixel", causality_axis="height", mid_block_add_attention=False,
             resolution=256, in_channels=2, double_z=True)

_VOC_COMMON = dict(in_channels=128, out_channels=2, resnet_kernel_sizes=[3, 7, 11], resnet_dilations=[[1, 3, 5]] * 3)

VARIANTS = {
    "2.3": dict(
        dit=dict(_DIT, use_prompt_embeddings=False, gated_attn=True, audio_gated_attn=True, cross_attn_mod=True,
                 audio_cross_attn_mod=True),
        conn=dict(_CONN, video_connector_num_attention_heads=2, video_connector_attention_head_dim=32,
                  audio_connector_num_attention_heads=2, audio_connector_attention_head_dim=16,
                  video_gated_attn=True, audio_gated_attn=True, per_modality_projections=True,
                  video_hidden_dim=64, audio_hidden_dim=32, proj_bias=True),
        vae=dict(_VAE_ENC, block_out_channels=[32, 64, 128, 128], decoder_block_out_channels=[16, 32, 32, 64],
                 decoder_layers_per_block=[1, 1, 1, 1, 1], decoder_spatio_temporal_scaling=[True] * 4,
                 decoder_inject_noise=[False] * 5, upsample_type=["spatiotemporal", "spatiotemporal", "temporal", "spatial"],
                 upsample_residual=[False] * 4, upsample_factor=[2, 2, 1, 2], decoder_spatial_padding_mode="zeros"),
        avae=_AVAE,
        voc=dict(_VOC_COMMON, hidden_channels=128, upsample_kernel_sizes=[11, 4, 4, 4, 4, 4],
                 upsample_factors=[5, 2, 2, 2, 2, 2], act_fn="snakebeta", antialias=True, final_act_fn=None,
                 final_bias=False, bwe_in_channels=128, bwe_hidden_channels=64, bwe_out_channels=2,
                 bwe_upsample_kernel_sizes=[12, 11, 4, 4, 4], bwe_upsample_factors=[6, 5, 2, 2, 2],
                 bwe_resnet_kernel_sizes=[3, 7, 11], bwe_resnet_dilations=[[1, 3, 5]] * 3, bwe_act_fn="snakebeta",
                 bwe_antialias=True, bwe_final_act_fn=None, bwe_final_bias=False, filter_length=512, hop_length=80,
                 window_length=512, num_mel_channels=64, input_sampling_rate=16000, output_sampling_rate=48000),
    ),
    "2.0": dict(
        dit=dict(_DIT, use_prompt_embeddings=True),
        conn=dict(_CONN, video_connector_num_attention_heads=2, video_connector_attention_head_dim=16,
                  audio_connector_num_attention_heads=2, audio_connector_attention_head_dim=16,
                  per_modality_projections=False, proj_bias=False),
        vae=dict(_VAE_ENC, block_out_channels=[32, 64, 128, 256], decoder_block_out_channels=[16, 32, 64],
                 decoder_layers_per_block=[1, 1, 1, 1], decoder_spatio_temporal_scaling=[True] * 3,
                 decoder_inject_noise=[False] * 4, upsample_type=["spatiotemporal"] * 3,
                 upsample_residual=[True] * 3, upsample_factor=[2, 2, 2], decoder_spatial_padding_mode="reflect"),
        avae=dict(_AVAE, mid_block_add_attention=True),
        voc=dict(_VOC_COMMON, hidden_channels=64, upsample_kernel_sizes=[16, 15, 8, 4, 4],
                 upsample_factors=[6, 5, 2, 2, 2], act_fn="leaky_relu", final_act_fn="tanh", final_bias=True,
                 output_sampling_rate=24000),
    ),
}


def _randomise(model: torch.nn.Module, seed: int, qk_gain: float = 3.0) -> None:
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith(("norm_q.weight", "norm_k.weight")):
            p.copy_(qk_gain * (0.75 + 0.5 * torch.rand(p.shape, generator=g)))


def _stats(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    module.latents_mean.copy_(torch.randn(module.latents_mean.shape, generator=g) * 0.5)
    module.latents_std.copy_(torch.rand(module.latents_std.shape, generator=g) * 1.5 + 0.5)


def load_reference(cls, folder):
    with torch.device("meta"):
        m = cls(read_config(folder))
    load_into(m, folder)
    return m.eval()

_CACHE: dict = {}


def tiny_pipeline(variant: str, tmp_path_factory):
    """(diffusers pipeline, our components dict), built once per variant."""
    if variant in _CACHE:
        return _CACHE[variant]
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
        LTX2Pipeline,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors as RefConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder, LTX2VocoderWithBWE

    cfg = VARIANTS[variant]
    torch.manual_seed(0)
    transformer = LTX2VideoTransformer3DModel(**cfg["dit"]).eval()
    connectors = RefConnectors(**cfg["conn"]).eval()
    vae = AutoencoderKLLTX2Video(**cfg["vae"]).eval()
    avae = AutoencoderKLLTX2Audio(**cfg["avae"]).eval()
    voc_cls = LTX2VocoderWithBWE if variant == "2.3" else LTX2Vocoder
    vocoder = voc_cls(**cfg["voc"]).eval()
    with torch.no_grad():
        _randomise(transformer, 1)
        _randomise(connectors, 2, qk_gain=1.0)
        _stats(vae, 3)
        _stats(avae, 4)
        if variant == "2.3":
            stft_buffers(vocoder.mel_stft, 512, 64)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)  # no re-shifting
    pipe = LTX2Pipeline(scheduler=scheduler, vae=vae, audio_vae=avae, text_encoder=None, tokenizer=None,
                        connectors=connectors, transformer=transformer, vocoder=vocoder)
    pipe.set_progress_bar_config(disable=True)

    root = tmp_path_factory.mktemp(f"ltx2_pipe_{variant}")
    for name, module in (("transformer", transformer), ("connectors", connectors), ("vae", vae),
                         ("audio_vae", avae), ("vocoder", vocoder)):
        module.save_pretrained(root / name, safe_serialization=True)
    ours = dict(
        transformer=load_reference(LTX2Transformer, root / "transformer"),
        connectors=load_reference(LTX2TextConnectors, root / "connectors"),
        vae=load_reference(LTX2VideoVAE, root / "vae"),
        audio_vae=load_reference(LTX2AudioVAE, root / "audio_vae"),
        vocoder=load_reference(build_vocoder, root / "vocoder"),
    )
    _CACHE[variant] = (pipe, ours)
    return _CACHE[variant]


def gemma_prompts(seed: int = 0):
    """Gemma-like hidden states (flattened [B, T, D*L]) and left-padded masks for a positive and a
    negative prompt."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(1, TEXT_LEN, GEMMA_WIDTH * GEMMA_STATES, generator=g)
    neg = torch.randn(1, TEXT_LEN, GEMMA_WIDTH * GEMMA_STATES, generator=g)
    pos_mask = torch.zeros(1, TEXT_LEN, dtype=torch.int64)
    pos_mask[:, -20:] = 1
    neg_mask = torch.zeros(1, TEXT_LEN, dtype=torch.int64)
    neg_mask[:, -7:] = 1
    return pos, pos_mask, neg, neg_mask


def tiny_shape():
    return latent_shape(FRAMES, HEIGHT, WIDTH, FPS, video_channels=16, audio_channels=2, mel_bins=16)


def packed_noise(shape: LatentShape, seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape.video_packed, generator=g), torch.randn(shape.audio_packed, generator=g)


class CoreX0:
    """ltx-core X0Model interface over our transformer: (video Modality, audio Modality, perturbations) -> x0."""

    def __init__(self, transformer, ropes: dict):
        self.tr, self.ropes = transformer, ropes

    def __call__(self, video, audio, perturbations):
        kw = {}
        if perturbations is not None:
            for cfg in perturbations.perturbations:
                for p in cfg.perturbations:
                    name = p.type.name
                    if name == "SKIP_A2V_CROSS_ATTN":
                        kw["disable_a2v"] = True
                    elif name == "SKIP_V2A_CROSS_ATTN":
                        kw["disable_v2a"] = True
                    elif name == "SKIP_VIDEO_SELF_ATTN":
                        kw["skip_video_self_attn_blocks"] = tuple(p.blocks)
                    elif name == "SKIP_AUDIO_SELF_ATTN":
                        kw["skip_audio_self_attn_blocks"] = tuple(p.blocks)
        vt, at = video.timesteps, audio.timesteps
        vt2 = vt.squeeze(-1) if vt.ndim == 3 else vt
        at2 = at.squeeze(-1) if at.ndim == 3 else at
        vel, avel = self.tr(video.latent.float(), audio.latent.float(), video.context, audio.context,
                            float(video.sigma), float(audio.sigma), timestep=vt2, audio_timestep=at2,
                            rope=self.ropes[video.latent.shape[1]], **kw)
        vts = vt if vt.ndim == 3 else vt.unsqueeze(-1)
        ats = at if at.ndim == 3 else at.unsqueeze(-1)
        return (video.latent.float() - vel.float() * vts.float()), (audio.latent.float() - avel.float() * ats.float())
