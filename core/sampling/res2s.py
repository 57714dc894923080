"""res_2s: a two-stage exponential Runge-Kutta sampler in log-sigma with SDE re-noising (LTX-2.3 HQ).

Notation (flow sigmas, ``x_sigma = (1 - sigma) x0 + sigma * noise``, the model returns x0):

* step size ``h = log(sigma / sigma_next)``; midpoint ``sigma_mid = sqrt(sigma * sigma_next)`` (c2 = 1/2);
* ``phi_j(z) = (e^z - sum_{k<j} z^k / k!) / z^j``; ``a21 = c2 phi_1(-c2 h)``, ``b2 = phi_2(-h) / c2``,
  ``b1 = phi_1(-h) - b2``;
* one step from anchor ``x_a`` (the current sample): ``e1 = x0(x_a, sigma) - x_a``; midpoint
  ``x_a + h a21 e1`` re-noised to ``sigma_mid``; optional anchor refinement; ``e2 = x0(x_mid, sigma_mid) - x_a``;
  ``x_a + h (b1 e1 + b2 e2)`` re-noised to ``sigma_next``.

The re-noising (:func:`sde_step`) keeps the flow marginal at the target sigma and replaces a fraction ``eta``
of its noise standard deviation by fresh noise. A schedule ending in 0 is run to a small terminal sigma and
finished with one more model call whose x0 is the result.

All decisions (terminal step, refinement on/off) are taken from Python floats prepared before the loop, so
the loop never reads a device value back to the host. The state arithmetic runs in ``state_dtype``
(float64); the sample between steps and every model input is held in the model's dtype.

Parity with the official loop is bit-exact on the CPU when the sigmas given here are the float32 values the
official pipelines hold (``torch.tensor(sigmas, dtype=torch.float32).tolist()``; ``ltx2_sigmas`` already
returns such values): the host-side scalars (midpoint sigma, log step, re-noising coefficients) are computed
with the same torch CPU kernels and precisions as there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ..noise import noise_generator, seeded_noise
from .state import StateForm, step_info
from .unipc import _as_sigma_list

__all__ = [
    "RES2S_TERMINAL_SIGMA",
    "phi",
    "reference_noise_sampler",
    "res2s_coefficients",
    "sample_res2s",
    "sde_coefficients",
    "sde_step",
    "seeded_noise_sampler",
    "standardized_noise",
]

# The official loop swaps a final sigma of 0 for 0.0011 held in a float32 tensor, i.e. this value.
RES2S_TERMINAL_SIGMA: float = float(np.float32(0.0011))


# --------------------------------------------------------------------------------------------------
# coefficients (host-side Python floats)
# --------------------------------------------------------------------------------------------------
def phi(j: int, z: float) -> float:
    """``phi_j(z) = (e^z - sum_{k<j} z^k/k!) / z^j``, with the limit ``1/j!`` for ``|z| < 1e-10``."""
    if abs(z) < 1e-10:
        return 1.0 / math.factorial(j)
    taylor = 0.0
    for k in range(j):
        taylor += z**k / math.factorial(k)
    return (math.exp(z) - taylor) / z**j


def res2s_coefficients(h: float, c2: float = 0.5) -> tuple[float, float, float]:
    """``(a21, b1, b2)`` of the two-stage exponential integrator for log-sigma step ``h``."""
    a21 = c2 * phi(1, -h * c2)
    b2 = phi(2, -h) / c2
    b1 = phi(1, -h) - b2
    return a21, b1, b2


def sde_coefficients(sigma_next: float, eta: float = 0.5, *, float32: bool = False) -> tuple[float, float, float]:
    """``(alpha_ratio, sigma_down, sigma_up)`` of the re-noising to ``sigma_next`` (max sigma 1).

    ``sigma_up = min(eta * sigma_next, 0.9999 * sigma_next)`` is the std of the fresh noise,
    ``sigma_res = sqrt(max(sigma_next^2 - sigma_up^2, 0))`` the std kept from the deterministic step,
    ``alpha_ratio = (1 - sigma_next) + sigma_res`` and ``sigma_down = sigma_res / alpha_ratio``. NaNs fall back
    to sigma_up = 0, sigma_down = sigma_next, alpha_ratio = 1.

    The arithmetic runs on CPU scalar tensors in float64, or in float32 with ``float32`` (the official
    step-level call works on its float32 schedule tensor; torch's CPU float32 sqrt is not always correctly
    rounded, so the same kernels are used here to get the same bits). Host-side only: call it before a loop.
    """
    dtype = torch.float32 if float32 else torch.float64
    sn = torch.tensor(sigma_next, dtype=dtype)
    up = torch.minimum(sn * eta, sn * 0.9999)
    res = torch.pow((sn * sn - up * up).clamp(min=0), 0.5)
    alpha = (1 - sn) + res
    down = res / alpha
    alpha_f, down_f, up_f, sn_f = torch.stack([alpha, down, up, sn]).tolist()
    if math.isnan(up_f):
        up_f = 0.0
    if math.isnan(down_f):
        down_f = sn_f
    if math.isnan(alpha_f):
        alpha_f = 1.0
    return alpha_f, down_f, up_f


def _sde_plan(sigma: float, sigma_next: float, eta: float, float32: bool):
    """Host floats of one re-noising: None for a pass-through step, else (sigma, sigma - sigma_next, alpha,
    sigma_down, sigma_up), each rounded as the chosen precision's arithmetic rounds it."""
    alpha, down, up = sde_coefficients(sigma_next, eta, float32=float32)
    dtype = torch.float32 if float32 else torch.float64
    pair = torch.tensor([sigma, sigma_next], dtype=dtype)
    s, sn, diff = torch.cat([pair, pair[:1] - pair[1:]]).tolist()
    if up == 0.0 or sn == 0.0:
        return None
    return s, diff, alpha, down, up


