"""Lightricks LTX-2 / LTX-2.3 (joint video + audio).

Landed so far, each parity-tested against diffusers / ltx-core: ``transformer`` (audio+video DiT),
``video_vae`` (video VAE), ``text`` (feature extractor + video/audio connectors after Gemma-3),
``audio_vae`` and ``vocoder`` (audio path), ``upsampler`` (x2 latent upsampler), ``loader`` (official
single file / diffusers folder, Gemma-3), ``pipeline`` (one-stage stages), ``hq`` (image / keyframe
conditioning and the HQ two-stage stages), ``image`` (conditioning-image preparation) and ``api``
(``generate``, one call for either pipeline).
Sampling, guidance and LoRA merging live in ``core`` (``core.sampling.res2s``,
``core.sampling.ltx_schedule``, ``core.guidance``, ``core.lora``).
"""

__all__ = ["generate"]


def __getattr__(name):
    # Imported on first use, so that importing one submodule does not pull in the whole pipeline.
    if name == "generate":
        from .api import generate

        return generate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
