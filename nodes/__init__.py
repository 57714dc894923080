"""Graph nodes: thin adapters from ComfyUI types to the core, one class per node, grouped by model.

``NODE_CLASS_MAPPINGS`` is static and needs no ComfyUI import (CI and ComfyUI Manager read it as is).
"""

from . import comfy
from .cosmos3 import NODE_CLASS_MAPPINGS as _COSMOS3, NODE_DISPLAY_NAME_MAPPINGS as _COSMOS3_NAMES
from .guardrail_video import NODE_CLASS_MAPPINGS as _VIDEO_GUARD, NODE_DISPLAY_NAME_MAPPINGS as _VIDEO_GUARD_NAMES

comfy.register_model_folders()

NODE_CLASS_MAPPINGS: dict = {**_COSMOS3, **_VIDEO_GUARD}
NODE_DISPLAY_NAME_MAPPINGS: dict = {**_COSMOS3_NAMES, **_VIDEO_GUARD_NAMES}