def _sde_apply(sample: torch.Tensor, x_det: torch.Tensor, plan, noise: torch.Tensor | None) -> torch.Tensor:
    if plan is None:
        return x_det
    if noise is None:
        raise ValueError("sde_step: noise is required when eta > 0 and sigma_next > 0")
    s, diff, alpha, down, up = plan
    v = (sample - x_det) / diff
    x0 = sample - s * v
    return (alpha * (x0 + down * v) + up * noise).to(x_det.dtype)


# --------------------------------------------------------------------------------------------------
# tensor updates
# --------------------------------------------------------------------------------------------------
def sde_step(
    sample: torch.Tensor,
    x_det: torch.Tensor,
    sigma: float,
    sigma_next: float,
    noise: torch.Tensor | None,
    eta: float = 0.5,
    *,
    float32: bool = False,
) -> torch.Tensor:
    """Re-noise the deterministic update ``x_det`` (from ``sample`` at ``sigma``) to ``sigma_next``.

    The implied velocity ``v = (sample - x_det) / (sigma - sigma_next)`` and clean estimate
    ``x0 = sample - sigma v`` give ``alpha_ratio (x0 + sigma_down v) + sigma_up noise``. When ``sigma_up`` or
    ``sigma_next`` is 0 (decided from the Python floats) ``x_det`` is returned unchanged. The result has
    ``x_det``'s dtype; ``float32`` does the sigma arithmetic in float32 (see :func:`sde_coefficients`).
    """
    return _sde_apply(sample, x_det, _sde_plan(sigma, sigma_next, eta, float32), noise)


# --------------------------------------------------------------------------------------------------
# noise
# --------------------------------------------------------------------------------------------------
def standardized_noise(shape, generator: torch.Generator) -> torch.Tensor:
    """float64 normal noise from ``generator`` (on its device), standardized over the whole tensor, then
    again over its last two dims (ltx-pipelines ``_get_new_noise``)."""
    z, = seeded_noise(generator, shape, draw_dtype=torch.float64)
    z = (z - z.mean()) / z.std()
    dims = tuple(range(-min(z.ndim, 2), 0))
    z.sub_(z.mean(dim=dims, keepdim=True))
    z.div_(z.std(dim=dims, keepdim=True))
    return z


class _TwoStreamNoise:
    """Noise sampler with one generator for the step noise and one for the substep (midpoint) noise.

    Unlike the start noise (:mod:`core.noise`: CPU generator, float32), the official res2s loop draws this
    noise in float64 from generators on the latent's device; the same is done here, so that the official
    seeds (:func:`reference_noise_sampler`) give the official numbers."""

    def __init__(self, step_seed: int, substep_seed: int, device=None):
        self.seeds = {"step": int(step_seed), "substep": int(substep_seed)}
        self.device = None if device is None else torch.device(device)
        self._gens: dict[str, torch.Generator] = {}

    def __call__(self, kind: str, step: int, x: torch.Tensor) -> torch.Tensor:
        gen = self._gens.get(kind)
        if gen is None:
            if kind not in self.seeds:
                raise ValueError(f"noise sampler: kind must be 'step' or 'substep', got {kind!r}")
            gen = noise_generator(self.seeds[kind], self.device if self.device is not None else x.device)
            self._gens[kind] = gen
        return standardized_noise(x.shape, gen)


