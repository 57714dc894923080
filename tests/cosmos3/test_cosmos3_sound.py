"""Joint sound for Cosmos3: the sound tokenizer's decoder, the transformer's sound tokens and whole runs against
diffusers (tiny random models saved in the real format)."""

import numpy as np
import pytest
import torch
from PIL import Image

from comfyui_cosmos3_ltx2.core.checkpoint import CheckpointError
from comfyui_cosmos3_ltx2.core.checks import OptionError
from comfyui_cosmos3_ltx2.cosmos3 import pipeline as P
from comfyui_cosmos3_ltx2.cosmos3.loader import load_checkpoint
from comfyui_cosmos3_ltx2.cosmos3.pipeline import Cosmos3Video, generate
from comfyui_cosmos3_ltx2.cosmos3.sound import Cosmos3SoundDecoder, load_sound_decoder
from helpers.cosmos3_oracle import (
    SOUND_TRANSFORMER,
    reference_pipeline,
    reference_sound_tokenizer,
    reference_transformer,
    reference_velocity,
)
from helpers.measures import psnr, rel, snr
from helpers.op_count import OpCount


def make_image():
    g = np.random.default_rng(1)
    return Image.fromarray(g.integers(0, 255, (40, 70, 3), dtype=np.uint8))


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


# ---------------------------------------------------------------------------------------------- whole runs
PROMPT = "A drummer plays on a rooftop at sunset."
NEGATIVE = "silence, blurry"


@pytest.fixture(scope="module")
def sound_ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cosmos3_sound_ref")
    return folder, reference_pipeline(folder, seed=2, sound=True)


