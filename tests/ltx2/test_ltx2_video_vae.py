"""Parity of our LTX-2 / LTX-2.3 video VAE (ltx2/video_vae.py) with diffusers' AutoencoderKLLTX2Video.

Tiny random models that keep the real 32x spatial / 8x temporal compression and 4x4 patches. The
reference is saved with save_pretrained and ours is built from exactly those files (config.json and
diffusion_pytorch_model.safetensors, strict key match). The official single-file layout is written
by hand from the documented rename rules and must load the same tensors.
"""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from comfyui_cosmos3_ltx2.core.checkpoint import load_into, read_config
from comfyui_cosmos3_ltx2.ltx2.video_vae import LTX2VideoVAE, official_to_module_key
from helpers.ltx2_video_vae_ref import TINY_20, TINY_23, to_official_key
from helpers.measures import rel
from helpers.op_count import OpCount

# Not a released layout: exercises the timestep-conditioned decoder and a causal decoder.
TINY_TC = dict(TINY_20, timestep_conditioning=True)
TINY_CAUSAL = dict(TINY_23, decoder_causal=True, upsample_residual=[True, False, True, False])
VARIANTS = {"2.0": TINY_20, "2.3": TINY_23, "timestep": TINY_TC, "causal": TINY_CAUSAL}


def reference_vae(config: dict, seed: int = 0):
    from diffusers import AutoencoderKLLTX2Video

    torch.manual_seed(seed)
    ref = AutoencoderKLLTX2Video(**config).eval()
    g = torch.Generator().manual_seed(seed + 1)
    ref.latents_mean.copy_(torch.randn(ref.latents_mean.shape, generator=g) * 0.5)
    ref.latents_std.copy_(torch.rand(ref.latents_std.shape, generator=g) * 1.5 + 0.5)
    with torch.no_grad():
        for name, p in ref.named_parameters():  # non-zero biases, so every bias is checked
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return ref


@pytest.fixture(scope="module", params=list(VARIANTS))
def pair(request, tmp_path_factory):
    config = VARIANTS[request.param]
    with torch.no_grad():
        ref = reference_vae(config)
    folder = tmp_path_factory.mktemp(f"ltx2vae_{request.param}")
    ref.save_pretrained(folder, safe_serialization=True)
    with torch.device("meta"):
        ours = LTX2VideoVAE(read_config(folder))
    load_into(ours, folder)
    ours.eval()
    return request.param, ref, ours, folder


def test_state_dict_keys_and_shapes_equal_diffusers(pair):
    _, ref, ours, folder = pair
    ref_sd, our_sd = ref.state_dict(), ours.state_dict()
    assert set(our_sd) == set(ref_sd)
    for k, v in ref_sd.items():
        assert our_sd[k].shape == v.shape, k
        assert torch.equal(our_sd[k], v), k
    assert set(load_file(folder / "diffusion_pytorch_model.safetensors")) == set(our_sd)


def test_encode_matches_diffusers(pair):
    _, ref, ours, _ = pair
    x = torch.rand(1, 3, 17, 64, 96, generator=torch.Generator().manual_seed(3)) * 2 - 1
    want = ref.encode(x).latent_dist.mode()
    got = ours.encode(x)
    assert got.shape == want.shape == (1, 16, 3, 2, 3)
    assert rel(got, want) < 1e-5


def _latents(seed=4, b=1, t=5):
    return torch.randn(b, 16, t, 2, 3, generator=torch.Generator().manual_seed(seed))