def seeded_noise_sampler(seed: int, device=None) -> Callable[[str, int, torch.Tensor], torch.Tensor]:
    """SDE noise driven by the user's seed: step noise from ``seed``, substep noise from ``seed + 10000``
    (seeds taken mod 2**64, as :func:`core.noise.noise_generator` does).

    The generators live on ``device`` (default: the device of the first sample drawn for), are created on the
    first draw, and advance with every draw, so a sampler object serves one sampling run.
    ``seeded_noise_sampler(-1)`` is the official pipelines' fixed noise.
    """
    return _TwoStreamNoise(seed, int(seed) + 10000, device)


def reference_noise_sampler(device=None) -> Callable[[str, int, torch.Tensor], torch.Tensor]:
    """The official res2s noise, which ignores the user's seed: step seed -1, substep seed 9999."""
    return _TwoStreamNoise(-1, 9999, device)


# --------------------------------------------------------------------------------------------------
# plan: every host-side decision and coefficient, before the loop
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Step:
    """One res_2s step from ``sigma`` to ``sigma_next`` over the midpoint ``sigma_mid``.

    ``ha21 = h * a21`` moves the anchor to the midpoint, ``h``, ``b1``, ``b2`` combine the two x0 estimates;
    ``mid_sde`` / ``step_sde`` are the re-noisings to the midpoint and to ``sigma_next`` (:func:`_sde_plan`;
    None = pass-through); ``refine`` switches the anchor refinement on; ``report`` says whether the callback
    runs after this step (the last step reports after the final call)."""

    sigma: float
    sigma_next: float
    sigma_mid: float
    h: float
    ha21: float
    b1: float
    b2: float
    mid_sde: tuple | None
    step_sde: tuple | None
    refine: bool
    report: bool


@dataclass(frozen=True)
class _Plan:
    """The whole run: the res_2s ``steps``; then, when ``final_sigma`` is not None, one more model call there
    whose x0 is the result; then the last callback, with ``last`` = (i, sigma, sigma_next) of the schedule
    (its ``denoised`` is that final call's x0, or the last step's first x0). ``noise``: draw SDE noise."""

    steps: tuple[_Step, ...]
    final_sigma: float | None
    last: tuple[int, float, float]
    noise: bool


def _plan(sig: list[float], eta: float, bongmath: bool, bongmath_iters: int, final_denoise: bool,
          step_sde_float32: bool) -> _Plan:
    """The plan of :func:`sample_res2s` for checked sigmas (host floats only; no tensor of the run)."""
    n_steps = len(sig) - 1
    ends_at_zero = sig[-1] == 0.0
    if ends_at_zero and final_denoise:
        if sig[-2] <= RES2S_TERMINAL_SIGMA:
            raise ValueError(f"sample_res2s: the last non-zero sigma must exceed {RES2S_TERMINAL_SIGMA}")
        # official: a final 0 becomes (0.0011, 0); N full steps, the last to 0.0011, then a call there
        run = sig[:-1] + [RES2S_TERMINAL_SIGMA, 0.0]
        n_rk, final = n_steps, RES2S_TERMINAL_SIGMA
    else:
        run = list(sig)
        # without the final denoise a schedule ending in 0 returns the x0 of its last step's first call
        n_rk, final = (n_steps - 1, sig[n_steps - 1]) if ends_at_zero else (n_steps, None)
    # log-sigma step sizes, computed once on the CPU in float64 (the last entry may be inf and is unused)
    run_t = torch.tensor(run, dtype=torch.float64)
    hs = (-torch.log(run_t[1:] / run_t[:-1])).tolist()
    steps = []
    for i in range(n_rk):
        s, sn, h = run[i], run[i + 1], hs[i]
        # sqrt(sigma * sigma_next) by torch's CPU kernel, which is not always correctly rounded (as official)
        s_mid = torch.sqrt(torch.tensor(s, dtype=torch.float64) * torch.tensor(sn, dtype=torch.float64)).tolist()
        a21, b1, b2 = res2s_coefficients(h)
        steps.append(_Step(
            sigma=s, sigma_next=sn, sigma_mid=s_mid, h=h, ha21=h * a21, b1=b1, b2=b2,
            mid_sde=_sde_plan(s, s_mid, eta, False),  # the midpoint re-noising is float64 in the official loop
            step_sde=_sde_plan(s, sn, eta, step_sde_float32),
            refine=bongmath and bongmath_iters > 0 and h < 0.5 and s > 0.03,
            report=i < n_steps - 1,
        ))
    return _Plan(tuple(steps), final, (n_steps - 1, sig[n_steps - 1], sig[n_steps]), eta > 0.0)


