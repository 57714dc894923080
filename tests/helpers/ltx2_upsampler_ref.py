"""Tiny LTX-2.0 / LTX-2.3 latent-upsampler variants, their official config, and diffusers' reference model."""

from __future__ import annotations

import pytest
import torch

diffusers_upsampler = pytest.importorskip("diffusers.pipelines.ltx2.latent_upsampler")

# diffusers kwargs -> the official (ltx-core) config the single file carries
VARIANTS = {
    "2.0": dict(in_channels=16, mid_channels=32, num_blocks_per_stage=1, dims=3,
                use_rational_resampler=True, rational_spatial_scale=2.0),
    "2.3": dict(in_channels=16, mid_channels=32, num_blocks_per_stage=1, dims=3,
                use_rational_resampler=False),
    "2d-plain": dict(in_channels=16, mid_channels=32, num_blocks_per_stage=2, dims=2,
                     use_rational_resampler=False),
    "rational-1.5": dict(in_channels=16, mid_channels=32, num_blocks_per_stage=1, dims=3,
                         use_rational_resampler=True, rational_spatial_scale=1.5),
    "temporal": dict(in_channels=16, mid_channels=32, num_blocks_per_stage=1, dims=3,
                     spatial_upsample=False, temporal_upsample=True),
}


def official_config(kw: dict) -> dict:
    return {
        "_class_name": "LatentUpsampler",
        "in_channels": kw["in_channels"],
        "mid_channels": kw["mid_channels"],
        "num_blocks_per_stage": kw["num_blocks_per_stage"],
        "dims": kw["dims"],
        "spatial_upsample": kw.get("spatial_upsample", True),
        "temporal_upsample": kw.get("temporal_upsample", False),
        "spatial_scale": kw.get("rational_spatial_scale", 2.0),
        "rational_resampler": kw["use_rational_resampler"] if "use_rational_resampler" in kw else True,
    }


def build_reference(kw: dict, seed: int = 0):
    torch.manual_seed(seed)
    ref = diffusers_upsampler.LTX2LatentUpsamplerModel(**kw).eval()
    with torch.no_grad():  # non-trivial GroupNorm affine parameters
        for name, p in ref.named_parameters():
            if "norm" in name:
                p.copy_(torch.empty_like(p).uniform_(0.5, 1.5) if name.endswith("weight")
                        else 0.1 * torch.randn_like(p))
    return ref
