"""Tiny Cosmos3 reference models built with diffusers (the test oracle; never imported by the pack)."""

from __future__ import annotations

import torch

TINY_TRANSFORMER = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=16,
    intermediate_size=64,
    rope_axes_dim=[4, 2, 2],
    vocab_size=300,
)
EDGE_SWITCHES = dict(hidden_act="relu2", qk_norm_for_text=False, use_und_k_norm_for_gen=True)


def randomize_(module: torch.nn.Module, seed: int, scale: float = 0.2) -> None:
    """Perturb every parameter so that norms and biases are not at their identity values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


def reference_transformer(seed: int = 0, **overrides):
    from diffusers import Cosmos3OmniTransformer

    torch.manual_seed(seed)
    model = Cosmos3OmniTransformer(**{**TINY_TRANSFORMER, **overrides}).eval()
    randomize_(model, seed + 1)
    return model


def reference_velocity(ref, input_ids: list[int], latents: torch.Tensor, timestep: int, fps: float,
                       condition_frames: list[int] = ()) -> torch.Tensor:
    """One diffusers transformer forward laid out exactly as Cosmos3OmniPipeline packs it."""
    from diffusers.pipelines.cosmos.pipeline_cosmos3_omni import (
        get_3d_mrope_ids_text_tokens,
        get_3d_mrope_ids_vae_tokens,
    )

    cfg = ref.config
    L = len(input_ids)
    text_ids, nxt = get_3d_mrope_ids_text_tokens(L, 0, use_float_positions=cfg.enable_fps_modulation)
    _, _, T, H, W = latents.shape
    p = cfg.latent_patch_size
    hp, wp = -(-H // p), -(-W // p)
    vis_ids, _ = get_3d_mrope_ids_vae_tokens(
        T, hp, wp, nxt + cfg.unified_3d_mrope_temporal_modality_margin,
        reset_spatial_indices=cfg.unified_3d_mrope_reset_spatial_ids,
        fps=fps if cfg.enable_fps_modulation else None, base_fps=float(cfg.base_fps), temporal_compression_factor=4,
    )
    noisy = [f for f in range(T) if f not in set(condition_frames)]
    stride = hp * wp
    mse = [L + f * stride + j for f in noisy for j in range(stride)]
    n_vis = T * stride
    out = ref(
        input_ids=torch.tensor(input_ids),
        text_indexes=torch.arange(L),
        position_ids=torch.cat([text_ids, vis_ids], dim=1),
        und_len=L,
        sequence_length=L + n_vis,
        vision_tokens=[latents],
        vision_token_shapes=[(T, hp, wp)],
        vision_sequence_indexes=torch.arange(L, L + n_vis),
        vision_mse_loss_indexes=torch.tensor(mse, dtype=torch.long),
        vision_timesteps=torch.full((len(noisy) * stride,), timestep),
        vision_noisy_frame_indexes=[torch.tensor(noisy, dtype=torch.long)],
        return_dict=False,
    )
    return out[0][0]
