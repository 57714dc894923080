"""Graph nodes: thin adapters from ComfyUI types to the core, one class per node, grouped by model.

``NODE_CLASS_MAPPINGS`` is static and needs no ComfyUI import (CI and ComfyUI Manager read it as is).
"""

from . import comfy
from .cosmos3 import NODE_CLASS_MAPPINGS as _COSMOS3, NODE_DISPLAY_NAME_MAPPINGS as _COSMOS3_NAMES
from .guardrails import MODEL_FOLDER as _GUARDRAILS_FOLDER
from .guardrails import NODE_CLASS_MAPPINGS as _GUARDRAILS, NODE_DISPLAY_NAME_MAPPINGS as _GUARDRAILS_NAMES

comfy.register_model_folders(_GUARDRAILS_FOLDER)

NODE_CLASS_MAPPINGS: dict = {**_COSMOS3, **_GUARDRAILS}
NODE_DISPLAY_NAME_MAPPINGS: dict = {**_COSMOS3_NAMES, **_GUARDRAILS_NAMES}
