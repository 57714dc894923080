"""The pack's one seed rule (``core.noise``) and the contract every sampler keeps (``core.sampling.state``):
a tensor or a (video, audio) tuple as the state, the model called in the same form, one callback dict.

The seed rule is checked against its definition (``torch.randn`` from a seeded CPU generator, float32, in
order); the tuple form against the same pieces packed into one tensor by hand; the res2s plan against the
official loop's own numbers (ltx-pipelines 1.0.0 as the oracle)."""

import pytest
import torch

from comfyui_cosmos3_ltx2.core.noise import noise_generator, seeded_noise
from comfyui_cosmos3_ltx2.core.sampling import (
    sample_euler,
    sample_euler_stochastic,
    sample_res2s,
    sample_unipc,
    step_info,
)
from comfyui_cosmos3_ltx2.core.sampling.ltx_schedule import DISTILLED_SIGMAS, STAGE2_DISTILLED_SIGMAS, ltx2_sigmas
from comfyui_cosmos3_ltx2.core.sampling.res2s import (
    RES2S_TERMINAL_SIGMA,
    _plan,
    seeded_noise_sampler,
    standardized_noise,
)
from comfyui_cosmos3_ltx2.cosmos3 import pipeline as C3
from comfyui_cosmos3_ltx2.ltx2.api import initial_noise
from comfyui_cosmos3_ltx2.ltx2.latents import latent_shape
from comfyui_cosmos3_ltx2.ltx2.sampling import half_shape, hq_noise
from helpers.ltx_oracle import ltx_oracles_available
from helpers.op_count import OpCount

# --------------------------------------------------------------------------------------------------
# the seed rule


def _rule(seed: int, *shapes):
    """The documented rule, written out: one CPU generator, float32 draws in order."""
    g = torch.Generator("cpu").manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float32) for s in shapes]


def test_seeded_noise_is_the_documented_rule():
    shapes = [(2, 5, 3), (7,), (1, 33, 4)]
    got = seeded_noise(11, *shapes)
    assert isinstance(got, tuple) and len(got) == 3
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" for t in got)
    assert all(torch.equal(a, b) for a, b in zip(got, _rule(11, *shapes)))
    # moved afterwards: the float32 draws, rounded to the target dtype
    low = seeded_noise(11, *shapes, dtype=torch.bfloat16)
    assert all(torch.equal(a, b.to(torch.bfloat16)) for a, b in zip(low, _rule(11, *shapes)))
    # a generator is continued: drawing in two calls gives the same stream as one call
    g = noise_generator(11)
    first, = seeded_noise(g, shapes[0])
    rest = seeded_noise(g, *shapes[1:])
    assert all(torch.equal(a, b) for a, b in zip((first, *rest), got))
    # seeds are taken mod 2**64: torch's own reading of negative seeds, and a wrap past 2**64 - 1
    assert torch.equal(seeded_noise(-1, (9,))[0], _rule(-1, (9,))[0])
    assert torch.equal(seeded_noise(-1, (9,))[0], seeded_noise(2**64 - 1, (9,))[0])
    assert torch.equal(seeded_noise(2**64 + 3, (9,))[0], seeded_noise(3, (9,))[0])
    with pytest.raises(ValueError, match="at least one shape"):
        seeded_noise(1)


