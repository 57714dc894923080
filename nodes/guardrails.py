"""Guardrail graph nodes (category ``Guardrails``), for the Cosmos3 and the LTX-2.3 graphs alike.

Text Guardrail: wired between the prompt and the text encode node. It passes the prompt on unchanged
when :func:`..core.guardrails.check_prompt` allows it, and otherwise raises, so nothing downstream runs.
Blocklists and guard models come from ``models/guardrails``; nothing is downloaded.
"""

from __future__ import annotations

import os

from ..core.guardrails import PromptBlocked, check_prompt
from . import comfy

CATEGORY = "Guardrails"
MODEL_FOLDER = "guardrails"  # models/guardrails: blocklist folders, guard-model folders, nltk_data/

comfy.register_model_folder(MODEL_FOLDER)
DEFAULT_BLOCKLIST = "default (shipped)"
NO_GUARD_MODEL = "none"

_said: set[str] = set()  # notes already printed (what is skipped and how to add it), once per process


def _say_once(note: str) -> None:
    if note not in _said:
        _said.add(note)
        print(f"[guardrails] {note}")


def _blocklist_choices() -> list[str]:
    """Folders that are a blocklist (custom/, exact_match/) or hold one (blocklist/, the guardrail repository)."""
    found = []
    for marker in ("custom", "exact_match", "blocklist"):
        found += [n for n in comfy.checkpoint_folders(MODEL_FOLDER, marker=marker) if n not in found]
    return [DEFAULT_BLOCKLIST] + sorted(found)


def _guard_model_choices() -> list[str]:
    return [NO_GUARD_MODEL] + comfy.checkpoint_folders(MODEL_FOLDER, marker="config.json")


def _listed_or_absolute(field: str, value, choices: list[str]):
    if value is None or value in choices or (os.path.isabs(value) and os.path.isdir(value)):
        return True
    return f"{field}={value!r} is neither a folder in models/{MODEL_FOLDER} nor an existing absolute path"


class TextGuardrail:
    DESCRIPTION = ("Checks the prompt before it is encoded, as the Cosmos guardrail does: empty prompt, blocklist "
                   "(leetspeak-aware censor, lemmatised censor, exact and fuzzy matches), then optionally a guard "
                   "language model. An allowed prompt passes on unchanged; a blocked one stops the run with the "
                   "check that fired. A guard model that fails blocks (fail closed).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("prompt",)
    OUTPUT_TOOLTIPS = ("The same prompt, passed on only when every check allowed it: wire it into the text encode "
                       "node's prompt.",)
    FUNCTION = "check"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "prompt": ("STRING", {"multiline": True, "default": "",
                                      "tooltip": "The prompt to check (type it here, or wire a STRING in)."}),
                "blocklist": (_blocklist_choices(), {
                    "default": DEFAULT_BLOCKLIST,
                    "tooltip": "Word lists: the small list shipped with the pack, or a folder from models/guardrails "
                               "in the Cosmos guardrail's layout (custom/, whitelist/, exact_match/, nltk_data/)."}),
                "guard_model": (_guard_model_choices(), {
                    "default": NO_GUARD_MODEL,
                    "tooltip": "Optional guard language model folder from models/guardrails (e.g. Qwen3Guard-Gen-0.6B): "
                               "its 'Safety: Unsafe' verdict blocks; if it cannot load or run, the prompt is blocked."}),
                "device": (["default", "cpu"], {"default": "default",
                           "tooltip": "Where the guard model runs. default: ComfyUI's compute device."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, blocklist=None, guard_model=None):
        for field, value, choices in (("blocklist", blocklist, _blocklist_choices()),
                                      ("guard_model", guard_model, _guard_model_choices())):
            verdict = _listed_or_absolute(field, value, choices)
            if verdict is not True:
                return verdict
        return True

    def check(self, prompt, blocklist=DEFAULT_BLOCKLIST, guard_model=NO_GUARD_MODEL, device="default"):
        folder = None if blocklist == DEFAULT_BLOCKLIST else comfy.resolve_model_path(MODEL_FOLDER, blocklist)
        guard = None if guard_model == NO_GUARD_MODEL else comfy.resolve_model_path(MODEL_FOLDER, guard_model)
        nltk_data = [root / "nltk_data" for root in comfy.model_folder_paths(MODEL_FOLDER)]
        verdict = check_prompt(prompt, folder, guard, device=comfy.compute_device(device) if guard else None,
                               nltk_data=nltk_data)
        for note in verdict.notes:
            _say_once(note)
        if not verdict.allowed:
            raise PromptBlocked(verdict)
        return (prompt,)


NODE_CLASS_MAPPINGS = {"Cosmos3LTX2TextGuardrail": TextGuardrail}
NODE_DISPLAY_NAME_MAPPINGS = {"Cosmos3LTX2TextGuardrail": "Text Guardrail"}
