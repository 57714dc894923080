"""NVIDIA Cosmos3 (omni world model): transformer, Wan2.2 VAE, prompt encoding, pipeline stages.

``generate(checkpoint_folder, prompt, ...)`` runs text-to-video, image-to-video, video-to-video or text-to-image
in one call; the stages it chains live in :mod:`.pipeline` for graphs that run them one at a time. Sound-capable
checkpoints (``sound_gen`` and ``sound_tokenizer/``, decoded by :mod:`.sound`) make a sound track with the video.
"""

__all__ = ["generate"]


def __getattr__(name):
    # Imported on first use, so that importing one submodule does not pull in the whole pipeline.
    if name == "generate":
        from .pipeline import generate

        return generate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
