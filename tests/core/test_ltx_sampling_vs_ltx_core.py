"""LTX-2.3 sampling pieces (schedule, res_2s + SDE noise, multi-pass guidance) against ltx-core /
ltx-pipelines 1.0.0 used as oracles, CPU, float64 unless stated.

The oracle packages need torchaudio at import time (audio VAE module pulled in by package __init__s); when it
is not installed an empty stand-in module is registered in this test process only (nothing here uses audio I/O).
Parity metric for samples: max |ours - reference| / max |reference|.
"""

import math
import types

import pytest
import torch

from comfyui_cosmos3_ltx2.core.guidance import (
    MultipassGuider,
    multipass_guidance,
    needed_passes,
    skips_step,
)
from comfyui_cosmos3_ltx2.core.sampling.ltx_schedule import (
    DISTILLED_SIGMAS,
    STAGE2_DISTILLED_SIGMAS,
    ltx2_sigmas,
)
from comfyui_cosmos3_ltx2.core.sampling.res2s import (
    RES2S_TERMINAL_SIGMA,
    reference_noise_sampler,
    res2s_coefficients,
    sample_res2s,
    sde_coefficients,
    sde_step,
    seeded_noise_sampler,
    standardized_noise,
)
from helpers.ltx_oracle import ltx_oracles_available
from helpers.measures import rel
from helpers.op_count import OpCount


def _import_oracles():
    if not ltx_oracles_available():
        return None
    from ltx_core.components.diffusion_steps import Res2sDiffusionStep
    from ltx_core.components.guiders import MultiModalGuider, MultiModalGuiderParams
    from ltx_core.components.schedulers import LTX2Scheduler
    from ltx_core.types import LatentState
    from ltx_pipelines.utils import constants as lp_constants
    from ltx_pipelines.utils.res2s import get_res2s_coefficients
    from ltx_pipelines.utils.samplers import _get_new_noise, res2s_audio_video_denoising_loop

    return types.SimpleNamespace(**locals())


REF = _import_oracles()
needs_ref = pytest.mark.skipif(REF is None, reason="ltx-core / ltx-pipelines 1.0.0 not installed")


# --------------------------------------------------------------------------------------------------
# schedules
# --------------------------------------------------------------------------------------------------
@needs_ref
@pytest.mark.parametrize("steps", [2, 3, 8, 15, 20, 30, 40])
@pytest.mark.parametrize("tokens", [None, 1, 1024, 4096, 8160, 32640])
@pytest.mark.parametrize("stretch", [True, False])
def test_ltx2_sigmas_match_scheduler(steps, tokens, stretch):
    latent = None if tokens is None else torch.zeros(1, 1, tokens, 1, 1)
    ref = REF.LTX2Scheduler().execute(steps, latent=latent, stretch=stretch).tolist()
    ours = ltx2_sigmas(steps, tokens, stretch=stretch)
    assert ours == ref  # identical float32 values
    assert all(type(s) is float for s in ours)
    # quirk: the official float32 math can put the first sigma 1 ulp-ish below 1.0 (e.g. 0.99999952)
    assert abs(ours[0] - 1.0) < 1e-6 and ours[-1] == 0.0


def test_ltx2_sigmas_documented_values():
    hq = ltx2_sigmas(15, 16 * 17 * 30)
    want = [1.0, 0.9935, 0.9860, 0.9773, 0.9672, 0.9550, 0.9403, 0.9221, 0.8991, 0.8689, 0.8277, 0.7680,
            0.6739, 0.5034, 0.1, 0.0]
    assert max(abs(a - b) for a, b in zip(hq, want)) < 6e-5
    s30 = ltx2_sigmas(30)
    assert [round(v, 4) for v in s30[-4:]] == [0.3875, 0.2661, 0.1, 0.0]
    with pytest.raises(ValueError, match="terminal"):
        ltx2_sigmas(1, 1024)  # the official scheduler returns NaNs here


@needs_ref
def test_distilled_constants():
    assert list(DISTILLED_SIGMAS) == REF.lp_constants.DISTILLED_SIGMA_VALUES
    assert list(STAGE2_DISTILLED_SIGMAS) == REF.lp_constants.STAGE_2_DISTILLED_SIGMA_VALUES


# --------------------------------------------------------------------------------------------------
# res2s coefficients and the SDE step
# --------------------------------------------------------------------------------------------------
@needs_ref
def test_res2s_coefficients_documented_and_sweep():
    a21, b1, b2 = res2s_coefficients(-math.log(0.9934906959533691))
    assert (round(a21, 4), round(b1, 5), round(b2, 4)) == (0.4992, -0.00108, 0.9978)
    h = -math.log(0.725 / 0.909375)
    a21, b1, b2 = res2s_coefficients(h)
    assert (round(h, 4), round(a21, 4), round(b1, 4), round(b2, 4)) == (0.2266, 0.4727, -0.0338, 0.9286)
    assert round(math.sqrt(0.725 * 0.909375), 3) == 0.812
    hs = [0.0, 1e-12, 1e-9, 1e-6, 1e-3, 0.0065, 0.1, 0.2266, 0.5, 0.5415, 1.0, 2.0, 5.949, 10.0, 30.0]
    for h in hs:
        for c2 in (0.5, 0.3):
            assert res2s_coefficients(h, c2) == REF.get_res2s_coefficients(h, {}, c2), (h, c2)


