"""Multi-pass guidance in x0 space (LTX-2 style): CFG + STG + modality isolation + global-std rescale.

For one modality (video or audio) with the conditional estimate ``c`` and the estimates of the other passes

    pred = c + (cfg - 1) (c - u_text) + stg (c - u_perturbed) + (modality - 1) (c - u_modality)

and, when ``rescale != 0``, ``pred *= rescale * std(c) / std(pred) + (1 - rescale)`` with one standard
deviation over the whole tensor (batch included). A pass whose scale is neutral (cfg 1, stg 0, modality 1)
is not needed; its term is left out.

Passes, in the order the official pipeline runs them: ``cond`` (positive prompt), ``neg`` (negative prompt,
for cfg), ``perturbed`` (positive prompt, self-attention skipped in the STG blocks), ``modality`` (positive
prompt, audio<->video cross-attention off). The model is joint, so a pass runs when either modality needs it.
"""

from __future__ import annotations

import math

import torch

__all__ = ["PASS_ORDER", "MultipassGuider", "multipass_guidance", "needed_passes", "skips_step"]

PASS_ORDER = ("cond", "neg", "perturbed", "modality")


def _scales(v) -> list[float]:
    return [float(s) for s in v] if isinstance(v, (tuple, list)) else [float(v)]


def _non_neutral(value: float, neutral: float) -> bool:
    return not math.isclose(value, neutral)


def needed_passes(cfg=1.0, stg=0.0, modality=1.0) -> list[str]:
    """Names of the passes to run, in ``PASS_ORDER``. Each scale may be one number or one per modality
    (e.g. ``(video_cfg, audio_cfg)``); a pass is needed when any of its scales is not neutral."""
    passes = ["cond"]
    if any(_non_neutral(s, 1.0) for s in _scales(cfg)):
        passes.append("neg")
    if any(_non_neutral(s, 0.0) for s in _scales(stg)):
        passes.append("perturbed")
    if any(_non_neutral(s, 1.0) for s in _scales(modality)):
        passes.append("modality")
    return passes


def multipass_guidance(
    cond: torch.Tensor,
    uncond_text: torch.Tensor | None = None,
    uncond_perturbed: torch.Tensor | None = None,
    uncond_modality: torch.Tensor | None = None,
    *,
    cfg: float = 1.0,
    stg: float = 0.0,
    modality: float = 1.0,
    rescale: float = 0.0,
) -> torch.Tensor:
    """Guided x0 of one modality from the x0 estimates of the passes (see the module docstring).

    A pass may be None only when its scale is neutral. No host synchronisation: the rescale factor stays a
    0-dim tensor on the device.
    """
    terms = (
        ("cfg", cfg - 1.0, uncond_text, _non_neutral(cfg, 1.0)),
        ("stg", stg, uncond_perturbed, _non_neutral(stg, 0.0)),
        ("modality", modality - 1.0, uncond_modality, _non_neutral(modality, 1.0)),
    )
    pred = cond
    for name, weight, other, needed in terms:
        if other is None:
            if needed:
                raise ValueError(f"multipass_guidance: {name} scale is not neutral but its pass estimate is missing")
            continue
        pred = pred + weight * (cond - other)
    if rescale != 0:
        factor = cond.std() / pred.std()
        factor = rescale * factor + (1 - rescale)
        pred = pred * factor
    return pred


def skips_step(step: int, skip_step: int) -> bool:
    """True when guidance is skipped at ``step``: with ``skip_step = k > 0`` only every (k+1)-th step
    (0, k+1, 2k+2, ...) is computed and the others reuse the previous guided x0."""
    return skip_step > 0 and step % (skip_step + 1) != 0


class MultipassGuider:
    """Guidance of one modality over one sampling run, with skip-step reuse of the last guided x0.

    ``guider(step, cond, uncond_text, uncond_perturbed, uncond_modality)`` returns the guided x0; on a skipped
    step (see :func:`skips_step`) it returns the previous result without looking at the estimates (the
    caller can skip the passes: check :meth:`skips` first). Step 0 is never skipped.
    """

    def __init__(self, cfg: float = 1.0, stg: float = 0.0, modality: float = 1.0, rescale: float = 0.0,
                 skip_step: int = 0):
        if skip_step < 0:
            raise ValueError(f"MultipassGuider: skip_step must be >= 0, got {skip_step}")
        self.cfg, self.stg, self.modality, self.rescale = float(cfg), float(stg), float(modality), float(rescale)
        self.skip_step = int(skip_step)
        self.last: torch.Tensor | None = None

    @property
    def passes(self) -> list[str]:
        return needed_passes(self.cfg, self.stg, self.modality)

    def skips(self, step: int) -> bool:
        return self.last is not None and skips_step(step, self.skip_step)

    def __call__(
        self,
        step: int,
        cond: torch.Tensor | None,
        uncond_text: torch.Tensor | None = None,
        uncond_perturbed: torch.Tensor | None = None,
        uncond_modality: torch.Tensor | None = None,
        *,
        remember: bool = True,
    ) -> torch.Tensor:
        if self.skips(step):
            return self.last
        if cond is None:
            raise ValueError("MultipassGuider: cond is required on a step that is not skipped")
        out = multipass_guidance(
            cond, uncond_text, uncond_perturbed, uncond_modality,
            cfg=self.cfg, stg=self.stg, modality=self.modality, rescale=self.rescale,
        )
        if remember:
            self.last = out
        return out

