"""NLTK's word tokeniser and WordNet lemmatiser, read only from a given local ``nltk_data`` folder.

The reference blocklist runs its censor a second time on the prompt tokenised with ``nltk.word_tokenize``
and lemmatised with ``WordNetLemmatizer().lemmatize`` (noun forms: ``massacres`` -> ``massacre``),
joined by single spaces (cosmos-guardrail 0.3.2, ``Blocklist.is_safe``). Its data (WordNet, Punkt) comes
from the guardrail repository's ``blocklist/nltk_data``.

Here the data is looked up only in the folders given (never NLTK's global search path, never a
download), with our own readers, so two blocklists with different data do not share one. NLTK is an
optional dependency: without it, or without the data, :func:`load_lemmatiser` says what is missing and
how to add it, and the caller skips the lemmatised pass.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = "pip install nltk (or the pack's extra: pip install comfyui-cosmos3-ltx2[guardrails])"
DATA_HINT = ("put NLTK's 'wordnet' and 'punkt_tab' packages into {folder} (fetch them on a machine that is "
             "online with 'python -m nltk.downloader -d DIR wordnet punkt_tab' and copy DIR's contents over)")


@dataclass
class Lemmatiser:
    """``tokenize(text) -> tokens`` as ``nltk.word_tokenize``; ``lemmatize(token) -> lemma`` as WordNet's."""

    wordnet: object  # nltk WordNetCorpusReader
    sentences: object  # nltk PunktSentenceTokenizer
    words: object  # nltk NLTKWordTokenizer
    source: Path

    def tokenize(self, text: str) -> list[str]:
        # nltk.word_tokenize: split into sentences with Punkt, then each sentence with the Treebank-style tokeniser.
        return [t for s in self.sentences.tokenize(text) for t in self.words.tokenize(s)]

    def lemmatize(self, token: str) -> str:
        # WordNetLemmatizer.lemmatize(token) (pos "n"): the shortest noun form WordNet knows, else the token.
        forms = self.wordnet._morphy(token, "n")
        return min(forms, key=len) if forms else token

    def lemmatized(self, text: str) -> str:
        return " ".join(self.lemmatize(t) for t in self.tokenize(text))


def _find(nltk, root: str, name: str):
    try:
        return nltk.data.find(name, paths=[root])
    except LookupError:
        return None


def load_lemmatiser(folders) -> tuple[Lemmatiser | None, str | None]:
    """The lemmatiser from the first of ``folders`` (``nltk_data`` folders) holding WordNet, or None and why.

    Returns ``(lemmatiser, None)`` or ``(None, note)``; the note names what is missing and how to add it.
    """
    folders = [Path(f) for f in folders]
    try:
        import nltk
        from nltk.corpus.reader.wordnet import WordNetCorpusReader
        from nltk.tokenize.destructive import NLTKWordTokenizer
        from nltk.tokenize.punkt import PunktSentenceTokenizer, load_punkt_params
    except ImportError:
        return None, f"the lemmatised blocklist pass is skipped: NLTK is not installed ({INSTALL_HINT})"
    missing = []
    for folder in folders:
        if not folder.is_dir():
            continue
        root = str(folder.resolve())
        # NLTK >= 3.10 opens data files only below the folders on its search path (nltk.pathsec), so the
        # folder is added there; the lookups below name it explicitly, so nothing else is read.
        if root not in nltk.data.path:
            nltk.data.path.append(root)
        wordnet = _find(nltk, root, "corpora/wordnet/")  # a folder, or wordnet.zip as the downloader leaves it
        punkt = _find(nltk, root, "tokenizers/punkt_tab/english/")
        if wordnet is None or punkt is None:
            lacking = [name for name, found in (("wordnet", wordnet), ("punkt_tab", punkt)) if found is None]
            missing.append(f"{folder} lacks {' and '.join(lacking)}")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "multilingual functions are not available": not used
                reader = WordNetCorpusReader(wordnet, None)
            sentences = PunktSentenceTokenizer(load_punkt_params(punkt))
        except Exception as e:  # noqa: BLE001 - unreadable data (e.g. symlinked files, which NLTK refuses)
            return None, (f"the lemmatised blocklist pass is skipped: NLTK could not read the data in {folder} "
                          f"({type(e).__name__}: {e}); NLTK refuses symbolic links, so copy the files in "
                          "(cp -rL) rather than linking them")
        return Lemmatiser(reader, sentences, NLTKWordTokenizer(), folder), None
    if not folders:
        return None, ("the lemmatised blocklist pass is skipped, no nltk_data folder to look in: " + DATA_HINT.format(
            folder="the blocklist folder's nltk_data/ (for the shipped list: models/guardrails/nltk_data)"))
    where = "; ".join(missing) if missing else f"{' and '.join(map(str, folders))} not found"
    return None, f"the lemmatised blocklist pass is skipped ({where}): {DATA_HINT.format(folder=folders[0])}"
