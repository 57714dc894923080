"""UniPC multistep sampler for flow-matching models (predict-x0, B(h) variants bh1 / bh2).

Flow parameterisation: ``x_sigma = alpha * x0 + sigma * noise`` with ``alpha = 1 - sigma`` and the
log-SNR ``lambda = ln(alpha) - ln(sigma)``. The model callable returns the denoised estimate ``x0``.

Every coefficient (step sizes h, phi-functions, B(h), the ratios r_k and the rho systems) is worked out
in float64 on the host from the Python list of sigmas before the loop starts; the loop itself only does
tensor arithmetic with Python-float scalars, so it never waits on the device.

Two algebraic facts keep the updates simple and exact where it matters:

* With ``alpha = 1 - sigma`` the first-order part of an update, ``(sigma_t/sigma_s) x - alpha_t (e^-h - 1) m``,
  equals ``m + (sigma_t/sigma_s) (x - m)``: a lerp from the x0 estimate towards the sample. Where the
  model says the sample already is clean (``m == x``, e.g. conditioning frames with zero velocity) the
  result is ``x`` bit for bit, and the higher-order terms vanish because they are built from differences
  of x0 estimates.
* A step to ``sigma = 0`` has ``lambda = +inf``: the first-order update collapses to ``m`` exactly. The
  higher-order terms diverge there, so a step that lands on 0 is always taken with order 1. (diffusers
  evaluates the limit numerically: with bh1 it computes ``B(h) * 0 = -inf * 0 = NaN`` even at order 1,
  and at order >= 2 without ``lower_order_final`` it returns inf or fails to solve for rho.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from .state import StateForm, step_info

__all__ = ["sample_unipc", "unipc_step_orders"]


@dataclass(frozen=True)
class _Update:
    """One UniP / UniC update as a fixed linear recipe.

    result = lerp(m0, x, ratio) + sum_k hist_w[k] * (m_{-(k+1)} - m0) [+ new_w * (m_new - m0)]
    where m0 is the newest x0 estimate the update is anchored on and m_{-j} are older ones.
    ``ratio is None`` means the update is the identity (sigma does not move).
    """

    ratio: float | None
    hist_w: tuple[float, ...] = ()
    new_w: float | None = None


def _lam(s: float) -> float:
    # Flow log-SNR; s in (0, 1).
    return math.log1p(-s) - math.log(s)


def _b_vector(hh: float, bh: float, n: int) -> list[float]:
    # Right-hand side of the UniPC order conditions: b_j = j! * phi_{j+1}-type remainders / B(h).
    phi = math.expm1(hh) / hh - 1.0
    fact = 1.0
    out = []
    for j in range(1, n + 1):
        out.append(phi * fact / bh)
        fact *= j + 1
        phi = phi / hh - 1.0 / fact
    return out


def _rank_matrix(ranks: Sequence[float], n: int) -> np.ndarray:
    # Row j holds ranks ** j (Vandermonde-like system of the multistep order conditions).
    return np.array([[r**j for r in ranks] for j in range(n)], dtype=np.float64)


def _update(
    s_from: float,
    s_to: float,
    older: Sequence[float],
    order: int,
    solver_type: str,
    corrector: bool,
) -> _Update:
    """Coefficients of a predictor (corrector=False) or corrector step from ``s_from`` to ``s_to``.

    ``older`` are the sigmas of the older x0 estimates, newest first (``order - 1`` of them are used).
    """
    if s_to == s_from:
        return _Update(ratio=None)
    ratio = s_to / s_from
    if s_to == 0.0:
        # lambda_t = +inf: only the order-1 term survives and it equals the x0 estimate.
        return _Update(ratio=0.0)
    lam_s = _lam(s_from)
    h = _lam(s_to) - lam_s
    hh = -h
    bh = hh if solver_type == "bh1" else math.expm1(hh)
    alpha_t = 1.0 - s_to
    ranks = [(_lam(older[k]) - lam_s) / h for k in range(order - 1)]

    if corrector:
        if order == 1:
            rho = [0.5]
        else:
            rmat = _rank_matrix(ranks + [1.0], order)
            rho = np.linalg.solve(rmat, np.array(_b_vector(hh, bh, order))).tolist()
        hist_w = tuple(-alpha_t * bh * rho[k] / ranks[k] for k in range(order - 1))
        return _Update(ratio=ratio, hist_w=hist_w, new_w=-alpha_t * bh * rho[-1])

    if order == 1:
        rho = []
    elif order == 2:
        rho = [0.5]
    else:
        rmat = _rank_matrix(ranks, order - 1)
        rho = np.linalg.solve(rmat, np.array(_b_vector(hh, bh, order - 1))).tolist()
    hist_w = tuple(-alpha_t * bh * rho[k] / ranks[k] for k in range(order - 1))
    return _Update(ratio=ratio, hist_w=hist_w)


def _as_sigma_list(sigmas) -> list[float]:
    if isinstance(sigmas, torch.Tensor):
        sigmas = sigmas.detach().to("cpu", torch.float64).reshape(-1).tolist()
    return [float(s) for s in sigmas]


def _check_flow_sigmas(sig: list[float], who: str) -> None:
    if len(sig) < 2:
        raise ValueError(f"{who}: need at least 2 sigmas (one step), got {len(sig)}")
    if not all(math.isfinite(s) for s in sig):
        raise ValueError(f"{who}: sigmas must be finite")
    if not all(0.0 < s < 1.0 for s in sig[:-1]) or not 0.0 <= sig[-1] < 1.0:
        raise ValueError(
            f"{who}: flow sigmas must lie in (0, 1) with a final value in [0, 1); got max {max(sig):.6g}, "
            f"min {min(sig):.6g} (sigmas >= 1 are not flow sigmas: exponential/beta UniPC configs give "
            "VP sigmas, and a leading 1.0 must be lowered, e.g. by 1e-6 as diffusers does)"
        )
    for i in range(len(sig) - 1):
        last = i == len(sig) - 2
        if sig[i + 1] > sig[i] or (sig[i + 1] == sig[i] and not last):
            raise ValueError(
                f"{who}: sigmas must decrease strictly (only the final value may repeat the previous one); "
                f"sigmas[{i}]={sig[i]}, sigmas[{i + 1}]={sig[i + 1]}"
            )


def unipc_step_orders(n_steps: int, order: int, lower_order_final: bool) -> list[int]:
    """Predictor order of each step, as diffusers' ``UniPCMultistepScheduler.step`` picks it.

    Warm-up: step i uses at most order i + 1. With ``lower_order_final`` step i uses at most
    ``n_steps - i`` (for every step count: unlike DPM-Solver, UniPC has no "< 15 steps" condition), so the
    last step is order 1 and, for order 3, the one before it order 2.
    """
    out = []
    for i in range(n_steps):
        p = min(order, i + 1)
        if lower_order_final:
            p = min(p, n_steps - i)
        out.append(p)
    return out


def _plan(
    sig: list[float], order: int, solver_type: str, lower_order_final: bool, disable_corrector: Iterable[int]
) -> list[tuple[_Update | None, _Update]]:
    """(corrector, predictor) recipe for every step; corrector None where it is skipped."""
    n = len(sig) - 1
    off = {int(j) for j in disable_corrector}
    orders = unipc_step_orders(n, order, lower_order_final)
    plan = []
    for i in range(n):
        corr = None
        # The corrector at step i refines the output of step i - 1, with that step's order; diffusers
        # indexes disable_corrector by that earlier step (i - 1).
        if i >= 1 and (i - 1) not in off:
            q = orders[i - 1]
            corr = _update(sig[i - 1], sig[i], [sig[i - 1 - k] for k in range(1, q)], q, solver_type, True)
        p = 1 if sig[i + 1] == 0.0 else orders[i]
        pred = _update(sig[i], sig[i + 1], [sig[i - k] for k in range(1, p)], p, solver_type, False)
        plan.append((corr, pred))
    return plan


def _apply(upd: _Update, x: torch.Tensor, hist: list[torch.Tensor], new: torch.Tensor | None) -> torch.Tensor:
    # hist[-1] is the anchor m0; hist[-1 - k] the k-th older estimate. All in the working dtype.
    m0 = hist[-1]
    out = torch.lerp(m0, x.to(m0.dtype), upd.ratio)
    for k, w in enumerate(upd.hist_w, start=1):
        out.add_(hist[-1 - k] - m0, alpha=w)
    if upd.new_w is not None:
        out.add_(new - m0, alpha=upd.new_w)
    return out


def sample_unipc(
    model: Callable,
    x,
    sigmas,
    extra_args: dict | None = None,
    callback: Callable[[dict], None] | None = None,
    *,
    order: int = 2,
    solver_type: str = "bh2",
    lower_order_final: bool = True,
    disable_corrector: Iterable[int] = (),
):
    """UniPC multistep sampling of a flow model from ``sigmas[0]`` down to ``sigmas[-1]``.

    Args (the contract of :mod:`core.sampling.state`):
        model: ``model(x, sigma, **extra_args) -> x0`` (the denoised estimate; a velocity model is wrapped
            as ``x - sigma * v``). ``sigma`` is a Python float taken from ``sigmas``.
        x: the starting sample at ``sigmas[0]`` (noise for text-to-video): a tensor or a tuple of tensors.
            Each part's dtype is its state dtype; updates are computed in at least float32 and cast back.
        sigmas: N + 1 flow sigmas (Python floats, or a 1-D tensor that is read once before the loop),
            strictly decreasing in (0, 1), the last one in [0, 1) (it may repeat the previous value, as
            ``final_sigmas_type="sigma_min"`` does; that last step then leaves x unchanged).
        extra_args: keyword arguments passed to every model call.
        callback: called after each step with :func:`~core.sampling.state.step_info`'s dict; an
            exception raised there aborts sampling.
        order: solver order (1, 2, 3, ...), warmed up from 1.
        solver_type: ``"bh1"`` (B(h) = h) or ``"bh2"`` (B(h) = e^h - 1).
        lower_order_final: lower the order near the end (see ``unipc_step_orders``).
        disable_corrector: step indices j whose predictor output is NOT corrected (diffusers' convention:
            the UniC correction of step j's result would run at the start of step j + 1).

    Returns the sample after the last step (the x0 estimate of the last model call when sigmas end in 0), in
    ``x``'s form.

    Matches diffusers' ``UniPCMultistepScheduler`` (flow sigmas, ``prediction_type="flow_prediction"``,
    predict_x0) step for step, except that a step that lands on sigma 0 always uses order 1 (diffusers
    diverges there when ``lower_order_final=False``).
    """
    if int(order) != order or order < 1:
        raise ValueError(f"sample_unipc: order must be a positive integer, got {order}")
    if solver_type not in ("bh1", "bh2"):
        raise ValueError(f"sample_unipc: solver_type must be 'bh1' or 'bh2', got {solver_type!r}")
    sig = _as_sigma_list(sigmas)
    _check_flow_sigmas(sig, "sample_unipc")
    order = int(order)
    plan = _plan(sig, order, solver_type, lower_order_final, disable_corrector)
    form = StateForm(x, "sample_unipc")
    call = form.model_fn(model, extra_args)
    xs = form.parts(x)
    dtypes = [p.dtype for p in xs]
    work = [torch.promote_types(d, torch.float32) for d in dtypes]

    hist: list[list[torch.Tensor]] = [[] for _ in xs]  # per part: x0 estimates (working dtype), oldest first
    x_in = None  # the (corrected) sample the previous predictor started from
    for i, (corr, pred) in enumerate(plan):
        den = call(xs, sig[i])
        m_new = [d.to(w) for d, w in zip(den, work)]
        if corr is not None:
            xs = [_apply(corr, xp, h, m).to(dt) for xp, h, m, dt in zip(x_in, hist, m_new, dtypes)]
        for h, m in zip(hist, m_new):
            h.append(m)
            del h[:-order]
        x_in = xs
        if pred.ratio is not None:
            xs = [_apply(pred, xp, h, None).to(dt) for xp, h, dt in zip(x_in, hist, dtypes)]
        if callback is not None:
            callback(step_info(i, form.pack(xs), sig[i], sig[i + 1], form.pack(den)))
    return form.pack(xs)
