"""Image-to-video conditioning and the HQ two-stage flow (ltx2/conditioning.py, ltx2/sampling.py) on tiny random LTX-2.3 models.

* I2V against diffusers' ``LTX2ImageToVideoPipeline`` (Euler, CFG only: with guidance rescale the two
  references disagree, oracle quirk Q7, and we follow ltx-core), same explicit packed noise and sigmas.
* HQ two-stage against ltx-core / ltx-pipelines building blocks in float32: ``res2s_audio_video_denoising_loop``
  with ``multi_modal_guider_denoising_func`` (stage 1) and ``simple_denoising_func`` (stage 2),
  ``GaussianNoiser`` for the initial and re-noising noise, ``upsample_video`` for the x2 step. The ltx-core
  loop calls our transformer through a small X0Model adapter (the transformer's own parity is tested in
  test_ltx2_transformer.py; the upsampler's in test_ltx2_upsampler.py).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from comfyui_cosmos3_ltx2.core.sampling.euler import sample_euler
from comfyui_cosmos3_ltx2.core.sampling.ltx_schedule import ltx2_sigmas
from comfyui_cosmos3_ltx2.core.sampling.res2s import reference_noise_sampler, seeded_noise_sampler
from comfyui_cosmos3_ltx2.ltx2.conditioning import (
    ConditionedDenoiser,
    ImageLatent,
    build_condition,
    condition_first_frame,
    noise_latent,
    strip_appended,
)
from comfyui_cosmos3_ltx2.ltx2.denoiser import HQ_AUDIO_GUIDANCE, HQ_VIDEO_GUIDANCE, Guidance, LTX2Denoiser
from comfyui_cosmos3_ltx2.ltx2.latents import (
    LatentShape,
    latent_shape,
    pack_video,
    positions,
    unpack_audio,
    unpack_video,
)
from comfyui_cosmos3_ltx2.ltx2.sampling import (
    STAGE2_SIGMAS,
    half_shape,
    hq_noise,
    run_distilled,
    run_hq,
    stage1,
    stage2,
    upsample_stage1,
)
from comfyui_cosmos3_ltx2.ltx2.text_encoding import encode_prompt
from comfyui_cosmos3_ltx2.ltx2.upsampler import LTX2LatentUpsampler
from helpers.ltx2_pipeline_ref import (
    FPS,
    FRAMES,
    HEIGHT,
    WIDTH,
    CoreX0,
    gemma_prompts,
    packed_noise,
    tiny_pipeline,
    tiny_shape,
)
from helpers.ltx_oracle import ltx_oracles_available
from helpers.measures import rel
from helpers.op_count import OpCount

diffusers = pytest.importorskip("diffusers")

CFG = (Guidance(cfg=3.0), Guidance(cfg=7.0))
HQ_GUIDANCE = (HQ_VIDEO_GUIDANCE, HQ_AUDIO_GUIDANCE)  # cfg + modality + rescale, STG off
HQ_FRAMES, HQ_HEIGHT, HQ_WIDTH = 17, 128, 128  # stage 1 at 64 x 64 (latent 3 x 2 x 2), stage 2 latent 3 x 4 x 4
HQ_STEPS = 4


def _contexts(ours, prompt_seed=0):
    pos, pos_mask, neg, neg_mask = gemma_prompts(prompt_seed)
    return (encode_prompt(ours["connectors"], pos, pos_mask), encode_prompt(ours["connectors"], neg, neg_mask))


def _image_latent(shape: LatentShape, seed: int = 11) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, shape.video_channels, 1, shape.height, shape.width, generator=g)


def _cond_denoiser(ours, shape, guidance, condition, strategy="batched"):
    (vc, ac, m), (nvc, nac, nm) = _contexts(ours)
    return ConditionedDenoiser(ours["transformer"], vc, ac, m, nvc, nac, nm, rope=positions(ours["transformer"], shape),
                                  video=guidance[0], audio=guidance[1], strategy=strategy, condition=condition)


# --------------------------------------------------------------------------------------------------
# 1. Image to video against diffusers


def _i2v_reference(pipe, shape, x_init, audio_noise, sigmas):
    from diffusers import LTX2ImageToVideoPipeline

    i2v = LTX2ImageToVideoPipeline(scheduler=pipe.scheduler, vae=pipe.vae, audio_vae=pipe.audio_vae, text_encoder=None,
                                   tokenizer=None, connectors=pipe.connectors, transformer=pipe.transformer,
                                   vocoder=pipe.vocoder)
    i2v.set_progress_bar_config(disable=True)
    pos, pos_mask, neg, neg_mask = gemma_prompts()
    vae, avae = pipe.vae, pipe.audio_vae
    shp = (1, -1, 1, 1, 1)
    # diffusers normalises 5-D video latents and audio latents: hand them over de-normalised
    z = unpack_video(x_init, shape.frames, shape.height, shape.width) * vae.latents_std.view(shp) + vae.latents_mean.view(shp)
    audio_in = audio_noise * avae.latents_std + avae.latents_mean
    vg, ag = CFG
    return i2v(
        prompt_embeds=pos, prompt_attention_mask=pos_mask, negative_prompt_embeds=neg,
        negative_prompt_attention_mask=neg_mask, height=HEIGHT, width=WIDTH, num_frames=FRAMES, frame_rate=FPS,
        num_inference_steps=len(sigmas) - 1, sigmas=list(sigmas[:-1]), guidance_scale=vg.cfg, stg_scale=0.0,
        modality_scale=1.0, guidance_rescale=0.0, audio_guidance_scale=ag.cfg, audio_stg_scale=0.0,
        audio_modality_scale=1.0, audio_guidance_rescale=0.0, latents=z, audio_latents=audio_in,
        output_type="latent", return_dict=False, max_sequence_length=256,
    )


def test_i2v_matches_diffusers(tmp_path_factory):
    pipe, ours = tiny_pipeline("2.3", tmp_path_factory)
    shape = tiny_shape()
    vn, an = packed_noise(shape)
    img = _image_latent(shape)
    x_init, cond = condition_first_frame(vn, img, shape)
    n0 = shape.height * shape.width
    assert torch.equal(x_init[:, :n0], pack_video(img)) and torch.equal(x_init[:, n0:], vn[:, n0:])
    assert cond.mask[:, :n0].eq(0).all() and cond.mask[:, n0:].eq(1).all()
    sigmas = ltx2_sigmas(6)
    model = _cond_denoiser(ours, shape, CFG, cond)
    counter = OpCount()
    with counter:
        v, a = sample_euler(model, (x_init, an), sigmas)
    assert counter.host_reads == 0
    assert torch.equal(v[:, :n0], x_init[:, :n0])  # the image frame stays exactly as given
    want_v, want_a = _i2v_reference(pipe, shape, x_init, an, sigmas)
    got_v = ours["vae"].denormalize_latents(unpack_video(v, shape.frames, shape.height, shape.width))
    got_a = ours["audio_vae"].denormalize_latents(unpack_audio(a, shape.audio_channels))
    rv, ra = rel(got_v, want_v), rel(got_a, want_a)
    print(f"I2V vs diffusers: video rel {rv:.2e}, audio rel {ra:.2e}")
    assert rv < 1e-4 and ra < 1e-4, (rv, ra)
    # the conditioning matters: plain T2V from the same start differs
    plain = _cond_denoiser(ours, shape, CFG, None)
    v_plain, _ = sample_euler(plain, (x_init, an), sigmas)
    assert rel(v_plain, v) > 1e-2


def test_conditioned_denoiser_details(tmp_path_factory):
    _, ours = tiny_pipeline("2.3", tmp_path_factory)
    shape = tiny_shape()
    vn, an = packed_noise(shape, seed=3)
    x, cond = condition_first_frame(vn, _image_latent(shape), shape)
    n0 = shape.height * shape.width
    full = HQ_GUIDANCE
    # batched and split agree; clean tokens get x0 = clean; no condition = the parent class
    xb = _cond_denoiser(ours, shape, full, cond, "batched")((x, an), 0.6)
    xs = _cond_denoiser(ours, shape, full, cond, "split")((x, an), 0.6)
    assert rel(xb[0], xs[0]) < 1e-5 and rel(xb[1], xs[1]) < 1e-5
    assert torch.equal(xb[0][:, :n0], x[:, :n0])
    (vc, ac, m), (nvc, nac, nm) = _contexts(ours)
    rope = positions(ours["transformer"], shape)
    parent = LTX2Denoiser(ours["transformer"], vc, ac, m, nvc, nac, nm, rope=rope, video=full[0], audio=full[1])
    child = _cond_denoiser(ours, shape, full, None)
    for got, want in zip(child((vn, an), 0.4), parent((vn, an), 0.4)):
        assert torch.equal(got, want)
    # closed form of one conditional pass: per-token timestep sigma * mask, x0 = x - (sigma * mask) v
    pos_only = _cond_denoiser(ours, shape, (Guidance(), Guidance()), cond)
    s = 0.5
    vel, avel = ours["transformer"](x, an, vc, ac, s, rope=rope, timestep=cond.mask.squeeze(-1) * s,
                                    encoder_attention_mask=m, audio_encoder_attention_mask=m)
    got_v, got_a = pos_only((x, an), s)
    assert rel(got_v, x - vel * cond.mask * s) < 1e-6 and rel(got_a, an - s * avel) < 1e-6
    # errors
    with pytest.raises(ValueError, match="image latent"):
        condition_first_frame(vn, torch.zeros(1, 16, 1, 3, 3), shape)
    with pytest.raises(ValueError, match="strength"):
        condition_first_frame(vn, _image_latent(shape), shape, strength=1.5)
    with pytest.raises(ValueError, match="even"):
        half_shape(shape)  # 64 x 96 pixels -> 2 x 3 latent


def test_noise_latent_and_strength():
    x, n = torch.randn(1, 6, 4), torch.randn(1, 6, 4)
    mask = torch.ones(1, 6, 1)
    mask[:, :2] = 0.25
    out = noise_latent(x, n, 0.8, mask)
    assert torch.allclose(out[:, 2:], 0.8 * n[:, 2:] + 0.2 * x[:, 2:])
    assert torch.allclose(out[:, :2], 0.2 * n[:, :2] + 0.8 * x[:, :2])
    shape = latent_shape(9, 32, 64, video_channels=4, audio_channels=2, mel_bins=2)  # latent 2 x 1 x 2
    lat, cond = condition_first_frame(torch.zeros(shape.video_packed), torch.ones(1, 4, 1, 1, 2), shape, strength=0.75)
    assert torch.equal(cond.mask.flatten(), torch.tensor([0.25, 0.25, 1.0, 1.0]))
    assert torch.equal(lat[0, :, 0], torch.tensor([1.0, 1.0, 0.0, 0.0]))


# --------------------------------------------------------------------------------------------------
# 2. HQ two-stage against ltx-core building blocks (float32)


def _upsampler():
    torch.manual_seed(7)
    up = LTX2LatentUpsampler(dict(in_channels=16, mid_channels=32, num_blocks_per_stage=1, dims=3,
                                  use_rational_resampler=False)).eval()
    return up


def _core_stage1(model, vs, as_, s1, steps, contexts):
    """ltx-pipelines' guided res2s stage 1 over the LTX2Scheduler sigmas (HQ guidance), float32."""
    from ltx_core.components.diffusion_steps import Res2sDiffusionStep
    from ltx_core.components.guiders import MultiModalGuider, MultiModalGuiderParams
    from ltx_core.components.schedulers import LTX2Scheduler
    from ltx_pipelines.utils.helpers import multi_modal_guider_denoising_func
    from ltx_pipelines.utils.samplers import res2s_audio_video_denoising_loop

    vc, ac, nvc, nac = contexts

    def params(g):
        return MultiModalGuiderParams(cfg_scale=g.cfg, stg_scale=g.stg, stg_blocks=list(g.stg_blocks),
                                      rescale_scale=g.rescale, modality_scale=g.modality)

    sig1 = LTX2Scheduler().execute(latent=torch.empty(s1.video_5d), steps=steps).to(torch.float32)
    den1 = multi_modal_guider_denoising_func(
        video_guider=MultiModalGuider(params=params(HQ_GUIDANCE[0]), negative_context=nvc),
        audio_guider=MultiModalGuider(params=params(HQ_GUIDANCE[1]), negative_context=nac),
        v_context=vc, a_context=ac, transformer=model)
    return res2s_audio_video_denoising_loop(sigmas=sig1, video_state=vs, audio_state=as_, stepper=Res2sDiffusionStep(),
                                            denoise_fn=den1, model_dtype=torch.float32)


