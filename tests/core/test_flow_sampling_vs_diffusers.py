"""Flow samplers and sigma schedules against diffusers 0.42.1 (the oracle), CPU, float32.

Parity metric for samples: max |ours - reference| / max |reference| per step.
"""

import itertools
import math

import numpy as np
import pytest
import torch

from comfyui_cosmos3_ltx2.core.sampling import (
    beta_ppf,
    flow_euler_schedule,
    sample_euler,
    sample_unipc,
    shift_sigmas,
    unipc_flow_schedule,
    unipc_step_orders,
)
from helpers.op_count import OpCount

diffusers = pytest.importorskip("diffusers")
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler  # noqa: E402

from helpers.measures import rel

FLOW = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}
SHAPE = (1, 4, 2, 3, 4)  # small: keeps every op below torch's intra-op parallel grain
TOL = 1e-5

# diffusers' schedulers trigger numpy 2 copy-keyword deprecation warnings on every call; recording them
# costs more than the tests themselves.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def reference_unipc(steps, config, native=False, sch=None):
    sch = UniPCMultistepScheduler(**config) if sch is None else sch
    if native:
        n_train = config.get("num_train_timesteps", 1000)
        sch.set_timesteps(steps, sigmas=np.linspace(1.0 - 1.0 / n_train, 0.0, steps + 1)[:-1])
    else:
        sch.set_timesteps(steps)
    return sch


class FakeVelocity:
    """Deterministic, sync-free velocity field v = tanh(a * x + b * t / 1000 + c)."""

    def __init__(self, seed=0, shape=SHAPE):
        g = torch.Generator().manual_seed(seed)
        self.a = torch.randn(shape, generator=g) * 0.8
        self.b = torch.randn(shape, generator=g)
        self.c = torch.randn(shape, generator=g) * 0.3

    def __call__(self, x, t):
        return torch.tanh(self.a * x + self.b * (t / 1000.0) + self.c)


def denoiser(vel, sigmas, timesteps):
    """Our model contract: x0 = x - sigma * v, with the integer timestep diffusers would pass."""
    t_of = dict(zip(sigmas, timesteps))

    def model(x, sigma):
        return x - sigma * vel(x, t_of[sigma])

    return model


def noise(seed=1, shape=SHAPE):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------
# Schedules


KINDS = {
    "flow": {},
    "karras": {"use_karras_sigmas": True},
    "karras_bounds": {"use_karras_sigmas": True, "sigma_min": 0.147, "sigma_max": 200.0},
    "exponential": {"use_exponential_sigmas": True},
    "beta": {"use_beta_sigmas": True},
}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize("final", ["zero", "sigma_min"])
def test_unipc_schedule_matches_diffusers(kind, native, final):
    if kind == "beta":
        pytest.importorskip("scipy")  # only the oracle needs it
    for shift, steps in itertools.product([1.0, 3.0, 10.0], [1, 2, 3, 5, 10, 20, 35]):
        cfg = dict(FLOW, flow_shift=shift, final_sigmas_type=final, **KINDS[kind])
        if steps == 1:
            sch = UniPCMultistepScheduler(**cfg)  # one scheduler per config, reused across step counts
        if native and kind in ("exponential", "beta") and steps == 1:
            # diffusers interpolates in a 1-entry table here and gets a NaN timestep; we refuse.
            with pytest.raises(ValueError, match="non-finite"):
                unipc_flow_schedule(steps, cfg, native=native)
            continue
        ref = reference_unipc(steps, cfg, native, sch)
        sig, ts = unipc_flow_schedule(steps, cfg, native=native)
        assert ts == ref.timesteps.tolist(), (steps, shift)
        assert len(sig) == steps + 1 and len(ts) == steps
        np.testing.assert_allclose(sig, ref.sigmas.double().numpy(), rtol=1e-6, atol=1e-7)
        # the values are the float32 numbers diffusers stores, bit for bit
        assert sig == ref.sigmas.double().tolist()


def test_shift_argument_overrides_config():
    cfg = dict(FLOW, flow_shift=3.0)
    a = unipc_flow_schedule(12, cfg, shift=10.0)
    b = unipc_flow_schedule(12, dict(FLOW, flow_shift=10.0))
    assert a == b
    ref = reference_unipc(12, dict(FLOW, flow_shift=10.0))
    assert a[1] == ref.timesteps.tolist()


