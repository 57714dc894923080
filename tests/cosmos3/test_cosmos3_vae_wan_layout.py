"""A Wan VAE file in Wan's original key layout (ComfyUI's ``wan2.2_vae.safetensors``) loads and computes right.

The oracle is ComfyUI's own Wan VAE code (``comfy/ldm/wan/vae2_2.py`` and ``vae.py``, which load that layout
as it is): ``tests/cosmos3/data/wan_vae_layout/make_fixture.py`` ran tiny seeded models through it once and stored
their encode / decode outputs with the key list (ComfyUI cannot be installed here, so the outputs are data).
These tests rebuild the same weights from the seed, save them in that layout, and load the file with
``load_vae``, which has to read the architecture from the shapes and rename every key. The key lists of the
released sizes (also from ComfyUI's modules) must map onto our VAE exactly, with the released config. For
Wan2.1 the renaming is also checked against diffusers' own converter (``convert_wan_vae_to_diffusers``).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from comfyui_cosmos3_ltx2.core.checkpoint import CheckpointError
from comfyui_cosmos3_ltx2.cosmos3.loader import WAN_LATENT_STATS, load_vae
from helpers.cosmos3_wan_vae_ref import DATA, FIXTURE, write_original
from helpers.measures import rel


@pytest.mark.parametrize("name", ["wan22", "wan21"])
def test_wan_layout_file_matches_comfyui(name, tmp_path):
    path, meta, expected = write_original(name, tmp_path)
    vae = load_vae(path, dtype=torch.float64)  # the fixture is float64: any mapping slip is far above rounding

    args = meta["args"]
    cfg = vae.config
    assert cfg["base_dim"] == args["dim"] and cfg["z_dim"] == args["z_dim"]
    assert cfg["decoder_base_dim"] == args.get("dec_dim", args["dim"])
    assert cfg["temperal_downsample"] == args["temperal_downsample"]
    assert cfg["dim_mult"] == [1, 2, 4, 4] and cfg["num_res_blocks"] == 2 and cfg["attn_scales"] == []
    assert cfg["is_residual"] == (name == "wan22") and vae.patch_size == (2 if name == "wan22" else 1)
    assert cfg["scale_factor_spatial"] == (16 if name == "wan22" else 8) and cfg["scale_factor_temporal"] == 4
    assert vae.latents_mean == WAN_LATENT_STATS[args["z_dim"]]["latents_mean"]
    assert vae.latents_std == WAN_LATENT_STATS[args["z_dim"]]["latents_std"]
    # every tensor of the file landed somewhere: the module has exactly as many
    assert sum(1 for _ in vae.state_dict()) == len(meta["entries"])

    video, latent = FIXTURE.inputs(name, args["z_dim"])
    assert float(video.double().sum()) == pytest.approx(meta["sums"]["video"], rel=1e-9)
    assert float(latent.double().sum()) == pytest.approx(meta["sums"]["latent"], rel=1e-9)
    reference = expected["decoded"].clamp(-1.0, 1.0)  # ComfyUI clamps after its decode; ours clamps inside
    mean, frames = vae.encode(video.double()), vae.decode(latent.double())
    assert mean.shape == expected["mean"].shape
    assert frames.shape == reference.shape == (1, 3, 5) + video.shape[3:]
    assert rel(mean, expected["mean"]) < 1e-12 and rel(frames, reference) < 1e-12

    vae = load_vae(path, dtype="fp32")  # the usual precision: float32 rounding only (measured 4e-7 / 9e-6)
    assert rel(vae.encode(video), expected["mean"]) < 1e-5
    assert rel(vae.decode(latent), reference) < 2e-5


@pytest.mark.parametrize("name", ["released_wan22", "released_wan21"])
def test_released_wan_layouts_map_onto_our_vae(name):
    """The key lists of the released VAEs (ComfyUI's modules at the sizes comfy/sd.py uses for
    wan2.2_vae.safetensors and wan_2.1_vae.safetensors): the config read from their shapes is the released
    architecture, and every key lands on one of our tensors with the same shape, each tensor covered once."""
    from comfyui_cosmos3_ltx2.cosmos3.loader import WAN22_VAE_CONFIG
    from comfyui_cosmos3_ltx2.cosmos3.vae import DEFAULT_CONFIG as WAN21_VAE_CONFIG
    from comfyui_cosmos3_ltx2.cosmos3.vae import WanVAE
    from comfyui_cosmos3_ltx2.cosmos3.vae_wan_layout import read_wan_layout

    with safe_open(str(DATA / "expected.safetensors"), framework="pt") as f:
        entries = json.loads(f.metadata()[name])["entries"]
    shapes = {k: tuple(s) for k, s in entries}
    cfg, key_map = read_wan_layout(name, shapes, WAN_LATENT_STATS)
    released = WAN22_VAE_CONFIG if name == "released_wan22" else {**WAN21_VAE_CONFIG, "decoder_base_dim": 96}
    for field in ("base_dim", "decoder_base_dim", "z_dim", "dim_mult", "num_res_blocks", "temperal_downsample",
                  "is_residual", "in_channels", "out_channels", "scale_factor_spatial", "scale_factor_temporal",
                  "latents_mean", "latents_std"):
        assert cfg[field] == released[field], field
    assert (cfg["patch_size"] or 1) == (released["patch_size"] or 1)
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in WanVAE(cfg).state_dict().items()}
    mapped = {key_map(k): s for k, s in shapes.items()}
    assert len(mapped) == len(shapes) == len(ours) and mapped == ours


@pytest.mark.parametrize("name", ["wan21", "released_wan21"])
def test_wan21_renaming_equals_diffusers_converter(name):
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    from comfyui_cosmos3_ltx2.cosmos3.vae_wan_layout import read_wan_layout

    with safe_open(str(DATA / "expected.safetensors"), framework="pt") as f:
        entries = json.loads(f.metadata()[name])["entries"]
    shapes = {k: tuple(s) for k, s in entries}
    _, key_map = read_wan_layout(name, shapes, WAN_LATENT_STATS)
    theirs = convert_wan_vae_to_diffusers({k: k for k in shapes})  # new name -> old name
    ours = {key_map(k): k for k in shapes}
    assert len(ours) == len(shapes) and ours == theirs


def test_wan_layout_incomplete_file_names_the_missing_key(tmp_path):
    path, meta, _ = write_original("wan22", tmp_path)
    from safetensors.torch import load_file

    weights = load_file(str(path))
    del weights["decoder.head.2.weight"]
    save_file(weights, str(path))
    with pytest.raises(CheckpointError, match="decoder.head.2.weight"):
        load_vae(path, dtype="fp32")
    weights["decoder.head.2.weight"] = torch.zeros(12, 4, 3, 3, 3)
    del weights["decoder.upsamples.0.upsamples.1.residual.6.bias"]
    save_file(weights, str(path))
    with pytest.raises(CheckpointError, match="up_blocks.0.resnets.1.conv2.bias"):
        load_vae(path, dtype="fp32")


def test_vae_file_of_another_model_is_named_as_such(tmp_path):
    path = tmp_path / "sdxl_vae.safetensors"  # another model's VAE: no config, other keys
    save_file({"post_quant_conv.weight": torch.zeros(4, 4, 1, 1), "decoder.conv_in.weight": torch.zeros(8, 4, 3, 3)},
              str(path))
    with pytest.raises(CheckpointError, match="not a Wan VAE.*wan2.2_vae.safetensors"):
        load_vae(path, dtype="fp32")


def test_generate_with_a_separate_vae_file(tmp_path):
    """``generate(..., vae=FILE)`` (and the CLI's --vae) runs a checkpoint folder without vae/ on a Wan-layout VAE
    file, exactly as the same parts loaded by hand."""
    import dataclasses
    import shutil

    from comfyui_cosmos3_ltx2.cosmos3 import generate
    from comfyui_cosmos3_ltx2.cosmos3.loader import load_checkpoint
    from comfyui_cosmos3_ltx2.cosmos3.tiny import write_tiny_checkpoint

    folder = write_tiny_checkpoint(tmp_path / "tiny")
    shutil.rmtree(folder / "vae")
    path, _, _ = write_original("wan22", tmp_path)
    kw = dict(width=64, height=32, num_frames=5, steps=2, seed=3, device="cpu", dtype="fp32")
    got = generate(folder, "a cat", **kw, vae=path)
    assert got.shape == (5, 32, 64, 3)
    with pytest.raises(CheckpointError, match="vae"):
        load_checkpoint(folder, dtype="fp32")  # without the override the missing vae/ is reported
    parts = load_checkpoint(folder, dtype="fp32", vae=path)
    by_hand = dataclasses.replace(parts, vae=load_vae(path, dtype="fp32"))
    assert torch.equal(got, generate(by_hand, "a cat", **{k: v for k, v in kw.items() if k not in ("device", "dtype")}))
