"""The LTX-2.3 HQ two-stage pipeline through the public entry point ``ltx2.generate(..., pipeline="hq")``,
end to end on the tiny official single file + tiny Gemma-3, against an independent float32 reference.

The reference is assembled from Lightricks' ltx-core / ltx-pipelines 1.0.0 building blocks and from diffusers,
and shares no code with ``generate`` except the transformer class (loaded separately from the diffusers
folder of the same tiny checkpoint, its parity with diffusers is tested in test_ltx2_transformer.py) and its
rotary tables:

* text: ltx-core's ``LTXVGemmaTokenizer`` (left padded, 256 tokens) -> HF ``Gemma3ForConditionalGeneration``
  (all hidden states) -> diffusers ``LTX2TextConnectors`` from the diffusers folder;
* distilled LoRA, official "one DiT" mode: two transformer copies, ``W + s * B @ A`` merged here in float32
  at the stage-1 / stage-2 strengths (0.25 / 0.5);
* first-frame image (I2V): a uint8 PNG through ltx-pipelines' ``load_image_conditioning`` (resize and center
  crop per stage size, crf 0) -> diffusers ``AutoencoderKLLTX2Video`` encoder (posterior mean) -> per-channel
  normalisation; its tokens replace the frame-0 tokens (mask 0) as ``VideoConditionByLatentIndex`` does;
* sampling: ``GaussianNoiser`` on one CPU generator (stage-1 video, stage-1 audio, stage-2 video, stage-2
  audio), ``LTX2Scheduler`` on the stage-1 latent, ``res2s_audio_video_denoising_loop`` with
  ``multi_modal_guider_denoising_func`` (``LTX_2_3_HQ_PARAMS`` guider params) then ``simple_denoising_func``
  over ``STAGE_2_DISTILLED_SIGMA_VALUES``, the official fixed SDE seeds (``sde_noise="reference"`` on our side);
  ltx-core's ``LatentUpsampler`` + ``upsample_video`` for the x2 step;
* decode: diffusers ``AutoencoderKLLTX2Video`` / ``AutoencoderKLLTX2Audio`` / ``LTX2VocoderWithBWE`` from the
  diffusers folder, de-normalised as diffusers' ``LTX2Pipeline`` does.

Acceptance: latents within 1e-4 relative (stage 1 and final, via ``generate``'s callback), decoded frames
PSNR >= 40 dB, waveform SNR >= 30 dB (and the magnitude spectrogram), for T2V and I2V.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch

from comfyui_cosmos3_ltx2.ltx2 import generate
from comfyui_cosmos3_ltx2.ltx2.latents import LatentShape, pack_video, positions, unpack_video
from comfyui_cosmos3_ltx2.ltx2.loader import load_ltx2_checkpoint
from comfyui_cosmos3_ltx2.ltx2.text_encoding import load_gemma_text_encoder
from comfyui_cosmos3_ltx2.ltx2.transformer import LTX2Transformer
from helpers.ltx2_checkpoint_ref import NEGATIVE, PROMPT, hq_files
from helpers.ltx2_pipeline_ref import CoreX0, load_reference
from helpers.ltx_oracle import ltx_oracles_available
from helpers.measures import psnr, rel, snr

diffusers = pytest.importorskip("diffusers")

FRAMES, HEIGHT, WIDTH, FPS = 17, 128, 128, 24.0  # stage 1 at 64 x 64: latents 3 x 2 x 2, stage 2 3 x 4 x 4
STEPS, SEED, MAX_LEN = 3, 1234, 256
STRENGTHS = (0.25, 0.5)

KW = dict(width=WIDTH, height=HEIGHT, num_frames=FRAMES, fps=FPS, steps=STEPS, seed=SEED, device="cpu",
          dtype="fp32", strategy="split", pipeline="hq", lora_strengths=STRENGTHS, sde_noise="reference")

pytestmark = pytest.mark.parametrize("tiny", ["2.3"], indirect=True)


@pytest.fixture(autouse=True)
def _one_thread():
    """Single-threaded: the tiny ops gain nothing from threads, and on a shared 2-core machine two OpenMP
    threads waiting on each other make every op ~100x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------------------------------
# A well-conditioned variant of the tiny LTX-2.3 checkpoint (official file + diffusers folder)


# --------------------------------------------------------------------------------------------------
# Files: upsampler, distilled LoRA, image


# --------------------------------------------------------------------------------------------------
# The reference