def test_decode_matches_diffusers(pair):
    name, ref, ours, _ = pair
    z = _latents()
    if name == "timestep":
        t = torch.tensor([0.05])
        want = ref.decode(z, temb=t).sample
        got = ours.decode(z, timestep=0.05)
        assert rel(ours.decode(z), want) < 1e-5  # the default timestep is 0.05
    else:
        want = ref.decode(z).sample
        got = ours.decode(z)
    assert got.shape == want.shape == (1, 3, 33, 64, 96)
    assert rel(got, want) < 1e-5
    if name == "timestep":  # one timestep per sample
        z2, t2 = _latents(seed=9, b=2, t=2), torch.tensor([0.05, 0.4])
        assert rel(ours.decode(z2, timestep=t2), ref.decode(z2, temb=t2).sample) < 1e-5


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_temporal_chunked_decode_equals_full(pair, chunk):
    _, _, ours, _ = pair
    z = _latents(seed=5, b=2, t=6)
    full = ours.decode(z)
    calls = []
    got = ours.decode(z, temporal_chunk=chunk, callback=lambda d, n: calls.append((d, n)))
    assert got.shape == full.shape == (2, 3, 41, 64, 96)
    assert (got - full).abs().max().item() < 1e-5 * full.abs().max().item()
    assert calls[-1] == (6, 6) and len(calls) == -(-6 // chunk)


def test_normalize_roundtrip_matches_pipeline_formula(pair):
    _, ref, ours, _ = pair
    z = _latents(seed=6)
    mean = ref.latents_mean.view(1, -1, 1, 1, 1)
    std = ref.latents_std.view(1, -1, 1, 1, 1)
    n = ours.normalize_latents(z)
    assert torch.allclose(n, (z - mean) * ref.config.scaling_factor / std)
    assert torch.allclose(ours.denormalize_latents(n), z, atol=1e-6)


def test_no_host_syncs(pair):
    _, _, ours, _ = pair
    z = _latents(seed=7, t=3)
    x = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    with OpCount() as counter:
        ours.encode(x)
        ours.decode(z, temporal_chunk=1, callback=lambda d, n: None)
    assert counter.host_reads == 0


# --------------------------------------------------------------------------------------------------
# The official single-file layout, written from the documented facts (ltx2.md 2.1)


def test_official_single_file_loads_identical_weights(pair, tmp_path):
    name, ref, _, _ = pair
    sd = ref.state_dict()
    official = {to_official_key(k, 4): v.clone().contiguous() for k, v in sd.items()}
    assert len(official) == len(sd)
    c = sd["latents_mean"].shape[0]
    official["vae.per_channel_statistics.channel"] = torch.arange(c, dtype=torch.float32)
    official["vae.per_channel_statistics.mean-of-stds"] = torch.ones(c)
    official["model.diffusion_model.proj_out.weight"] = torch.zeros(2, 2)  # other components: dropped
    official["audio_vae.per_channel_statistics.mean-of-means"] = torch.zeros(4)
    file = tmp_path / f"ltx2_{name}.safetensors"
    save_file(official, str(file), metadata={"config": json.dumps({"vae": dict(ref.config)})})

    cfg = read_config(file)["vae"]
    with torch.device("meta"):
        ours = LTX2VideoVAE(cfg)
    load_into(ours, file, key_map=official_to_module_key)
    our_sd = ours.state_dict()
    assert set(our_sd) == set(sd)
    for k, v in sd.items():
        assert torch.equal(our_sd[k], v), k
    z = _latents(seed=8, t=2)
    t = 0.05 if name == "timestep" else None
    assert rel(ours.decode(z, timestep=t), _decode(cfg, sd, z, t)) < 1e-6


def _decode(cfg, sd, z, t):
    m = LTX2VideoVAE(cfg).eval()
    m.load_state_dict(sd)
    return m.decode(z, timestep=t)


def test_official_key_map_drops_foreign_and_unused_keys():
    assert official_to_module_key("vae.per_channel_statistics.channel") is None
    assert official_to_module_key("vae.per_channel_statistics.mean-of-stds") is None
    assert official_to_module_key("audio_vae.encoder.conv_in.conv.weight") is None
    assert official_to_module_key("model.diffusion_model.proj_in.weight") is None
    assert official_to_module_key("vae.encoder.down_blocks.8.res_blocks.0.conv1.conv.weight") == \
        "encoder.mid_block.resnets.0.conv1.conv.weight"
    assert official_to_module_key("vae.decoder.up_blocks.5.conv.conv.bias") == \
        "decoder.up_blocks.2.upsamplers.0.conv.conv.bias"
    assert official_to_module_key("vae.decoder.up_blocks.8.res_blocks.1.conv2.conv.weight") == \
        "decoder.up_blocks.3.resnets.1.conv2.conv.weight"


def test_bad_shapes_are_refused():
    ours = LTX2VideoVAE(TINY_23)
    with pytest.raises(ValueError, match="1 \\+ 8k"):
        ours.encode(torch.zeros(1, 3, 4, 32, 32))
    with pytest.raises(ValueError, match="latents"):
        ours.decode(torch.zeros(1, 8, 2, 1, 1))


# Real configs, built on the meta device (no memory): same keys and shapes as diffusers, and every
# key survives the trip to the official name and back.
REAL_20 = dict(decoder_causal=False, spatial_compression_ratio=32, temporal_compression_ratio=8)  # + diffusers defaults
REAL_23 = dict(
    block_out_channels=[256, 512, 1024, 1024],
    layers_per_block=[4, 6, 4, 2, 2],
    decoder_block_out_channels=[256, 512, 512, 1024],
    decoder_layers_per_block=[4, 6, 4, 2, 2],
    decoder_spatio_temporal_scaling=[True, True, True, True],
    decoder_inject_noise=[False] * 5,
    upsample_type=["spatiotemporal", "spatiotemporal", "temporal", "spatial"],
    upsample_factor=[2, 2, 1, 2],
    upsample_residual=[True, True, True, True],
    decoder_causal=False,
    spatial_compression_ratio=32,
    temporal_compression_ratio=8,
)


@pytest.mark.parametrize("config", [REAL_20, REAL_23], ids=["2.0", "2.3"])
def test_real_configs_match_diffusers_layout(config):
    from diffusers import AutoencoderKLLTX2Video

    with torch.device("meta"):
        ref = AutoencoderKLLTX2Video(**config)
        ours = LTX2VideoVAE(config)
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    our_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert our_shapes == ref_shapes
    for k in our_shapes:
        assert official_to_module_key(to_official_key(k, 4)) == k
    assert (ours.spatial_compression_ratio, ours.temporal_compression_ratio) == (32, 8)