@needs_ref
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sde_coefficients_match(dtype):
    for sn in [0.0, 1e-4, RES2S_TERMINAL_SIGMA, 0.05, 0.1, 0.3, 0.5033778548240662, 0.812, 0.9935, 1.0]:
        t = torch.tensor(sn, dtype=dtype)
        ref = [v.item() for v in REF.Res2sDiffusionStep.get_sde_coeff(t, sigma_up=t * 0.5)]
        ours = sde_coefficients(sn, 0.5, float32=dtype == torch.float32)
        assert list(ours) == ref, sn
        alpha, down, up = ours
        if dtype == torch.float64:
            assert abs((down * alpha) ** 2 + up**2 - sn**2) < 1e-15


@needs_ref
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sde_step_matches_res2s_step(dtype):
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 6, 5, generator=g, dtype=torch.float64)
    x_det = torch.randn(2, 6, 5, generator=g, dtype=torch.float64)
    noise = torch.randn(2, 6, 5, generator=g, dtype=torch.float64)
    stepper = REF.Res2sDiffusionStep()
    for s, sn in [(1.0, 0.9935), (0.909375, 0.812), (0.5033778548240662, 0.1), (0.1, RES2S_TERMINAL_SIGMA),
                  (0.4, 0.0)]:
        sig = torch.tensor([s, sn], dtype=dtype)
        ref = stepper.step(sample=sample, denoised_sample=x_det, sigmas=sig, step_index=0, noise=noise)
        ours = sde_step(sample, x_det, s, sn, noise, 0.5, float32=dtype == torch.float32)
        assert ours.dtype == ref.dtype
        assert torch.equal(ours, ref), (s, sn, rel(ours, ref))


