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
from typing import Callable, Sequence

import numpy as np
import torch

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

_U64 = 1 << 64


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
def standardized_noise(shape, generator: torch.Generator, device=None) -> torch.Tensor:
    """float64 normal noise standardized over the whole tensor, then again over its last two dims."""
    device = generator.device if device is None else device
    z = torch.randn(tuple(shape), generator=generator, dtype=torch.float64, device=device)
    z = (z - z.mean()) / z.std()
    dims = tuple(range(-min(z.ndim, 2), 0))
    z.sub_(z.mean(dim=dims, keepdim=True))
    z.div_(z.std(dim=dims, keepdim=True))
    return z


class _TwoStreamNoise:
    """Noise sampler with one generator for the step noise and one for the substep (midpoint) noise."""

    def __init__(self, step_seed: int, substep_seed: int, device=None):
        self.seeds = {"step": int(step_seed) % _U64, "substep": int(substep_seed) % _U64}
        self.device = None if device is None else torch.device(device)
        self._gens: dict[str, torch.Generator] = {}

    def __call__(self, kind: str, step: int, x: torch.Tensor) -> torch.Tensor:
        gen = self._gens.get(kind)
        if gen is None:
            if kind not in self.seeds:
                raise ValueError(f"noise sampler: kind must be 'step' or 'substep', got {kind!r}")
            gen = torch.Generator(device=self.device if self.device is not None else x.device)
            gen.manual_seed(self.seeds[kind])
            self._gens[kind] = gen
        return standardized_noise(x.shape, gen)


def seeded_noise_sampler(seed: int, device=None) -> Callable[[str, int, torch.Tensor], torch.Tensor]:
    """SDE noise driven by the user's seed: step noise from ``seed``, substep noise from ``seed + 10000``.

    The generators live on ``device`` (default: the device of the first sample drawn for), are created on the
    first draw, and advance with every draw, so a sampler object serves one sampling run.
    ``seeded_noise_sampler(-1)`` is the official pipelines' fixed noise.
    """
    return _TwoStreamNoise(seed, int(seed) + 10000, device)


def reference_noise_sampler(device=None) -> Callable[[str, int, torch.Tensor], torch.Tensor]:
    """The official res2s noise, which ignores the user's seed: step seed -1, substep seed 9999."""
    return _TwoStreamNoise(-1, 9999, device)


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


