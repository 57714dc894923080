"""The guided LTX-2 model: ``model((video_x, audio_x), sigma) -> (video_x0, audio_x0)``, and the official guidance.

:class:`LTX2Denoiser` runs the passes the guidance scales need (:func:`core.guidance.needed_passes`: conditional,
negative prompt, STG, modality-isolated), turns each velocity into x0 (``x0 = x - sigma * v``) and combines them per
modality in x0 space (:func:`core.guidance.multipass_guidance`). Any sampler of :mod:`core.sampling` steps the
(video, audio) pair through it as it is.

Two ways to run the passes (``strategy``), the same numbers up to float32 rounding:

* ``"batched"``: all passes along the batch in one call, each with its own switches (the transformer's
  ``per_item``: STG blocks and cross-modal attention off per sample); only prompt contexts of different lengths
  split it into more calls.
* ``"split"``: one transformer call per pass (the official / HQ path; lowest peak memory).

The presets are the official ones (ltx-pipelines constants): the one-stage LTX-2.3 guidance and the HQ stage 1's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..core.guidance import multipass_guidance, needed_passes
from .transformer import TokenTimesteps


@dataclass(frozen=True)
class Guidance:
    """Guidance of one modality: ``cfg`` (1 = off), ``stg`` (0 = off) applied with self-attention skipped
    in ``stg_blocks``, ``modality`` (1 = off; isolation of the audio<->video cross-attention) and
    ``rescale`` (0 = off; global-std rescale toward the conditional estimate)."""

    cfg: float = 1.0
    stg: float = 0.0
    stg_blocks: tuple[int, ...] = ()
    modality: float = 1.0
    rescale: float = 0.0


def _check_guidance(g: Guidance, name: str, num_layers: int) -> Guidance:
    for field in ("cfg", "stg", "modality", "rescale"):
        v = getattr(g, field)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"LTX2Denoiser: {name}.{field} must be a finite number, got {v!r}")
    blocks = tuple(int(b) for b in g.stg_blocks)
    bad = [b for b in blocks if not 0 <= b < num_layers]
    if bad:
        raise ValueError(f"LTX2Denoiser: {name}.stg_blocks {bad} out of range for a {num_layers}-block transformer")
    if g.stg != 0 and not blocks:
        raise ValueError(f"LTX2Denoiser: {name}.stg is {g.stg} but {name}.stg_blocks is empty (STG would do nothing)")
    return Guidance(float(g.cfg), float(g.stg), blocks, float(g.modality), float(g.rescale))


class _SharedPrefix(NamedTuple):
    """Call ``target`` (the STG pass) starts at ``block`` from the states call ``source`` (the conditional
    pass) had entering that block; indices into :attr:`LTX2Denoiser.groups`."""

    source: int
    target: int
    block: int


class LTX2Denoiser:
    """``model((video_x, audio_x), sigma) -> (video_x0, audio_x0)``: the guided clean estimates.

    Args:
        transformer: :class:`ltx2.transformer.LTX2Transformer` (takes sigmas, returns velocities).
        video_context, audio_context, mask: positive prompt from :func:`encode_prompt`.
        neg_video_context, neg_audio_context, neg_mask: negative prompt (needed when a cfg is not 1).
        rope: tables from :func:`positions`.
        video, audio: :class:`Guidance` per modality.
        strategy: ``"batched"`` (all passes in one call, per-sample switches) or ``"split"`` (one call per
            pass).
        share_prefix: in ``"split"``, run the STG pass from the conditional pass's states at its first
            perturbed block (identical numbers; saves those blocks' work).

    ``sigma`` is a Python float (one noise level for the whole batch). Inputs are packed normalised
    latents; x0 are returned in float32. No host synchronisation.
    """

    def __init__(self, transformer, video_context: torch.Tensor, audio_context: torch.Tensor,
                 mask: torch.Tensor | None = None, neg_video_context: torch.Tensor | None = None,
                 neg_audio_context: torch.Tensor | None = None, neg_mask: torch.Tensor | None = None, *,
                 rope, video: Guidance = Guidance(), audio: Guidance = Guidance(), strategy: str = "batched",
                 share_prefix: bool = True):
        if strategy not in ("batched", "split"):
            raise ValueError(f"LTX2Denoiser: strategy must be 'batched' or 'split', got {strategy!r}")
        layers = len(transformer.transformer_blocks)
        self.video = _check_guidance(video, "video", layers)
        self.audio = _check_guidance(audio, "audio", layers)
        self.transformer = transformer
        self.rope = rope
        self.strategy = strategy
        v, a = self.video, self.audio
        self.passes = needed_passes((v.cfg, a.cfg), (v.stg, a.stg), (v.modality, a.modality))
        if "neg" in self.passes and (neg_video_context is None or neg_audio_context is None):
            raise ValueError("LTX2Denoiser: a cfg scale is not 1, so the negative prompt contexts are required")
        dtype = next(transformer.parameters()).dtype
        self.dtype = dtype

        def prep(t):
            return None if t is None else t.to(dtype=dtype)

        pos = (prep(video_context), prep(audio_context), mask)
        neg = (prep(neg_video_context), prep(neg_audio_context), neg_mask)
        # (contexts, switches) of each pass; switches are the transformer's per-call keyword arguments
        specs = {
            "cond": (pos, {}),
            "neg": (neg, {}),
            "perturbed": (pos, {
                "skip_video_self_attn_blocks": v.stg_blocks if v.stg != 0 else (),
                "skip_audio_self_attn_blocks": a.stg_blocks if a.stg != 0 else (),
            }),
            "modality": (pos, {"disable_a2v": True, "disable_v2a": True}),
        }
        # groups of passes run in one call: (names, video ctx, audio ctx, mask, switches of each pass)
        groups: list[list] = []
        for name in self.passes:
            ctx, switches = specs[name]
            if strategy == "batched":
                for g in groups:
                    if g[1].shape[1:] == ctx[0].shape[1:] and g[2].shape[1:] == ctx[1].shape[1:]:
                        g[0].append(name)
                        g[1] = torch.cat([g[1], ctx[0]])
                        g[2] = torch.cat([g[2], ctx[1]])
                        g[3] = _cat_masks(g[3], ctx[2], g[1].shape[0] - ctx[0].shape[0], ctx[0])
                        g[4].append(switches)
                        break
                else:
                    groups.append([[name], ctx[0], ctx[1], ctx[2], [switches]])
            else:
                groups.append([[name], ctx[0], ctx[1], ctx[2], [switches]])
        self.groups = [tuple(g) for g in groups]
        # The STG pass equals the conditional pass up to the first block it perturbs: with ``share_prefix`` (split
        # passes, one call each) it starts there from the conditional pass's states. The transformer only runs
        # ranges of blocks; which calls share what is decided here.
        self._share: _SharedPrefix | None = None
        stg_blocks = set(specs["perturbed"][1]["skip_video_self_attn_blocks"]) | set(
            specs["perturbed"][1]["skip_audio_self_attn_blocks"])
        if share_prefix and strategy == "split" and "perturbed" in self.passes and stg_blocks and min(stg_blocks) > 0:
            gc, gp = self.passes.index("cond"), self.passes.index("perturbed")
            if gc < gp:
                self._share = _SharedPrefix(gc, gp, min(stg_blocks))

    def calls(self) -> int:
        """Transformer calls per evaluation."""
        return len(self.groups)

    @torch.no_grad()
    def __call__(self, x: tuple[torch.Tensor, torch.Tensor], sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        vx, ax = x
        return self.guided(vx, ax, float(sigma))

    def guided(self, vx: torch.Tensor, ax: torch.Tensor, sigma: float, timestep: torch.Tensor | None = None,
               video_sigma: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Guided (video_x0, audio_x0). ``timestep`` ([B, S] per-token video sigmas, or a
        :class:`~ltx2.transformer.TokenTimesteps`) and ``video_sigma``
        ([B, S, 1], the sigma of each video token in ``x0 = x - sigma * v``) serve conditioned tokens."""
        vin, ain = vx.to(self.dtype), ax.to(self.dtype)
        vxf, axf = vx.float(), ax.float()
        est: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        tr = self.transformer
        shared = None  # the conditional pass's states entering the first STG block (share_prefix)
        tables: dict[int, dict] = {}  # the AdaLN tables per call batch: all passes run at the same sigma
        for gi, (names, vctx, actx, mask, switches) in enumerate(self.groups):
            n = len(names)
            if vctx.shape[0] != n * vx.shape[0]:
                raise ValueError(f"{type(self).__name__}: prompt contexts have batch {vctx.shape[0] // n}, "
                                 f"latents {vx.shape[0]}")
            v_in = vin if n == 1 else torch.cat([vin] * n)
            a_in = ain if n == 1 else torch.cat([ain] * n)
            if n not in tables:
                steps = timestep if timestep is None or n == 1 else (
                    timestep.repeat(n) if isinstance(timestep, TokenTimesteps) else timestep.repeat(n, 1))
                tables[n] = tr.time_conditioning(sigma, timestep=steps, batch=v_in.shape[0], device=v_in.device)
            # one set of switches for the whole call, or one per pass (row block)
            switch = switches[0] if all(sw == switches[0] for sw in switches) else {"per_item": switches}
            inputs = tr.prepare(vctx, actx, sigma, batch=v_in.shape[0], device=v_in.device, rope=self.rope,
                                encoder_attention_mask=mask, audio_encoder_attention_mask=mask,
                                conditioning=tables[n], **switch)
            share = self._share
            if share is not None and gi == share.target:  # resume from the conditional pass's states
                states, first = shared, share.block
            else:
                states, first = tr.embed(v_in, a_in), 0
            if share is not None and gi == share.source:  # keep the states entering the shared block
                states = shared = tr.run_blocks(states, inputs, 0, share.block)
                first = share.block
            vel, avel = tr.head(tr.run_blocks(states, inputs, first), inputs)
            for name, v_, a_ in zip(names, vel.chunk(n), avel.chunk(n)):
                # x0 = x - sigma * v, in float32
                v0 = (torch.sub(vxf, v_.float(), alpha=sigma) if video_sigma is None
                      else vxf - v_.float() * video_sigma)
                est[name] = (v0, torch.sub(axf, a_.float(), alpha=sigma))
        out = []
        for i, g in enumerate((self.video, self.audio)):
            def get(name):
                return est[name][i] if name in est else None
            out.append(multipass_guidance(get("cond"), get("neg"), get("perturbed"), get("modality"),
                                          cfg=g.cfg, stg=g.stg, modality=g.modality, rescale=g.rescale))
        return out[0], out[1]


def _cat_masks(a: torch.Tensor | None, b: torch.Tensor | None, rows_a: int, ref: torch.Tensor):
    """Concatenate two optional [B, L] masks (a missing one means all tokens kept)."""
    if a is None and b is None:
        return None
    if a is None:
        a = torch.ones(rows_a, ref.shape[1], dtype=b.dtype, device=b.device)
    if b is None:
        b = torch.ones(ref.shape[0], ref.shape[1], dtype=a.dtype, device=a.device)
    return torch.cat([a, b.to(a.dtype)])


# Guidance of the reference's one-stage LTX-2.3 preset (per modality): cfg, STG, STG blocks, modality, rescale.
VIDEO_GUIDANCE = Guidance(cfg=3.0, stg=1.0, stg_blocks=(28,), modality=3.0, rescale=0.7)


AUDIO_GUIDANCE = Guidance(cfg=7.0, stg=1.0, stg_blocks=(28,), modality=3.0, rescale=0.7)


# official HQ guidance (LP constants): STG off, rescale 0.45 / 1.0, modality 3
HQ_VIDEO_GUIDANCE = Guidance(cfg=3.0, stg=0.0, stg_blocks=(), modality=3.0, rescale=0.45)


HQ_AUDIO_GUIDANCE = Guidance(cfg=7.0, stg=0.0, stg_blocks=(), modality=3.0, rescale=1.0)
