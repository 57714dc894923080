"""``ltx2.generate`` end to end on tiny random LTX-2 / LTX-2.3 checkpoints (official single file) and a tiny
Gemma-3, and equal to the same stages run by hand."""

import re

import pytest
import torch

from comfyui_cosmos3_ltx2.core.sampling.euler import sample_euler
from comfyui_cosmos3_ltx2.core.sampling.ltx_schedule import ltx2_sigmas
from comfyui_cosmos3_ltx2.ltx2 import generate
from comfyui_cosmos3_ltx2.ltx2.api import initial_noise
from comfyui_cosmos3_ltx2.ltx2.decoding import decode
from comfyui_cosmos3_ltx2.ltx2.denoiser import Guidance, LTX2Denoiser
from comfyui_cosmos3_ltx2.ltx2.latents import latent_shape, pack_video, positions
from comfyui_cosmos3_ltx2.ltx2.loader import load_ltx2_checkpoint
from comfyui_cosmos3_ltx2.ltx2.sampling import run_distilled
from comfyui_cosmos3_ltx2.ltx2.text_encoding import encode_prompt, load_gemma_text_encoder

KW = dict(width=64, height=64, num_frames=9, fps=24.0, steps=3, seed=5, device="cpu", dtype="fp32",
          video_guidance=Guidance(cfg=3.0, stg=1.0, stg_blocks=(0,), modality=2.0, rescale=0.5),
          audio_guidance=Guidance(cfg=5.0))


def _loaded(tiny, gemma_folder):  # noqa: F811
    _, _, _, file, _, _ = tiny
    folder, _ = gemma_folder
    gemma = load_gemma_text_encoder(folder, dtype="fp32", max_length=256)
    ck = load_ltx2_checkpoint(file, dtype="fp32", text_hidden_size=gemma.hidden_size,
                              text_num_hidden_states=gemma.num_hidden_states)
    return ck, gemma