CASES = {
    "t2v": dict(num_frames=9, height=32, width=64, fps=16.0),
    "t2v-24fps": dict(num_frames=13, height=32, width=32, fps=24.0),
    "i2v": dict(num_frames=9, height=32, width=64, fps=16.0, image=True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_generate_with_sound_matches_diffusers(sound_ckpt, case):
    folder, pipe = sound_ckpt
    kw = dict(CASES[case])
    image = make_image() if kw.pop("image", False) else None
    seed, steps, guidance = 77, 4, 4.0
    want = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, image=image, num_inference_steps=steps,
                guidance_scale=guidance, generator=torch.Generator().manual_seed(seed), output_type="np",
                enable_sound=True, **kw)
    got = generate(folder, PROMPT, NEGATIVE, image, steps=steps, guidance=guidance, seed=seed, device="cpu",
                   dtype="fp32", **kw)
    assert isinstance(got, Cosmos3Video)
    frames, waveform, rate = got
    assert rate == 150 and frames.shape == (kw["num_frames"], kw["height"], kw["width"], 3)
    assert waveform.shape == tuple(want.sound.shape) and waveform.shape[0] == 2
    # a real signal, mostly inside the decoder's clamp, not a constant
    print("waveform std", float(waveform.std()), "clipped", float((waveform.abs() >= 1).float().mean()))
    assert waveform.std() > 0.01 and (waveform.abs() < 1).float().mean() > 0.5
    p, s = psnr(frames.numpy(), want.video), snr(waveform, want.sound)
    print(case, "frames PSNR", p, "waveform SNR", s)
    assert p >= 40.0 and s >= 40.0


def test_sound_latents_match_diffusers(sound_ckpt):
    """The sampled sound latents themselves (diffusers' decode_sound input) against ours, from the same seed."""
    folder, pipe = sound_ckpt
    captured = {}
    original = pipe.decode_sound

    def spy(latent):
        captured["z"] = latent.clone()
        return original(latent)

    pipe.decode_sound = spy
    try:
        kw = dict(num_frames=9, height=32, width=64, fps=16.0)
        pipe(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=3, guidance_scale=3.0,
             generator=torch.Generator().manual_seed(5), output_type="latent", enable_sound=True, **kw)
    finally:
        pipe.decode_sound = original
    ckpt = load_checkpoint(folder, device="cpu", dtype="fp32")
    assert ckpt.sound is not None
    cond = P.encode_prompts(ckpt.transformer, ckpt.tokenizer, PROMPT, NEGATIVE, num_frames=9, height=32, width=64,
                            fps=16.0)
    schedule, _ = P.sampling_schedule(ckpt.settings, steps=3)
    video = P.empty_latents(9, 32, 64)
    sound = P.empty_sound_latents(ckpt.sound, 9, 16.0)
    assert sound.shape == (1, 8, 14) == (1, *captured["z"].shape)
    _, z = P.sample(ckpt.transformer, cond, video, schedule, latent_format=ckpt.settings.latent_format,
                    guidance=3.0, seed=5, sound=sound)
    err = rel(z[0], captured["z"])
    print("sound latents rel", err)
    assert err < 1e-4


def test_sound_sampling_has_no_host_syncs(sound_ckpt):
    folder, _ = sound_ckpt
    ckpt = load_checkpoint(folder, device="cpu", dtype="fp32")
    cond = P.encode_prompts(ckpt.transformer, ckpt.tokenizer, PROMPT, NEGATIVE, num_frames=5, height=32, width=32,
                            fps=24.0)
    schedule, _ = P.sampling_schedule(ckpt.settings, steps=3)
    x = torch.randn(1, 48, 2, 2, 2)
    s = torch.randn(1, 8, 5)
    with OpCount() as c:
        v, z = P.denoise(ckpt.transformer, cond, x, schedule, guidance=3.0, sound=s)
    assert c.host_reads == 0
    assert v.shape == x.shape and z.shape == s.shape


def test_sound_off_and_checkpoints_without_sound(sound_ckpt, tmp_path):
    folder, pipe = sound_ckpt
    kw = dict(num_frames=5, height=32, width=32, fps=24.0)
    want = pipe(prompt=PROMPT, guidance_scale=1.0, num_inference_steps=2, generator=torch.Generator().manual_seed(3),
                output_type="np", **kw).video  # enable_sound=False: video only
    got = generate(folder, PROMPT, guidance=1.0, steps=2, seed=3, device="cpu", dtype="fp32", sound=False, **kw)
    assert isinstance(got, torch.Tensor)
    assert psnr(got.numpy(), want) >= 40.0
    plain = tmp_path / "plain"
    reference_pipeline(plain, seed=0)
    with pytest.raises(OptionError, match="no sound"):
        generate(plain, PROMPT, guidance=1.0, steps=1, device="cpu", dtype="fp32", sound=True, **kw)
    assert isinstance(generate(plain, PROMPT, guidance=1.0, steps=1, device="cpu", dtype="fp32", **kw), torch.Tensor)


def test_sound_unbatched_cfg_and_euler_samplers(sound_ckpt):
    """The other sampler paths carry the (video, sound) state too: CFG branches run one by one give the batched
    result; flow Euler and the re-noising Euler of distilled checkpoints keep the clean conditioning frame."""
    folder, _ = sound_ckpt
    ckpt = load_checkpoint(folder, device="cpu", dtype="fp32")
    cond = P.encode_prompts(ckpt.transformer, ckpt.tokenizer, PROMPT, NEGATIVE, num_frames=9, height=32, width=32,
                            fps=24.0)
    g = torch.Generator().manual_seed(1)
    x, s = torch.randn(1, 48, 3, 2, 2, generator=g), torch.randn(1, 8, 9, generator=g)
    schedule, _ = P.sampling_schedule(ckpt.settings, steps=3)
    a = P.denoise(ckpt.transformer, cond, x, schedule, guidance=3.0, condition_frames=[0], sound=s)
    b = P.denoise(ckpt.transformer, cond, x, schedule, guidance=3.0, condition_frames=[0], sound=s, batched_cfg=False)
    assert rel(a[0], b[0]) < 1e-5 and rel(a[1], b[1]) < 1e-5
    seen = []
    euler, _ = P.sampling_schedule(ckpt.settings, steps=3, sampler="euler")
    v, z = P.denoise(ckpt.transformer, cond, x, euler, guidance=3.0, condition_frames=[0], sound=s,
                     callback=lambda info: seen.append((info["x"].shape, info["sound_denoised"].shape)))
    assert seen == [(x.shape, s.shape)] * 3 and torch.isfinite(z).all()
    assert torch.equal(v[:, :, 0], x[:, :, 0])
    stochastic = P.make_schedule(2, {"stochastic_sampling": True}, sigmas=[1.0, 0.5])
    v, z = P.denoise(ckpt.transformer, cond, x, stochastic, guidance=1.0, condition_frames=[0], sound=s,
                     generator=torch.Generator().manual_seed(0))
    assert torch.equal(v[:, :, 0], x[:, :, 0]) and z.shape == s.shape and torch.isfinite(z).all()
