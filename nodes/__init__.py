"""Graph nodes: thin adapters from ComfyUI types to the core (filled in by the ComfyUI issue)."""

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