# --------------------------------------------------------------------------------------------------
# sampler
# --------------------------------------------------------------------------------------------------
def _refine_anchor(x_mid: list, den1: list, eps1: list, ha21: float, iters: int) -> tuple[list, list]:
    """The bong fixed point: ``iters`` rounds of ``anchor = x_mid - ha21 * eps1; eps1 = den1 - anchor``.

    Elementwise, so the states (video, audio) run as one flat buffer: 3 ops per round instead of 3 per
    round and state (the same numbers; it matters on a GPU, where each op is a kernel launch). Returns
    fresh (anchor, eps1) lists shaped like ``x_mid``."""
    def flat(ts, fresh=False):
        if len(ts) > 1:
            return torch.cat([t.reshape(-1) for t in ts])
        return ts[0].reshape(-1).clone() if fresh else ts[0].reshape(-1)

    m, d, e = flat(x_mid), flat(den1), flat(eps1, fresh=True)
    a, t = torch.empty_like(m), torch.empty_like(m)
    for _ in range(iters):
        torch.mul(e, ha21, out=t)
        torch.sub(m, t, out=a)
        torch.sub(d, a, out=e)
    sizes = [x.numel() for x in x_mid]
    return ([p.view_as(x) for p, x in zip(a.split(sizes), x_mid)],
            [p.view_as(x) for p, x in zip(e.split(sizes), x_mid)])


def _blend(x: torch.Tensor, mask, clean) -> torch.Tensor:
    """Keep the conditioned tokens: ``x * mask + clean * (1 - mask)`` (identity without a mask)."""
    if mask is None:
        return x
    return (x * mask + clean.float() * (1 - mask)).to(x.dtype)