def _merged_transformer(folder, factors: dict, strength: float):
    tr = load_reference(LTX2Transformer, folder / "transformer")
    params = dict(tr.named_parameters())
    for name, (a, b) in factors.items():
        w = params[name]
        w.copy_((w.float() + strength * (b.float() @ a.float())).to(w.dtype))
    return tr


def _ref_contexts(folder, gemma_dir):
    import transformers
    from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors as RefConnectors
    from ltx_core.text_encoders.gemma.tokenizer import LTXVGemmaTokenizer

    tok = LTXVGemmaTokenizer(str(gemma_dir), MAX_LEN)
    gemma = transformers.Gemma3ForConditionalGeneration.from_pretrained(str(gemma_dir), dtype=torch.float32).eval()
    conn = RefConnectors.from_pretrained(str(folder / "connectors")).eval()
    out = []
    for text in (PROMPT, NEGATIVE):
        pairs = tok.tokenize_with_weights(text)["gemma"]
        ids = torch.tensor([[int(t) for t, _ in pairs]])
        mask = torch.tensor([[int(w) for _, w in pairs]])
        hidden = gemma.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        emb = torch.stack(hidden, dim=-1).flatten(2, 3)
        v, a, m = conn(emb, mask)
        assert bool(m.bool().all())  # after register replacement: the official context_mask=None
        out.append((v, a))
    return out


def _ref_image_latents(vae, png, shape1, shape2):
    from ltx_pipelines.utils.media_io import load_image_conditioning

    lat = []
    for s in (shape1, shape2):
        pix = load_image_conditioning(str(png), s.height * 32, s.width * 32, torch.float32, torch.device("cpu"), crf=0)
        assert pix.shape == (1, 3, 1, s.height * 32, s.width * 32)
        z = vae.encode(pix).latent_dist.mode()
        shp = (1, -1, 1, 1, 1)
        lat.append((z - vae.latents_mean.view(shp)) / vae.latents_std.view(shp))
    return lat


def _core_shape(width: int, height: int, audio_channels: int) -> LatentShape:
    """The latent geometry of one stage from ltx-core's own shape rules."""
    from ltx_core.types import AudioLatentShape, VideoLatentShape, VideoPixelShape

    pix = VideoPixelShape(batch=1, frames=FRAMES, height=height, width=width, fps=FPS)
    v = VideoLatentShape.from_pixel_shape(pix, latent_channels=16)
    a = AudioLatentShape.from_video_pixel_shape(pix, channels=audio_channels, mel_bins=16)
    return LatentShape(batch=1, video_channels=16, frames=v.frames, height=v.height, width=v.width,
                         audio_channels=a.channels, audio_frames=a.frames, mel_bins=a.mel_bins, fps=FPS)


_REF: dict = {}