@needs_ref
def test_noise_matches_reference_generators():
    x = torch.zeros(1, 12, 8, dtype=torch.bfloat16)
    gen_step = torch.Generator().manual_seed(-1)
    gen_sub = torch.Generator().manual_seed(9999)
    ns = reference_noise_sampler()
    for i in range(3):
        assert torch.equal(ns("substep", i, x), REF._get_new_noise(x, gen_sub))
        assert torch.equal(ns("step", i, x), REF._get_new_noise(x, gen_step))
    z = standardized_noise((2, 12, 8), torch.Generator().manual_seed(3))
    assert z.dtype == torch.float64
    assert torch.allclose(z.mean(dim=(-2, -1)), torch.zeros(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(z.std(dim=(-2, -1)), torch.ones(2, dtype=torch.float64), atol=1e-12)


# --------------------------------------------------------------------------------------------------
# whole res2s loop vs ltx-pipelines' res2s_audio_video_denoising_loop
# --------------------------------------------------------------------------------------------------
def f_video(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Deterministic smooth stand-in for a guided denoiser (x0 from x and sigma)."""
    return torch.tanh(0.8 * x) * (1.0 - 0.5 * sigma) + 0.1 * torch.sin(3.0 * x + sigma)


def f_audio(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return 0.7 * torch.atan(x) * (1.0 - sigma * sigma) - 0.05 * x * sigma


def _reference_run(sigmas, v, a, model_dtype, vmask=None, vclean=None):
    calls = []

    def denoise_fn(video_state, audio_state, sigmas, step_index):
        s = float(sigmas[step_index])
        calls.append((s, video_state.latent.clone(), audio_state.latent.clone()))
        return f_video(video_state.latent, s), f_audio(audio_state.latent, s)

    def state(x, mask=None, clean=None):
        mask = torch.ones(x.shape[0], x.shape[1], 1) if mask is None else mask
        clean = torch.zeros_like(x) if clean is None else clean
        return REF.LatentState(latent=x.clone(), denoise_mask=mask, positions=torch.zeros(1), clean_latent=clean)

    vs, as_ = REF.res2s_audio_video_denoising_loop(
        sigmas=torch.tensor(sigmas, dtype=torch.float32),
        video_state=state(v, vmask, vclean),
        audio_state=state(a),
        stepper=REF.Res2sDiffusionStep(),
        denoise_fn=denoise_fn,
        model_dtype=model_dtype,
    )
    return vs.latent, as_.latent, calls


def _our_run(sigmas, v, a, model_dtype, vmask=None, vclean=None, **kw):
    calls = []

    def model(x, sigma):
        xv, xa = x
        calls.append((sigma, xv.clone(), xa.clone()))
        return f_video(xv, sigma), f_audio(xa, sigma)

    extra = {}
    if vmask is not None:
        extra = dict(denoise_mask=(vmask, None), clean_latent=(vclean, None))
    out = sample_res2s(model, (v, a), sigmas, noise_sampler=reference_noise_sampler(), model_dtype=model_dtype,
                       **extra, **kw)
    return out[0], out[1], calls


def _inputs(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(1, 24, 16, generator=g, dtype=torch.float64).to(dtype)
    a = torch.randn(1, 10, 8, generator=g, dtype=torch.float64).to(dtype)
    return v, a


def f32(values):
    """The official pipelines hold every schedule in a float32 tensor; pass the same values."""
    return torch.tensor(values, dtype=torch.float32).tolist()


SCHEDULES = {
    "hq15": ltx2_sigmas(15, 16 * 17 * 30),
    "stage2": f32(STAGE2_DISTILLED_SIGMAS),
    "distilled": f32(DISTILLED_SIGMAS),
    "no_terminal_zero": f32([0.909375, 0.725, 0.421875]),
}


@needs_ref
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_res2s_loop_matches_reference_float64(name):
    sigmas = SCHEDULES[name]
    v, a = _inputs()
    rv, ra, rcalls = _reference_run(sigmas, v, a, torch.float64)
    ov, oa, ocalls = _our_run(sigmas, v, a, torch.float64)
    n = len(sigmas) - 1
    assert len(ocalls) == len(rcalls) == 2 * n + (1 if sigmas[-1] == 0.0 else 0)
    worst = 0.0
    for (rs, rxv, rxa), (os_, oxv, oxa) in zip(rcalls, ocalls):
        assert os_ == rs  # the model sees the same sigma floats (incl. midpoints and 0.0011)
        worst = max(worst, rel(oxv, rxv), rel(oxa, rxa))
    worst = max(worst, rel(ov, rv), rel(oa, ra))
    print(f"res2s {name}: max relative difference over all model inputs and outputs {worst:.3g}")
    assert ov.dtype == rv.dtype == torch.float64
    assert worst < 1e-10, worst


@needs_ref
def test_res2s_loop_matches_reference_with_mask_bf16():
    sigmas = SCHEDULES["stage2"]
    v, a = _inputs(torch.bfloat16, seed=1)
    vmask = torch.ones(1, 24, 1)
    vmask[:, :6] = 0.0
    vclean = torch.randn(1, 24, 16, generator=torch.Generator().manual_seed(5)).to(torch.bfloat16)
    rv, ra, rcalls = _reference_run(sigmas, v, a, torch.bfloat16, vmask, vclean)
    ov, oa, ocalls = _our_run(sigmas, v, a, torch.bfloat16, vmask, vclean)
    assert ov.dtype == torch.bfloat16 and oa.dtype == torch.bfloat16
    for (rs, rxv, rxa), (os_, oxv, oxa) in zip(rcalls, ocalls):
        assert os_ == rs
        assert torch.equal(oxv, rxv) and torch.equal(oxa, rxa)
    assert torch.equal(ov, rv) and torch.equal(oa, ra)
    assert torch.equal(ov[:, :6], vclean[:, :6])


def test_res2s_single_tensor_callback_and_final_denoise_off():
    sigmas = SCHEDULES["stage2"]
    x = _inputs()[0]
    seen = []
    calls = []

    def model(x, sigma):
        calls.append(sigma)
        return f_video(x, sigma)

    out = sample_res2s(model, x, sigmas, callback=seen.append, noise_sampler=seeded_noise_sampler(7))
    assert isinstance(out, torch.Tensor) and out.shape == x.shape
    assert [d["i"] for d in seen] == [0, 1, 2]
    assert seen[-1]["sigma_next"] == 0.0 and seen[-1]["x"] is out
    assert calls[-1] == RES2S_TERMINAL_SIGMA and len(calls) == 7
    assert set(seen[0]) == {"i", "x", "sigma", "sigma_hat", "sigma_next", "denoised"}

    calls.clear()
    inputs = []
    out2 = sample_res2s(lambda x, s: inputs.append(x) or model(x, s), x, sigmas,
                        noise_sampler=seeded_noise_sampler(7), final_denoise=False)
    assert len(calls) == 5 and calls[-1] == sigmas[-2]
    assert torch.equal(out2, f_video(inputs[-1], sigmas[-2]))  # the last step returns its x0

    def bad(d):
        raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        sample_res2s(model, x, sigmas, callback=bad, noise_sampler=seeded_noise_sampler(7))

    det1 = sample_res2s(model, x, sigmas, eta=0.0)
    det2 = sample_res2s(model, x, sigmas, eta=0.0)
    assert torch.equal(det1, det2)
    with pytest.raises(ValueError, match="noise_sampler"):
        sample_res2s(model, x, sigmas)
    with pytest.raises(ValueError, match="decreasing"):
        sample_res2s(model, x, [0.9, 0.9, 0.0], eta=0.0)


def test_user_seed_drives_sde_noise():
    sigmas = SCHEDULES["hq15"][:6] + [0.0]
    v, a = _inputs()

    def model(x, sigma):
        return f_video(x[0], sigma), f_audio(x[1], sigma)

    def run(ns):
        return sample_res2s(model, (v, a), sigmas, noise_sampler=ns)

    r1, r1b, r2 = run(seeded_noise_sampler(1)), run(seeded_noise_sampler(1)), run(seeded_noise_sampler(2))
    assert torch.equal(r1[0], r1b[0]) and torch.equal(r1[1], r1b[1])
    assert rel(r1[0], r2[0]) > 1e-3 and rel(r1[1], r2[1]) > 1e-3
    ref = run(reference_noise_sampler())
    same = run(seeded_noise_sampler(-1))
    assert torch.equal(ref[0], same[0]) and torch.equal(ref[1], same[1])
    assert torch.equal(run(seeded_noise_sampler(2**64 - 1))[0], ref[0])


def test_res2s_loop_makes_no_host_syncs():
    sigmas = SCHEDULES["hq15"]
    v, a = _inputs(torch.float32)

    def model(x, sigma):
        return f_video(x[0], sigma), f_audio(x[1], sigma)

    ns = seeded_noise_sampler(123)
    with OpCount() as counter:
        out = sample_res2s(model, (v, a), sigmas, noise_sampler=ns, callback=lambda d: None)
    assert counter.host_reads == 0
    assert out[0].dtype == torch.float32 and torch.isfinite(out[0]).all()


# --------------------------------------------------------------------------------------------------
# guidance
# --------------------------------------------------------------------------------------------------
GUIDE_CASES = [
    dict(cfg=3.0, stg=1.0, modality=3.0, rescale=0.7),
    dict(cfg=3.0, stg=0.0, modality=3.0, rescale=0.45),
    dict(cfg=7.0, stg=0.0, modality=3.0, rescale=1.0),
    dict(cfg=3.0, stg=1.0, modality=1.0, rescale=0.0),
    dict(cfg=1.0, stg=0.0, modality=1.0, rescale=0.0),
]


@needs_ref
@pytest.mark.parametrize("case", GUIDE_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_multipass_guidance_matches_guider(case, dtype):
    g = torch.Generator().manual_seed(11)
    c, u, p, m = (torch.randn(2, 30, 16, generator=g).to(dtype) for _ in range(4))
    params = REF.MultiModalGuiderParams(cfg_scale=case["cfg"], stg_scale=case["stg"],
                                        modality_scale=case["modality"], rescale_scale=case["rescale"])
    guider = REF.MultiModalGuider(params=params)
    passes = needed_passes(case["cfg"], case["stg"], case["modality"])
    want = ["cond"]
    want += ["neg"] if guider.do_unconditional_generation() else []
    want += ["perturbed"] if guider.do_perturbed_generation() else []
    want += ["modality"] if guider.do_isolated_modality_generation() else []
    assert passes == want
    # the official step passes 0.0 for a pass it did not run
    ref = guider.calculate(c, u if "neg" in passes else 0.0, p if "perturbed" in passes else 0.0,
                           m if "modality" in passes else 0.0)
    ours = multipass_guidance(c, u if "neg" in passes else None, p if "perturbed" in passes else None,
                              m if "modality" in passes else None, **case)
    assert ours.dtype == ref.dtype
    assert torch.equal(ours, ref)


def test_needed_passes_and_skip_step():
    assert needed_passes(1.0, 0.0, 1.0) == ["cond"]
    assert needed_passes((3.0, 7.0), (0.0, 0.0), (3.0, 3.0)) == ["cond", "neg", "modality"]
    assert needed_passes((1.0, 7.0), (0.0, 1.0), (1.0, 1.0)) == ["cond", "neg", "perturbed"]
    with pytest.raises(ValueError, match="cfg"):
        multipass_guidance(torch.ones(2), cfg=3.0)
    assert [skips_step(i, 0) for i in range(4)] == [False] * 4
    assert [skips_step(i, 2) for i in range(7)] == [False, True, True, False, True, True, False]
    guider = MultipassGuider(cfg=3.0, skip_step=1)
    c, u = torch.randn(3, 4), torch.randn(3, 4)
    g0 = guider(0, c, u)
    assert guider.skips(1) and guider(1, None) is g0
    assert not guider.skips(2)
    assert torch.equal(guider(2, u, c), multipass_guidance(u, c, cfg=3.0))
