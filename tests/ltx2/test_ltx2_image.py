"""ltx2/image.py: conditioning-image preparation against ltx-pipelines' ``load_image_conditioning`` (the official
resize-to-cover + centre crop, H.264 round trip at a CRF, scaling to [-1, 1])."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from comfyui_cosmos3_ltx2.ltx2.image import prepare_image, to_rgb255
from helpers.ltx_oracle import ltx_oracles_available


def _picture(h=37, w=52, seed=0) -> np.ndarray:
    g = np.random.default_rng(seed)
    base = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
    return np.clip(base + g.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.mark.skipif(not ltx_oracles_available(), reason="ltx-pipelines not installed")
@pytest.mark.parametrize("crf", [0, 33])
@pytest.mark.parametrize("size", [(64, 96), (96, 64), (32, 32)])
def test_prepare_image_matches_ltx_pipelines(crf, size, tmp_path):
    from ltx_pipelines.utils.media_io import load_image_conditioning
    from PIL import Image

    pic = _picture()
    path = tmp_path / "pic.png"
    Image.fromarray(pic).save(path)
    h, w = size
    want = load_image_conditioning(str(path), h, w, torch.float32, torch.device("cpu"), crf=crf)
    for source in (str(path), pic, torch.from_numpy(pic), torch.from_numpy(pic).float() / 255.0,
                   Image.fromarray(pic)):
        got = prepare_image(source, h, w, crf)
        assert got.shape == want.shape == (1, 3, 1, h, w)
        err = (got - want).abs().max().item()
        assert err <= 1e-5, (type(source).__name__, err)


def test_to_rgb255_layouts_and_errors():
    pic = _picture(8, 6)
    t = torch.from_numpy(pic)
    assert torch.equal(to_rgb255(t[None]), t.float())  # ComfyUI IMAGE batch of one
    rgba = torch.cat([t, torch.full((8, 6, 1), 255, dtype=torch.uint8)], dim=-1)
    assert torch.equal(to_rgb255(rgba), t.float())  # opaque alpha: dropped
    with pytest.raises(ValueError, match="transparent"):
        to_rgb255(torch.cat([t, torch.full((8, 6, 1), 7, dtype=torch.uint8)], dim=-1))
    assert torch.equal(to_rgb255(t[..., 0]), t[..., :1].float().expand(-1, -1, 3))
    with pytest.raises(ValueError, match="one picture"):
        to_rgb255(torch.zeros(2, 8, 6, 3))
    with pytest.raises(ValueError, match="shape"):
        to_rgb255(torch.zeros(8, 6, 5))
    with pytest.raises(TypeError, match="image"):
        to_rgb255(12)
    with pytest.raises(ValueError, match="image_crf"):
        prepare_image(pic, 32, 32, crf=-1)
