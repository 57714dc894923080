"""``ltx2.generate`` end to end on tiny random LTX-2 / LTX-2.3 checkpoints (official single file) and a tiny
Gemma-3, and equal to the same stages run by hand."""

import pytest
import torch

from comfyui_cosmos3_ltx2.core.sampling.ltx_schedule import ltx2_sigmas
from comfyui_cosmos3_ltx2.ltx2 import generate
from comfyui_cosmos3_ltx2.ltx2 import pipeline as P
from comfyui_cosmos3_ltx2.ltx2.api import initial_noise
from comfyui_cosmos3_ltx2.ltx2.loader import load_gemma_text_encoder, load_ltx2_checkpoint
from test_ltx2_loader import gemma_folder, tiny  # noqa: F401  (pytest fixtures)

KW = dict(width=64, height=64, num_frames=9, fps=24.0, steps=3, seed=5, device="cpu", dtype="fp32",
          video_guidance=P.Guidance(cfg=3.0, stg=1.0, stg_blocks=(0,), modality=2.0, rescale=0.5),
          audio_guidance=P.Guidance(cfg=5.0))


def test_generate_runs_and_equals_the_stages(tiny, gemma_folder):  # noqa: F811
    version, _, _, file, _, _ = tiny
    folder, _ = gemma_folder
    gemma = load_gemma_text_encoder(folder, dtype="fp32", max_length=256)
    ck = load_ltx2_checkpoint(file, dtype="fp32", text_hidden_size=gemma.hidden_size,
                              text_num_hidden_states=gemma.num_hidden_states)
    steps = []
    frames, wave, rate = generate(ck, gemma, "a cat walks on the beach", "blurry", callback=steps.append, **KW)
    assert frames.shape == (9, 64, 64, 3) and torch.isfinite(frames).all()
    assert 0 <= float(frames.min()) and float(frames.max()) <= 1
    assert wave.ndim == 2 and torch.isfinite(wave).all() and rate == ck.vocoder.sampling_rate
    assert len(steps) == 3
    # The same run, stage by stage.
    shape = P.latent_shape(9, 64, 64, 24.0, video_channels=ck.transformer.config["in_channels"],
                           audio_channels=ck.audio_vae.latent_channels,
                           mel_bins=ck.audio_vae.mel_bins // ck.audio_vae.mel_compression_ratio)
    (v, a, m), (nv, na, nm) = (P.encode_prompt(ck.connectors, *gemma.encode(t)) for t in ("a cat walks on the beach", "blurry"))
    model = P.LTX2Denoiser(ck.transformer, v, a, m, nv, na, nm, rope=P.positions(ck.transformer, shape),
                           video=KW["video_guidance"], audio=KW["audio_guidance"], strategy="split")
    vx, ax = P.sample_euler_av(model, *initial_noise(shape, 5), ltx2_sigmas(3))
    want, want_wave, _ = P.decode(ck.video_vae, ck.audio_vae, ck.vocoder, vx, ax, shape)
    assert torch.equal(frames, want) and torch.equal(wave, want_wave[0])
    # Another seed, another clip.
    other, _, _ = generate(ck, gemma, "a cat walks on the beach", "blurry", **{**KW, "seed": 6})
    assert not torch.equal(other, frames)


def test_generate_rejects_bad_sizes(tiny, gemma_folder):  # noqa: F811
    _, _, _, file, _, _ = tiny
    folder, _ = gemma_folder
    gemma = load_gemma_text_encoder(folder, dtype="fp32", max_length=256)
    ck = load_ltx2_checkpoint(file, dtype="fp32", text_hidden_size=gemma.hidden_size,
                              text_num_hidden_states=gemma.num_hidden_states)
    with pytest.raises(ValueError, match="frames"):
        generate(ck, gemma, "x", **{**KW, "num_frames": 10})
    with pytest.raises(ValueError, match="width"):
        generate(ck, gemma, "x", **{**KW, "width": 70})