def test_dynamic_shift_and_terminal_match_diffusers():
    for extra in ({"use_dynamic_shifting": True}, {"use_dynamic_shifting": True, "time_shift_type": "linear"}):
        cfg = dict(FLOW, **extra)
        ref = UniPCMultistepScheduler(**cfg)
        ref.set_timesteps(9, mu=0.8)
        sig, ts = unipc_flow_schedule(9, cfg, mu=0.8)
        assert ts == ref.timesteps.tolist() and sig == ref.sigmas.double().tolist()
    cfg = dict(FLOW, flow_shift=3.0, shift_terminal=0.1)
    ref = reference_unipc(9, cfg)
    sig, ts = unipc_flow_schedule(9, cfg)
    assert ts == ref.timesteps.tolist() and sig == ref.sigmas.double().tolist()


def test_cosmos3_spec_examples():
    # Examples quoted in the Cosmos3 reference (N = 35, shift 10).
    _, t_default = unipc_flow_schedule(35, dict(FLOW, flow_shift=10.0))
    assert t_default[:4] == [999, 997, 993, 990] and t_default[-3:] == [486, 381, 233]
    _, t_native = unipc_flow_schedule(35, dict(FLOW, flow_shift=10.0), native=True)
    assert t_native[:4] == [999, 996, 993, 990] and t_native[-3:] == [483, 377, 227]
    # Karras with explicit bounds (third-party port of the checkpoint default), 4 steps.
    sig, ts = unipc_flow_schedule(4, dict(FLOW, use_karras_sigmas=True, sigma_min=0.147, sigma_max=200.0))
    np.testing.assert_allclose(sig, [0.9950, 0.9736, 0.7986, 0.1282, 0.0], atol=6e-5)
    assert ts == [995, 973, 798, 128]
    # Karras ignores flow_shift (diffusers behaviour).
    assert unipc_flow_schedule(6, dict(FLOW, use_karras_sigmas=True, flow_shift=10.0)) == unipc_flow_schedule(
        6, dict(FLOW, use_karras_sigmas=True)
    )


def test_shift_sigmas_formula():
    s = [1.0, 0.75, 0.5, 0.1, 0.0]
    for k in (1.0, 3.0, 10.0):
        out = shift_sigmas(s, k)
        for a, b in zip(s, out):
            assert math.isclose(b, k * a / (1 + (k - 1) * a), rel_tol=0, abs_tol=1e-15)
    assert shift_sigmas(s, 1.0) == s


def test_beta_ppf_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    # (scipy itself gives up below q ~ 1e-9 for a = 0.5, so the grid stays above that)
    qs = [0.0, 1e-6, 0.01, 0.1, 0.25, 0.5, 0.6, 0.9, 0.999, 1 - 1e-9, 1.0]
    for a, b in [(0.6, 0.6), (2.0, 5.0), (0.5, 3.0), (5.0, 2.0)]:
        for q in qs:
            assert math.isclose(beta_ppf(q, a, b), stats.beta.ppf(q, a, b), rel_tol=1e-13, abs_tol=0.0)
    assert math.isclose(beta_ppf(1e-12, 0.6, 0.6), stats.beta.ppf(1e-12, 0.6, 0.6), rel_tol=1e-13)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_euler_schedule_matches_diffusers(shift):
    lists = [[1.0, 0.75, 0.5, 0.25], [0.999, 0.9375, 0.8333333, 0.5, 0.2], [0.6]]
    for lst in lists:
        ref = FlowMatchEulerDiscreteScheduler(shift=shift)
        ref.set_timesteps(sigmas=lst)
        sig, ts = flow_euler_schedule(lst, shift=shift)
        assert sig == ref.sigmas.double().tolist()
        assert ts == ref.timesteps.double().tolist()


def test_schedule_errors():
    with pytest.raises(ValueError, match="steps"):
        unipc_flow_schedule(0, FLOW)
    with pytest.raises(ValueError, match="only one"):
        unipc_flow_schedule(4, dict(FLOW, use_karras_sigmas=True, use_beta_sigmas=True))
    with pytest.raises(ValueError, match="mu"):
        unipc_flow_schedule(4, dict(FLOW, use_dynamic_shifting=True))
    with pytest.raises(ValueError, match="use_flow_sigmas"):
        unipc_flow_schedule(4, {"use_flow_sigmas": False})


# ------------------------------------------------------------------------------------------------
# UniPC parity, step by step


