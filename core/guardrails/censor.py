"""Whole-word blocklist matching that sees through leetspeak, in the manner of ``better_profanity``.

The reference text guardrail (cosmos-guardrail 0.3.2, ``Blocklist.censor_prompt``) runs
``better_profanity.profanity.censor`` with its ``custom`` word list. We match the same words the same way
but in our own code, for three reasons: the library cannot tell *which* entry matched (the node's error
must name it), it replaces an empty custom list by its own built-in English list, and it has had no release
since 2020. ``tests/test_guardrail_text.py`` checks that this module censors exactly what better-profanity
0.7.0 censors on many prompts.

How better-profanity matches (``better_profanity/better_profanity.py``, ``utils.py``,
``varying_string.py``, ``constants.py``):

* A *word* is a run of letters, digits and the characters ``@ $ * " '``; anything else separates words.
* An entry (lower-cased) matches a word when each of its characters equals the word's character at the
  same place, or one of that character's stand-ins (:data:`LEET`); other characters must be equal.
  The comparison is case-insensitive and whole-word: ``gore`` matches ``G0RE`` but not ``gores``.
* Before a word is tried alone, it is tried joined with the next word(s): with the separators between
  them kept (``self harm`` matches the entry ``self harm``) and with them dropped (``be heading`` matches
  the entry ``beheading``). A joined match wins and the scan resumes after it. Up to
  ``MAX_NUMBER_COMBINATIONS`` following words are joined: the most separators in one entry, but at least
  5 in the reference, whose module-level ``profanity`` object loads the library's built-in list first
  (which sets 5) and keeps that maximum when the custom list replaces it.
* A following word that starts at the text's last character is not joined, and a text whose first word
  starts at its last character is left alone.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

# better_profanity.constants.ALLOWED_CHARACTERS (ASCII part; the guardrail makes prompts ASCII first).
WORD_CHARACTERS = frozenset(string.ascii_letters + string.digits + "@$*\"'")
# better_profanity.Profanity.CHARS_MAPPING: what may stand for each letter of an entry.
LEET = {"a": "a@*4", "i": "i*l1", "o": "o*0@", "u": "u*v", "v": "v*u", "l": "l1", "e": "e*3", "s": "s$5", "t": "t7"}
# Following words joined by the reference whatever its custom list (see the module docstring).
REFERENCE_MIN_JOINED = 5

_WORD = re.compile("[" + re.escape("".join(sorted(WORD_CHARACTERS))) + "]+")


@dataclass(frozen=True)
class CensorHit:
    """``text[start:end]`` matched the list ``entry``."""

    start: int
    end: int
    entry: str


def _pattern(entry: str) -> str:
    return "".join(f"[{re.escape(LEET[c])}]" if c in LEET else re.escape(c) for c in entry)


class Censor:
    """The ``custom`` word list, compiled for whole-word leetspeak matching."""

    def __init__(self, entries, min_joined: int = REFERENCE_MIN_JOINED):
        self.entries = sorted({e.lower() for e in entries if e.strip()})
        by_length: dict[int, list[str]] = {}
        for e in self.entries:  # every stand-in is one character, so a match has the entry's length
            by_length.setdefault(len(e), []).append(e)
        self._buckets = {n: (re.compile("|".join(map(_pattern, es))), es) for n, es in by_length.items()}
        self._single: dict[str, re.Pattern] = {}
        # How many following words a word is joined with (better_profanity's MAX_NUMBER_COMBINATIONS).
        self.max_joined = max([min_joined, 1] + [sum(c not in WORD_CHARACTERS for c in e) for e in self.entries])

    def entry_for(self, candidate: str) -> str | None:
        """The first entry (in sorted order) that ``candidate`` spells, or None."""
        candidate = candidate.lower()
        bucket = self._buckets.get(len(candidate))
        if bucket is None or bucket[0].fullmatch(candidate) is None:
            return None
        for e in bucket[1]:
            pattern = self._single.get(e) or self._single.setdefault(e, re.compile(_pattern(e)))
            if pattern.fullmatch(candidate):
                return e
        return None  # unreachable: the bucket's alternation matched one of them

    def find(self, text: str) -> list[CensorHit]:
        """Every span of ``text`` that better-profanity would censor, left to right."""
        words = [(m.start(), m.end()) for m in _WORD.finditer(text)]
        last = len(text) - 1
        if not self.entries or not words or words[0][0] >= last:
            return []
        hits, k = [], 0
        while k < len(words):
            start, end = words[k]
            hit, next_k = None, k + 1
            if end < len(text):  # a separator follows: try this word joined with the next ones first
                for j in range(k + 1, min(k + self.max_joined, len(words) - 1) + 1):
                    if words[j][0] >= last:
                        break
                    joined = "".join(text[a:b] for a, b in words[k : j + 1])
                    entry = self.entry_for(joined) or self.entry_for(text[start : words[j][1]])
                    if entry is not None:
                        hit, next_k = CensorHit(start, words[j][1], entry), j + 1
                        break
            if hit is None:
                entry = self.entry_for(text[start:end])
                if entry is not None:
                    hit = CensorHit(start, end, entry)
            if hit is not None:
                hits.append(hit)
            k = next_k
        return hits