def _core_upsample(ours, video, s1, upsampler):
    """ltx-core's ``upsample_video`` on packed stage-1 latents (VAE statistics from our VAE)."""
    from ltx_core.model.upsampler.model import upsample_video
    from ltx_core.model.video_vae.ops import PerChannelStatistics

    stats = PerChannelStatistics(16)
    stats.get_buffer("mean-of-means").copy_(ours["vae"].latents_mean)
    stats.get_buffer("std-of-means").copy_(ours["vae"].latents_std)
    return upsample_video(unpack_video(video, s1.frames, s1.height, s1.width),
                          SimpleNamespace(per_channel_statistics=stats), upsampler)


def _core_stage2(model, vs2, as2, vc, ac):
    """ltx-pipelines' unguided res2s stage 2 over the distilled sigmas, float32."""
    from ltx_core.components.diffusion_steps import Res2sDiffusionStep
    from ltx_pipelines.utils.helpers import simple_denoising_func
    from ltx_pipelines.utils.samplers import res2s_audio_video_denoising_loop

    den2 = simple_denoising_func(video_context=vc, audio_context=ac, transformer=model)
    return res2s_audio_video_denoising_loop(sigmas=torch.tensor(STAGE2_SIGMAS), video_state=vs2, audio_state=as2,
                                            stepper=Res2sDiffusionStep(), denoise_fn=den2, model_dtype=torch.float32)