@torch.no_grad()
def _reference(i2v: bool, folder, gemma_dir, files):
    """(stage-1 packed (video, audio), final packed (video, audio), frames [T, H, W, 3], waveform [C, N], rate)."""
    if i2v in _REF:
        return _REF[i2v]
    from diffusers import AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video
    from diffusers.pipelines.ltx2.vocoder import LTX2VocoderWithBWE
    from ltx_core.components.diffusion_steps import Res2sDiffusionStep
    from ltx_core.components.guiders import MultiModalGuider
    from ltx_core.components.noisers import GaussianNoiser
    from ltx_core.components.schedulers import LTX2Scheduler
    from ltx_core.model.upsampler import LatentUpsamplerConfigurator
    from ltx_core.model.upsampler.model import upsample_video
    from ltx_core.model.video_vae.ops import PerChannelStatistics
    from ltx_core.types import LatentState
    from ltx_pipelines.utils.constants import LTX_2_3_HQ_PARAMS, STAGE_2_DISTILLED_SIGMA_VALUES
    from ltx_pipelines.utils.helpers import multi_modal_guider_denoising_func, simple_denoising_func
    from ltx_pipelines.utils.samplers import res2s_audio_video_denoising_loop

    vae = AutoencoderKLLTX2Video.from_pretrained(str(folder / "vae")).eval()
    avae = AutoencoderKLLTX2Audio.from_pretrained(str(folder / "audio_vae")).eval()
    vocoder = LTX2VocoderWithBWE.from_pretrained(str(folder / "vocoder")).eval()
    tr1 = _merged_transformer(folder, files["factors"], STRENGTHS[0])
    tr2 = _merged_transformer(folder, files["factors"], STRENGTHS[1])
    upsampler = LatentUpsamplerConfigurator.from_config(files["up_cfg"]).eval()
    upsampler.load_state_dict(files["up_sd"])
    (vc, ac), (nvc, nac) = _ref_contexts(folder, gemma_dir)

    s1, shape = (_core_shape(WIDTH // k, HEIGHT // k, avae.config.latent_channels) for k in (2, 1))
    ropes = {s1.video_tokens: positions(tr1, s1), shape.video_tokens: positions(tr1, shape)}
    img1 = img2 = None
    if i2v:
        img1, img2 = (pack_video(z) for z in _ref_image_latents(vae, files["png"], s1, shape))

    def state(latent, cond_tokens=None):  # LatentState + VideoConditionByLatentIndex (strength 1, latent idx 0)
        mask = torch.ones(latent.shape[0], latent.shape[1], 1)
        latent = latent.clone()
        if cond_tokens is not None:
            n = cond_tokens.shape[1]
            latent[:, :n] = cond_tokens
            mask[:, :n] = 0.0
        return LatentState(latent=latent, denoise_mask=mask, positions=torch.zeros(1), clean_latent=latent.clone())

    noiser = GaussianNoiser(torch.Generator("cpu").manual_seed(SEED))
    vs = noiser(state(torch.zeros(s1.video_packed), img1), 1.0)
    as_ = noiser(state(torch.zeros(s1.audio_packed)), 1.0)
    sig1 = LTX2Scheduler().execute(latent=torch.empty(s1.video_5d), steps=STEPS).to(torch.float32)
    den1 = multi_modal_guider_denoising_func(
        video_guider=MultiModalGuider(params=LTX_2_3_HQ_PARAMS.video_guider_params, negative_context=nvc),
        audio_guider=MultiModalGuider(params=LTX_2_3_HQ_PARAMS.audio_guider_params, negative_context=nac),
        v_context=vc, a_context=ac, transformer=CoreX0(tr1, ropes))
    vs, as_ = res2s_audio_video_denoising_loop(sigmas=sig1, video_state=vs, audio_state=as_,
                                                stepper=Res2sDiffusionStep(), denoise_fn=den1,
                                                model_dtype=torch.float32)
    stage1 = (vs.latent.clone(), as_.latent.clone())
    stats = PerChannelStatistics(16)
    stats.get_buffer("mean-of-means").copy_(vae.latents_mean)
    stats.get_buffer("std-of-means").copy_(vae.latents_std)
    up = upsample_video(unpack_video(vs.latent, s1.frames, s1.height, s1.width),
                        SimpleNamespace(per_channel_statistics=stats), upsampler)
    sig2 = torch.tensor(STAGE_2_DISTILLED_SIGMA_VALUES)
    vs2 = noiser(state(pack_video(up), img2), sig2[0])
    as2 = noiser(state(as_.latent), sig2[0])
    den2 = simple_denoising_func(video_context=vc, audio_context=ac, transformer=CoreX0(tr2, ropes))
    vs2, as2 = res2s_audio_video_denoising_loop(sigmas=sig2, video_state=vs2, audio_state=as2,
                                                stepper=Res2sDiffusionStep(), denoise_fn=den2,
                                                model_dtype=torch.float32)
    final = (vs2.latent, as2.latent)

    # decode as diffusers' LTX2Pipeline does (normalised latents -> de-normalise -> VAE / audio VAE -> vocoder)
    shp = (1, -1, 1, 1, 1)
    z = unpack_video(final[0], shape.frames, shape.height, shape.width) * vae.latents_std.view(shp) \
        + vae.latents_mean.view(shp)
    video = vae.decode(z, None, return_dict=False)[0]
    frames = (video / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 3, 0)
    a = final[1] * avae.latents_std + avae.latents_mean
    a = a.unflatten(2, (shape.audio_channels, shape.mel_bins)).transpose(1, 2)  # [B, C, T, M]
    mel = avae.decode(a, return_dict=False)[0]
    wave = vocoder(mel)[0].float()
    _REF[i2v] = (stage1, final, frames, wave, int(vocoder.config.output_sampling_rate), (s1, shape))
    return _REF[i2v]


def _spectrogram(wave: torch.Tensor) -> torch.Tensor:
    return torch.stft(wave.double(), n_fft=1024, hop_length=256, window=torch.hann_window(1024, dtype=torch.float64),
                      return_complex=True).abs()


# --------------------------------------------------------------------------------------------------
# Tests

_ORACLES = pytest.mark.skipif(not ltx_oracles_available(), reason="ltx-core / ltx-pipelines not installed")


def _gemma(gemma_dir):
    return load_gemma_text_encoder(gemma_dir, dtype="fp32", max_length=MAX_LEN)


@_ORACLES
@pytest.mark.parametrize("i2v", [False, True], ids=["t2v", "i2v"])
def test_hq_generate_matches_ltx_reference(i2v, hq_ckpt, gemma_folder, tmp_path_factory):  # noqa: F811
    """generate(pipeline="hq") from the files (checkpoint, upsampler, LoRA) with the HQ default guidance,
    against the ltx-core / ltx-pipelines / diffusers reference: stage-1 and final latents, frames, waveform."""
    file, folder = hq_ckpt
    files = hq_files(tmp_path_factory)
    t0 = time.perf_counter()
    ref1, ref, ref_frames, ref_wave, ref_rate, (s1, shape) = _reference(i2v, folder, gemma_folder[0], files)
    t_ref = time.perf_counter() - t0
    image = torch.from_numpy(files["image"]) / 255.0 if i2v else None
    steps: list[dict] = []
    t0 = time.perf_counter()
    frames, wave, rate = generate(file, _gemma(gemma_folder[0]), PROMPT, NEGATIVE, upsampler=files["up_file"],
                                  distilled_lora=files["lora_file"], image=image, image_crf=0,
                                  callback=steps.append, **KW)
    t_ours = time.perf_counter() - t0
    assert [d["stage"] for d in steps] == ["stage1"] * STEPS + ["stage2"] * 3
    assert [d["i"] for d in steps] == list(range(STEPS)) + [0, 1, 2]
    last1 = [d for d in steps if d["stage"] == "stage1"][-1]["x"]
    last2 = steps[-1]["x"]
    assert last1[0].shape == ref1[0].shape and last2[0].shape == ref[0].shape and last2[1].shape == ref[1].shape
    r1v, r1a = rel(last1[0], ref1[0]), rel(last1[1], ref1[1])
    rv, ra = rel(last2[0], ref[0]), rel(last2[1], ref[1])
    assert frames.shape == ref_frames.shape == (FRAMES, HEIGHT, WIDTH, 3) and frames.dtype == torch.float32
    assert 0 <= float(frames.min()) and float(frames.max()) <= 1
    assert wave.shape == ref_wave.shape and wave.ndim == 2 and wave.dtype == torch.float32
    assert rate == ref_rate == 48000
    frames_psnr = psnr(frames, ref_frames)
    wave_snr = snr(wave, ref_wave)
    spec = snr(_spectrogram(wave), _spectrogram(ref_wave))
    print(f"\nHQ generate {'i2v' if i2v else 't2v'} vs ltx reference: stage 1 video {r1v:.2e} audio {r1a:.2e}; "
          f"final video {rv:.2e} audio {ra:.2e}; frames PSNR {frames_psnr:.1f} dB; waveform SNR {wave_snr:.1f} dB, "
          f"spectrogram SNR {spec:.1f} dB; reference {t_ref:.1f} s, generate {t_ours:.1f} s")
    assert r1v < 1e-4 and r1a < 1e-4, (r1v, r1a)
    assert rv < 1e-4 and ra < 1e-4, (rv, ra)
    assert frames_psnr >= 40.0, frames_psnr
    assert wave_snr >= 30.0 and spec >= 30.0, (wave_snr, spec)
    if i2v:  # the first latent frame is the image's (independently prepared and encoded), kept by both stages
        n0 = shape.height * shape.width
        r0 = rel(last2[0][:, :n0], ref[0][:, :n0])
        print(f"first-frame tokens vs the reference image latent: {r0:.2e}")
        assert r0 < 1e-5, r0


def _snapshot(ck) -> dict:
    return {c: {k: v.clone() for k, v in getattr(ck, c).state_dict().items()}
            for c in ("transformer", "connectors", "video_vae", "audio_vae", "vocoder")}


def _assert_unchanged(ck, before: dict) -> None:
    for comp, sd in before.items():
        now = getattr(ck, comp).state_dict()
        assert set(now) == set(sd), comp
        for k, v in sd.items():
            assert torch.equal(now[k], v), (comp, k)


def test_hq_generate_leaves_the_checkpoint_unchanged(hq_ckpt, gemma_folder, tmp_path_factory):  # noqa: F811
    """A loaded checkpoint comes back bit-identical after an HQ run with the LoRA file (merged, switched
    0.25 -> 0.5, removed), also when the callback stops the run in stage 2; a LoRA handle the caller merged
    keeps its own strength."""
    from comfyui_cosmos3_ltx2.ltx2.loader import load_distilled_lora

    file, _ = hq_ckpt
    files = hq_files(tmp_path_factory)
    gemma = _gemma(gemma_folder[0])
    ck = load_ltx2_checkpoint(file, dtype="fp32", text_hidden_size=gemma.hidden_size,
                              text_num_hidden_states=gemma.num_hidden_states)
    before = _snapshot(ck)
    kw = dict(KW, steps=2, width=64, height=64, num_frames=9, upsampler=files["up_file"],
              distilled_lora=files["lora_file"])
    frames, _, _ = generate(ck, gemma, PROMPT, NEGATIVE, **kw)
    assert torch.isfinite(frames).all()
    _assert_unchanged(ck, before)

    def stop(d):
        if d["stage"] == "stage2":
            raise KeyboardInterrupt("user stop")

    with pytest.raises(KeyboardInterrupt):
        generate(ck, gemma, PROMPT, NEGATIVE, callback=stop, **kw)
    _assert_unchanged(ck, before)

    handle = load_distilled_lora(ck.transformer, files["lora_file"], strength=0.7)
    merged = _snapshot(ck)
    generate(ck, gemma, PROMPT, NEGATIVE, **dict(kw, distilled_lora=handle))
    assert handle.strength == 0.7
    _assert_unchanged(ck, merged)
    handle.remove()
    _assert_unchanged(ck, before)


_LOADED: dict = {}


@pytest.mark.parametrize("change, field", [
    (dict(width=96), "width"),  # a multiple of 32, not of 64
    (dict(height=160), "height"),
    (dict(upsampler=None), "upsampler"),
    (dict(pipeline="two-stage"), "pipeline"),
    (dict(sde_noise="fixed"), "sde_noise"),
    (dict(lora_strengths=(0.25,)), "lora_strengths"),
    (dict(steps=0), "steps"),
    (dict(image_strength=1.5), "strength"),
    (dict(image_crf=-1), "image_crf"),
])


def test_hq_generate_rejects_bad_inputs(change, field, hq_ckpt, gemma_folder, tmp_path_factory):  # noqa: F811
    file, _ = hq_ckpt
    files = hq_files(tmp_path_factory)
    if not _LOADED:
        gemma = _gemma(gemma_folder[0])
        _LOADED["gemma"] = gemma
        _LOADED["ck"] = load_ltx2_checkpoint(file, dtype="fp32", text_hidden_size=gemma.hidden_size,
                                             text_num_hidden_states=gemma.num_hidden_states)
    ck = _LOADED["ck"]
    kw = dict(KW, upsampler=files["up_file"], distilled_lora=files["lora_file"],
              image=torch.from_numpy(files["image"]) / 255.0)
    kw.update(change)
    before = _snapshot(ck)
    with pytest.raises(ValueError, match=field):
        generate(ck, _LOADED["gemma"], PROMPT, NEGATIVE, **kw)
    _assert_unchanged(ck, before)


def test_hq_generate_in_bf16_with_image_keyframe_and_lora(hq_ckpt, gemma_folder, tmp_path_factory):  # noqa: F811
    """The whole HQ path in bfloat16 (checkpoint, Gemma, upsampler, LoRA merge, image and keyframe latents,
    timestep levels, decode): runs, stays finite, and lands near the float32 run."""
    from comfyui_cosmos3_ltx2.ltx2.api import Keyframe

    file, _ = hq_ckpt
    files = hq_files(tmp_path_factory)
    image = torch.from_numpy(files["image"]) / 255.0
    kw = dict(KW, upsampler=files["up_file"], distilled_lora=files["lora_file"], image=image, image_crf=0,
              keyframes=[Keyframe(files["png"], 8, 0.8)])
    out = {}
    for dtype in ("fp32", "bf16"):
        out[dtype] = generate(file, gemma_folder[0], PROMPT, NEGATIVE, **{**kw, "dtype": dtype})
    frames, wave, rate = out["bf16"]
    assert frames.dtype == wave.dtype == torch.float32 and rate == 48000
    assert frames.shape == out["fp32"][0].shape and torch.isfinite(frames).all() and torch.isfinite(wave).all()
    frames_psnr = psnr(frames, out["fp32"][0])
    print(f"\nHQ bf16 vs fp32 (image + keyframe + LoRA): frames PSNR {frames_psnr:.1f} dB")
    assert frames_psnr > 15.0, frames_psnr  # bf16 drifts on random tiny models; this catches broken dtypes, not rounding
