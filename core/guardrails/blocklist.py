"""The blocklist check of the text guardrail: word lists from a folder, three passes over the prompt.

Facts from cosmos-guardrail 0.3.2 (``cosmos_guardrail.py``, ``Blocklist``; ``cosmos_utils.py``):

* A blocklist folder holds ``custom/``, ``whitelist/`` and ``exact_match/`` (every file in each is a
  list, one entry a line) and ``nltk_data/`` (WordNet and Punkt for the lemmatised pass). The guardrail
  repository keeps it as ``blocklist/`` inside the repository folder; both are accepted here.
* The prompt's non-ASCII runs become one space each (``to_ascii``).
* Pass 1, censor: the ``custom`` entries, whole-word and through leetspeak (:mod:`.censor`), minus those
  in the whitelist; a hit on a whitelisted word is undone (``uncensor_whitelist``: whitespace-separated
  tokens, stripped of punctuation, compared lower-cased).
* Pass 2, the same on the NLTK-tokenised, WordNet-lemmatised prompt (:mod:`.lemmas`).
* Pass 3, ``exact_match`` entries in list order: a case-insensitive whole-word regex search on the
  whitespace-normalised prompt, and for entries of at least 4 characters a fuzzy match: any window of as
  many words as the entry whose ``difflib.SequenceMatcher`` ratio to it is at least ``(n - 0.5) / n``
  (``check_against_whole_word_blocklist`` / ``check_partial_match``). That tolerates one added character:
  ``snuff films`` is close to ``snuff film``.

Deliberate differences: a hit is what the censor found (the reference looks for a ``*`` in the censored
text, so a prompt that merely contains ``*`` is blocked there); a hit that spans several words is undone
when any of them is whitelisted (the reference re-aligns the censored words by position, which goes wrong
once a joined hit has merged words); blank lines in the lists are skipped (an empty ``exact_match`` entry
would match every prompt in the reference).
"""

from __future__ import annotations

import difflib
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

from .censor import Censor, CensorHit
from .lemmas import Lemmatiser, load_lemmatiser

LIST_FOLDERS = ("custom", "whitelist", "exact_match")
DEFAULT_FOLDER = Path(__file__).parent / "data" / "blocklist"  # the small lists shipped with the pack
FUZZY_MIN_CHARS = 4  # Blocklist(guardrail_partial_match_min_chars=4)
FUZZY_LETTERS = 0.5  # Blocklist(guardrail_partial_match_letter_count=0.5)


class BlocklistError(ValueError):
    """A blocklist folder that cannot be used (missing, unreadable, nothing in it)."""


@dataclass(frozen=True)
class BlocklistHit:
    """Why the blocklist blocked a prompt: ``check`` fired on ``entry``, seen as ``matched``."""

    check: str  # "censor", "censor (lemmatised)", "exact match" or "fuzzy match"
    entry: str
    matched: str

    def describe(self) -> str:
        seen = "" if self.matched.lower() == self.entry.lower() else f" (as {self.matched!r})"
        return f"blocklist {self.check}: entry {self.entry!r}{seen}"


def to_ascii(text: str) -> str:
    """Every run of non-ASCII characters becomes one space (cosmos_utils.to_ascii)."""
    return re.sub(r"[^\x00-\x7F]+", " ", text)


def read_list_folder(folder: Path) -> list[str]:
    """The entries of every file in ``folder`` (sorted by name), one a line, blank lines skipped."""
    entries = []
    if not folder.is_dir():
        return entries
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise BlocklistError(f"cannot read the blocklist file {path}: {e}") from e
        entries += [line.strip() for line in text.splitlines() if line.strip()]
    return entries


