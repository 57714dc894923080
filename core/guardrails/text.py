"""The text guardrail: is a prompt allowed? Checks in the reference's order, first one that fires blocks.

cosmos-guardrail 0.3.2 runs ``GuardrailRunner([Blocklist, Qwen3Guard])`` on the positive prompt before
generation (``CosmosSafetyChecker.check_text_safety``); the pipelines raise ``ValueError`` on a block.
Here: an empty prompt, then the blocklist (:mod:`.blocklist`), then, when one is given, the guard model
(:mod:`.guard_model`). A guard model that cannot load or run, or gives no verdict, blocks (fail closed).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from .blocklist import DEFAULT_FOLDER, LIST_FOLDERS, Blocklist, blocklist_root, load_blocklist
from .guard_model import GuardModel, GuardModelError


@dataclass(frozen=True)
class PromptVerdict:
    """``allowed``, or which ``check`` blocked and on what ``entry``; ``notes``: what was skipped and why."""

    allowed: bool
    # "empty prompt", "blocklist censor", "blocklist censor (lemmatised)", "blocklist exact match",
    # "blocklist fuzzy match", "guard model" or "guard model (failed)"
    check: str = ""
    entry: str = ""  # the blocklist entry that matched, or the guard model's verdict
    message: str = ""
    notes: tuple[str, ...] = ()


class PromptBlocked(ValueError):
    """Raised for a blocked prompt; ``verdict`` says which check fired. (The pipelines raise ValueError too.)"""

    def __init__(self, verdict: PromptVerdict):
        self.verdict = verdict
        super().__init__(verdict.message)


def _blocked(check: str, entry: str, detail: str, notes) -> PromptVerdict:
    return PromptVerdict(False, check, entry, f"prompt blocked by the text guardrail: {detail}", tuple(notes))


def _signature(root: Path, nltk_data) -> tuple:
    """Changes when a list file or what an nltk_data folder holds changes (so a reload picks it up)."""
    files = [p for name in LIST_FOLDERS if (root / name).is_dir() for p in sorted((root / name).iterdir())]
    lists = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files if p.is_file())
    folders = [root / "nltk_data", *map(Path, nltk_data)]
    data = tuple(tuple(sorted((p.name, p.stat().st_mtime_ns) for p in f.iterdir())) if f.is_dir() else None
                 for f in folders)
    return lists, data


@functools.lru_cache(maxsize=4)
def _cached_blocklist(root: str, nltk_data: tuple, signature: tuple) -> Blocklist:
    return load_blocklist(root, nltk_data)


def blocklist_for(folder=None, nltk_data=()) -> Blocklist:
    """:func:`load_blocklist`, reusing the last few loads while the list files are unchanged."""
    root = blocklist_root(DEFAULT_FOLDER if folder is None else folder)
    signature = _signature(root, nltk_data) if root.is_dir() else ()
    return _cached_blocklist(str(root), tuple(map(str, nltk_data)), signature)


@functools.lru_cache(maxsize=1)
def _cached_guard(folder: str, dtype: torch.dtype) -> GuardModel:
    return GuardModel.load(folder, dtype)


def guard_model_for(folder, device=None) -> GuardModel:
    """The guard model in ``folder`` (kept loaded on the CPU for the next check; bf16 for a GPU)."""
    dtype = torch.bfloat16 if device is not None and torch.device(device).type == "cuda" else torch.float32
    return _cached_guard(str(Path(folder)), dtype)


def check_prompt(prompt: str, blocklist: Blocklist | str | Path | None = None,
                 guard_model: GuardModel | str | Path | None = None, *, device=None,
                 nltk_data=()) -> PromptVerdict:
    """Check ``prompt``; returns the verdict (it never raises for a blocked prompt: see :class:`PromptBlocked`).

    ``blocklist``: a loaded :class:`Blocklist` or a blocklist folder; None: the lists shipped with the pack.
    ``guard_model``: a loaded :class:`GuardModel`, a model folder, or None to skip that check.
    ``device``: where the guard model runs (default: the CPU). ``nltk_data``: more folders with NLTK's data.
    """
    if not isinstance(blocklist, Blocklist):
        blocklist = blocklist_for(blocklist, nltk_data)
    notes = list(blocklist.notes)
    if not prompt or not prompt.strip():
        return _blocked("empty prompt", "", "the prompt is empty", notes)
    hit = blocklist.check(prompt)
    if hit is not None:
        return _blocked(f"blocklist {hit.check}", hit.entry, hit.describe(), notes)
    if guard_model is not None:
        name = Path(guard_model).name if not isinstance(guard_model, GuardModel) else guard_model.name
        try:
            model = guard_model if isinstance(guard_model, GuardModel) else guard_model_for(guard_model, device)
            verdict = model.judge(prompt, device)
        except Exception as e:  # noqa: BLE001 - GuardModelError, or anything else: blocked either way
            reason = str(e) if isinstance(e, GuardModelError) else f"{type(e).__name__}: {e}"
            return _blocked("guard model (failed)", "", f"guard model {name} failed, so the prompt is blocked "
                            f"(fail closed): {reason}", notes)
        if verdict.unsafe:
            return _blocked("guard model", verdict.describe(), f"guard model {name}: {verdict.describe()}", notes)
        if verdict.label == "Controversial":
            notes.append(f"guard model {name}: {verdict.describe()} (allowed: only Unsafe blocks, as in the reference)")
    return PromptVerdict(True, notes=tuple(notes))