def run_both(steps, cfg, native, vel, x, order, solver_type, lof, disable=()):
    ref_sch = reference_unipc(steps, cfg, native)
    sig, ts = unipc_flow_schedule(steps, cfg, native=native)
    ref_xs, ref_orders, xr = [], [], x.clone()
    for t in ref_sch.timesteps:
        try:
            xr = ref_sch.step(vel(xr, int(t)), t, xr).prev_sample
        except torch.linalg.LinAlgError:
            # order >= 3 step to sigma 0 without lower_order_final: diffusers' rho system is singular
            assert len(ref_xs) == steps - 1
            xr = torch.full_like(xr, float("nan"))
        ref_xs.append(xr)
        ref_orders.append(ref_sch.this_order)
    ours, xo = [], x.clone()
    out = sample_unipc(
        denoiser(vel, sig, ts),
        xo,
        sig,
        callback=lambda d: ours.append(d),
        order=order,
        solver_type=solver_type,
        lower_order_final=lof,
        disable_corrector=disable,
    )
    assert out is ours[-1]["x"]
    return ref_xs, ref_orders, ours, sig


CASES = [
    # (steps, shift, native)
    (1, 3.0, False),
    (2, 10.0, True),
    (3, 1.0, False),
    (5, 10.0, False),
    (10, 3.0, True),
    (35, 10.0, False),
]


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("solver_type", ["bh1", "bh2"])
@pytest.mark.parametrize("lof", [True, False])
def test_unipc_matches_diffusers_step_by_step(order, solver_type, lof):
    vel = FakeVelocity(seed=order)
    worst = 0.0
    for steps, shift, native in CASES:
        cfg = dict(FLOW, flow_shift=shift, solver_order=order, solver_type=solver_type, lower_order_final=lof)
        ref_xs, ref_orders, ours, sig = run_both(steps, cfg, native, vel, noise(steps), order, solver_type, lof)
        assert ref_orders == unipc_step_orders(steps, order, lof)
        assert [d["i"] for d in ours] == list(range(steps))
        assert [d["sigma"] for d in ours] == sig[:-1] and [d["sigma_next"] for d in ours] == sig[1:]
        for i, (r, d) in enumerate(zip(ref_xs, ours)):
            if i == steps - 1 and not torch.isfinite(r).all():
                # Step to sigma 0 that diffusers cannot take (bh1: B(h) = -inf times 0; order >= 2: the
                # divided differences blow up). The analytic limit is the x0 estimate, which we return.
                assert solver_type == "bh1" or ref_orders[i] >= 2
                assert torch.equal(d["x"], d["denoised"])
                continue
            err = rel(d["x"], r)
            worst = max(worst, err)
            assert err <= TOL, (steps, shift, native, i, err)
        # the sample leaving the last step to sigma 0 is the last x0 estimate
        assert torch.allclose(ours[-1]["x"], ours[-1]["denoised"], atol=1e-6)
    print(f"order={order} {solver_type} lof={lof}: worst rel diff {worst:.2e}")


@pytest.mark.parametrize("order", [2, 3])
def test_unipc_sigma_min_final_matches_diffusers(order):
    vel = FakeVelocity(seed=7)
    for steps in (4, 12):
        cfg = dict(FLOW, flow_shift=3.0, solver_order=order, final_sigmas_type="sigma_min")
        ref_xs, _, ours, sig = run_both(steps, cfg, False, vel, noise(3), order, "bh2", True)
        assert sig[-1] == sig[-2]
        for r, d in zip(ref_xs, ours):
            assert rel(d["x"], r) <= TOL
        # the repeated final sigma: the last step only applies the corrector, no denoising jump
        assert rel(ours[-1]["x"], ours[-2]["x"]) < 0.05


@pytest.mark.parametrize("disable", [[0], [1, 3], [0, 1, 2, 3, 4, 5, 6, 7]])
def test_unipc_disable_corrector_matches_diffusers(disable):
    vel = FakeVelocity(seed=11)
    cfg = dict(FLOW, flow_shift=5.0, solver_order=3, disable_corrector=disable)
    ref_xs, _, ours, _ = run_both(8, cfg, False, vel, noise(5), 3, "bh2", True, disable)
    for r, d in zip(ref_xs, ours):
        assert rel(d["x"], r) <= TOL
    # and it does change the result compared with the corrector on
    _, _, ours_on, _ = run_both(8, dict(cfg, disable_corrector=[]), False, vel, noise(5), 3, "bh2", True)
    assert not torch.allclose(ours[-2]["x"], ours_on[-2]["x"])


