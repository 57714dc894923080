"""Test helpers for the text guardrail: the reference blocklist as an oracle, and tiny NLTK data.

The oracle is cosmos-guardrail 0.3.2's ``Blocklist``, run with our word lists instead of the ones it
downloads. It is installed with ``pip install --no-deps --target .oracles`` (or the folder named by
``$COSMOS_GUARDRAIL_ORACLE``), not into the environment: diffusers' Cosmos3 pipeline imports
``cosmos_guardrail`` whenever it is importable and fails without its dependencies. The folder is on
``sys.path`` only while the module imports. Its module also imports packages for the video checks and for
downloading (``retinaface``, ``peft``, ``cv2``, ``imageio``, ``requests``), which the text checks never
use: those missing get empty stand-in modules for the length of the import only, so no other test sees them.

``write_nltk_data`` writes a few nouns in WordNet's database format and an empty English Punkt model
(the ``punkt_tab`` layout): enough for ``nltk.word_tokenize`` and ``WordNetLemmatizer`` to run on
data made here, since the real data cannot be downloaded in tests.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path

from . import ROOT

# Packages the reference module imports for its video checks or downloads, never used by the text checks.
STUBBABLE = {"cv2", "peft", "retinaface", "imageio", "imageio_ffmpeg", "requests"}


class _Stub(types.ModuleType):
    """An empty stand-in package: any submodule can be stubbed below it, any name imported from it is None."""

    __path__: list = []

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return None


def reference_module():
    """``cosmos_guardrail.cosmos_guardrail`` (the module object), or None when the package is not installed."""
    folder = os.environ.get("COSMOS_GUARDRAIL_ORACLE") or str(ROOT / ".oracles")
    on_path = importlib.util.find_spec("cosmos_guardrail") is not None
    if not on_path and not os.path.isdir(os.path.join(folder, "cosmos_guardrail")):
        return None
    import better_profanity  # noqa: F401 - real dependencies first, so only the stand-ins are temporary
    import nltk  # noqa: F401
    import transformers  # noqa: F401

    added, before = [], set(sys.modules)
    hide_torchvision = "torchvision" not in sys.modules and importlib.util.find_spec("torchvision") is None
    if not on_path:
        sys.path.insert(0, folder)
    if hide_torchvision:  # the face filter's oracles put a torchvision in that folder: not for transformers' imports
        sys.modules["torchvision"] = None
    for name in ("retinaface",):  # the face detector (also in that folder, needing torchvision): unused here
        if name not in sys.modules:
            sys.modules[name] = _Stub(name)
            added.append(name)
    try:
        while True:
            try:
                return importlib.import_module("cosmos_guardrail.cosmos_guardrail")
            except ModuleNotFoundError as e:
                if not e.name or e.name.split(".")[0] not in STUBBABLE or e.name in sys.modules:
                    raise
                sys.modules[e.name] = _Stub(e.name)
                added.append(e.name)
    finally:
        if not on_path:
            sys.path.remove(folder)
        if hide_torchvision and sys.modules.get("torchvision", 0) is None:
            del sys.modules["torchvision"]
        for name in added + [m for m in set(sys.modules) - before if m.startswith("cosmos_guardrail")]:
            sys.modules.pop(name, None)


def reference_blocklist(module, folder: Path):
    """The reference ``Blocklist`` over the lists in ``folder`` (its ``__init__`` would download them).

    It uses NLTK's global data path (``nltk.data.path``) and better-profanity's shared ``profanity``
    object, as the reference does.
    """
    from better_profanity import profanity

    cls = module.Blocklist
    bl = cls.__new__(cls)
    bl.checkpoint_dir = str(folder)
    bl.lemmatizer = module.nltk.WordNetLemmatizer()
    bl.profanity = profanity
    bl.guardrail_partial_match_min_chars = 4
    bl.guardrail_partial_match_letter_count = 0.5
    def read(name):  # the reference needs every folder; ours may lack one
        return module.read_keyword_list_from_dir(str(folder / name)) if (folder / name).is_dir() else []

    bl.blocklist_words, bl.whitelist_words, bl.exact_match_words = read("custom"), read("whitelist"), read("exact_match")
    profanity.load_censor_words(custom_words=bl.blocklist_words, whitelist_words=bl.whitelist_words)
    return bl


def write_nltk_data(folder: Path, nouns) -> Path:
    """Tiny NLTK data in ``folder``: ``corpora/wordnet`` knowing ``nouns`` (lemmas), an empty English Punkt."""
    wordnet = folder / "corpora" / "wordnet"
    wordnet.mkdir(parents=True, exist_ok=True)
    (wordnet / "lexnames").write_text("00\tadj.all\t3\n")
    for pos in ("adj", "adv", "noun", "verb"):
        for name in (f"data.{pos}", f"index.{pos}", f"{pos}.exc"):
            (wordnet / name).write_text("")
    (wordnet / "index.sense").write_text("")
    # index.noun lines: lemma pos synset_cnt p_cnt [ptr...] sense_cnt tagsense_cnt synset_offset...
    lines = [f"{noun} n 1 0 1 0 {i + 1:08d}" for i, noun in enumerate(sorted(nouns))]
    (wordnet / "index.noun").write_text("\n".join(lines) + "\n")
    punkt = folder / "tokenizers" / "punkt_tab" / "english"
    punkt.mkdir(parents=True, exist_ok=True)
    for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
        (punkt / name).write_text("")
    return folder
