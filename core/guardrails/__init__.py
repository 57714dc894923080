"""Guardrails: checks around generation, shared by the Cosmos3 and LTX-2.3 graphs.

Text guardrail (before the text encoder): :func:`check_prompt` runs, in the reference's order, the
empty-prompt check, the blocklist (:mod:`.blocklist`: leetspeak-aware censor on the raw and on the
lemmatised prompt, whole-word exact and fuzzy matches) and optionally a guard language model
(:mod:`.guard_model`, Qwen3Guard style). Everything comes from local folders; nothing is downloaded.
A guard model that fails blocks (fail closed).

Video guardrail (after decoding): :mod:`.faces` pixelates faces found by RetinaFace (:mod:`.retinaface`, the
reference's ResNet-50 network and weight file) or, without weights, OpenCV's Haar cascade.
"""

from .blocklist import DEFAULT_FOLDER as DEFAULT_BLOCKLIST
from .blocklist import Blocklist, BlocklistError, BlocklistHit, load_blocklist
from .guard_model import GuardModel, GuardModelError, GuardVerdict, parse_verdict
from .text import PromptBlocked, PromptVerdict, blocklist_for, check_prompt, guard_model_for

__all__ = [
    "DEFAULT_BLOCKLIST", "Blocklist", "BlocklistError", "BlocklistHit", "load_blocklist",
    "GuardModel", "GuardModelError", "GuardVerdict", "parse_verdict",
    "PromptBlocked", "PromptVerdict", "blocklist_for", "check_prompt", "guard_model_for",
]
