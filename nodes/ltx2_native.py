"""Our res2s sampler and multi-pass guider for ComfyUI's own LTX-2 / LTX-2.3 ``MODEL``.

ComfyUI loads the official LTX-2.3 files natively, but ships neither res2s nor the multi-pass guider of the
official HQ and one-stage recipes. These two nodes add them for ``SamplerCustomAdvanced``, next to ComfyUI's
own LTX nodes, through its public sampler surfaces only (:mod:`.comfy` holds every ComfyUI call):

* ``LTX2Res2sSampler`` -> ``SAMPLER``: :func:`sample_res2s_comfy`, the core res2s on the sample ComfyUI
  hands to a sampler (for an audio+video model, video and audio packed into one ``[B, 1, N]`` tensor; res2s
  works element-wise, so it needs no unpacking), its SDE noise drawn from the sampling seed.
* ``LTX2MultipassGuider`` -> ``GUIDER``: per modality ``cfg``, ``stg``, ``modality``, ``rescale``
  (:func:`..core.guidance.multipass_guidance`) over the passes they need: cond + negative in one batched
  call, the STG pass with the self-attention of the chosen blocks passing its values through, the modality
  pass with ComfyUI's own ``a2v_cross_attn`` / ``v2a_cross_attn`` switches off.
"""

from __future__ import annotations

import torch

from ..core.guidance import multipass_guidance, needed_passes
from ..core.sampling.res2s import sample_res2s, seeded_noise_sampler
from ..ltx2.denoiser import AUDIO_GUIDANCE, HQ_AUDIO_GUIDANCE, HQ_VIDEO_GUIDANCE, VIDEO_GUIDANCE, Guidance
from . import comfy

CATEGORY = "LTX2/ComfyUI models"

# The STG switch our patched self-attentions look for in ``transformer_options``.
STG_SWITCH = "cosmos3_ltx2_stg"

# The official guidance presets, per modality (video, audio): the one-stage LTX-2.3 preset and the HQ stage 1.
PRESETS = {"LTX-2.3 one-stage": (VIDEO_GUIDANCE, AUDIO_GUIDANCE),
           "LTX-2.3 HQ stage 1": (HQ_VIDEO_GUIDANCE, HQ_AUDIO_GUIDANCE)}
CUSTOM = "custom (the values below)"


# ---------------------------------------------------------------------------------------------- sampler
def sample_res2s_comfy(model, x, sigmas, extra_args=None, callback=None, disable=None, *, eta: float = 0.5,
                       bongmath: bool = True):
    """res2s in ComfyUI's sampler-function form: ``model(x, sigma_tensor, **extra_args) -> x0``.

    The SDE noise comes from ``extra_args["seed"]`` (ComfyUI's noise seed), so one seed fixes the whole run.
    ``disable`` (ComfyUI's progress-bar switch) has nothing to switch here: progress goes through ``callback``.
    """
    extra_args = {} if extra_args is None else extra_args

    def call(sample, sigma: float, **kwargs):
        return model(sample, sample.new_full((sample.shape[0],), sigma), **kwargs)

    noise = seeded_noise_sampler(int(extra_args.get("seed", 0))) if eta > 0 else None
    return sample_res2s(call, x, sigmas, extra_args, callback, eta=eta, noise_sampler=noise, bongmath=bongmath)


