"""ComfyUI-Cosmos3-LTX2: ComfyUI entry point.

ComfyUI imports this folder as a package under whatever name the folder has, so every import
inside the pack is relative. This module only exposes the node mappings.
"""

if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    # Loaded as a lone file rather than as the pack's package (pytest does this to a test root's
    # __init__.py): there is no package to import nodes from, and nothing to register.
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
