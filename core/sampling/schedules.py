"""Sigma schedules for flow-matching samplers, built once before sampling.

Every function here returns plain Python lists (floats for sigmas, ints or floats for timesteps), so a
sampling loop never has to read a tensor back from the device to make a decision.

Conventions
-----------
* A flow sigma ``s`` lies in [0, 1): the noisy sample is ``x_s = (1 - s) * x0 + s * noise``.
* A schedule for ``N`` steps has ``N + 1`` sigmas: the ``N`` sigmas the model is evaluated at, then the
  value the last step lands on (0, or the last sigma again for ``final_sigmas_type="sigma_min"``).
* The sigma values are the float32 values a diffusers scheduler stores (computed in float64, rounded to
  float32 once at the end), so a float64 comparison with diffusers' ``scheduler.sigmas`` is exact; timesteps
  are truncated from the float64 values, as diffusers does.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import torch

__all__ = [
    "shift_sigmas",
    "unipc_flow_schedule",
    "flow_euler_schedule",
    "beta_ppf",
]


# --------------------------------------------------------------------------------------------------
# Small pieces


def shift_sigmas(sigmas: Sequence[float], shift: float) -> list[float]:
    """Resolution shift of flow sigmas: ``s * sigma / (1 + (s - 1) * sigma)`` (float64, no rounding).

    ``shift = 1`` leaves the values unchanged; ``shift > 1`` moves every step towards more noise.
    """
    shift = float(shift)
    return [shift * s / (1.0 + (shift - 1.0) * s) for s in map(float, sigmas)]


def _shift_np(sig: np.ndarray, shift: float) -> np.ndarray:
    # Same formula as shift_sigmas, on a float64 array, keeping numpy's operation order.
    return shift * sig / (1 + (shift - 1) * sig)


def _dynamic_shift_np(sig: np.ndarray, mu: float, kind: str) -> np.ndarray:
    # Resolution-dependent shift driven by mu ("exponential": e^mu, "linear": mu as the shift factor).
    if kind == "exponential":
        k = math.exp(mu)
    elif kind == "linear":
        k = mu
    else:
        raise ValueError(f"time_shift_type must be 'exponential' or 'linear', got {kind!r}")
    return k / (k + (1 / sig - 1) ** 1.0)


def _stretch_to_terminal(sig: np.ndarray, terminal: float) -> np.ndarray:
    # Affine map of (1 - sigma) so that the last sigma becomes exactly `terminal`.
    dist = 1 - sig
    scale = dist[-1] / (1 - terminal)
    return 1 - dist / scale


def _train_sigmas(cfg: dict) -> np.ndarray:
    """Variance-preserving sigmas sqrt((1 - abar) / abar) of the training beta schedule, index 0 = least noise.

    Built with float32 torch ops like the diffusers constructor, so the values agree bit for bit.
    """
    trained = cfg.get("trained_betas")
    table = _train_sigmas_cached(
        int(cfg.get("num_train_timesteps", 1000)),
        cfg.get("beta_start", 0.0001),
        cfg.get("beta_end", 0.02),
        cfg.get("beta_schedule", "linear"),
        None if trained is None else tuple(float(v) for v in trained),
        bool(cfg.get("rescale_betas_zero_snr", False)),
    )
    return table.copy()


@functools.lru_cache(maxsize=16)
def _train_sigmas_cached(n, b0, b1, kind, trained, rescale) -> np.ndarray:
    if trained is not None:
        betas = torch.tensor(trained, dtype=torch.float32)
    elif kind == "linear":
        betas = torch.linspace(b0, b1, n, dtype=torch.float32)
    elif kind == "scaled_linear":
        betas = torch.linspace(b0**0.5, b1**0.5, n, dtype=torch.float32) ** 2
    elif kind == "squaredcos_cap_v2":
        # Glide cosine alpha-bar, discretised per training step and capped at 0.999.
        def abar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = torch.tensor(
            [min(1 - abar((j + 1) / n) / abar(j / n), 0.999) for j in range(n)], dtype=torch.float32
        )
    else:
        raise NotImplementedError(f"beta_schedule {kind!r} is not supported")

    if rescale:
        # Rescale sqrt(abar) linearly so that the last step reaches zero SNR, keeping the first value.
        root = torch.cumprod(1.0 - betas, dim=0).sqrt()
        first, last = root[0].clone(), root[-1].clone()
        root = (root - last) * (first / (first - last))
        abar_r = root**2
        alphas = torch.cat([abar_r[0:1], abar_r[1:] / abar_r[:-1]])
        betas = 1 - alphas

    abar = torch.cumprod(1.0 - betas, dim=0)
    if rescale:
        abar[-1] = 2**-24  # keep the last sigma finite
    return (((1 - abar) / abar) ** 0.5).numpy().copy()


def _interp_index(sigma: float, log_table: np.ndarray) -> float:
    """Fractional table index of `sigma` by linear interpolation in log space.

    The lower neighbour is the last index whose log value is <= log(sigma) (0 when there is none, at most
    len - 2); the weight is clipped to [0, 1].
    """
    ls = np.log(np.maximum(sigma, 1e-10))
    below = np.nonzero(ls - log_table >= 0)[0]
    lo = int(below[-1]) if below.size else 0
    lo = min(lo, log_table.shape[0] - 2)
    a, b = log_table[lo], log_table[lo + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.clip((a - ls) / (a - b), 0, 1)
    return float((1 - w) * lo + w * (lo + 1))


# --------------------------------------------------------------------------------------------------
# Beta distribution quantile (for "beta" sigmas) without scipy


def _beta_cf(x: float, a: float, b: float) -> float:
    # Continued fraction of the incomplete beta function, evaluated with the modified Lentz method.
    tiny = 1e-300
    c = 1.0
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 500):
        m2 = 2 * m
        # even term
        num = m * (b - m) * x / ((a + m2 - 1.0) * (a + m2))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        # odd term
        num = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        step = c * d
        f *= step
        if abs(step - 1.0) < 1e-16:
            break
    return f


def _beta_cdf(x: float, a: float, b: float, log_norm: float) -> float:
    # Regularised incomplete beta I_x(a, b); log_norm = log B(a, b).
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(a * math.log(x) + b * math.log1p(-x) - log_norm)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_cf(x, a, b) / a
    return 1.0 - front * _beta_cf(1.0 - x, b, a) / b


def beta_ppf(q: float, a: float, b: float) -> float:
    """Quantile (inverse CDF) of the Beta(a, b) distribution, float64, by safeguarded Newton iteration."""
    q = float(q)
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"beta_ppf: q must be in [0, 1], got {q}")
    if q == 0.0:
        return 0.0
    if q == 1.0:
        return 1.0
    if q > 0.5:
        # Upper half: solve the mirrored problem, where 1 - q is exact and the root is small.
        return 1.0 - beta_ppf(1.0 - q, b, a)
    log_norm = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    lo, hi = 0.0, 1.0
    # Start from the small-x approximation I_x ~ x^a / (a B(a, b)); fall back to the middle.
    x = math.exp((math.log(q) + math.log(a) + log_norm) / a)
    if not 0.0 < x < 1.0:
        x = 0.5
    for _ in range(400):
        f = _beta_cdf(x, a, b, log_norm) - q
        if f == 0.0:
            return x
        if f < 0.0:
            lo = x
        else:
            hi = x
        dens = math.exp((a - 1.0) * math.log(x) + (b - 1.0) * math.log1p(-x) - log_norm)
        nxt = x - f / dens if dens > 0.0 else 0.5 * (lo + hi)
        if not lo < nxt < hi:
            nxt = 0.5 * (lo + hi)
        if abs(nxt - x) <= 2e-16 * abs(x) or hi - lo <= 2e-16 * hi:
            return nxt
        x = nxt
    return x


# --------------------------------------------------------------------------------------------------
# UniPC (flow) schedule


def _bounds(cfg: dict, in_sigmas: np.ndarray) -> tuple[float, float]:
    # Config sigma_min / sigma_max override the ends of the input table (ordered high -> low here).
    lo = cfg.get("sigma_min")
    hi = cfg.get("sigma_max")
    lo = float(in_sigmas[-1]) if lo is None else lo
    hi = float(in_sigmas[0]) if hi is None else hi
    return lo, hi


def _final(cfg: dict, sig: np.ndarray) -> float:
    kind = cfg.get("final_sigmas_type", "zero")
    if kind == "zero":
        return 0.0
    if kind == "sigma_min":
        return sig[-1]
    raise ValueError(f"final_sigmas_type must be 'zero' or 'sigma_min', got {kind!r}")


def unipc_flow_schedule(
    steps: int,
    config: dict | None = None,
    shift: float | None = None,
    native: bool = False,
    *,
    mu: float | None = None,
) -> tuple[list[float], list[int]]:
    """Sigmas and integer timesteps of a flow UniPC scheduler config, as diffusers 0.42.1 makes them.

    Reproduces ``UniPCMultistepScheduler(**config).set_timesteps(steps)`` for flow checkpoints, or, with
    ``native=True``, the Cosmos3 pipeline's ``use_native_flow_schedule`` call, which hands the scheduler the
    sigmas ``linspace(1 - 1/T, 0, steps + 1)[:-1]`` (T = num_train_timesteps) before its own processing.

    Args:
        steps: number of model evaluations N (>= 1).
        config: the scheduler's config dict (e.g. ``scheduler_config.json``); unknown keys are ignored,
            missing keys take diffusers' defaults. Honoured keys: ``use_flow_sigmas``, ``flow_shift``,
            ``use_karras_sigmas``, ``use_exponential_sigmas``, ``use_beta_sigmas``, ``sigma_min``,
            ``sigma_max``, ``final_sigmas_type``, ``num_train_timesteps``, ``use_dynamic_shifting``,
            ``time_shift_type``, ``shift_terminal`` and the beta-schedule keys (``beta_start``, ``beta_end``,
            ``beta_schedule``, ``trained_betas``, ``rescale_betas_zero_snr``) that the Karras / exponential /
            beta tables are derived from. ``timestep_spacing`` / ``steps_offset`` have no effect on any of
            these branches (diffusers overwrites the spaced timesteps), so they are ignored.
        shift: overrides ``config["flow_shift"]`` when given.
        native: Cosmos3 ``use_native_flow_schedule`` branch.
        mu: shift parameter, required when ``use_dynamic_shifting`` is set.

    Returns:
        ``(sigmas, timesteps)``: N + 1 float sigmas (float32 values), N int timesteps.

    Branch facts (diffusers behaviour, reproduced on purpose):
        * plain flow: ``linspace(1, 1/T, N + 1)[:-1]``, shifted; a first sigma within 1e-6 of 1 is lowered by
          1e-6; timesteps = trunc(sigma * T).
        * Karras + flow: the Karras ramp (rho 7) runs over the VP sigmas of the beta schedule (or over the
          given sigmas when ``native``), then ``sigma / (1 + sigma)``; **flow_shift is not applied**;
          timesteps = trunc(sigma * T).
        * exponential / beta + flow: diffusers never converts these to flow sigmas: the values stay VP sigmas
          (up to ~157 with the default betas) and the timesteps are log-sigma table interpolations. They
          are reproduced here, but a flow sampler cannot use them (``sample_unipc`` rejects sigmas >= 1).
    """
    cfg = dict(config or {})
    n = int(steps)
    if n < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not cfg.get("use_flow_sigmas", True):
        raise ValueError("unipc_flow_schedule needs a flow scheduler config (use_flow_sigmas=True)")
    picked = [k for k in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas") if cfg.get(k)]
    if len(picked) > 1:
        raise ValueError(f"only one of {picked} can be enabled")
    n_train = int(cfg.get("num_train_timesteps", 1000))
    flow_shift = float(cfg.get("flow_shift", 1.0) if shift is None else shift)

    given = np.linspace(1.0 - 1.0 / n_train, 0.0, n + 1)[:-1] if native else None

    def table():
        # The input table for Karras / exponential / beta and its log (for timestep interpolation).
        src = _train_sigmas(cfg) if given is None else given
        return np.flip(src).copy(), np.log(src)

    if picked == ["use_karras_sigmas"]:
        in_sig, _ = table()
        lo, hi = _bounds(cfg, in_sig)
        rho = 7.0
        ramp = np.linspace(0, 1, n)
        sig = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
        sig = sig / (sig + 1)
        t = sig * n_train
    elif picked:
        in_sig, log_tab = table()
        lo, hi = _bounds(cfg, in_sig)
        if picked == ["use_exponential_sigmas"]:
            sig = np.exp(np.linspace(math.log(hi), math.log(lo), n))
        else:
            qs = 1 - np.linspace(0, 1, n)
            sig = np.array([lo + beta_ppf(q, 0.6, 0.6) * (hi - lo) for q in qs])
        t = np.array([_interp_index(s, log_tab) for s in sig])
    else:
        sig = np.linspace(1, 1 / n_train, n + 1)[:-1] if given is None else given.copy()
        if cfg.get("use_dynamic_shifting", False):
            if mu is None:
                raise ValueError("use_dynamic_shifting needs `mu`")
            sig = _dynamic_shift_np(sig, mu, cfg.get("time_shift_type", "exponential"))
        else:
            sig = _shift_np(sig, flow_shift)
        if cfg.get("shift_terminal"):
            sig = _stretch_to_terminal(sig, cfg["shift_terminal"])
        if np.fabs(sig[0] - 1) < 1e-6:
            sig[0] -= 1e-6  # keeps log(1 - sigma) finite
        t = sig * n_train

    sigmas = np.concatenate([sig, [_final(cfg, sig)]]).astype(np.float32)
    if not np.all(np.isfinite(t)):
        raise ValueError(
            f"this scheduler config gives non-finite timesteps for steps={n} (diffusers produces NaN here too); "
            "use more steps or another sigma type"
        )
    timesteps = [int(v) for v in np.asarray(t, dtype=np.float64).tolist()]
    return [float(v) for v in sigmas.tolist()], timesteps


# --------------------------------------------------------------------------------------------------
# Fixed-list (distilled) Euler schedule


def flow_euler_schedule(
    sigmas: Sequence[float], shift: float = 1.0, num_train_timesteps: int = 1000
) -> tuple[list[float], list[float]]:
    """Schedule of ``FlowMatchEulerDiscreteScheduler(shift=shift).set_timesteps(sigmas=sigmas)``.

    For distilled checkpoints the list already carries its shift, so ``shift`` stays 1. The list is rounded
    to float32 (as diffusers does), shifted in float32, and a final 0 is appended. Timesteps are the float32
    products ``sigma * num_train_timesteps`` (floats, not integers).

    Returns ``(sigmas, timesteps)`` with ``len(sigmas) == len(timesteps) + 1``.
    """
    sig = np.array([float(s) for s in sigmas]).astype(np.float32)
    if sig.ndim != 1 or sig.size == 0:
        raise ValueError("flow_euler_schedule needs a non-empty list of sigmas")
    shift = float(shift)
    sig = shift * sig / (1 + (shift - 1) * sig)  # float32 arithmetic: Python scalars are weak in numpy 2
    sig = sig.astype(np.float32)
    t = (torch.from_numpy(sig) * num_train_timesteps).tolist()
    return [float(v) for v in sig.tolist()] + [0.0], [float(v) for v in t]