def blocklist_root(folder) -> Path:
    """``folder`` itself, or its ``blocklist/`` (the guardrail repository's layout)."""
    folder = Path(folder)
    if not any((folder / name).is_dir() for name in LIST_FOLDERS) and (folder / "blocklist").is_dir():
        folder = folder / "blocklist"
    return folder


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _fuzzy_window(words: list[str], entry: str) -> str | None:
    """The first window of ``len(entry.split())`` words close enough to ``entry`` (check_partial_match)."""
    n = len(entry.split())
    threshold = (len(entry) - FUZZY_LETTERS) / len(entry)
    for i in range(len(words) - n + 1):
        window = " ".join(words[i : i + n])
        if difflib.SequenceMatcher(None, window, entry).ratio() >= threshold:
            return window
    return None


@dataclass
class Blocklist:
    """Loaded word lists (and the lemmatiser, when NLTK and its data are there)."""

    custom: list[str]
    whitelist: list[str]
    exact_match: list[str]
    lemmatiser: Lemmatiser | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)  # what is skipped and how to add it

    def __post_init__(self):
        self._whitelist = {w.lower() for w in self.whitelist}
        self._censor = Censor([w for w in self.custom if w.lower() not in self._whitelist])
        self._exact = [(w, _normalise(w)) for w in self.exact_match if _normalise(w)]

    def _whitelisted(self, text: str, hit: CensorHit) -> bool:
        """True when a whitespace token that the hit overlaps is a whitelisted word (uncensor_whitelist)."""
        for m in re.finditer(r"\S+", text):
            if m.start() < hit.end and hit.start < m.end():
                if m.group().strip(string.punctuation).lower() in self._whitelist:
                    return True
        return False

    def _censor_pass(self, text: str, check: str) -> BlocklistHit | None:
        for hit in self._censor.find(text):
            if not self._whitelisted(text, hit):
                return BlocklistHit(check, hit.entry, text[hit.start : hit.end])
        return None

    def _exact_pass(self, text: str) -> BlocklistHit | None:
        prompt = _normalise(text)
        words = prompt.split()
        for original, entry in self._exact:
            found = re.search(r"\b" + re.escape(entry) + r"\b", prompt)
            if found:
                return BlocklistHit("exact match", original, found.group())
            if len(entry) >= FUZZY_MIN_CHARS:
                window = _fuzzy_window(words, entry)
                if window is not None:
                    return BlocklistHit("fuzzy match", original, window)
        return None

    def check(self, prompt: str) -> BlocklistHit | None:
        """The first hit of the three passes on a non-empty prompt, in the reference's order, or None."""
        text = to_ascii(prompt)
        hit = self._censor_pass(text, "censor")
        if hit is None and self.lemmatiser is not None:
            hit = self._censor_pass(self.lemmatiser.lemmatized(text), "censor (lemmatised)")
        return hit or self._exact_pass(text)


def load_blocklist(folder=None, nltk_data=()) -> Blocklist:
    """Read a blocklist folder (default: the lists shipped with the pack).

    ``nltk_data``: more ``nltk_data`` folders to look in for the lemmatiser's data, after the
    blocklist's own ``nltk_data/``. Without NLTK or its data the lemmatised pass is skipped and
    ``Blocklist.notes`` says so.
    """
    root = blocklist_root(DEFAULT_FOLDER if folder is None else folder)
    if not root.is_dir():
        raise BlocklistError(f"the blocklist folder {root} does not exist")
    lists = {name: read_list_folder(root / name) for name in LIST_FOLDERS}
    if not lists["custom"] and not lists["exact_match"]:
        raise BlocklistError(f"the blocklist folder {root} has no entries in custom/ or exact_match/ "
                             f"(expected the layout {'/, '.join(LIST_FOLDERS)}/, nltk_data/)")
    notes = []
    lemmatiser = None
    if lists["custom"]:
        own = [] if root.resolve() == DEFAULT_FOLDER.resolve() else [root / "nltk_data"]  # nothing is added inside the pack
        lemmatiser, note = load_lemmatiser([*own, *map(Path, nltk_data)])
        if note:
            notes.append(note)
    return Blocklist(lists["custom"], lists["whitelist"], lists["exact_match"], lemmatiser, str(root), notes)
