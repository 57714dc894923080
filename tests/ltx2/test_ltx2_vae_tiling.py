"""Spatial tiling of the LTX-2 video VAE decode (ltx2/video_vae.py ``decode(spatial_tile=...)``).

Tiny random VAEs (the LTX-2.0 and LTX-2.3 layouts of test_ltx2_video_vae). The oracle is Lightricks'
ltx-core 1.0.0 ``VideoDecoder.tiled_decode``, built by its own configurator from the official block-list
config (the decoder half of test_ltx2_loader's ``_official_vae``, restated here because importing that
module pulls in diffusers' pipelines, seconds of the time budget) and given our random weights through
the official key names. Its tiled decode refuses to run without a temporal tiling config (the default temporal mapping
leaves an open-ended slice it cannot size), so it gets one whose 64-frame tile is longer than the
clips here: one temporal tile, no temporal blending, i.e. spatial tiling alone. Both layouts can be
built; ltx-core reads the decoder padding from ``spatial_padding_mode``, which is set to the layout's.

With random weights the decoder's receptive field spans whole tiles, so tiled and untiled outputs
differ everywhere near a cut; the closeness check therefore looks only at pixels far from every cut,
and the blend itself is checked against tiles decoded by hand and mixed with the documented ramps.
"""

from __future__ import annotations

import pytest
import torch

from comfyui_cosmos3_ltx2.ltx2.decoding import decode
from comfyui_cosmos3_ltx2.ltx2.video_vae import LTX2VideoVAE, official_to_module_key
from helpers.ltx2_video_vae_ref import TINY_20, TINY_23
from helpers.ltx_oracle import ltx_oracles_available
from helpers.measures import rel
from helpers.op_count import OpCount

CONFIGS = {"2.0": TINY_20, "2.3": TINY_23}


def _vae(version: str, seed: int = 0) -> LTX2VideoVAE:
    torch.manual_seed(seed)
    vae = LTX2VideoVAE(CONFIGS[version]).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in vae.decoder.named_parameters():  # non-zero biases
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return vae


@pytest.fixture(scope="module", params=list(CONFIGS))
def vae(request):
    return request.param, _vae(request.param)


