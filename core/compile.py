"""Optional regional ``torch.compile``: each transformer block compiled on its own, off by default.

Compiling the repeated block instead of the whole model keeps compile time to one block's (every block has the same
code, so the compiled graph is reused) and leaves the Python around the blocks (guidance passes, STG switches,
offload) as it is. :func:`set_regional_compile` turns it on for the transformers built afterwards (the command
line's ``--compile``); :func:`compile_blocks` is what a transformer calls on its block list when it is built.
"""

from __future__ import annotations

import torch.nn as nn

_settings: dict = {"enabled": False, "options": {}}


def set_regional_compile(enabled: bool, **options) -> None:
    """Compile the blocks of every transformer built from now on (``options`` go to ``torch.compile``, e.g.
    ``mode="max-autotune-no-cudagraphs"`` or ``backend="aot_eager"``)."""
    _settings.update(enabled=bool(enabled), options=dict(options))


def regional_compile_enabled() -> bool:
    return _settings["enabled"]


def compile_blocks(blocks: nn.ModuleList) -> nn.ModuleList:
    """Compile each block in place (``nn.Module.compile``: the first call compiles, the weights stay the
    module's own, so loading, LoRA merges and device moves work as before) when regional compile is on."""
    if _settings["enabled"]:
        for block in blocks:
            block.compile(**_settings["options"])
    return blocks