def test_every_model_draws_by_the_rule():
    # Cosmos3: the start latent, then the re-noising steps continue the same generator
    shape = (1, 48, 3, 2, 4)
    assert torch.equal(C3.initial_noise(shape, 7), _rule(7, shape)[0])
    gen = C3.noise_generator(7)
    start, step = C3.initial_noise(shape, gen), C3.initial_noise(shape, gen)
    want = _rule(7, shape, shape)
    assert torch.equal(start, want[0]) and torch.equal(step, want[1])
    # LTX-2 one-stage: packed video (with appended keyframe tokens) then audio
    s = latent_shape(17, 64, 96, video_channels=16, audio_channels=2, mel_bins=16)
    v, a = initial_noise(s, 5, appended=6)
    wv, wa = _rule(5, (1, s.video_tokens + 6, 16), s.audio_packed)
    assert torch.equal(v, wv) and torch.equal(a, wa)
    # LTX-2 two-stage: stage-1 video, stage-1 audio, stage-2 video, stage-2 audio
    s2 = latent_shape(17, 128, 128, video_channels=16, audio_channels=2, mel_bins=16)
    s1 = half_shape(s2)
    got = hq_noise(5, s2, appended=(2, 3))
    want = _rule(5, (1, s1.video_tokens + 2, 16), s1.audio_packed, (1, s2.video_tokens + 3, 16), s2.audio_packed)
    assert all(torch.equal(x, y) for x, y in zip(got, want))
    # res2s SDE noise: the same seeding (mod 2**64), drawn in float64 on the generator's device as the official
    # loop does, step stream from the seed and substep stream from seed + 10000
    x = torch.zeros(1, 12, 8, dtype=torch.bfloat16)
    for seed, sub in ((5, 10005), (2**64 - 1, 9999)):
        ns = seeded_noise_sampler(seed)
        step, substep = ns("step", 0, x), ns("substep", 0, x)
        assert step.dtype == torch.float64
        assert torch.equal(step, standardized_noise(x.shape, torch.Generator().manual_seed(seed % 2**64)))
        assert torch.equal(substep, standardized_noise(x.shape, torch.Generator().manual_seed(sub)))
        raw = torch.randn(x.shape, generator=torch.Generator().manual_seed(sub), dtype=torch.float64)
        raw = (raw - raw.mean()) / raw.std()
        raw = (raw - raw.mean(dim=(-2, -1), keepdim=True)) / raw.std(dim=(-2, -1), keepdim=True)
        assert torch.equal(substep, raw)


# --------------------------------------------------------------------------------------------------
# the sampler contract


