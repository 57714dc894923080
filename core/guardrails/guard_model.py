"""The optional guard language model of the text guardrail (Qwen3Guard-Gen style), from a local folder.

Facts from cosmos-guardrail 0.3.2 (``cosmos_guardrail.py``, ``Qwen3Guard``): the model
(``Qwen/Qwen3Guard-Gen-0.6B``) is an ``AutoModelForCausalLM`` with its tokenizer; the prompt goes in as
the one user message of the tokenizer's chat template (``tokenize=False``, no generation-prompt flag:
the guard's template ends the way it wants), ``generate(max_new_tokens=128)``, the new tokens are decoded
without special tokens and searched for ``Safety: (Safe|Unsafe|Controversial)``; only ``Unsafe`` blocks.
Qwen3Guard writes its categories on a ``Categories: ...`` line after the verdict.

Unlike the reference, which treats any failure as safe, everything that goes wrong here raises
:class:`GuardModelError` and the text guardrail blocks (fail closed). Decoding is greedy, so the same
prompt always gets the same verdict. Weights are read from safetensors only, from local files only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

MAX_NEW_TOKENS = 128
VERDICT = re.compile(r"Safety: (Safe|Unsafe|Controversial)")
CATEGORIES = re.compile(r"Categories: *([^\n]*)")


class GuardModelError(RuntimeError):
    """The guard model could not be loaded or run, or gave no verdict."""


@dataclass(frozen=True)
class GuardVerdict:
    label: str  # "Safe", "Unsafe" or "Controversial"
    categories: str  # what follows "Categories:", or ""
    text: str  # everything the model wrote

    @property
    def unsafe(self) -> bool:
        return self.label == "Unsafe"

    def describe(self) -> str:
        return f"Safety: {self.label}" + (f", Categories: {self.categories}" if self.categories else "")


def parse_verdict(text: str) -> GuardVerdict:
    """The verdict in the guard model's output; :class:`GuardModelError` when there is none."""
    found = VERDICT.search(text)
    if found is None:
        shown = text.strip()[:200] or "(nothing)"
        raise GuardModelError(f"its output has no 'Safety: Safe|Unsafe|Controversial' verdict: {shown!r}")
    categories = CATEGORIES.search(text, found.end())
    return GuardVerdict(found.group(1), categories.group(1).strip() if categories else "", text)


class GuardModel:
    """A causal LM guard and its tokenizer; kept on the CPU between checks, run on ``device``."""

    def __init__(self, model, tokenizer, name: str = "guard model"):
        self.model, self.tokenizer, self.name = model, tokenizer, name

    @classmethod
    def load(cls, folder, dtype: torch.dtype = torch.float32) -> "GuardModel":
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise GuardModelError(f"{folder} is not a model folder (no config.json)")
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as e:  # a hard dependency of the pack, but say so clearly all the same
            raise GuardModelError(f"transformers is needed for the guard model (pip install transformers): {e}") from e
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=dtype,
                                                         use_safetensors=True)
        except Exception as e:  # noqa: BLE001 - any load failure blocks (fail closed)
            raise GuardModelError(f"cannot load the guard model from {folder}: {type(e).__name__}: {e}") from e
        if getattr(tokenizer, "chat_template", None) is None:
            raise GuardModelError(f"the tokenizer in {folder} has no chat template; a Qwen3Guard-style model needs one")
        return cls(model.eval(), tokenizer, folder.name)

    def generate(self, prompt: str, device=None, max_new_tokens: int = MAX_NEW_TOKENS) -> str:
        """What the guard writes about ``prompt`` (greedy, up to ``max_new_tokens`` tokens)."""
        device = torch.device(device) if device is not None else torch.device("cpu")
        home = next(self.model.parameters()).device
        try:
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False)
            inputs = self.tokenizer([text], return_tensors="pt").to(device)
            self.model.to(device)
            with torch.inference_mode():
                out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            new_tokens = out[0][inputs["input_ids"].shape[1]:].tolist()
            return self.tokenizer.decode(new_tokens, skip_special_tokens=True)
        except Exception as e:  # noqa: BLE001 - any run failure blocks (fail closed)
            raise GuardModelError(f"the guard model failed to run: {type(e).__name__}: {e}") from e
        finally:
            self.model.to(home)

    def judge(self, prompt: str, device=None, max_new_tokens: int = MAX_NEW_TOKENS) -> GuardVerdict:
        return parse_verdict(self.generate(prompt, device, max_new_tokens))