def _per_item(value, n: int, what: str) -> list:
    if value is None:
        return [None] * n
    if isinstance(value, (tuple, list)):
        if len(value) != n:
            raise ValueError(f"sample_res2s: {what} has {len(value)} entries for {n} latents")
        return list(value)
    if n != 1:
        raise ValueError(f"sample_res2s: {what} must be a tuple of {n} entries (one per latent) or None")
    return [value]


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

    Args:
        model: ``model(x, sigma, **extra_args) -> x0`` with ``sigma`` a Python float. When ``x`` is a tuple
            (video, audio) the model gets and returns tuples.
        x: the sample(s) at ``sigmas[0]``.
        eta: fraction of the noise std renewed by each re-noising (0 = deterministic, no noise drawn).
        noise_sampler: ``noise_sampler(kind, step, x) -> noise`` with ``kind`` "substep" or "step", called per
            latent in the order substep (each latent), step (each latent); use :func:`seeded_noise_sampler`
            or :func:`reference_noise_sampler`. Required when ``eta > 0``.
        bongmath: refine the anchor (``bongmath_iters`` fixed-point iterations, only on steps with
            ``h < 0.5`` and ``sigma > 0.03``) so that it is consistent with the re-noised midpoint.
        final_denoise: for a schedule ending in 0, run the last step to ``RES2S_TERMINAL_SIGMA`` and return
            the x0 of one more model call there (official behaviour: 2N + 1 calls). When False, the last
            step returns the x0 of its first model call (2N - 1 calls).
        state_dtype: dtype of the integrator arithmetic (float64 in the official loop).
        model_dtype: dtype of the sample between steps and of every model input (official: bfloat16);
            None keeps each input latent's dtype. One dtype, or one per latent.
        step_sde_float32: do the step-level re-noising's sigma arithmetic in float32, as the official loop
            does with its float32 schedule tensor (the midpoint re-noising is float64 there too).
        denoise_mask, clean_latent: optional per-latent mask (1 = denoise) and clean latent; each x0 and
            each re-noised sample is blended back to the clean latent where the mask is 0.
        callback: called once per step (``len(sigmas) - 1`` times) with ``{"i", "x", "sigma",
            "sigma_next", "denoised"}``; on the last step ``x`` is the returned sample.

    Returns the denoised sample(s) (a tuple when ``x`` is a tuple), in the model dtype.
    """
    multi = isinstance(x, (tuple, list))
    xs = list(x) if multi else [x]
    n_lat = len(xs)
    if n_lat == 0:
        raise ValueError("sample_res2s: x is an empty tuple")
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
    extra_args = {} if extra_args is None else extra_args
    masks = _per_item(denoise_mask, n_lat, "denoise_mask")
    cleans = _per_item(clean_latent, n_lat, "clean_latent")
    if any((m is None) != (c is None) for m, c in zip(masks, cleans)):
        raise ValueError("sample_res2s: denoise_mask and clean_latent must be given together")
    if isinstance(model_dtype, (tuple, list)):
        mdts = _per_item(model_dtype, n_lat, "model_dtype")
    else:
        mdts = [model_dtype] * n_lat
    mdts = [xi.dtype if d is None else d for xi, d in zip(xs, mdts)]
    sd = state_dtype

    n_steps = len(sig) - 1
    ends_at_zero = sig[-1] == 0.0
    if ends_at_zero and final_denoise:
        if sig[-2] <= RES2S_TERMINAL_SIGMA:
            raise ValueError(f"sample_res2s: the last non-zero sigma must exceed {RES2S_TERMINAL_SIGMA}")
        run = sig[:-1] + [RES2S_TERMINAL_SIGMA, 0.0]
        n_rk = n_steps
    else:
        run = list(sig)
        n_rk = n_steps - 1 if ends_at_zero else n_steps
    # log-sigma step sizes, computed once on the CPU in float64 (the last entry may be inf and is unused)
    run_t = torch.tensor(run, dtype=torch.float64)
    hs = (-torch.log(run_t[1:] / run_t[:-1])).tolist()
    # everything the loop decides or multiplies by, as host floats prepared here
    plans = []
    for i in range(n_rk):
        s, sn, h = run[i], run[i + 1], hs[i]
        # sqrt(sigma * sigma_next) by torch's CPU kernel, which is not always correctly rounded (as official)
        s_mid = torch.sqrt(torch.tensor(s, dtype=torch.float64) * torch.tensor(sn, dtype=torch.float64)).tolist()
        plans.append((
            s, sn, h, s_mid, res2s_coefficients(h),
            _sde_plan(s, s_mid, eta, False),  # the midpoint re-noising is float64 in the official loop
            _sde_plan(s, sn, eta, step_sde_float32),
            bongmath and bongmath_iters > 0 and h < 0.5 and s > 0.03,
        ))

    def call(latents: list[torch.Tensor], sigma: float) -> list[torch.Tensor]:
        out = model(tuple(latents) if multi else latents[0], sigma, **extra_args)
        outs = list(out) if multi else [out]
        if len(outs) != n_lat:
            raise ValueError(f"sample_res2s: model returned {len(outs)} latents for {n_lat}")
        return [_blend(o, m, c) for o, m, c in zip(outs, masks, cleans)]

    def pack(items: list[torch.Tensor]):
        return tuple(items) if multi else items[0]

    def report(i: int, cur, sigma: float, sigma_next: float, den) -> None:
        if callback is not None:
            callback({"i": i, "x": pack(cur), "sigma": sigma, "sigma_next": sigma_next, "denoised": pack(den)})

    cur = [xi.to(d) for xi, d in zip(xs, mdts)]
    draw = eta > 0.0
    for i in range(n_rk):
        s, sn, h, s_mid, (a21, b1, b2), plan_mid, plan_step, refine = plans[i]
        ha21 = h * a21

        den1 = call(cur, s)
        anchor = [c.to(sd) for c in cur]
        den1_s = [d.to(sd) for d in den1]
        eps1 = [d - a for d, a in zip(den1_s, anchor)]
        mid_det = [a + ha21 * e for a, e in zip(anchor, eps1)]
        noise_mid = [noise_sampler("substep", i, c) if draw else None for c in cur]
        x_mid = [
            _blend(_sde_apply(a, m, plan_mid, z), mk, cl)
            for a, m, z, mk, cl in zip(anchor, mid_det, noise_mid, masks, cleans)
        ]
        if refine:
            anchor, eps1 = _refine_anchor(x_mid, den1_s, eps1, ha21, bongmath_iters)

        den2 = call([m.to(d) for m, d in zip(x_mid, mdts)], s_mid)
        eps2 = [d.to(sd) - a for d, a in zip(den2, anchor)]
        next_det = [a + h * (b1 * e1 + b2 * e2) for a, e1, e2 in zip(anchor, eps1, eps2)]
        noise_step = [noise_sampler("step", i, c) if draw else None for c in cur]
        x_next = [
            _blend(_sde_apply(a, nd, plan_step, z), mk, cl)
            for a, nd, z, mk, cl in zip(anchor, next_det, noise_step, masks, cleans)
        ]
        cur = [xn.to(d) for xn, d in zip(x_next, mdts)]
        if i < n_steps - 1:
            report(i, cur, sig[i], sig[i + 1], den1)

    if n_rk == n_steps:
        if ends_at_zero:  # final plain denoise at the terminal sigma
            den = call(cur, RES2S_TERMINAL_SIGMA)
            cur = [d.to(dt) for d, dt in zip(den, mdts)]
        else:
            den = den1
        report(n_steps - 1, cur, sig[n_steps - 1], sig[n_steps], den)
    else:  # schedule ends at 0 without the final denoise: the last step returns its x0
        den = call(cur, sig[n_steps - 1])
        cur = [d.to(dt) for d, dt in zip(den, mdts)]
        report(n_steps - 1, cur, sig[n_steps - 1], sig[n_steps], den)
    return pack(cur)