def _hq_reference(ours, upsampler, shape, seed, steps, image_latents):
    from ltx_core.components.noisers import GaussianNoiser
    from ltx_core.types import LatentState

    tr = ours["transformer"]
    s1 = half_shape(shape)
    (vc, ac, m), (nvc, nac, _) = _contexts(ours)
    assert m is None or bool(m.bool().all())  # after register replacement: the official context_mask=None
    model = CoreX0(tr, {s1.video_tokens: positions(tr, s1), shape.video_tokens: positions(tr, shape)})
    noiser = GaussianNoiser(torch.Generator("cpu").manual_seed(seed))

    def state(latent, cond_tokens=None, clean=None):
        mask = torch.ones(latent.shape[0], latent.shape[1], 1)
        clean = latent.clone() if clean is None else clean.clone()
        latent = latent.clone()
        if cond_tokens is not None:
            n = cond_tokens.shape[1]
            latent[:, :n] = cond_tokens
            clean[:, :n] = cond_tokens
            mask[:, :n] = 0.0
        return LatentState(latent=latent, denoise_mask=mask, positions=torch.zeros(1), clean_latent=clean)

    img1 = None if image_latents is None else pack_video(image_latents[0])
    img2 = None if image_latents is None else pack_video(image_latents[1])
    vs = noiser(state(torch.zeros(s1.video_packed), img1), 1.0)
    as_ = noiser(state(torch.zeros(s1.audio_packed)), 1.0)
    vs, as_ = _core_stage1(model, vs, as_, s1, steps, (vc, ac, nvc, nac))
    stage1 = (vs.latent.clone(), as_.latent.clone())
    up = _core_upsample(ours, vs.latent, s1, upsampler)
    s0 = STAGE2_SIGMAS[0]
    vs2 = noiser(state(pack_video(up), img2), s0)
    as2 = noiser(state(as_.latent), s0)
    vs2, as2 = _core_stage2(model, vs2, as2, vc, ac)
    return stage1, (vs2.latent, as2.latent)