class LTX2Res2sSampler:
    """res2s (the LTX-2.3 HQ sampler) as a ComfyUI SAMPLER, for ``SamplerCustomAdvanced``."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("SAMPLER",)
    OUTPUT_TOOLTIPS = ("res2s for SamplerCustomAdvanced (its noise seed also drives the SDE noise).",)
    FUNCTION = "get_sampler"
    DESCRIPTION = ("res2s: two-stage exponential integrator with SDE re-noising, as the official LTX-2.3 HQ "
                   "pipeline samples. Works on ComfyUI's own LTX-2 / LTX-2.3 models (video, or video + audio).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "eta": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                              "tooltip": "Share of the noise renewed at each step (0 = deterministic; official "
                                         "HQ 0.5). The noise follows the sampling seed."}),
            "bongmath": ("BOOLEAN", {"default": True,
                                     "tooltip": "Refine each step's anchor for consistency with its re-noised "
                                                "midpoint (the official default)."}),
        }}

    def get_sampler(self, eta, bongmath):
        return (comfy.ksampler(sample_res2s_comfy, {"eta": float(eta), "bongmath": bool(bongmath)}),)


# ---------------------------------------------------------------------------------------------- guider
def parse_blocks(text: str, where: str) -> tuple[int, ...]:
    """``"28"`` / ``"27, 28"`` -> block indices; empty -> ()."""
    parts = [p for p in str(text).replace(" ", "").split(",") if p]
    try:
        blocks = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"{where}: expected block numbers separated by commas, e.g. 28 or 27,28; got {text!r}") \
            from None
    if any(b < 0 for b in blocks):
        raise ValueError(f"{where}: block numbers start at 0, got {text!r}")
    return blocks


def values_through(func, q, k, v, heads, *args, skip_reshape=False, skip_output_reshape=False, **kwargs):
    """An attention that passes its values through (STG's perturbed self-attention), in ComfyUI's attention
    layouts: input ``[B, N, H*D]`` (or ``[B, H, N, D]`` with ``skip_reshape``), output ``[B, N, H*D]`` (or
    ``[B, H, N, D]`` with ``skip_output_reshape``). Signature of ComfyUI's ``optimized_attention_override``."""
    if skip_reshape:  # [B, H, N, D]
        return v if skip_output_reshape else v.transpose(1, 2).reshape(v.shape[0], v.shape[2], -1)
    if skip_output_reshape:
        b, n, _ = v.shape
        return v.reshape(b, n, heads, -1).transpose(1, 2)
    return v


def stg_forward(module):
    """The forward of a self-attention module of ComfyUI's LTX model that passes its values through on the
    STG pass (``transformer_options[STG_SWITCH]``) and runs as before otherwise. The values need no mask, so
    none is applied on that pass (ComfyUI splits the queries of a keyframe-masked attention otherwise)."""
    forward = type(module).forward.__get__(module)

    def patched(x, context=None, mask=None, pe=None, k_pe=None, transformer_options={}):  # noqa: B006
        if transformer_options.get(STG_SWITCH):
            transformer_options = {**transformer_options, "optimized_attention_override": values_through}
            mask = None
        return forward(x, context=context, mask=mask, pe=pe, k_pe=k_pe, transformer_options=transformer_options)

    return patched


def split_packed(x: torch.Tensor, shapes) -> list[torch.Tensor]:
    """The pieces of ComfyUI's packed ``[B, 1, N]`` sample (views), one per latent shape; one piece for None."""
    if not shapes or len(shapes) < 2:
        return [x]
    sizes = [int(torch.Size(s)[1:].numel()) for s in shapes]
    return list(torch.split(x, sizes, dim=-1))


def guided_x0(estimates: dict, shapes, scales: list[dict]) -> torch.Tensor:
    """Combine the passes' packed x0 estimates (``cond`` and whichever of ``neg``, ``perturbed``, ``modality``
    ran) per modality with that modality's scales (``scales[i]`` for the i-th packed latent; one set for a
    single latent) and pack the result again."""
    pieces = {name: split_packed(t, shapes) for name, t in estimates.items()}
    out = []
    for i, cond in enumerate(pieces["cond"]):
        s = scales[min(i, len(scales) - 1)]
        out.append(multipass_guidance(cond, *(pieces[n][i] if n in pieces else None
                                              for n in ("neg", "perturbed", "modality")), **s))
    return out[0] if len(out) == 1 else torch.cat(out, dim=-1)


def multipass_predict(scales: list[dict]):
    """The guider's prediction for :func:`.comfy.guider`: runs the passes the scales need, then combines."""
    passes = needed_passes(*([s[k] for s in scales] for k in ("cfg", "stg", "modality")))

    def predict(run, x, shapes):
        first = run(["positive", "negative"] if "neg" in passes else ["positive"])
        estimates = {"cond": first[0]}
        if "neg" in passes:
            estimates["neg"] = first[1]
        if "perturbed" in passes:
            estimates["perturbed"] = run(["positive"], **{STG_SWITCH: True})[0]
        if "modality" in passes:
            estimates["modality"] = run(["positive"], a2v_cross_attn=False, v2a_cross_attn=False)[0]
        return guided_x0(estimates, shapes, scales)

    return predict


def _scales(g: Guidance) -> dict:
    return {"cfg": float(g.cfg), "stg": float(g.stg), "modality": float(g.modality), "rescale": float(g.rescale)}


def stg_patched(model, video_blocks, audio_blocks):
    """A clone of ComfyUI's LTX ``model`` whose video (audio) self-attention in ``video_blocks``
    (``audio_blocks``) passes its values through on the STG pass."""
    for attn, blocks in (("attn1", video_blocks), ("audio_attn1", audio_blocks)):
        for b in blocks:
            try:
                model = comfy.patch_forward(model, f"diffusion_model.transformer_blocks.{b}.{attn}", stg_forward)
            except ValueError:
                raise ValueError(f"LTX2MultipassGuider: stg_blocks: this model has no {attn} in block {b} (not an "
                                 "LTX-2 model, a video-only one for audio STG, or fewer blocks)") from None
    return model


class LTX2MultipassGuider:
    """The official LTX-2.3 multi-pass guidance (CFG, STG, modality isolation, rescale) as a ComfyUI GUIDER."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("GUIDER",)
    OUTPUT_TOOLTIPS = ("The multi-pass guider for SamplerCustomAdvanced.",)
    FUNCTION = "get_guider"
    DESCRIPTION = ("Multi-pass guidance of the official LTX-2.3 pipelines, per modality: cfg (negative prompt), "
                   "STG (self-attention skipped in some blocks), modality isolation (audio<->video "
                   "cross-attention off) and rescale. Each pass runs only when its scale needs it.")

    @classmethod
    def INPUT_TYPES(cls):
        def num(default, lo, hi, tip):
            return ("FLOAT", {"default": default, "min": lo, "max": hi, "step": 0.05, "tooltip": tip})

        inputs = {
            "model": ("MODEL", {"tooltip": "ComfyUI's LTX-2 / LTX-2.3 model (e.g. from Load Checkpoint)."}),
            "positive": ("CONDITIONING", {"tooltip": "The prompt."}),
            "negative": ("CONDITIONING", {"tooltip": "The negative prompt (used when a cfg is not 1)."}),
            "preset": ([CUSTOM, *PRESETS], {"default": CUSTOM,
                                            "tooltip": "An official preset replaces every value below."}),
        }
        for m, g in zip(("video", "audio"), PRESETS["LTX-2.3 one-stage"]):  # defaults: the one-stage preset
            inputs[f"{m}_cfg"] = num(g.cfg, 0.0, 100.0, f"{m}: classifier-free guidance scale (1 = off).")
            inputs[f"{m}_stg"] = num(g.stg, -10.0, 10.0, f"{m}: STG scale (0 = off).")
            inputs[f"{m}_modality"] = num(g.modality, 0.0, 100.0, f"{m}: modality-isolation scale (1 = off).")
            inputs[f"{m}_rescale"] = num(g.rescale, 0.0, 1.0, f"{m}: rescale toward the conditional std (0 = off).")
        blocks = ",".join(str(b) for b in PRESETS["LTX-2.3 one-stage"][0].stg_blocks)
        inputs["stg_blocks"] = ("STRING", {"default": blocks, "tooltip": "Transformer blocks (from 0) whose "
                                           "self-attention the STG pass skips, for both modalities, e.g. 28 or "
                                           "27,28."})
        return {"required": inputs}

    def get_guider(self, model, positive, negative, preset, video_cfg, video_stg, video_modality, video_rescale,
                   audio_cfg, audio_stg, audio_modality, audio_rescale, stg_blocks):
        if preset == CUSTOM:
            blocks = parse_blocks(stg_blocks, "LTX2MultipassGuider: stg_blocks")
            video = Guidance(video_cfg, video_stg, blocks, video_modality, video_rescale)
            audio = Guidance(audio_cfg, audio_stg, blocks, audio_modality, audio_rescale)
        elif preset in PRESETS:
            video, audio = PRESETS[preset]
        else:
            raise ValueError(f"LTX2MultipassGuider: preset must be one of {[CUSTOM, *PRESETS]}, got {preset!r}")
        for name, g in (("video", video), ("audio", audio)):
            if g.stg != 0 and not g.stg_blocks:
                raise ValueError(f"LTX2MultipassGuider: {name}_stg is {g.stg} but stg_blocks is empty (STG would do "
                                 "nothing); name the blocks, e.g. 28")
        model = stg_patched(model, video.stg_blocks if video.stg else (), audio.stg_blocks if audio.stg else ())
        predict = multipass_predict([_scales(video), _scales(audio)])
        return (comfy.guider(model, {"positive": positive, "negative": negative}, predict),)


NODE_CLASS_MAPPINGS = {"LTX2Res2sSampler": LTX2Res2sSampler, "LTX2MultipassGuider": LTX2MultipassGuider}
NODE_DISPLAY_NAME_MAPPINGS = {"LTX2Res2sSampler": "LTX-2 res2s Sampler (for ComfyUI models)",
                              "LTX2MultipassGuider": "LTX-2 Multi-pass Guider (for ComfyUI models)"}
