"""One-stage LTX-2 pipeline stages against diffusers' ``LTX2Pipeline`` (test-only oracle) on tiny random
models saved with ``save_pretrained``.

Both sides get the same precomputed Gemma hidden states (``prompt_embeds`` + masks, so no Gemma is
needed), the same explicit packed noise (oracle quirk Q1; diffusers normalises ``audio_latents``, so it
gets them de-normalised) and the same sigmas (diffusers runs a non-shifting FlowMatchEuler scheduler,
since its stock LTX-2 scheduler would re-shift any ``sigmas=``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from comfyui_cosmos3_ltx2.core.sampling.euler import sample_euler
from comfyui_cosmos3_ltx2.core.sampling.ltx_schedule import ltx2_sigmas
from comfyui_cosmos3_ltx2.ltx2.decoding import decode
from comfyui_cosmos3_ltx2.ltx2.denoiser import Guidance, LTX2Denoiser
from comfyui_cosmos3_ltx2.ltx2.latents import (
    latent_shape,
    pack_audio,
    pack_video,
    positions,
    unpack_audio,
    unpack_video,
)
from comfyui_cosmos3_ltx2.ltx2.text_encoding import encode_prompt
from helpers.ltx2_pipeline_ref import (
    FPS,
    FRAMES,
    HEIGHT,
    TEXT_LEN,
    WIDTH,
    gemma_prompts,
    packed_noise,
    tiny_pipeline,
    tiny_shape,
)
from helpers.measures import psnr, rel
from helpers.op_count import OpCount

diffusers = pytest.importorskip("diffusers")

STEPS = 6


# (video guidance, audio guidance)
GUIDANCE = {
    "cfg": (Guidance(cfg=3.0), Guidance(cfg=7.0)),
    "full": (Guidance(cfg=3.0, stg=1.0, stg_blocks=(1,), modality=3.0, rescale=0.7),
             Guidance(cfg=7.0, stg=1.0, stg_blocks=(1,), modality=3.0, rescale=0.7)),
}


def _denoiser(ours, shape, guidance, strategy, prompt_seed=0, **kw):
    pos, pos_mask, neg, neg_mask = gemma_prompts(prompt_seed)
    vctx, actx, mask = encode_prompt(ours["connectors"], pos, pos_mask)
    nvctx, nactx, nmask = encode_prompt(ours["connectors"], neg, neg_mask)
    rope = positions(ours["transformer"], shape)
    return LTX2Denoiser(ours["transformer"], vctx, actx, mask, nvctx, nactx, nmask, rope=rope,
                          video=guidance[0], audio=guidance[1], strategy=strategy, **kw)


def _reference(pipe, shape, guidance, video_noise, audio_noise, sigmas, output_type):
    pos, pos_mask, neg, neg_mask = gemma_prompts()
    vg, ag = guidance
    avae = pipe.audio_vae
    audio_in = audio_noise * avae.latents_std + avae.latents_mean  # diffusers normalises audio_latents
    return pipe(
        prompt_embeds=pos, prompt_attention_mask=pos_mask, negative_prompt_embeds=neg,
        negative_prompt_attention_mask=neg_mask, height=HEIGHT, width=WIDTH, num_frames=FRAMES, frame_rate=FPS,
        num_inference_steps=len(sigmas) - 1, sigmas=list(sigmas[:-1]),
        guidance_scale=vg.cfg, stg_scale=vg.stg, modality_scale=vg.modality, guidance_rescale=vg.rescale,
        audio_guidance_scale=ag.cfg, audio_stg_scale=ag.stg, audio_modality_scale=ag.modality,
        audio_guidance_rescale=ag.rescale, spatio_temporal_guidance_blocks=list(vg.stg_blocks) or None,
        latents=video_noise.clone(), audio_latents=audio_in, output_type=output_type, return_dict=False,
        max_sequence_length=TEXT_LEN,
    )


_RUNS: dict = {}


def _ours_run(variant, which, strategy, tmp_path_factory):
    key = (variant, which, strategy)
    if key not in _RUNS:
        _, ours = tiny_pipeline(variant, tmp_path_factory)
        shape = tiny_shape()
        vn, an = packed_noise(shape)
        sigmas = ltx2_sigmas(STEPS)
        model = _denoiser(ours, shape, GUIDANCE[which], strategy)
        counter = OpCount()
        with counter:
            v, a = sample_euler(model, (vn, an), sigmas)
        _RUNS[key] = (v, a, counter.host_reads, model)
    return _RUNS[key]


# --------------------------------------------------------------------------------------------------
# End to end against diffusers


@pytest.mark.parametrize("variant", ["2.3", "2.0"])
@pytest.mark.parametrize("which", ["cfg", "full"])
def test_latents_match_diffusers(variant, which, tmp_path_factory):
    pipe, ours = tiny_pipeline(variant, tmp_path_factory)
    shape = tiny_shape()
    vn, an = packed_noise(shape)
    sigmas = ltx2_sigmas(STEPS)
    v, a, syncs, model = _ours_run(variant, which, "batched", tmp_path_factory)
    assert syncs == 0
    want_v, want_a = _reference(pipe, shape, GUIDANCE[which], vn, an, sigmas, "latent")
    got_v = ours["vae"].denormalize_latents(unpack_video(v, shape.frames, shape.height, shape.width))
    got_a = ours["audio_vae"].denormalize_latents(unpack_audio(a, shape.audio_channels))
    rv, ra = rel(got_v, want_v), rel(got_a, want_a)
    print(f"{variant} {which}: video rel {rv:.2e}, audio rel {ra:.2e}")
    assert rv < 1e-4 and ra < 1e-4, (rv, ra)
    # the guidance does something: the result differs from the plain noise and between the settings
    assert rel(v, vn) > 1e-2


@pytest.mark.parametrize("variant", ["2.3", "2.0"])
def test_decoded_match_diffusers(variant, tmp_path_factory):
    pipe, ours = tiny_pipeline(variant, tmp_path_factory)
    shape = tiny_shape()
    vn, an = packed_noise(shape)
    sigmas = ltx2_sigmas(STEPS)
    v, a, _, _ = _ours_run(variant, "full", "batched", tmp_path_factory)
    frames, wave, rate = decode(ours["vae"], ours["audio_vae"], ours["vocoder"], v, a, shape)
    want_frames, want_wave = _reference(pipe, shape, GUIDANCE["full"], vn, an, sigmas, "np")
    want_frames = torch.from_numpy(np.asarray(want_frames))[0]
    assert frames.shape == (FRAMES, HEIGHT, WIDTH, 3) == tuple(want_frames.shape)
    assert frames.min() >= 0 and frames.max() <= 1
    frames_psnr = psnr(frames, want_frames)
    wave_err = (wave - want_wave.float()).abs().max().item()
    print(f"{variant}: frames PSNR {frames_psnr:.1f} dB, waveform max abs {wave_err:.2e}, rate {rate}")
    assert frames_psnr >= 40.0
    assert wave.shape == want_wave.shape
    assert wave_err < 1e-3
    assert rate == (48000 if variant == "2.3" else 24000)


# --------------------------------------------------------------------------------------------------
# Strategies, passes, syncs


@pytest.mark.parametrize("which", ["cfg", "full"])
def test_batched_equals_split(which, tmp_path_factory):
    vb, ab, sb, mb = _ours_run("2.3", which, "batched", tmp_path_factory)
    vs, as_, ss, ms = _ours_run("2.3", which, "split", tmp_path_factory)
    assert sb == 0 and ss == 0
    n = len(ms.passes)
    assert ms.calls() == n
    assert mb.calls() == 1  # every pass in one call, with per-sample switches
    rv, ra = rel(vb, vs), rel(ab, as_)
    print(f"batched vs split ({which}): video {rv:.2e}, audio {ra:.2e}")
    assert rv < 1e-5 and ra < 1e-5


def test_needed_passes_only(tmp_path_factory):
    _, ours = tiny_pipeline("2.3", tmp_path_factory)
    shape = tiny_shape()
    calls = []
    tr = ours["transformer"]
    # one output head per transformer call: its batch is the call's
    handle = tr.proj_out.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        vn, an = packed_noise(shape)
        for guidance, passes, batched_calls in (
            ((Guidance(), Guidance()), ["cond"], [1]),
            ((Guidance(cfg=3.0), Guidance()), ["cond", "neg"], [2]),
            ((Guidance(stg=1.0, stg_blocks=(0,)), Guidance()), ["cond", "perturbed"], [2]),
            ((Guidance(), Guidance(modality=2.0)), ["cond", "modality"], [2]),
            ((Guidance(cfg=3.0, stg=1.0, stg_blocks=(0,), modality=2.0), Guidance()),
             ["cond", "neg", "perturbed", "modality"], [4]),
        ):
            model = _denoiser(ours, shape, guidance, "batched")
            assert model.passes == passes
            calls.clear()
            model((vn, an), 0.7)
            assert calls == batched_calls
    finally:
        handle.remove()


@pytest.mark.parametrize("strategy", ["batched", "split"])
def test_no_host_syncs_for_any_pass_combination(strategy, tmp_path_factory):
    """Every subset of {cfg, stg, modality} (with and without rescale), two Euler steps: no scalar reads."""
    import itertools

    _, ours = tiny_pipeline("2.3", tmp_path_factory)
    shape = tiny_shape()
    vn, an = packed_noise(shape)
    sigmas = ltx2_sigmas(2)
    for cfg, stg, mod, rescale in itertools.product((1.0, 3.0), (0.0, 1.0), (1.0, 2.0), (0.0, 0.5)):
        g = Guidance(cfg=cfg, stg=stg, stg_blocks=(1,) if stg else (), modality=mod, rescale=rescale)
        model = _denoiser(ours, shape, (g, g), strategy)
        counter = OpCount()
        with counter:
            sample_euler(model, (vn, an), sigmas)
        assert counter.host_reads == 0, (g, counter.host_reads)


@pytest.mark.parametrize("strategy", ["split", "batched"])
def test_stg_pass_shares_the_conditional_prefix(strategy, tmp_path_factory):
    """Split passes: the STG pass starts at its first perturbed block from the conditional pass's states, with
    bit-identical numbers for fewer block evaluations. Batched: the STG rows ride in the one call, so there is
    nothing to share and the switch changes nothing."""
    _, ours = tiny_pipeline("2.3", tmp_path_factory)
    shape = tiny_shape()
    vn, an = packed_noise(shape)
    tr = ours["transformer"]
    calls = []
    hooks = [blk.register_forward_hook(lambda m, a, o, i=i: calls.append(i)) for i, blk in enumerate(tr.transformer_blocks)]
    try:
        out = {}
        for share in (False, True):
            model = _denoiser(ours, shape, GUIDANCE["full"], strategy, share_prefix=share)
            calls.clear()
            out[share] = model((vn, an), 0.7)
            out[share, "calls"] = len(calls)
    finally:
        for h in hooks:
            h.remove()
    if strategy == "split":
        assert out[True, "calls"] == out[False, "calls"] - 1  # the STG pass skips block 0 (stg_blocks=(1,))
    else:
        assert out[True, "calls"] == out[False, "calls"] == len(tr.transformer_blocks)
    for a, b in zip(out[True], out[False]):
        assert torch.equal(a, b)


def test_split_passes_share_one_set_of_adaln_tables(tmp_path_factory, monkeypatch):
    """All passes of an evaluation run at the same sigma, so the timestep MLPs run once per evaluation (per call
    batch size), not once per pass; each pass then equals a call that computes its own tables, bit for bit."""
    _, ours = tiny_pipeline("2.3", tmp_path_factory)
    shape = tiny_shape()
    vn, an = packed_noise(shape, seed=4)
    tr = ours["transformer"]
    model = _denoiser(ours, shape, GUIDANCE["full"], "split")
    made, prepared, heads = [], [], []
    cls = type(tr)
    original_tables, original_prepare, original_head = cls.time_conditioning, cls.prepare, cls.head

    def counting_tables(self, *a, **k):
        made.append(k["batch"])
        return original_tables(self, *a, **k)

    def recording_prepare(self, *a, **k):
        prepared.append((a, dict(k)))
        return original_prepare(self, *a, **k)

    def recording_head(self, *a, **k):
        out = original_head(self, *a, **k)
        heads.append(out)
        return out

    monkeypatch.setattr(cls, "time_conditioning", counting_tables)
    monkeypatch.setattr(cls, "prepare", recording_prepare)
    monkeypatch.setattr(cls, "head", recording_head)
    model((vn, an), 0.6)
    assert len(prepared) == len(heads) == len(model.passes) == 4 and made == [vn.shape[0]]
    assert all(k["conditioning"] is prepared[0][1]["conditioning"] for _, k in prepared)
    monkeypatch.undo()
    for (a, k), out in zip(prepared, heads):  # each pass equals a whole call that makes its own tables
        k = {key: v for key, v in k.items() if key not in ("conditioning", "batch", "device")}
        own = tr(vn, an, *a, **k)
        assert torch.equal(own[0], out[0]) and torch.equal(own[1], out[1])


def test_denoiser_single_step_matches_manual(tmp_path_factory):
    """The guided x0 equals the closed form over hand-run passes."""
    _, ours = tiny_pipeline("2.3", tmp_path_factory)
    shape = tiny_shape()
    vn, an = packed_noise(shape, seed=9)
    vg, ag = GUIDANCE["full"]
    model = _denoiser(ours, shape, GUIDANCE["full"], "split")
    got_v, got_a = model((vn, an), 0.6)
    tr = ours["transformer"]
    pos, pm, neg, nm = gemma_prompts()
    vc, ac, m = encode_prompt(ours["connectors"], pos, pm)
    nvc, nac, nmk = encode_prompt(ours["connectors"], neg, nm)
    rope = positions(tr, shape)
    s = 0.6

    def x0(out):
        return vn - s * out[0], an - s * out[1]

    c = x0(tr(vn, an, vc, ac, s, rope=rope, encoder_attention_mask=m, audio_encoder_attention_mask=m))
    u = x0(tr(vn, an, nvc, nac, s, rope=rope, encoder_attention_mask=nmk, audio_encoder_attention_mask=nmk))
    p = x0(tr(vn, an, vc, ac, s, rope=rope, encoder_attention_mask=m, audio_encoder_attention_mask=m,
              skip_video_self_attn_blocks=[1], skip_audio_self_attn_blocks=[1]))
    q = x0(tr(vn, an, vc, ac, s, rope=rope, encoder_attention_mask=m, audio_encoder_attention_mask=m,
              disable_a2v=True, disable_v2a=True))
    for i, (g, got) in enumerate(((vg, got_v), (ag, got_a))):
        pred = c[i] + (g.cfg - 1) * (c[i] - u[i]) + g.stg * (c[i] - p[i]) + (g.modality - 1) * (c[i] - q[i])
        f = g.rescale * c[i].std() / pred.std() + (1 - g.rescale)
        assert rel(got, pred * f) < 1e-5


# --------------------------------------------------------------------------------------------------
# Shapes, packing, errors


def test_latent_shape_and_packing():
    s = latent_shape(121, 512, 768, 24.0)
    assert (s.frames, s.height, s.width, s.audio_frames) == (16, 16, 24, 126)
    assert s.video_packed == (1, 16 * 16 * 24, 128) and s.audio_packed == (1, 126, 128)
    s2 = tiny_shape()
    assert (s2.frames, s2.height, s2.width, s2.audio_frames) == (5, 2, 3, 34)
    z = torch.randn(2, 16, 5, 2, 3)
    t = pack_video(z)
    assert t.shape == (2, 30, 16)
    assert torch.equal(t[1, 1 * 6 + 1 * 3 + 2], z[1, :, 1, 1, 2])  # token order (f, h, w)
    assert torch.equal(unpack_video(t, 5, 2, 3), z)
    za = torch.randn(2, 2, 34, 16)
    ta = pack_audio(za)
    assert torch.equal(ta[0, 3, 1 * 16 + 5], za[0, 1, 3, 5])  # feature c * M + m
    assert torch.equal(unpack_audio(ta, 2), za)


def test_packing_matches_diffusers():
    from diffusers import LTX2Pipeline

    z = torch.randn(1, 16, 5, 2, 3)
    assert torch.equal(pack_video(z), LTX2Pipeline._pack_latents(z, 1, 1))
    za = torch.randn(1, 2, 34, 16)
    assert torch.equal(pack_audio(za), LTX2Pipeline._pack_audio_latents(za))


@pytest.mark.parametrize("kwargs, field", [
    (dict(frames=32, height=64, width=96), "frames"),
    (dict(frames=33, height=100, width=96), "height"),
    (dict(frames=33, height=64, width=90), "width"),
    (dict(frames=0, height=64, width=96), "frames"),
])


def test_latent_shape_errors(kwargs, field):
    with pytest.raises(ValueError, match=field):
        latent_shape(**kwargs)


def test_guidance_errors(tmp_path_factory):
    _, ours = tiny_pipeline("2.3", tmp_path_factory)
    shape = tiny_shape()
    with pytest.raises(ValueError, match="stg_blocks"):
        _denoiser(ours, shape, (Guidance(stg=1.0), Guidance()), "batched")
    with pytest.raises(ValueError, match="stg_blocks"):
        _denoiser(ours, shape, (Guidance(stg=1.0, stg_blocks=(5,)), Guidance()), "batched")
    with pytest.raises(ValueError, match="strategy"):
        _denoiser(ours, shape, GUIDANCE["cfg"], "fast")
    rope = positions(ours["transformer"], shape)
    v = torch.zeros(1, 8, 64)
    with pytest.raises(ValueError, match="negative prompt"):
        LTX2Denoiser(ours["transformer"], v, v[..., :32], rope=rope, video=Guidance(cfg=2.0))


def test_each_guidance_term_matters(tmp_path_factory):
    """STG, modality isolation and rescale each change the guided x0 (none is a silent no-op)."""
    _, ours = tiny_pipeline("2.3", tmp_path_factory)
    shape = tiny_shape()
    vn, an = packed_noise(shape, seed=3)
    base = _denoiser(ours, shape, (Guidance(cfg=3.0), Guidance(cfg=3.0)), "split")((vn, an), 0.8)
    for v_g, a_g in (
        (Guidance(cfg=3.0, stg=1.0, stg_blocks=(1,)), Guidance(cfg=3.0, stg=1.0, stg_blocks=(1,))),
        (Guidance(cfg=3.0, modality=3.0), Guidance(cfg=3.0, modality=3.0)),
        (Guidance(cfg=3.0, rescale=0.7), Guidance(cfg=3.0, rescale=0.7)),
    ):
        got = _denoiser(ours, shape, (v_g, a_g), "split")((vn, an), 0.8)
        assert rel(got[0], base[0]) > 1e-3 and rel(got[1], base[1]) > 1e-3
    # a modality's own STG is off when its scale is 0: only the other stream is perturbed
    only_video = _denoiser(ours, shape, (Guidance(stg=1.0, stg_blocks=(1,)), Guidance()), "split")
    assert only_video.groups[1][4] == [{"skip_video_self_attn_blocks": (1,), "skip_audio_self_attn_blocks": ()}]


def test_batch_of_two_equals_single_runs(tmp_path_factory):
    """Batch 2 through the batched strategy equals two batch-1 runs (CFG without rescale, whose std is
    global over the batch as in ltx-core)."""
    _, ours = tiny_pipeline("2.3", tmp_path_factory)
    shape = latent_shape(FRAMES, HEIGHT, WIDTH, FPS, batch=2, video_channels=16, audio_channels=2, mel_bins=16)
    g = torch.Generator().manual_seed(11)
    vn, an = torch.randn(shape.video_packed, generator=g), torch.randn(shape.audio_packed, generator=g)
    sigmas = ltx2_sigmas(3)
    pos, pm, neg, nm = gemma_prompts()
    ctx = encode_prompt(ours["connectors"], torch.cat([pos, pos]), torch.cat([pm, pm]))
    nctx = encode_prompt(ours["connectors"], torch.cat([neg, neg]), torch.cat([nm, nm]))
    rope = positions(ours["transformer"], shape)
    guid = dict(video=Guidance(cfg=3.0, stg=1.0, stg_blocks=(0,)), audio=Guidance(cfg=7.0))
    model = LTX2Denoiser(ours["transformer"], *ctx, *nctx, rope=rope, **guid)
    steps = []
    v2, a2 = sample_euler(model, (vn, an), sigmas, callback=lambda d: steps.append(d["i"]))
    assert steps == [0, 1, 2]
    for i in range(2):
        single = LTX2Denoiser(ours["transformer"], *(t[i:i + 1] for t in ctx), *(t[i:i + 1] for t in nctx),
                                rope=rope, **guid)
        v1, a1 = sample_euler(single, (vn[i:i + 1], an[i:i + 1]), sigmas)
        assert rel(v2[i:i + 1], v1) < 1e-5 and rel(a2[i:i + 1], a1) < 1e-5


def test_decode_streaming_and_batch(tmp_path_factory):
    _, ours = tiny_pipeline("2.3", tmp_path_factory)
    shape = tiny_shape()
    vn, an = packed_noise(shape, seed=4)
    whole = decode(ours["vae"], ours["audio_vae"], ours["vocoder"], vn, an, shape)
    chunked = decode(ours["vae"], ours["audio_vae"], ours["vocoder"], vn, an, shape, temporal_chunk=2)
    assert (whole[0] - chunked[0]).abs().max() < 1e-5 and torch.equal(whole[1], chunked[1])
    v5 = unpack_video(vn, shape.frames, shape.height, shape.width)
    a4 = unpack_audio(an, shape.audio_channels)
    two = decode(ours["vae"], ours["audio_vae"], ours["vocoder"], torch.cat([v5, v5]), torch.cat([a4, a4]))
    assert two[0].shape == (2 * FRAMES, HEIGHT, WIDTH, 3) and two[1].shape[0] == 2
    assert torch.allclose(two[0][:FRAMES], whole[0], atol=1e-5)
    with pytest.raises(ValueError, match="LatentShape"):
        decode(ours["vae"], ours["audio_vae"], ours["vocoder"], vn, an)