def _hq_shape():
    return latent_shape(HQ_FRAMES, HQ_HEIGHT, HQ_WIDTH, FPS, video_channels=16, audio_channels=2, mel_bins=16)


@pytest.mark.skipif(not ltx_oracles_available(), reason="ltx-core / ltx-pipelines not installed")
@pytest.mark.parametrize("i2v", [False, True], ids=["t2v", "i2v"])
def test_hq_matches_ltx_core(i2v, tmp_path_factory):
    _, ours = tiny_pipeline("2.3", tmp_path_factory)
    shape = _hq_shape()
    s1 = half_shape(shape)
    assert (s1.height, s1.width, shape.height, shape.width) == (2, 2, 4, 4)
    upsampler = _upsampler()
    seed = 1234
    images = (_image_latent(s1, 21), _image_latent(shape, 22)) if i2v else None
    (ref1_v, ref1_a), (ref_v, ref_a) = _hq_reference(ours, upsampler, shape, seed, HQ_STEPS, images)

    tr = ours["transformer"]
    (vc, ac, m), (nvc, nac, nm) = _contexts(ours)
    stages = {}

    def cb(stage, d):
        stages[stage] = d

    counter = OpCount()
    with counter:
        v, a = run_hq(tr, upsampler, ours["vae"].latents_mean, ours["vae"].latents_std,
                         positive=(vc, ac, m), negative=(nvc, nac, nm), shape=shape, seed=seed, steps=HQ_STEPS,
                         image_latents=images, sde_noise="reference", callback=cb)
    # the only host reads are outside the loops (schedule / noise set-up); the loops themselves are sync-free
    assert set(stages) == {"stage1", "stage2"}
    # stage-1 result, compared through the callback of its last step
    r1v = rel(stages["stage1"]["x"][0], ref1_v)
    r1a = rel(stages["stage1"]["x"][1], ref1_a)
    rv, ra = rel(v, ref_v), rel(a, ref_a)
    print(f"HQ {'i2v' if i2v else 't2v'} vs ltx-core: stage 1 video {r1v:.2e} audio {r1a:.2e}; "
          f"final video {rv:.2e} audio {ra:.2e}; scalar reads {counter.host_reads}")
    assert r1v < 1e-4 and r1a < 1e-4, (r1v, r1a)
    assert rv < 1e-4 and ra < 1e-4, (rv, ra)
    if i2v:
        n0 = shape.height * shape.width
        assert torch.equal(v[:, :n0], pack_video(images[1]))


