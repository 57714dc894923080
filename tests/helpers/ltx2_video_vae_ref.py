"""Tiny LTX-2.0 / LTX-2.3 video VAE configs (real compression, tiny widths) and the official key names."""

from __future__ import annotations

_ENCODER = dict(
    latent_channels=16,
    layers_per_block=[1, 1, 1, 1, 1],
    downsample_type=["spatial", "temporal", "spatiotemporal", "spatiotemporal"],
    spatio_temporal_scaling=[True, True, True, True],
    encoder_causal=True,
    encoder_spatial_padding_mode="zeros",
    patch_size=4,
    spatial_compression_ratio=32,
    temporal_compression_ratio=8,
)

TINY_20 = dict(  # LTX-2.0 layout: three symmetric residual x2 up blocks, reflect padding
    _ENCODER,
    block_out_channels=[32, 64, 128, 256],
    decoder_block_out_channels=[16, 32, 64],
    decoder_layers_per_block=[1, 1, 1, 1],
    decoder_spatio_temporal_scaling=[True, True, True],
    decoder_inject_noise=[False, False, False, False],
    upsample_type=["spatiotemporal", "spatiotemporal", "spatiotemporal"],
    upsample_residual=[True, True, True],
    upsample_factor=[2, 2, 2],
    decoder_causal=False,
    decoder_spatial_padding_mode="reflect",
    timestep_conditioning=False,
)

TINY_23 = dict(  # LTX-2.3 layout: four up blocks with per-block types and factors, zero padding
    _ENCODER,
    block_out_channels=[32, 64, 128, 128],
    decoder_block_out_channels=[16, 32, 32, 64],
    decoder_layers_per_block=[1, 1, 1, 1, 1],
    decoder_spatio_temporal_scaling=[True, True, True, True],
    decoder_inject_noise=[False, False, False, False, False],
    upsample_type=["spatiotemporal", "spatiotemporal", "temporal", "spatial"],
    upsample_residual=[False, False, False, False],
    upsample_factor=[2, 2, 1, 2],
    decoder_causal=False,
    decoder_spatial_padding_mode="zeros",
    timestep_conditioning=False,
)


def to_official_key(key: str, num_down: int) -> str:
    """Our (diffusers) key -> the official single-file key, the inverse of the documented renames."""
    if key == "latents_mean":
        return "vae.per_channel_statistics.mean-of-means"
    if key == "latents_std":
        return "vae.per_channel_statistics.std-of-means"
    part, rest = key.split(".", 1)
    parts = rest.split(".")
    if part == "encoder":
        if parts[0] == "mid_block":
            parts[:1] = ["down_blocks", str(2 * num_down)]
        elif parts[0] == "down_blocks":
            i = int(parts[1])
            if parts[2] == "downsamplers":
                parts[:4] = ["down_blocks", str(2 * i + 1)]
            else:
                parts[:2] = ["down_blocks", str(2 * i)]
    else:
        if parts[0] == "mid_block":
            parts[:1] = ["up_blocks", "0"]
        elif parts[0] == "up_blocks":
            i = int(parts[1])
            if parts[2] == "upsamplers":
                parts[:4] = ["up_blocks", str(2 * i + 1)]
            else:
                parts[:2] = ["up_blocks", str(2 * i + 2)]
        elif parts[0] in ("time_embedder", "scale_shift_table"):
            parts[0] = "last_" + parts[0]
    parts = ["res_blocks" if p == "resnets" else p for p in parts]
    return f"vae.{part}." + ".".join(parts)
