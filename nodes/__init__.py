"""Graph nodes: thin adapters from ComfyUI types to the core, one class per node, grouped by model.

``NODE_CLASS_MAPPINGS`` is static and needs no ComfyUI import (CI and ComfyUI Manager read it as is).
"""

from .cosmos3 import NODE_CLASS_MAPPINGS as _COSMOS3, NODE_DISPLAY_NAME_MAPPINGS as _COSMOS3_NAMES
from .guardrails import NODE_CLASS_MAPPINGS as _GUARDRAILS, NODE_DISPLAY_NAME_MAPPINGS as _GUARDRAILS_NAMES
from .ltx2 import NODE_CLASS_MAPPINGS as _LTX2, NODE_DISPLAY_NAME_MAPPINGS as _LTX2_NAMES
from .ltx2_native import NODE_CLASS_MAPPINGS as _LTX2_NATIVE, NODE_DISPLAY_NAME_MAPPINGS as _LTX2_NATIVE_NAMES

NODE_CLASS_MAPPINGS: dict = {**_COSMOS3, **_LTX2, **_LTX2_NATIVE, **_GUARDRAILS}
NODE_DISPLAY_NAME_MAPPINGS: dict = {**_COSMOS3_NAMES, **_LTX2_NAMES, **_LTX2_NATIVE_NAMES, **_GUARDRAILS_NAMES}
