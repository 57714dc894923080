"""Access to Lightricks' ltx-core / ltx-pipelines 1.0.0, the LTX test oracles (installed with --no-deps).

Their package ``__init__``s import torchaudio for the audio encoder's front end, which the tests never
use and which has no CPU build on the registry. An empty stand-in module lets them import; it is installed
only when no real torchaudio is present.
"""

import importlib.machinery
import importlib.util
import sys
import types

import torch


def ltx_oracles_available() -> bool:
    """True when ltx_core and ltx_pipelines can be imported (after stubbing a missing torchaudio)."""
    if importlib.util.find_spec("ltx_core") is None or importlib.util.find_spec("ltx_pipelines") is None:
        return False
    if importlib.util.find_spec("torchaudio") is None and "torchaudio" not in sys.modules:
        stub = types.ModuleType("torchaudio")
        stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
        sys.modules["torchaudio"] = stub
    return True


def ltx_core_importable() -> bool:
    if not ltx_oracles_available():
        return False
    try:  # the text configurator also needs transformers (Gemma-3)
        import ltx_core.model.audio_vae.model_configurator  # noqa: F401
        import ltx_core.model.transformer.model_configurator  # noqa: F401
        import ltx_core.model.video_vae.model_configurator  # noqa: F401
        import ltx_core.text_encoders.gemma.encoders.encoder_configurator  # noqa: F401
    except ImportError:
        return False
    return True


def official_parts(cfg: dict) -> dict:
    """component -> (ltx-core module built on meta, its SDOps, ltx-core name -> single-file name)."""
    from ltx_core.model.audio_vae.model_configurator import (
        AUDIO_VAE_DECODER_COMFY_KEYS_FILTER,
        AUDIO_VAE_ENCODER_COMFY_KEYS_FILTER,
        VOCODER_COMFY_KEYS_FILTER,
        AudioDecoderConfigurator,
        AudioEncoderConfigurator,
        VocoderConfigurator,
    )
    from ltx_core.model.transformer.model_configurator import LTXV_MODEL_COMFY_RENAMING_MAP, LTXModelConfigurator
    from ltx_core.model.video_vae.model_configurator import (
        VAE_DECODER_COMFY_KEYS_FILTER,
        VAE_ENCODER_COMFY_KEYS_FILTER,
        VideoDecoderConfigurator,
        VideoEncoderConfigurator,
    )
    from ltx_core.text_encoders.gemma.encoders.encoder_configurator import (
        EMBEDDINGS_PROCESSOR_KEY_OPS,
        EmbeddingsProcessorConfigurator,
    )

    def stats_or(prefix, part):
        return lambda k: prefix + k if k.startswith("per_channel_statistics.") else f"{prefix}{part}.{k}"

    def text(k):
        for old, new in (("feature_extractor.", "text_embedding_projection."),
                         ("video_connector.", "model.diffusion_model.video_embeddings_connector."),
                         ("audio_connector.", "model.diffusion_model.audio_embeddings_connector.")):
            if k.startswith(old):
                return new + k[len(old):]
        raise AssertionError(f"unexpected EmbeddingsProcessor key {k}")

    with torch.device("meta"):
        return {
            "transformer": (LTXModelConfigurator.from_config(cfg), LTXV_MODEL_COMFY_RENAMING_MAP,
                            lambda k: "model.diffusion_model." + k),
            "text": (EmbeddingsProcessorConfigurator.from_config(cfg), EMBEDDINGS_PROCESSOR_KEY_OPS, text),
            "video_decoder": (VideoDecoderConfigurator.from_config(cfg), VAE_DECODER_COMFY_KEYS_FILTER,
                              stats_or("vae.", "decoder")),
            "video_encoder": (VideoEncoderConfigurator.from_config(cfg), VAE_ENCODER_COMFY_KEYS_FILTER,
                              stats_or("vae.", "encoder")),
            "audio_decoder": (AudioDecoderConfigurator.from_config(cfg), AUDIO_VAE_DECODER_COMFY_KEYS_FILTER,
                              stats_or("audio_vae.", "decoder")),
            "audio_encoder": (AudioEncoderConfigurator.from_config(cfg), AUDIO_VAE_ENCODER_COMFY_KEYS_FILTER,
                              stats_or("audio_vae.", "encoder")),
            "vocoder": (VocoderConfigurator.from_config(cfg), VOCODER_COMFY_KEYS_FILTER, lambda k: "vocoder." + k),
        }


def ltx_core_name(ops, key: str) -> str | None:
    """What ltx-core's loader makes of a single-file key with ``ops`` (SingleGPUModelBuilder: the key
    filter/renames, then the key-value operation; here only the name matters)."""
    name = ops.apply_to_key(key)
    if name is None:
        return None
    results = ops.apply_to_key_value(name, torch.empty(0, device="meta"))
    assert len(results) == 1
    return results[0].new_key
