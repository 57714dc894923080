"""Lightricks LTX-2 / LTX-2.3 (joint video + audio).

Landed so far, each parity-tested against diffusers / ltx-core: ``transformer`` (audio+video DiT),
``video_vae`` (video VAE), ``text``
(feature extractor + video/audio connectors after Gemma-3), ``audio_vae`` and ``vocoder`` (audio path),
``upsampler`` (x2 latent upsampler). Sampling, guidance and LoRA merging live in ``core``
(``core.sampling.res2s``, ``core.sampling.ltx_schedule``, ``core.guidance``, ``core.lora``).
"""