def sample_res2s(
    model: Callable,
    x,
    sigmas,
    extra_args: dict | None = None,
    callback: Callable[[dict], None] | None = None,
    *,
    eta: float = 0.5,
    noise_sampler: Callable[[str, int, torch.Tensor], torch.Tensor] | None = None,
    bongmath: bool = True,
    bongmath_iters: int = 100,
    final_denoise: bool = True,
    state_dtype: torch.dtype = torch.float64,
    model_dtype: torch.dtype | Sequence[torch.dtype] | None = None,
    step_sde_float32: bool = True,
    denoise_mask=None,
    clean_latent=None,
):
    """res_2s sampling over ``sigmas`` (N + 1 decreasing flow sigmas in (0, 1], last one >= 0).

    Args (the contract of :mod:`core.sampling.state`):
        model: ``model(x, sigma, **extra_args) -> x0`` with ``sigma`` a Python float, in ``x``'s form.
        x: the sample(s) at ``sigmas[0]``: a tensor or a tuple of tensors (e.g. video, audio).
        eta: fraction of the noise std renewed by each re-noising (0 = deterministic, no noise drawn).
        noise_sampler: ``noise_sampler(kind, step, x) -> noise`` with ``kind`` "substep" or "step", called per
            part in the order substep (each part), step (each part); use :func:`seeded_noise_sampler`
            or :func:`reference_noise_sampler`. Required when ``eta > 0``.
        bongmath: refine the anchor (``bongmath_iters`` fixed-point iterations, only on steps with
            ``h < 0.5`` and ``sigma > 0.03``) so that it is consistent with the re-noised midpoint.
        final_denoise: for a schedule ending in 0, run the last step to ``RES2S_TERMINAL_SIGMA`` and return
            the x0 of one more model call there (official behaviour: 2N + 1 calls). When False, the last
            step returns the x0 of its first model call (2N - 1 calls).
        state_dtype: dtype of the integrator arithmetic (float64 in the official loop).
        model_dtype: dtype of the sample between steps and of every model input (official: bfloat16);
            None keeps each input part's dtype. One dtype, or one per part.
        step_sde_float32: do the step-level re-noising's sigma arithmetic in float32, as the official loop
            does with its float32 schedule tensor (the midpoint re-noising is float64 there too).
        denoise_mask, clean_latent: optional per-part mask (1 = denoise) and clean latent; each x0 and
            each re-noised sample is blended back to the clean latent where the mask is 0.
        callback: called once per step (``len(sigmas) - 1`` times) with
            :func:`~core.sampling.state.step_info`'s dict; on the last step ``x`` is the returned sample.

    Returns the denoised sample(s) in ``x``'s form, in the model dtype. Every decision and coefficient is
    worked out before the loop (:func:`_plan`); the loop only does tensor arithmetic.
    """
    form = StateForm(x, "sample_res2s")
    xs = form.parts(x)
    sig = _as_sigma_list(sigmas)
    if len(sig) < 2:
        raise ValueError(f"sample_res2s: need at least 2 sigmas (one step), got {len(sig)}")
    if not all(math.isfinite(s) for s in sig):
        raise ValueError("sample_res2s: sigmas must be finite")
    if not all(0.0 < s <= 1.0 for s in sig[:-1]) or not 0.0 <= sig[-1] < sig[-2]:
        raise ValueError("sample_res2s: sigmas must lie in (0, 1] with a final value >= 0")
    if any(sig[i + 1] >= sig[i] for i in range(len(sig) - 1)):
        raise ValueError("sample_res2s: sigmas must be strictly decreasing")
    if eta < 0.0 or not math.isfinite(eta):
        raise ValueError(f"sample_res2s: eta must be finite and >= 0, got {eta!r}")
    if eta > 0.0 and noise_sampler is None:
        raise ValueError("sample_res2s: eta > 0 needs a noise_sampler, e.g. seeded_noise_sampler(seed)")
    masks = form.per_part(denoise_mask, "denoise_mask")
    cleans = form.per_part(clean_latent, "clean_latent")
    if any((m is None) != (c is None) for m, c in zip(masks, cleans)):
        raise ValueError("sample_res2s: denoise_mask and clean_latent must be given together")
    mdts = form.per_part(model_dtype, "model_dtype") if isinstance(model_dtype, (tuple, list)) \
        else [model_dtype] * form.n
    mdts = [xi.dtype if d is None else d for xi, d in zip(xs, mdts)]
    plan = _plan(sig, eta, bongmath, bongmath_iters, final_denoise, step_sde_float32)
    model_call = form.model_fn(model, extra_args)
    sd = state_dtype

    def call(parts: list[torch.Tensor], sigma: float) -> list[torch.Tensor]:
        return [_blend(o, m, c) for o, m, c in zip(model_call(parts, sigma), masks, cleans)]

    def renoise(i: int, kind: str, sde, anchor: list, det: list, like: list) -> list:
        # noise is drawn whenever eta > 0 (also for pass-through steps), as the official loop does
        noise = [noise_sampler(kind, i, c) if plan.noise else None for c in like]
        return [_blend(_sde_apply(a, d, sde, z), mk, cl) for a, d, z, mk, cl in zip(anchor, det, noise, masks, cleans)]

    cur = [xi.to(d) for xi, d in zip(xs, mdts)]
    den1 = None
    for i, st in enumerate(plan.steps):
        den1 = call(cur, st.sigma)
        anchor = [c.to(sd) for c in cur]
        den1_s = [d.to(sd) for d in den1]
        eps1 = [d - a for d, a in zip(den1_s, anchor)]
        x_mid = renoise(i, "substep", st.mid_sde, anchor, [a + st.ha21 * e for a, e in zip(anchor, eps1)], cur)
        if st.refine:
            anchor, eps1 = _refine_anchor(x_mid, den1_s, eps1, st.ha21, bongmath_iters)
        den2 = call([m.to(d) for m, d in zip(x_mid, mdts)], st.sigma_mid)
        eps2 = [d.to(sd) - a for d, a in zip(den2, anchor)]
        next_det = [a + st.h * (st.b1 * e1 + st.b2 * e2) for a, e1, e2 in zip(anchor, eps1, eps2)]
        cur = [xn.to(d) for xn, d in zip(renoise(i, "step", st.step_sde, anchor, next_det, cur), mdts)]
        if st.report and callback is not None:
            callback(step_info(i, form.pack(cur), st.sigma, st.sigma_next, form.pack(den1)))
    if plan.final_sigma is not None:
        den1 = call(cur, plan.final_sigma)
        cur = [d.to(dt) for d, dt in zip(den1, mdts)]
    if callback is not None:
        i, s, sn = plan.last
        callback(step_info(i, form.pack(cur), s, sn, form.pack(den1)))
    return form.pack(cur)