def f_video(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A smooth elementwise stand-in for a denoiser (x0 from x and sigma)."""
    return torch.tanh(0.8 * x) * (1.0 - 0.5 * sigma) + 0.1 * torch.sin(3.0 * x + sigma)


def f_audio(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return 0.7 * torch.atan(x) * (1.0 - sigma * sigma) - 0.05 * x * sigma


def pair_model(x, sigma):
    return f_video(x[0], sigma), f_audio(x[1], sigma)


def _pair(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 24, 16, generator=g, dtype=torch.float64).to(dtype),
            torch.randn(2, 10, 8, generator=g, dtype=torch.float64).to(dtype))


class ByHand:
    """The (video, audio) pair packed into one flat tensor by hand, and the pair's model over it."""

    def __init__(self, v, a):
        self.nv, self.vshape, self.ashape = v.numel(), v.shape, a.shape

    def pack(self, parts) -> torch.Tensor:
        return torch.cat([parts[0].reshape(-1), parts[1].reshape(-1)])

    def split(self, x: torch.Tensor):
        return x[: self.nv].view(self.vshape), x[self.nv:].view(self.ashape)

    def model(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        return self.pack(pair_model(self.split(x), sigma))


class ShapeNoise:
    """Re-noising noise that depends only on the draw count per size (so a tuple run and single-tensor runs
    of its parts, or a packed run, see the same numbers); ``flat`` hands a packed run both parts' noise."""

    def __init__(self, flat_sizes=None):
        self.count: dict = {}
        self.flat_sizes = flat_sizes

    def one(self, n: int) -> torch.Tensor:
        k = self.count.get(n, 0)
        self.count[n] = k + 1
        return torch.randn(n, generator=torch.Generator().manual_seed(1000 * k + n), dtype=torch.float32)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.flat_sizes is not None:
            return torch.cat([self.one(n) for n in self.flat_sizes])
        return self.one(x.numel()).view(x.shape)


SIGMAS = [1.0, 0.8, 0.55, 0.3, 0.12, 0.0]
UNIPC_SIGMAS = [0.95, 0.8, 0.55, 0.3, 0.12, 0.0]


def _run(name: str, model, x, callback=None, noise=None):
    if name == "euler":
        return sample_euler(model, x, SIGMAS, callback=callback)
    if name == "euler_stochastic":
        return sample_euler_stochastic(model, x, SIGMAS, callback=callback, noise_sampler=noise)
    if name == "unipc":
        return sample_unipc(model, x, UNIPC_SIGMAS, callback=callback, order=3, disable_corrector=[2])
    # res2s without SDE noise: its noise is standardised per part, so a packed run would draw other numbers
    return sample_res2s(model, x, SIGMAS, callback=callback, eta=0.0)


SAMPLERS = ["euler", "euler_stochastic", "unipc", "res2s"]


@pytest.mark.parametrize("name", SAMPLERS)
def test_tuple_state_equals_the_pieces_packed_by_hand(name):
    """Each sampler steps a (video, audio) tuple exactly as it steps the two packed into one tensor by hand
    (the flattening wrapper a model would otherwise need): same samples, same callbacks, bit for bit."""
    v, a = _pair(torch.float64 if name == "res2s" else torch.float32)
    hand = ByHand(v, a)
    seen_tuple, seen_flat = [], []
    out = _run(name, pair_model, (v, a), seen_tuple.append, ShapeNoise())
    flat = _run(name, hand.model, hand.pack((v, a)), seen_flat.append, ShapeNoise([v.numel(), a.numel()]))
    assert isinstance(out, tuple) and len(out) == 2 and isinstance(flat, torch.Tensor)
    assert out[0].dtype == v.dtype and out[1].dtype == a.dtype
    assert torch.equal(hand.pack(out), flat)
    assert len(seen_tuple) == len(seen_flat) == len(SIGMAS) - 1
    for dt, df in zip(seen_tuple, seen_flat):
        assert isinstance(dt["x"], tuple) and isinstance(dt["denoised"], tuple)
        assert torch.equal(hand.pack(dt["x"]), df["x"]) and torch.equal(hand.pack(dt["denoised"]), df["denoised"])
        assert {k: dt[k] for k in ("i", "sigma", "sigma_hat", "sigma_next")} == \
            {k: df[k] for k in ("i", "sigma", "sigma_hat", "sigma_next")}


@pytest.mark.parametrize("name", SAMPLERS)
def test_tuple_parts_equal_single_tensor_runs(name):
    """A tuple run equals running each part alone as a plain tensor (the parts only share the sigmas);
    res2s here with SDE noise, a mask on the video part and a model dtype per part."""
    v, a = _pair(seed=1)
    if name == "res2s":
        vmask = torch.ones(2, 24, 1)
        vmask[:, :5] = 0.0
        vclean = torch.randn(2, 24, 16, generator=torch.Generator().manual_seed(4))

        def noise(kind, step, x):
            seed = 100 * step + (kind == "step") * 7 + x.numel()
            return standardized_noise(x.shape, torch.Generator().manual_seed(seed))

        kw = dict(eta=0.5, noise_sampler=noise)
        out = sample_res2s(pair_model, (v, a), SIGMAS, denoise_mask=(vmask, None), clean_latent=(vclean, None),
                           model_dtype=(torch.bfloat16, torch.float32), **kw)
        ov = sample_res2s(f_video, v, SIGMAS, denoise_mask=vmask, clean_latent=vclean, model_dtype=torch.bfloat16,
                          **kw)
        oa = sample_res2s(f_audio, a, SIGMAS, **kw)
        assert out[0].dtype == torch.bfloat16 and out[1].dtype == torch.float32
        assert torch.equal(out[0][:, :5], vclean[:, :5].to(torch.bfloat16))
    else:
        out = _run(name, pair_model, (v, a), noise=ShapeNoise())
        ov = _run(name, f_video, v, noise=ShapeNoise())
        oa = _run(name, f_audio, a, noise=ShapeNoise())
    assert isinstance(ov, torch.Tensor) and torch.equal(out[0], ov) and torch.equal(out[1], oa)


@pytest.mark.parametrize("name", SAMPLERS)
def test_one_callback_dict_and_form_errors(name):
    v, a = _pair()
    seen = []
    _run(name, pair_model, (v, a), seen.append, ShapeNoise())
    keys = {"i", "x", "sigma", "sigma_hat", "sigma_next", "denoised"}
    assert all(set(d) == keys and d["sigma_hat"] == d["sigma"] for d in seen)
    assert [d["i"] for d in seen] == list(range(len(SIGMAS) - 1))
    assert set(step_info(0, v, 0.5, 0.25, v)) == keys
    with pytest.raises(ValueError, match="the model's output has one tensor, the state has 2"):
        _run(name, lambda x, s: f_video(x[0], s), (v, a), noise=ShapeNoise())
    with pytest.raises(ValueError, match="the model's output is a tuple of 2"):
        _run(name, lambda x, s: (x, x), v, noise=ShapeNoise())
    with pytest.raises(ValueError, match="empty tuple"):
        _run(name, pair_model, (), noise=ShapeNoise())


@pytest.mark.parametrize("name", SAMPLERS)
def test_tuple_states_make_no_host_syncs(name):
    v, a = _pair()
    with OpCount() as c:
        _run(name, pair_model, (v, a), lambda d: None, ShapeNoise())
    assert c.host_reads == 0


# --------------------------------------------------------------------------------------------------
# the res2s plan against the official loop's numbers


def _official():
    if not ltx_oracles_available():
        return None
    from ltx_core.components.diffusion_steps import Res2sDiffusionStep
    from ltx_pipelines.utils.res2s import get_res2s_coefficients

    return Res2sDiffusionStep, get_res2s_coefficients


def _f32(values):
    return torch.tensor(values, dtype=torch.float32).tolist()


@pytest.mark.skipif(_official() is None, reason="ltx-core / ltx-pipelines 1.0.0 not installed")
@pytest.mark.parametrize("sigmas", [ltx2_sigmas(15, 16 * 17 * 30), _f32(STAGE2_DISTILLED_SIGMAS),
                                    _f32(DISTILLED_SIGMAS), _f32([0.909375, 0.725, 0.421875])],
                         ids=["hq15", "stage2", "distilled", "no_terminal_zero"])
def test_res2s_plan_equals_the_official_coefficients(sigmas):
    """Every host float the loop uses, as ltx-pipelines' ``res2s_audio_video_denoising_loop`` computes it from
    its float32 schedule tensor: step sizes, midpoint sigmas, RK coefficients, bong switch, SDE coefficients."""
    step_cls, coefficients = _official()
    plan = _plan(sigmas, 0.5, True, 100, True, True)
    sig = torch.tensor(sigmas, dtype=torch.float32)
    n = len(sigmas) - 1
    if sigmas[-1] == 0.0:  # the official loop's terminal rewrite
        sig = torch.cat([sig[:-1], torch.tensor([0.0011, 0.0])])
    hs = -torch.log(sig[1:].double() / sig[:-1].double())
    assert len(plan.steps) == n
    assert plan.final_sigma == (RES2S_TERMINAL_SIGMA if sigmas[-1] == 0.0 else None)
    assert plan.last == (n - 1, sigmas[-2], sigmas[-1]) and plan.noise

    def sde(pair: torch.Tensor):
        alpha, down, up = step_cls.get_sde_coeff(pair[1], sigma_up=pair[1] * 0.5)
        if float(up) == 0.0 or float(pair[1]) == 0.0:
            return None
        return (float(pair[0]), float(pair[0] - pair[1]), float(alpha), float(down), float(up))

    for i, st in enumerate(plan.steps):
        s, sn = sig[i].double(), sig[i + 1].double()
        h = hs[i].item()
        a21, b1, b2 = coefficients(h, {}, 0.5)
        mid = torch.sqrt(s * sn)
        assert (st.sigma, st.sigma_next, st.h, st.sigma_mid) == (float(s), float(sn), h, float(mid))
        assert (st.ha21, st.b1, st.b2) == (h * a21, b1, b2)
        assert st.refine == (h < 0.5 and float(s) > 0.03)
        assert st.mid_sde == sde(torch.stack([s, mid]))  # float64, as the official substep
        assert st.step_sde == sde(sig[i:i + 2].clone())  # the float32 schedule tensor
        assert st.report == (i < n - 1)
