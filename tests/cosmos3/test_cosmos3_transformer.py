"""Parity of our Cosmos3 transformer with diffusers' Cosmos3OmniTransformer (tiny random models, float32)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from comfyui_cosmos3_ltx2.cosmos3.transformer import Cosmos3Transformer
from helpers.cosmos3_oracle import EDGE_SWITCHES, reference_transformer, reference_velocity
from helpers.measures import rel


def ours_from_reference(ref, tmp_path):
    ref.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    model = Cosmos3Transformer(cfg).eval()
    sd = load_file(tmp_path / "diffusion_pytorch_model.safetensors")
    dropped = [k for k in sd if k.startswith(Cosmos3Transformer.unused_checkpoint_keys)]
    assert {"lm_head.weight", "norm.weight"} <= set(dropped)
    for k in dropped:
        del sd[k]
    model.load_state_dict(sd, strict=True)
    return model


VARIANTS = {"qwen3": {}, "edge": EDGE_SWITCHES}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize(
    "shape,cond,fps",
    [((3, 2, 4), [], 24.0), ((3, 3, 4), [0], 16.0), ((1, 2, 4), [], 24.0), ((2, 3, 5), [], 30.0),
     ((4, 2, 4), [1], 24.0)],
    ids=["t2v", "i2v-odd-h", "t2i", "odd-hw", "clean-middle-frame"],
)
def test_velocity_matches_diffusers(tmp_path, variant, shape, cond, fps):
    ref = reference_transformer(seed=3, **VARIANTS[variant])
    ours = ours_from_reference(ref, tmp_path)
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, 300, (11,), generator=g).tolist()
    latents = torch.randn(1, 48, *shape, generator=g)
    want = reference_velocity(ref, ids, latents, timestep=731, fps=fps, condition_frames=cond)
    ctx = ours.prepare([ours.encode_text(ids)], shape, fps, cond)
    got = ours(latents, 731, ctx)
    assert got.shape == want.shape
    assert rel(got, want) < 1e-5
    if cond:
        assert got[:, :, cond].abs().max() == 0


def test_batched_cfg_with_different_prompt_lengths(tmp_path):
    """Rows with prompts of different lengths in one call equal separate unbatched reference calls."""
    ref = reference_transformer(seed=5)
    ours = ours_from_reference(ref, tmp_path)
    g = torch.Generator().manual_seed(1)
    cond_ids = torch.randint(0, 300, (13,), generator=g).tolist()
    uncond_ids = torch.randint(0, 300, (6,), generator=g).tolist()
    latents = torch.randn(1, 48, 3, 2, 4, generator=g)
    ctx = ours.prepare([ours.encode_text(uncond_ids), ours.encode_text(cond_ids)], (3, 2, 4), 24.0, [0])
    got = ours(latents.expand(2, -1, -1, -1, -1), 500, ctx)
    for row, ids in enumerate([uncond_ids, cond_ids]):
        want = reference_velocity(ref, ids, latents, timestep=500, fps=24.0, condition_frames=[0])
        assert rel(got[row : row + 1], want) < 1e-5


def test_cached_text_kv_equals_full_recompute(tmp_path):
    """Reusing one prompt encoding across steps gives the same velocity as the reference's full pass per step."""
    ref = reference_transformer(seed=9)
    ours = ours_from_reference(ref, tmp_path)
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 300, (9,), generator=g).tolist()
    ctx = ours.prepare([ours.encode_text(ids)], (3, 2, 4), 24.0)
    for t in (999, 600, 37):
        latents = torch.randn(1, 48, 3, 2, 4, generator=g)
        assert rel(ours(latents, t, ctx), reference_velocity(ref, ids, latents, t, 24.0)) < 1e-5


def test_sound_capable_checkpoint_generates_video(tmp_path):
    """A checkpoint with the sound head (sound_gen) loads; its video velocity equals the reference's."""
    from comfyui_cosmos3_ltx2.cosmos3.loader import load_transformer

    ref = reference_transformer(seed=4, sound_gen=True, sound_dim=8)
    ref.save_pretrained(tmp_path)
    ours = load_transformer(tmp_path, dtype="fp32")
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 300, (7,), generator=g).tolist()
    latents = torch.randn(1, 48, 3, 2, 4, generator=g)
    ctx = ours.prepare([ours.encode_text(ids)], (3, 2, 4), 24.0)
    assert rel(ours(latents, 400, ctx), reference_velocity(ref, ids, latents, 400, 24.0)) < 1e-5