def test_hq_loops_have_no_host_syncs(tmp_path_factory):
    _, ours = tiny_pipeline("2.3", tmp_path_factory)
    shape = _hq_shape()
    s1 = half_shape(shape)
    tr = ours["transformer"]
    (vc, ac, m), (nvc, nac, nm) = _contexts(ours)
    v1n, a1n, v2n, a2n = hq_noise(3, shape)
    _, cond1 = condition_first_frame(torch.zeros(s1.video_packed), _image_latent(s1), s1)
    den1 = ConditionedDenoiser(tr, vc, ac, m, nvc, nac, nm, rope=positions(tr, s1), video=HQ_GUIDANCE[0],
                                  audio=HQ_GUIDANCE[1], strategy="split", condition=cond1)
    sig = ltx2_sigmas(2, tokens=s1.video_tokens)
    sampler = seeded_noise_sampler(3)
    sampler("step", 0, v1n), sampler("substep", 0, v1n)  # generators created outside the counted region
    counter = OpCount()
    with counter:
        v, a = stage1(den1, v1n, a1n, sig, noise_sampler=sampler, condition=cond1)
    assert counter.host_reads == 0
    up = upsample_stage1(_upsampler(), v, s1, ours["vae"].latents_mean, ours["vae"].latents_std)
    assert up.shape == shape.video_packed
    den2 = ConditionedDenoiser(tr, vc, ac, m, rope=positions(tr, shape))
    counter = OpCount()
    with counter:
        v2, a2 = stage2(den2, up, a, v2n, a2n, noise_sampler=reference_noise_sampler())
    assert counter.host_reads == 0
    assert v2.shape == shape.video_packed and a2.shape == shape.audio_packed
    assert torch.isfinite(v2).all() and torch.isfinite(a2).all()


def test_hq_seed_controls_sde_noise(tmp_path_factory):
    _, ours = tiny_pipeline("2.3", tmp_path_factory)
    shape = _hq_shape()
    tr = ours["transformer"]
    pos, neg = _contexts(ours)
    up = _upsampler()
    kw = dict(positive=pos, negative=neg, shape=shape, steps=2)
    noise = hq_noise(0, shape)
    mean, std = ours["vae"].latents_mean, ours["vae"].latents_std
    # same explicit noise, different seeds: "seeded" SDE noise differs, "reference" does not
    a = run_hq(tr, up, mean, std, seed=1, noise=noise, **kw)[0]
    b = run_hq(tr, up, mean, std, seed=2, noise=noise, **kw)[0]
    c = run_hq(tr, up, mean, std, seed=1, noise=noise, sde_noise="reference", **kw)[0]
    d = run_hq(tr, up, mean, std, seed=2, noise=noise, sde_noise="reference", **kw)[0]
    assert rel(a, b) > 1e-3
    assert torch.equal(c, d)
    with pytest.raises(ValueError, match="sde_noise"):
        run_hq(tr, up, mean, std, seed=1, sde_noise="nope", **kw)