def test_unipc_step_orders_rule():
    # lower_order_final caps step i at N - i for every N (no "< 15 steps" condition in UniPC).
    assert unipc_step_orders(40, 3, True)[-3:] == [3, 2, 1]
    assert unipc_step_orders(40, 3, False)[-3:] == [3, 3, 3]
    assert unipc_step_orders(5, 3, True) == [1, 2, 3, 2, 1]
    assert unipc_step_orders(2, 3, True) == [1, 1]


def test_unipc_tensor_sigmas_and_dtypes():
    vel = FakeVelocity(seed=3)
    sig, ts = unipc_flow_schedule(6, dict(FLOW, flow_shift=3.0))
    model = denoiser(vel, sig, ts)
    a = sample_unipc(model, noise(2), sig)
    b = sample_unipc(model, noise(2), torch.tensor(sig, dtype=torch.float64))
    assert torch.equal(a, b) and a.dtype == torch.float32
    h = sample_unipc(model, noise(2).to(torch.bfloat16), sig)
    assert h.dtype == torch.bfloat16
    assert rel(h.float(), a) < 0.05
    d = sample_unipc(model, noise(2).double(), sig)
    assert d.dtype == torch.float64 and rel(d, a.double()) < 1e-5


def test_unipc_callback_can_interrupt():
    vel = FakeVelocity()
    sig, ts = unipc_flow_schedule(5, FLOW)
    seen = []

    def cb(d):
        seen.append(d["i"])
        if d["i"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sample_unipc(denoiser(vel, sig, ts), noise(), sig, callback=cb)
    assert seen == [0, 1, 2]


def test_unipc_rejects_bad_sigmas():
    model = lambda x, s: x  # noqa: E731
    x = noise()
    with pytest.raises(ValueError, match="flow sigmas"):
        sample_unipc(model, x, [1.0, 0.5, 0.0])
    exp_sig, _ = unipc_flow_schedule(4, dict(FLOW, use_exponential_sigmas=True))
    with pytest.raises(ValueError, match="VP sigmas"):
        sample_unipc(model, x, exp_sig)
    with pytest.raises(ValueError, match="decrease"):
        sample_unipc(model, x, [0.5, 0.7, 0.0])
    with pytest.raises(ValueError, match="solver_type"):
        sample_unipc(model, x, [0.5, 0.0], solver_type="bh3")


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("solver_type", ["bh1", "bh2"])
def test_unipc_preserves_conditioned_frames(order, solver_type):
    """Where the model returns v = 0 and x holds x0, every UniPC step (predictor and corrector) keeps it."""
    vel = FakeVelocity(seed=5)
    sig, ts = unipc_flow_schedule(35, dict(FLOW, flow_shift=10.0))
    mask = torch.zeros(SHAPE, dtype=torch.bool)
    mask[:, :, :1] = True  # first latent frame is the conditioning frame
    clean = noise(9) * 0.5
    x = torch.where(mask, clean, noise(10))
    inner = denoiser(vel, sig, ts)

    def model(x, sigma):
        return torch.where(mask, x, inner(x, sigma))

    frames = []
    out = sample_unipc(
        model, x, sig, callback=lambda d: frames.append(d["x"][mask]), order=order, solver_type=solver_type
    )
    for f in frames:
        assert (f - clean[mask]).abs().max().item() <= 1e-5
        assert torch.equal(f, clean[mask])  # exact in fact: the updates are lerps and x0 differences
    assert torch.isfinite(out).all()


# ------------------------------------------------------------------------------------------------
# Euler parity


@pytest.mark.parametrize(
    "sigmas", [[1.0, 0.75, 0.5, 0.25], [0.999, 0.9375, 0.8333333, 0.5, 0.2], [1.0], [0.9, 0.3]]
)
def test_euler_matches_diffusers(sigmas):
    vel = FakeVelocity(seed=4)
    ref = FlowMatchEulerDiscreteScheduler()
    ref.set_shift(1.0)
    ref.set_timesteps(sigmas=sigmas)
    sig, ts = flow_euler_schedule(sigmas)
    x = noise(6)
    ref_xs, xr = [], x.clone()
    for t in ref.timesteps:
        xr = ref.step(vel(xr, t.item()), t, xr).prev_sample
        ref_xs.append(xr)
    t_of = dict(zip(sig, ts))
    ours = []
    out = sample_euler(lambda x, s: x - s * vel(x, t_of[s]), x.clone(), sig, callback=lambda d: ours.append(d))
    assert len(ours) == len(sigmas) and out is ours[-1]["x"]
    for r, d in zip(ref_xs, ours):
        assert rel(d["x"], r) <= TOL


def test_euler_keeps_dtype_and_conditioned_frames():
    vel = FakeVelocity(seed=8)
    sig, ts = flow_euler_schedule([1.0, 0.75, 0.5, 0.25])
    t_of = dict(zip(sig, ts))
    mask = torch.zeros(SHAPE, dtype=torch.bool)
    mask[:, :, :1] = True
    x = torch.where(mask, noise(1), noise(2)).to(torch.bfloat16)

    def model(x, s):
        return torch.where(mask, x, (x.float() - s * vel(x.float(), t_of[s])).to(x.dtype))

    out = sample_euler(model, x, sig)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out[mask], x[mask])