def test_generate_runs_and_equals_the_stages(tiny, gemma_folder):  # noqa: F811
    ck, gemma = _loaded(tiny, gemma_folder)
    steps = []
    frames, wave, rate = generate(ck, gemma, "a cat walks on the beach", "blurry", callback=steps.append, **KW)
    assert frames.shape == (9, 64, 64, 3) and torch.isfinite(frames).all()
    assert 0 <= float(frames.min()) and float(frames.max()) <= 1
    assert wave.ndim == 2 and torch.isfinite(wave).all() and rate == ck.vocoder.sampling_rate
    assert len(steps) == 3
    # The same run, stage by stage.
    shape = latent_shape(9, 64, 64, 24.0, video_channels=ck.transformer.config["in_channels"],
                           audio_channels=ck.audio_vae.latent_channels,
                           mel_bins=ck.audio_vae.mel_bins // ck.audio_vae.mel_compression_ratio)
    (v, a, m), (nv, na, nm) = (encode_prompt(ck.connectors, *gemma.encode(t)) for t in ("a cat walks on the beach", "blurry"))
    model = LTX2Denoiser(ck.transformer, v, a, m, nv, na, nm, rope=positions(ck.transformer, shape),
                           video=KW["video_guidance"], audio=KW["audio_guidance"], strategy="split")
    vx, ax = sample_euler(model, initial_noise(shape, 5), ltx2_sigmas(3))
    want, want_wave, _ = decode(ck.video_vae, ck.audio_vae, ck.vocoder, vx, ax, shape)
    assert torch.equal(frames, want) and torch.equal(wave, want_wave[0])
    # Spatial VAE tiles (one 64-px tile: the same decode) and an invalid tile size.
    tiled, _, _ = generate(ck, gemma, "a cat walks on the beach", "blurry", decode_tile=64, decode_tile_overlap=32, **KW)
    assert torch.equal(tiled, frames)
    with pytest.raises(ValueError, match="spatial_tile"):
        generate(ck, gemma, "a cat walks on the beach", "blurry", decode_tile=50, **KW)
    # Another seed, another clip.
    other, _, _ = generate(ck, gemma, "a cat walks on the beach", "blurry", **{**KW, "seed": 6})
    assert not torch.equal(other, frames)


def test_generate_rejects_bad_sizes(tiny, gemma_folder):  # noqa: F811
    ck, gemma = _loaded(tiny, gemma_folder)
    with pytest.raises(ValueError, match="frames"):
        generate(ck, gemma, "x", **{**KW, "num_frames": 10})
    with pytest.raises(ValueError, match="width"):
        generate(ck, gemma, "x", **{**KW, "width": 70})


def _pictures():
    g = torch.Generator().manual_seed(3)
    return torch.rand(1, 40, 56, 3, generator=g), torch.rand(48, 48, 3, generator=g)


def test_generate_one_stage_image_and_keyframe(tiny, gemma_folder):  # noqa: F811
    """The first-frame tokens stay the encoded picture, the keyframe rides along as appended tokens (with
    its own noise drawn after the video's) and is dropped before decoding."""
    from comfyui_cosmos3_ltx2.ltx2.api import Keyframe
    from comfyui_cosmos3_ltx2.ltx2.image import encode_image, prepare_image

    ck, gemma = _loaded(tiny, gemma_folder)
    first, key = _pictures()
    seen = []
    kw = {**KW, "num_frames": 17}
    frames, wave, _ = generate(ck, gemma, "a cat", "blurry", image=first, image_crf=0,
                               keyframes=[Keyframe(key, 16, 1.0)], callback=seen.append, **kw)
    assert frames.shape == (17, 64, 64, 3) and torch.isfinite(frames).all()
    last = seen[-1]["x"][0]
    img = pack_video(encode_image(ck.video_vae, prepare_image(first, 64, 64, 0)))
    kf = pack_video(encode_image(ck.video_vae, prepare_image(key, 64, 64, 0)))
    n = 3 * 2 * 2  # 3 latent frames of 2 x 2
    assert last.shape[1] == n + kf.shape[1]
    assert torch.equal(last[:, : img.shape[1]], img) and torch.equal(last[:, n:], kf)
    # the H.264 round trip (official default CRF 33) changes the conditioning slightly, not the shapes
    other, _, _ = generate(ck, gemma, "a cat", "blurry", image=first, **kw)
    assert other.shape == frames.shape and not torch.equal(other, frames)


def test_generate_lora_is_applied_then_removed(tiny, gemma_folder, tmp_path):  # noqa: F811
    from helpers.ltx2_checkpoint_ref import lora_file

    ck, gemma = _loaded(tiny, gemma_folder)
    lora, _ = lora_file(tmp_path / "lora.safetensors")
    before = {k: v.clone() for k, v in ck.transformer.state_dict().items()}
    base, _, _ = generate(ck, gemma, "a cat", "blurry", **KW)
    with_lora, _, _ = generate(ck, gemma, "a cat", "blurry", distilled_lora=lora, lora_strengths=(1.0, 1.0), **KW)
    zero, _, _ = generate(ck, gemma, "a cat", "blurry", distilled_lora=lora, lora_strengths=(0.0, 0.0), **KW)
    assert not torch.equal(base, with_lora) and torch.equal(base, zero)
    for k, v in ck.transformer.state_dict().items():
        assert torch.equal(v, before[k]), k

    class Stop(Exception):
        pass

    def stop(d):
        raise Stop

    with pytest.raises(Stop):  # interrupted mid-run: the LoRA still comes out
        generate(ck, gemma, "a cat", "blurry", distilled_lora=lora, lora_strengths=(1.0, 1.0), callback=stop, **KW)
    for k, v in ck.transformer.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_generate_rejects_bad_requests(tiny, gemma_folder):  # noqa: F811
    from comfyui_cosmos3_ltx2.ltx2.api import Keyframe

    ck, gemma = _loaded(tiny, gemma_folder)
    pic = _pictures()[1]
    bad = [
        ({"pipeline": "two-stage"}, "pipeline"),
        ({"steps": 0}, "steps"),
        ({"keyframes": [Keyframe(pic, 9)]}, "frame_idx"),
        ({"image": pic, "keyframes": [Keyframe(pic, 0)]}, "two images for frame 0"),
        ({"image": pic, "image_strength": 1.5}, "strength"),
        ({"image": pic, "image_crf": -3}, "image_crf"),
        ({"sde_noise": "fixed"}, "sde_noise"),
        ({"pipeline": "hq", "width": 96, "upsampler": "x"}, "width=96: not a multiple of 64"),
        ({"pipeline": "hq"}, "upsampler"),
    ]
    for extra, match in bad:
        with pytest.raises(ValueError, match=match):
            generate(ck, gemma, "x", **{**KW, **extra})


def test_generate_frees_what_it_loaded(tiny, gemma_folder, monkeypatch):  # noqa: F811
    """Given paths, generate frees Gemma before the checkpoint loads and the transformer before the decode."""
    import gc
    import weakref

    from comfyui_cosmos3_ltx2.ltx2 import api, loader, text_encoding

    _, _, _, file, _, _ = tiny
    folder, _ = gemma_folder
    refs, seen = {}, {}
    real_gemma, real_ck, real_decode = text_encoding.load_gemma_text_encoder, loader.load_ltx2_checkpoint, api.decode

    def gemma(*a, **kw):
        enc = real_gemma(*a, **{**kw, "dtype": "fp32", "max_length": 256})
        refs["gemma"] = weakref.ref(enc.model)
        return enc

    def checkpoint(*a, **kw):
        gc.collect()
        seen["gemma alive at checkpoint load"] = refs["gemma"]() is not None
        ck = real_ck(*a, **kw)
        refs["transformer"] = weakref.ref(ck.transformer)
        return ck

    def decode(*a, **kw):
        gc.collect()
        seen["transformer alive at decode"] = refs["transformer"]() is not None
        return real_decode(*a, **kw)

    monkeypatch.setattr(text_encoding, "load_gemma_text_encoder", gemma)
    monkeypatch.setattr(loader, "load_ltx2_checkpoint", checkpoint)
    monkeypatch.setattr(api, "decode", decode)
    frames, _, _ = generate(file, folder, "a cat", "blurry", **KW)
    assert frames.shape == (9, 64, 64, 3)
    assert seen == {"gemma alive at checkpoint load": False, "transformer alive at decode": False}


def test_generate_distilled_pipeline(tiny, gemma_folder, tmp_path):  # noqa: F811
    """pipeline="distilled": the stages of sampling.run_distilled (oracle-tested against ltx-core in test_ltx2_i2v_hq_stages.py)
    wired with the prompt, seed, upsampler file and decode; unguided, so steps / guidance are refused."""
    import json

    from safetensors.torch import save_file

    from comfyui_cosmos3_ltx2.ltx2.upsampler import load_latent_upsampler
    from helpers import ltx2_upsampler_ref as t_up

    if tiny[0] != "2.3":
        pytest.skip("the distilled checkpoint is an LTX-2.3 release")
    ck, gemma = _loaded(tiny, gemma_folder)
    kw = t_up.VARIANTS["2.3"]
    up_file = tmp_path / "upsampler.safetensors"
    save_file({k: v.contiguous() for k, v in t_up.build_reference(kw, seed=3).state_dict().items()}, str(up_file),
              metadata={"config": json.dumps(t_up.official_config(kw))})
    args = dict(width=128, height=128, num_frames=9, fps=24.0, seed=3, device="cpu", dtype="fp32",
                pipeline="distilled", upsampler=up_file)
    stages = []
    frames, wave, _ = generate(ck, gemma, "a cat", callback=lambda d: stages.append(d["stage"]), **args)
    assert stages == ["stage1"] * 8 + ["stage2"] * 3 and frames.shape == (9, 128, 128, 3)
    shape = latent_shape(9, 128, 128, 24.0, video_channels=16, audio_channels=ck.audio_vae.latent_channels,
                           mel_bins=ck.audio_vae.mel_bins // ck.audio_vae.mel_compression_ratio)
    pos = encode_prompt(ck.connectors, *gemma.encode("a cat"))
    up = load_latent_upsampler(up_file, dtype=torch.float32)
    v, a = run_distilled(ck.transformer, up, ck.video_vae.latents_mean, ck.video_vae.latents_std, positive=pos,
                            shape=shape, seed=3)
    want, want_wave, _ = decode(ck.video_vae, ck.audio_vae, ck.vocoder, v, a, shape)
    assert torch.equal(frames, want) and torch.equal(wave, want_wave[0])
    for extra, match in (({"steps": 8}, "steps"), ({"video_guidance": Guidance(cfg=2.0)}, "video_guidance"),
                         ({"upsampler": None}, "upsampler"), ({"width": 96}, "width=96: not a multiple of 64")):
        with pytest.raises(ValueError, match=match):
            generate(ck, gemma, "a cat", **{**args, **extra})


@pytest.mark.parametrize("kwargs, message", [
    (dict(upsampler="up.safetensors"), "only the two-stage pipelines"),
    (dict(sde_noise="reference"), "only the 'hq' pipeline's res2s"),
    (dict(image_strength=0.5), "there is no `image`"),
    (dict(num_frames=20), "num_frames=20: not 8k\\+1 frames"),
    (dict(width=100), "width=100: not a multiple of 32"),
])


def test_options_that_do_not_apply_are_refused_before_any_load(kwargs, message):
    """The paths do not exist: a check made after loading would fail on them instead."""
    from comfyui_cosmos3_ltx2.ltx2 import generate as ltx_generate

    with pytest.raises(ValueError, match=message):
        ltx_generate("/nonexistent/ltx.safetensors", "/nonexistent/gemma", "a cat", **kwargs)


@pytest.mark.parametrize("argv, message", [
    (["--frames", "20"], "--frames=20: not 8k\\+1 frames"),
    (["--width", "96", "--pipeline", "hq", "--upsampler", "x.safetensors"], "--width=96: not a multiple of 64"),
    (["--sde-noise", "reference"], "--sde-noise='reference': only the 'hq' pipeline"),
    (["--steps", "0"], "--steps=0: must be at least 1"),
])
def test_command_line_refuses_options_before_any_load(argv, message, capsys):
    """ltx-generate goes through the same checks as generate (ltx2.options.check_request): the paths do not exist,
    yet the wrong option is what the user hears, named as typed, with exit status 2 and no traceback."""
    from comfyui_cosmos3_ltx2.__main__ import main

    code = main(["ltx-generate", "--checkpoint", "/nonexistent/ltx.safetensors", "--text-encoder", "/nonexistent/g",
                 "--prompt", "a cat", *argv])
    err = capsys.readouterr().err
    assert code == 2 and re.search(message, err) and "Traceback" not in err, err
