"""Parity of our LTX-2 latent upsampler (ltx2/upsampler.py) with diffusers' LTX2LatentUpsamplerModel
(and ltx-core's LatentUpsampler when it is installed), tiny random models, float32, CPU.

Variants: LTX-2.0 (rational resampler, scale 2) and LTX-2.3 (plain conv + pixel shuffle), both 3-D,
plus the 2-D, rational x1.5 and temporal kinds the code also supports. Checkpoints are written both as a
diffusers folder (save_pretrained) and as an official single file (config JSON in the metadata, official
config names). Metric: max |ours - ref| / max |ref|.
"""

import json

import pytest
import torch
from safetensors.torch import save_file

from comfyui_cosmos3_ltx2.core.checkpoint import CheckpointError
from comfyui_cosmos3_ltx2.ltx2.upsampler import (
    LTX2LatentUpsampler,
    load_latent_upsampler,
    normalize_config,
    upsample_normalized_latents,
)
from helpers.ltx2_upsampler_ref import VARIANTS, build_reference, official_config
from helpers.ltx_oracle import ltx_oracles_available
from helpers.measures import rel

TOL = 1e-5


def _ltx_core_upsampler():
    if not ltx_oracles_available():
        return None
    try:
        from ltx_core.model.upsampler import LatentUpsamplerConfigurator
    except Exception:  # pragma: no cover - optional oracle
        return None
    return LatentUpsamplerConfigurator


@pytest.fixture(scope="module", params=list(VARIANTS))
def pair(request, tmp_path_factory):
    kw = VARIANTS[request.param]
    ref = build_reference(kw)
    root = tmp_path_factory.mktemp(f"ups_{request.param}")
    ref.save_pretrained(root / "latent_upsampler")
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    single = root / "upsampler.safetensors"
    save_file(sd, str(single), metadata={"config": json.dumps(official_config(kw))})
    return request.param, kw, ref, root / "latent_upsampler", single


def _input(kw, seed=1, frames=3, h=4, w=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, kw["in_channels"], frames, h, w, generator=g)


def test_diffusers_folder_matches(pair):
    name, kw, ref, folder, _ = pair
    ours = load_latent_upsampler(folder)
    assert set(ours.state_dict()) == set(ref.state_dict()) - {"upsampler.blur_down.kernel"}
    x = _input(kw)
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert a.shape == b.shape
    assert rel(a, b) < TOL, (name, rel(a, b))


def test_official_single_file_matches(pair):
    name, kw, ref, _, single = pair
    ours = load_latent_upsampler(single)
    x = _input(kw, seed=2)
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert rel(a, b) < TOL, (name, rel(a, b))


def test_matches_ltx_core(pair):
    name, kw, ref, _, single = pair
    configurator = _ltx_core_upsampler()
    if configurator is None:
        pytest.skip("ltx-core not installed")
    if kw["dims"] == 2 and kw.get("use_rational_resampler"):
        pytest.skip("ltx-core's rational resampler needs 5-D input")
    core = configurator.from_config(official_config(kw)).eval()
    core.load_state_dict(ref.state_dict())
    ours = load_latent_upsampler(single)
    x = _input(kw, seed=3)
    with torch.no_grad():
        a, b = ours(x), core(x)
    assert rel(a, b) < TOL, (name, rel(a, b))


def test_shapes():
    x = torch.randn(1, 16, 3, 4, 5)
    for name, want in (("2.0", (1, 16, 3, 8, 10)), ("2.3", (1, 16, 3, 8, 10)),
                       ("rational-1.5", (1, 16, 3, 6, 8)), ("temporal", (1, 16, 5, 4, 5))):
        m = LTX2LatentUpsampler(VARIANTS[name])
        with torch.no_grad():
            assert tuple(m(x).shape) == want, name


def test_normalized_step_matches_reference_sequence(pair):
    """un-normalise with the VAE stats -> upsample -> normalise (ltx-core upsample_video)."""
    name, kw, ref, folder, _ = pair
    ours = load_latent_upsampler(folder)
    c = kw["in_channels"]
    mean, std = 0.5 * torch.randn(c), torch.rand(c) + 0.5
    z = _input(kw, seed=4)
    s = (1, -1, 1, 1, 1)
    with torch.no_grad():
        want = (ref(z * std.view(s) + mean.view(s)) - mean.view(s)) / std.view(s)
        got = upsample_normalized_latents(ours, z, mean, std)
    assert rel(got, want) < TOL


def test_bf16_load_runs(pair):
    _, kw, _, folder, _ = pair
    ours = load_latent_upsampler(folder, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in ours.parameters())
    with torch.no_grad():
        y = ours(_input(kw).bfloat16())
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()


def test_config_names_and_defaults():
    # official names and defaults
    assert normalize_config({})["rational_resampler"] is False
    assert normalize_config({})["mid_channels"] == 512
    # diffusers names and defaults
    d = normalize_config({"_diffusers_version": "0.42.1", "in_channels": 128})
    assert d["rational_resampler"] is True and d["mid_channels"] == 1024
    d = normalize_config({"use_rational_resampler": False, "rational_spatial_scale": 2.0})
    assert d["rational_resampler"] is False and d["spatial_scale"] == 2.0
    with pytest.raises(ValueError, match="multiple of 32"):
        normalize_config({"mid_channels": 48})
    with pytest.raises(ValueError, match="spatial_scale"):
        normalize_config({"rational_resampler": True, "spatial_scale": 3.0})


def test_wrong_checkpoint_is_a_clear_error(tmp_path):
    kw = VARIANTS["2.3"]
    ref = build_reference(kw)
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    bad = tmp_path / "bad.safetensors"
    # claims the rational resampler, holds the plain one
    save_file(sd, str(bad), metadata={"config": json.dumps(dict(official_config(kw), rational_resampler=True))})
    with pytest.raises(CheckpointError, match="upsampler"):
        load_latent_upsampler(bad)
    nocfg = tmp_path / "nocfg.safetensors"
    save_file(sd, str(nocfg))
    with pytest.raises(CheckpointError, match="config"):
        load_latent_upsampler(nocfg)