# ------------------------------------------------------------------------------------------------
# No host-device synchronisation inside the samplers


def test_sync_counter_sees_item():
    with OpCount() as c:
        torch.ones(3).sum().item()
    assert c.host_reads == 1


@pytest.mark.parametrize("sampler", ["unipc2", "unipc3", "unipc3_bh1", "euler"])
def test_samplers_do_not_sync(sampler):
    vel = FakeVelocity(seed=2)
    if sampler == "euler":
        sig, ts = flow_euler_schedule([1.0, 0.75, 0.5, 0.25])
    else:
        sig, ts = unipc_flow_schedule(12, dict(FLOW, flow_shift=10.0))
    t_of = dict(zip(sig, ts))

    def model(x, s):
        return x - s * vel(x, t_of[s])

    x = noise(4)
    callback = lambda d: None  # noqa: E731
    with OpCount() as c:
        if sampler == "euler":
            sample_euler(model, x, sig, callback=callback)
        else:
            sample_unipc(
                model,
                x,
                sig,
                callback=callback,
                order=3 if sampler.startswith("unipc3") else 2,
                solver_type="bh1" if sampler.endswith("bh1") else "bh2",
                disable_corrector=[3],
            )
    assert c.host_reads == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_samplers_do_not_sync_on_cuda():
    vel = FakeVelocity(seed=2)
    vel.a, vel.b, vel.c = vel.a.cuda(), vel.b.cuda(), vel.c.cuda()
    sig, ts = unipc_flow_schedule(12, dict(FLOW, flow_shift=10.0))
    t_of = dict(zip(sig, ts))

    def model(x, s):
        return x - s * vel(x, t_of[s])

    x = noise(4).cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        sample_unipc(model, x, sig, order=3)
        sample_unipc(model, x, sig, order=2, solver_type="bh1")
        sample_euler(model, x, sig)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# ------------------------------------------------------------------------------------------------
# Re-noising (stochastic) flow Euler of distilled checkpoints


@pytest.mark.parametrize("sigmas", [[1.0, 0.75, 0.5, 0.25], [0.999, 0.8333333, 0.2]])
def test_stochastic_euler_matches_diffusers(sigmas):
    """Same generator, same draws: our re-noising step equals FlowMatchEulerDiscreteScheduler(stochastic_sampling)."""
    from comfyui_cosmos3_ltx2.core.sampling import sample_euler_stochastic

    vel = FakeVelocity(seed=5)
    ref = FlowMatchEulerDiscreteScheduler(stochastic_sampling=True)
    ref.set_shift(1.0)
    ref.set_timesteps(sigmas=sigmas)
    sig, ts = flow_euler_schedule(sigmas)
    x = noise(3)
    gen_ref = torch.Generator().manual_seed(77)
    ref_xs, xr = [], x.clone()
    for t in ref.timesteps:
        xr = ref.step(vel(xr, t.item()), t, xr, generator=gen_ref).prev_sample
        ref_xs.append(xr)
    gen = torch.Generator().manual_seed(77)
    t_of = dict(zip(sig, ts))
    ours = []
    sample_euler_stochastic(
        lambda x, s: x - s * vel(x, t_of[s]), x.clone(), sig, callback=lambda d: ours.append(d["x"]),
        noise_sampler=lambda x: torch.randn(x.shape, generator=gen, dtype=torch.float32),
    )
    assert len(ours) == len(ref_xs)
    for r, o in zip(ref_xs, ours):
        assert rel(o, r) <= TOL
