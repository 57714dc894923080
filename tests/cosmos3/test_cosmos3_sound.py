"""Joint sound for Cosmos3: the sound tokenizer's decoder, the transformer's sound tokens and whole runs against
diffusers (tiny random models saved in the real format)."""

import pytest
import torch

from comfyui_cosmos3_ltx2.core.checkpoint import CheckpointError
from comfyui_cosmos3_ltx2.cosmos3.sound import Cosmos3SoundDecoder, load_sound_decoder
from helpers.cosmos3_oracle import (
    SOUND_TRANSFORMER,
    reference_sound_tokenizer,
    reference_transformer,
    reference_velocity,
)
from helpers.measures import rel


@pytest.fixture(scope="module")
def sound_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cosmos3_sound") / "sound_tokenizer"
    ref = reference_sound_tokenizer(seed=3)
    ref.save_pretrained(str(folder))
    return folder, ref


def test_sound_decoder_matches_diffusers(sound_dir):
    folder, ref = sound_dir
    dec = load_sound_decoder(folder)
    assert isinstance(dec, Cosmos3SoundDecoder) and dec.sample_rate == 150 and dec.hop == 6
    z = torch.randn(2, 8, 11, generator=torch.Generator().manual_seed(0)) * 2.0
    with torch.no_grad():
        want = ref.decode(z)
    got = dec.decode(z)
    assert got.shape == want.shape == (2, 2, 66)
    err = rel(got, want)
    print("sound decode rel", err)
    assert err < 1e-5
    # the pipeline's form: one latent [C, T] -> waveform [channels, N]
    assert rel(dec.decode(z[0]), got[0]) < 1e-6


def test_sound_decoder_latent_frames(sound_dir):
    dec = load_sound_decoder(sound_dir[0])
    # per diffusers: int(frames / fps * rate) samples, rounded up to whole hops of 6
    assert dec.latent_frames(9, 16.0) == (int(9 / 16 * 150) + 5) // 6 == 14
    assert dec.latent_frames(1, 24.0) == 1  # 6 samples: one hop


def test_sound_decoder_refuses_other_configs(tmp_path):
    with pytest.raises(ValueError, match="dec_final_tanh"):
        Cosmos3SoundDecoder({"dec_final_tanh": True})
    (tmp_path / "config.json").write_text('{"_class_name": "AutoencoderOobleck"}')
    with pytest.raises(CheckpointError, match="not a Cosmos3 sound tokenizer"):
        load_sound_decoder(tmp_path)


# ---------------------------------------------------------------------------------------------- transformer
def sound_transformer(tmp_path, seed=4, **overrides):
    from comfyui_cosmos3_ltx2.cosmos3.loader import load_transformer

    ref = reference_transformer(seed=seed, **SOUND_TRANSFORMER, **overrides)
    ref.save_pretrained(tmp_path)
    return ref, load_transformer(tmp_path, dtype="fp32")


@pytest.mark.parametrize(
    "shape,cond,fps,sound_frames,overrides",
    [((3, 2, 4), [], 24.0, 14, {}), ((3, 3, 4), [0], 16.0, 9, {}), ((1, 2, 4), [], 24.0, 5, {}),
     ((2, 2, 4), [], 30.0, 1, {}), ((3, 2, 4), [], 24.0, 6, {"enable_fps_modulation": False}),
     ((3, 2, 4), [], 24.0, 6, {"unified_3d_mrope_reset_spatial_ids": False})],
    ids=["t2v", "i2v-16fps", "t2i", "one-sound-frame", "no-fps-modulation", "spatial-ids-offset"],
)
def test_sound_velocity_matches_diffusers(tmp_path, shape, cond, fps, sound_frames, overrides):
    ref, ours = sound_transformer(tmp_path, **overrides)
    assert ours.audio_proj_in.weight.shape == (32, 8) and ours.audio_modality_embed.abs().sum() > 0
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 300, (7,), generator=g).tolist()
    latents = torch.randn(1, 48, *shape, generator=g)
    sound = torch.randn(1, 8, sound_frames, generator=g)
    ctx = ours.prepare([ours.encode_text(ids)], shape, fps, cond, sound_frames=sound_frames)
    got_v, got_s = ours(latents, 400, ctx, sound=sound)
    want_v, want_s = reference_velocity(ref, ids, latents, 400, fps, cond, sound=sound[0])
    assert got_s.shape == (1, 8, sound_frames)
    ev, es = rel(got_v, want_v), rel(got_s[0], want_s)
    print("video rel", ev, "sound rel", es)
    assert ev < 1e-5 and es < 1e-5


def test_sound_positions_run_on_the_sound_clock(tmp_path):
    """Sound token i sits at i * 24 / 25 after the vision offset (base_tps 24/1), video frame f at f * 24 / fps."""
    _, ours = sound_transformer(tmp_path)
    pos = ours.sound_positions(10, 4)
    offset = 10 + 15000
    assert torch.allclose(pos[0], torch.tensor([0.0, 0.96, 1.92, 2.88]) + offset)
    assert pos[1:].abs().sum() == 0


def test_sound_batched_cfg_rows(tmp_path):
    """Two prompts in one batch (the batched CFG form): each row equals the reference for its prompt."""
    ref, ours = sound_transformer(tmp_path, seed=6)
    g = torch.Generator().manual_seed(5)
    cond_ids = torch.randint(0, 300, (9,), generator=g).tolist()
    uncond_ids = torch.randint(0, 300, (5,), generator=g).tolist()
    latents = torch.randn(1, 48, 3, 2, 4, generator=g)
    sound = torch.randn(1, 8, 7, generator=g)
    ctx = ours.prepare([ours.encode_text(uncond_ids), ours.encode_text(cond_ids)], (3, 2, 4), 24.0, sound_frames=7)
    got_v, got_s = ours(latents.expand(2, -1, -1, -1, -1), 700, ctx, sound=sound.expand(2, -1, -1))
    for row, ids in enumerate([uncond_ids, cond_ids]):
        want_v, want_s = reference_velocity(ref, ids, latents, 700, 24.0, sound=sound[0])
        assert rel(got_v[row : row + 1], want_v) < 1e-5 and rel(got_s[row], want_s) < 1e-5


def test_sound_needs_a_sound_checkpoint(tmp_path):
    from comfyui_cosmos3_ltx2.cosmos3.loader import load_transformer

    reference_transformer(seed=1).save_pretrained(tmp_path)
    ours = load_transformer(tmp_path, dtype="fp32")
    assert not hasattr(ours, "audio_proj_in")
    with pytest.raises(ValueError, match="no sound"):
        ours.prepare([ours.encode_text([1, 2, 3])], (1, 2, 2), 24.0, sound_frames=3)