def _latents(*shape, b=1, seed=3):
    return torch.randn(b, 16, *shape, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------------
# Against ltx-core


def _official_decoder_config(version: str) -> dict:
    """The tiny decoders in ltx-core's block-list form (as test_ltx2_loader._official_vae writes them)."""
    res = ["res_x", {"num_layers": 1}]
    if version == "2.3":
        blocks = [res, ["compress_space", {"multiplier": 2}], res, ["compress_time", {"multiplier": 2}], res,
                  ["compress_all", {"multiplier": 1}], res, ["compress_all", {"multiplier": 2}], res]
    else:
        up = ["compress_all", {"residual": True, "multiplier": 2}]
        blocks = [res, up, res, up, res, up, res]
    return {"latent_channels": 16, "patch_size": 4, "decoder_blocks": blocks, "decoder_base_channels": 8,
            "norm_layer": "pixel_norm", "causal_decoder": False, "timestep_conditioning": False,
            # ltx-core's decoder reads its padding from this key
            "spatial_padding_mode": CONFIGS[version]["decoder_spatial_padding_mode"]}


def _ltx_core_decoder(version: str, ours: LTX2VideoVAE):
    from ltx_core.model.video_vae.model_configurator import VideoDecoderConfigurator

    dec = VideoDecoderConfigurator.from_config({"vae": _official_decoder_config(version)}).eval()
    our_sd = ours.state_dict()
    sd = {}
    for k, v in dec.state_dict().items():
        official = ("vae." if k.startswith("per_channel_statistics.") else "vae.decoder.") + k
        mapped = official_to_module_key(official)
        sd[k] = v if mapped is None else our_sd[mapped]  # None: statistics the decoder does not use
    dec.load_state_dict(sd)
    return dec


@pytest.mark.skipif(not ltx_oracles_available(), reason="ltx-core not installed")
@pytest.mark.parametrize("version,shape,tile,overlap", [
    ("2.0", (3, 6, 5), 128, 32),  # 2 x 2 tiles
    ("2.3", (2, 5, 6), 96, 64),   # 3 x 4 tiles, inner tiles shorter than both ramps together
])


def test_matches_ltx_core_tiled_decode(version, shape, tile, overlap):
    from ltx_core.model.video_vae.tiling import SpatialTilingConfig, TemporalTilingConfig, TilingConfig

    ours = _vae(version)
    dec = _ltx_core_decoder(version, ours)
    z = _latents(*shape)
    config = TilingConfig(spatial_config=SpatialTilingConfig(tile, overlap),
                          temporal_config=TemporalTilingConfig(64, 24))  # longer than the clip: one tile
    want = torch.cat(list(dec.tiled_decode(z, config)), 2)
    got = ours.decode(z, spatial_tile=tile, spatial_overlap=overlap)
    assert got.shape == want.shape == (1, 3, 1 + 8 * (shape[0] - 1), 32 * shape[1], 32 * shape[2])
    assert rel(got, want) <= 1e-5
    assert rel(ours.decode(z), want) > 1e-3  # the tiling did something


# --------------------------------------------------------------------------------------------------
# Our own properties


def test_tile_covering_image_is_untiled(vae):
    _, ours = vae
    z = _latents(3, 2, 3)  # 64 x 96 pixels
    full = ours.decode(z)
    assert torch.equal(ours.decode(z, spatial_tile=96, spatial_overlap=32), full)
    assert torch.equal(ours.decode(z, spatial_tile=512), full)
    assert torch.equal(ours.decode(z, spatial_tile=0), full)
    streamed = ours.decode(z, temporal_chunk=1)
    assert torch.equal(ours.decode(z, spatial_tile=128, temporal_chunk=1), streamed)


def test_tiled_streamed_equals_tiled(vae):
    _, ours = vae
    z = _latents(3, 4, 5, seed=5)  # 128 / 64 px: 2 x 2 tiles, 3 x 4 cells (rows scaled by 4 / 5)
    tiled = ours.decode(z, spatial_tile=128, spatial_overlap=64)
    assert tiled.shape == (1, 3, 17, 128, 160) and tiled.dtype == torch.float32
    for chunk in (1, 2):
        calls = []
        got = ours.decode(z, spatial_tile=128, spatial_overlap=64, temporal_chunk=chunk,
                          callback=lambda d, n: calls.append((d, n)))
        assert got.shape == tiled.shape and got.dtype == torch.float32
        assert rel(got, tiled) <= 5e-6, chunk
        # progress in latent frames over all four tiles, after every chunk of every tile
        assert len(calls) == 4 * -(-3 // chunk) and calls[-1] == (12, 12)
        assert [d for d, _ in calls] == sorted(d for d, _ in calls) and {n for _, n in calls} == {12}
    as64 = ours.decode(z, spatial_tile=128, spatial_overlap=64, dtype=torch.float64)
    assert as64.dtype == torch.float64 and rel(as64.float(), tiled) <= 1e-6


def test_blend_and_closeness_to_untiled():
    """Two tiles side by side: outside the overlap each is its own decode, inside it the ramps
    k / 65 and 1 - k / 65 (k = 1..64) mix them; far from the cut the result is the untiled decode."""
    ours = _vae("2.3")
    z = _latents(2, 2, 12, seed=7)  # 64 x 384 px; rows fit one tile, columns: cells [0, 8) and [6, 12)
    got = ours.decode(z, spatial_tile=256, spatial_overlap=64)
    left, right = ours.decode(z[..., :8]), ours.decode(z[..., 6:])
    ramp = torch.arange(1, 65, dtype=torch.float32) / 65
    want = torch.cat([left[..., :192], left[..., 192:] * (1 - ramp) + right[..., :64] * ramp, right[..., 64:]], -1)
    assert rel(got, want) <= 1e-6
    assert torch.equal(got[..., :192], left[..., :192]) and torch.equal(got[..., 256:], right[..., 64:])
    full = ours.decode(z)
    assert rel(got[..., :32], full[..., :32]) <= 5e-2  # 7 cells from the cut (measured 3e-4)
    assert rel(got[..., -16:], full[..., -16:]) <= 5e-2  # 5.5 cells from it (measured 1.3e-2)


def test_no_host_syncs_when_tiled(vae):
    _, ours = vae
    z = _latents(2, 2, 3, seed=8)
    with OpCount() as counter:
        ours.decode(z, spatial_tile=64, spatial_overlap=32, temporal_chunk=1, callback=lambda d, n: None)
    assert counter.host_reads == 0


def test_bad_tiling_arguments_are_refused():
    ours = LTX2VideoVAE(TINY_23)
    z = torch.zeros(1, 16, 1, 3, 3)
    for tile in (100, 32, -64, 64.0, True):
        with pytest.raises(ValueError, match="spatial_tile must be a multiple of 32 of at least 64"):
            ours.decode(z, spatial_tile=tile)
    for overlap in (48, 128, 160, -32, None):
        with pytest.raises(ValueError, match=r"spatial_overlap must be a multiple of 32 .*spatial_tile \(128\)"):
            ours.decode(z, spatial_tile=128, spatial_overlap=overlap)


# --------------------------------------------------------------------------------------------------
# The pipeline passes the tiling through


class _AudioStub:
    latent_channels = 8

    def decode(self, latents, normalized=True):
        return latents


class _VocoderStub:
    device, dtype, sampling_rate = torch.device("cpu"), torch.float32, 24000

    def __call__(self, mel):
        return mel.flatten(2)


def test_pipeline_decode_passes_tiling_through():
    ours = _vae("2.3")
    z = _latents(2, 3, 4, seed=9)
    audio = torch.zeros(1, 8, 4, 2)
    frames, _, _ = decode(ours, _AudioStub(), _VocoderStub(), z, audio, temporal_chunk=1, spatial_tile=96,
                            spatial_overlap=32)
    video = ours.decode(ours.denormalize_latents(z), temporal_chunk=1, spatial_tile=96, spatial_overlap=32)
    assert torch.equal(frames, (video / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 4, 1).flatten(0, 1))
    untiled, _, _ = decode(ours, _AudioStub(), _VocoderStub(), z, audio)
    assert not torch.equal(frames, untiled)
