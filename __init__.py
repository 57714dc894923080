"""ComfyUI-Cosmos3-LTX2: ComfyUI entry point.

ComfyUI imports this folder as a package under whatever name the folder has, so every import
inside the pack is relative. This module only exposes the node mappings.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
