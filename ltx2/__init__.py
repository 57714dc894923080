"""Lightricks LTX-2 / LTX-2.3 (joint video + audio).

Components (each with its config, key map and load; parity-tested against diffusers / ltx-core): ``transformer``
(audio+video DiT), ``video_vae``, ``audio_vae`` and ``vocoder``, ``text`` (the connectors after Gemma-3),
``gemma_file`` (ComfyUI's single Gemma-3 file), ``upsampler`` (x2 latent upsampler), ``image`` (conditioning
pictures). ``loader`` assembles a whole checkpoint (official single file or diffusers folder) and the LoRA.

Stages, one module each, called alike by the graph nodes and by ``generate`` (``api``):
``text_encoding`` (Gemma-3 -> connectors -> prompt contexts), ``latents`` (latent shape, packing, rotary
tables), ``denoiser`` (the guided model and the official guidance), ``conditioning`` (first frame, keyframes,
the conditioned denoiser), ``sampling`` (one-stage, HQ stage 1, upsample + stage 2, distilled) and
``decoding`` (frames and waveform). Samplers, guidance and LoRA merging live in ``core``.
"""

__all__ = ["generate"]


def __getattr__(name):
    # Imported on first use, so that importing one submodule does not pull in the whole pipeline.
    if name == "generate":
        from .api import generate

        return generate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