def test_stage2_partial_strength_replaces_then_noises():
    """Stage-2 start with a strength-0.5 frame: tokens replaced by the image, then noised by s0 * mask."""
    shape = latent_shape(9, 32, 64, video_channels=4, audio_channels=2, mel_bins=2)
    g = torch.Generator().manual_seed(0)
    up, img, vn = (torch.randn(s, generator=g) for s in (shape.video_packed, (1, 4, 1, 1, 2), shape.video_packed))
    _, cond = condition_first_frame(up, img, shape, strength=0.5)
    seen = {}

    def model(x, sigma):
        seen.setdefault("x", x[0].clone())
        return x

    a = torch.zeros(shape.audio_packed)
    stage2(model, up, a, vn, torch.zeros_like(a), noise_sampler=reference_noise_sampler(), condition=cond)
    s0 = STAGE2_SIGMAS[0]
    tok = pack_video(img)
    want = torch.cat([vn[:, :2] * (0.5 * s0) + tok * (1 - 0.5 * s0), vn[:, 2:] * s0 + up[:, 2:] * (1 - s0)], dim=1)
    assert torch.allclose(seen["x"], want, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# 3. Keyframes (appended tokens) against ltx-core's own conditioning items and positions


def _core_video_state(tr, sh, imgs, strength, frame_idx, ropes, initial=None):
    """ltx-core's conditioned video state: ``VideoLatentTools`` initial state (optionally from ``initial``), the
    first frame (``VideoConditionByLatentIndex``) and a keyframe (``VideoConditionByKeyframeIndex``); registers
    the rotary tables of ltx-core's positions in ``ropes`` (keyed by token count). Returns (tools, state)."""
    from ltx_core.components.patchifiers import VideoLatentPatchifier
    from ltx_core.conditioning import VideoConditionByKeyframeIndex, VideoConditionByLatentIndex
    from ltx_core.tools import VideoLatentShape, VideoLatentTools

    tools = VideoLatentTools(VideoLatentPatchifier(1), VideoLatentShape(1, sh.video_channels, sh.frames, sh.height,
                                                                       sh.width), sh.fps)
    st = tools.create_initial_state("cpu", torch.float32, initial)
    st = VideoConditionByLatentIndex(latent=imgs[0], strength=strength, latent_idx=0).apply_to(st, tools)
    st = VideoConditionByKeyframeIndex(keyframes=imgs[1], frame_idx=frame_idx, strength=strength).apply_to(st, tools)
    assert st.attention_mask is None
    ropes[st.latent.shape[1]] = tr.rope(st.positions.float(), tr.audio_coords(1, sh.audio_frames))
    return tools, st


def _core_audio_state(latent):
    from ltx_core.types import LatentState

    return LatentState(latent=latent.clone(), denoise_mask=torch.ones(*latent.shape[:2], 1),
                       positions=torch.zeros(1), clean_latent=latent.clone())


def _core_conditioned(tr, seed, strength, frame_idx):
    """(X0 adapter whose rotary tables come from ltx-core's positions, GaussianNoiser on a CPU generator seeded
    with ``seed``, a ``video_state(shape, (first, keyframe), initial=None)`` builder)."""
    from ltx_core.components.noisers import GaussianNoiser

    ropes = {}

    def video_state(sh, imgs, initial=None):
        return _core_video_state(tr, sh, imgs, strength, frame_idx, ropes, initial)

    return CoreX0(tr, ropes), GaussianNoiser(torch.Generator("cpu").manual_seed(seed)), video_state


def _hq_keyframe_reference(ours, upsampler, shape, seed, steps, first, keyframe, frame_idx, strength):
    """The HQ flow with ltx-core building the conditioned states: ``VideoLatentTools`` (initial state and
    positions), ``VideoConditionByLatentIndex`` (frame 0) and ``VideoConditionByKeyframeIndex`` (appended),
    ``GaussianNoiser`` over the grown state, ``clear_conditioning`` after each stage. The video rotary tables
    come from ltx-core's positions (not ours)."""
    tr = ours["transformer"]
    s1 = half_shape(shape)
    (vc, ac, m), (nvc, nac, _) = _contexts(ours)
    model, noiser, video_state = _core_conditioned(tr, seed, strength, frame_idx)
    audio_state = _core_audio_state

    tools1, vs = video_state(s1, (first[0], keyframe[0]))
    vs = noiser(vs, 1.0)
    as_ = noiser(audio_state(torch.zeros(s1.audio_packed)), 1.0)
    vs, as_ = _core_stage1(model, vs, as_, s1, steps, (vc, ac, nvc, nac))
    up = _core_upsample(ours, tools1.clear_conditioning(vs).latent, s1, upsampler)
    s0 = STAGE2_SIGMAS[0]
    tools2, vs2 = video_state(shape, (first[1], keyframe[1]), initial=up)
    vs2 = noiser(vs2, s0)
    as2 = noiser(audio_state(as_.latent), s0)
    vs2, as2 = _core_stage2(model, vs2, as2, vc, ac)
    return tools2.clear_conditioning(vs2).latent, as2.latent


@pytest.mark.skipif(not ltx_oracles_available(), reason="ltx-core / ltx-pipelines not installed")
@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_hq_keyframes_match_ltx_core(strength, tmp_path_factory):
    """First frame + a keyframe at pixel frame 8 (appended tokens with their own positions), both stages."""
    _, ours = tiny_pipeline("2.3", tmp_path_factory)
    shape = _hq_shape()
    s1 = half_shape(shape)
    upsampler = _upsampler()
    seed, frame_idx = 99, 8
    first = (_image_latent(s1, 31), _image_latent(shape, 32))
    key = (_image_latent(s1, 33), _image_latent(shape, 34))
    ref_v, ref_a = _hq_keyframe_reference(ours, upsampler, shape, seed, HQ_STEPS, first, key, frame_idx, strength)

    (vc, ac, m), (nvc, nac, nm) = _contexts(ours)
    images = [(ImageLatent(first[0], 0, strength), ImageLatent(first[1], 0, strength)),
              (ImageLatent(key[0], frame_idx, strength), ImageLatent(key[1], frame_idx, strength))]
    v, a = run_hq(ours["transformer"], upsampler, ours["vae"].latents_mean, ours["vae"].latents_std,
                     positive=(vc, ac, m), negative=(nvc, nac, nm), shape=shape, seed=seed, steps=HQ_STEPS,
                     images=images, sde_noise="reference")
    rv, ra = rel(v, ref_v), rel(a, ref_a)
    print(f"HQ keyframes (strength {strength}) vs ltx-core: video {rv:.2e} audio {ra:.2e}")
    assert v.shape == shape.video_packed
    assert rv < 1e-4 and ra < 1e-4, (rv, ra)


def test_keyframe_positions_and_condition():
    """Appended tokens: mask 1 - strength, their own clean tokens, time moved by the pixel frame index."""
    from comfyui_cosmos3_ltx2.ltx2.transformer import keyframe_coords, video_coords

    shape = latent_shape(17, 64, 96, 25.0, video_channels=4, audio_channels=2, mel_bins=2)
    tr = SimpleNamespace(keyframe_coords=lambda b, f, h, w, i, fps, device=None: keyframe_coords(
        b, f, h, w, i, fps=fps, device=device))
    g = torch.Generator().manual_seed(0)
    first, key = torch.randn(1, 4, 1, 2, 3, generator=g), torch.randn(1, 4, 1, 2, 3, generator=g)
    cond = build_condition(shape, [ImageLatent(first, 0, 1.0), ImageLatent(key, 13, 0.75)], tr)
    n, k = shape.video_tokens, 6
    assert cond.appended == k and cond.replaced == 6 and cond.mask.shape == (1, n + k, 1)
    assert torch.equal(cond.mask[0, :6, 0], torch.zeros(6)) and torch.equal(cond.mask[0, 6:n, 0], torch.ones(n - 6))
    assert torch.equal(cond.mask[0, n:, 0], torch.full((k,), 0.25))
    assert torch.equal(cond.clean[:, n:], pack_video(key)) and torch.equal(cond.clean[:, :6], pack_video(first))
    kc = cond.keyframe_coords
    assert torch.equal(kc[0, 0, :, 0], torch.full((k,), 13 / 25.0)) and torch.equal(kc[0, 0, :, 1], torch.full((k,), 21 / 25.0))
    assert torch.equal(kc[:, 1:], video_coords(1, 1, 2, 3, fps=25.0)[:, 1:])  # same spatial grid as frame 0
    with pytest.raises(ValueError, match="frame-0 image before"):
        build_condition(shape, [ImageLatent(key, 13), ImageLatent(first, 0)], tr)
    with pytest.raises(ValueError, match="strength"):
        build_condition(shape, [ImageLatent(key, 13, 1.5)], tr)
    with pytest.raises(ValueError, match="images\\[0\\]"):
        build_condition(shape, [ImageLatent(torch.zeros(1, 4, 1, 4, 4), 13)], tr)
    assert strip_appended(torch.zeros(1, n + k, 4), shape).shape == (1, n, 4)


@pytest.mark.parametrize("strengths", [(1.0,), (0.7,), (0.7, 0.7), (1.0, 0.3, 0.9), (None, 0.0), (None, 1.0, 0.6)])
def test_condition_levels_are_the_mask_values(strengths):
    """The builders know the mask's distinct values (so the denoiser reads nothing back from the device):
    they are exactly ``torch.unique`` of the mask, whatever the strengths (None = no frame-0 image), also
    for a one-frame latent that the image fills entirely."""
    from comfyui_cosmos3_ltx2.ltx2.transformer import keyframe_coords

    tr = SimpleNamespace(keyframe_coords=lambda b, f, h, w, i, fps, device=None: keyframe_coords(
        b, f, h, w, i, fps=fps, device=device))
    g = torch.Generator().manual_seed(1)
    for frames in (17, 1):
        shape = latent_shape(frames, 64, 96, 25.0, video_channels=4, audio_channels=2, mel_bins=2)
        images = [ImageLatent(torch.randn(1, 4, 1, 2, 3, generator=g), 0 if i == 0 else 8 * i, s)
                  for i, s in enumerate(strengths) if s is not None]
        cond = build_condition(shape, images, tr)
        assert cond.levels == tuple(torch.unique(cond.mask).tolist()), (frames, cond.levels)


def test_token_timesteps_equal_per_token_timesteps(tmp_path_factory):
    """Conditioned tokens as timestep levels + index: the timestep MLP sees K rows, not S, and the velocities
    equal the per-token [B, S] path up to the MLP's float rounding."""
    from comfyui_cosmos3_ltx2.ltx2.transformer import TokenTimesteps

    _, ours = tiny_pipeline("2.3", tmp_path_factory)
    tr = ours["transformer"]
    shape = _hq_shape()
    (vc, ac, m), _ = _contexts(ours)
    g = torch.Generator().manual_seed(4)
    vx, ax = torch.randn(shape.video_packed, generator=g), torch.randn(shape.audio_packed, generator=g)
    levels = torch.tensor([[0.0, 0.4, 1.0]])
    index = torch.randint(0, 3, (1, shape.video_tokens), generator=g)
    sigma = 0.7
    rows = []
    hook = tr.time_embed.linear.register_forward_hook(lambda mod, a, o: rows.append(a[0].shape[0]))
    try:
        rope = positions(tr, shape)
        want = tr(vx, ax, vc, ac, sigma, timestep=torch.gather(levels, 1, index) * sigma, rope=rope)
        got = tr(vx, ax, vc, ac, sigma, timestep=TokenTimesteps(levels * sigma, index), rope=rope)
    finally:
        hook.remove()
    assert rows == [shape.video_tokens, 3]
    for a, b in zip(got, want):
        assert rel(a, b) < 1e-6, rel(a, b)
    # the legacy cross-modal timestep (each token's own) falls back to the per-token path
    legacy = tr(vx, ax, vc, ac, sigma, timestep=TokenTimesteps(levels * sigma, index), rope=rope,
                use_cross_timestep=False)
    ref = tr(vx, ax, vc, ac, sigma, timestep=torch.gather(levels, 1, index) * sigma, rope=rope,
             use_cross_timestep=False)
    assert all(torch.equal(a, b) for a, b in zip(legacy, ref))


@pytest.mark.skipif(not ltx_oracles_available(), reason="ltx-core / ltx-pipelines not installed")
def test_distilled_flow_matches_ltx_core(tmp_path_factory):
    """run_distilled (first frame + keyframe at strength 0.7) against ltx-pipelines' DistilledPipeline order
    built from ltx-core parts: conditioning items, GaussianNoiser, euler_denoising_loop with
    simple_denoising_func over DISTILLED_SIGMA_VALUES, upsample_video, stage 2 over the stage-2 sigmas."""
    from ltx_core.components.diffusion_steps import EulerDiffusionStep
    from ltx_pipelines.utils.constants import DISTILLED_SIGMA_VALUES, STAGE_2_DISTILLED_SIGMA_VALUES
    from ltx_pipelines.utils.helpers import simple_denoising_func
    from ltx_pipelines.utils.samplers import euler_denoising_loop

    _, ours = tiny_pipeline("2.3", tmp_path_factory)
    tr = ours["transformer"]
    shape = _hq_shape()
    s1 = half_shape(shape)
    upsampler = _upsampler()
    seed, frame_idx, strength = 7, 8, 0.7
    first = (_image_latent(s1, 41), _image_latent(shape, 42))
    key = (_image_latent(s1, 43), _image_latent(shape, 44))
    (vc, ac, m), _ = _contexts(ours)

    model, noiser, video_state = _core_conditioned(tr, seed, strength, frame_idx)
    audio_state = _core_audio_state

    den = simple_denoising_func(video_context=vc, audio_context=ac, transformer=model)
    tools1, vs = video_state(s1, (first[0], key[0]))
    vs = noiser(vs, 1.0)
    as_ = noiser(audio_state(torch.zeros(s1.audio_packed)), 1.0)
    vs, as_ = euler_denoising_loop(sigmas=torch.tensor(DISTILLED_SIGMA_VALUES), video_state=vs, audio_state=as_,
                                   stepper=EulerDiffusionStep(), denoise_fn=den)
    up = _core_upsample(ours, tools1.clear_conditioning(vs).latent, s1, upsampler)
    sig2 = torch.tensor(STAGE_2_DISTILLED_SIGMA_VALUES)
    tools2, vs2 = video_state(shape, (first[1], key[1]), initial=up)
    vs2 = noiser(vs2, sig2[0])
    as2 = noiser(audio_state(as_.latent), sig2[0])
    vs2, as2 = euler_denoising_loop(sigmas=sig2, video_state=vs2, audio_state=as2, stepper=EulerDiffusionStep(),
                                    denoise_fn=den)
    ref_v, ref_a = tools2.clear_conditioning(vs2).latent, as2.latent

    images = [(ImageLatent(first[0], 0, strength), ImageLatent(first[1], 0, strength)),
              (ImageLatent(key[0], frame_idx, strength), ImageLatent(key[1], frame_idx, strength))]
    stages = []
    v, a = run_distilled(tr, upsampler, ours["vae"].latents_mean, ours["vae"].latents_std, positive=(vc, ac, m),
                            shape=shape, seed=seed, images=images, callback=lambda st, d: stages.append(st))
    assert stages == ["stage1"] * 8 + ["stage2"] * 3
    rv, ra = rel(v, ref_v), rel(a, ref_a)
    print(f"distilled flow vs ltx-core: video {rv:.2e} audio {ra:.2e}")
    assert v.shape == shape.video_packed and rv < 1e-4 and ra < 1e-4, (rv, ra)
