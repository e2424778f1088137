"""The language seam: everything the answer path knows about one human language.

Retrieval, the gate, notes and freshness never look at a language's surface form themselves; they
ask a `Language` for words, stems, stopwords and sentences. A second language is one new module
here with the same five functions and its cue words, registered in `LANGUAGES` and chosen by the `language` setting
of `kupdate.toml` (docs/answering.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module

from kupdate.errors import ConfigError

LANGUAGES = {"en": "kupdate.language.en"}
DEFAULT_LANGUAGE = "en"


@dataclass(frozen=True)
class Language:
    """The language-specific pieces of the answer path."""

    code: str
    stopwords: frozenset[str]
    words: Callable[[str], list[str]]
    stem: Callable[[str], str]
    split_sentences: Callable[[str], list[str]]
    # The names a text mentions as written, where the script marks them (capitals); a feature only.
    names: Callable[[str], list[str]]
    # Words after which a statement's last phrase is its value ("Ada Brook was born in | Leeds"):
    # where consolidation cuts a statement into a question and its answer.
    cues: frozenset[str] = frozenset()

    def terms(self, text: str) -> list[str]:
        """Content terms: lower-cased words without stopwords or single characters, in order, unique."""
        seen: dict[str, None] = {}
        for w in self.words(text):
            if len(w) > 1 and w not in self.stopwords:
                seen.setdefault(w, None)
        return list(seen)

    def stems(self, text: str) -> set[str]:
        return {self.stem(w) for w in self.words(text)}

    def without(self, text: str, stems: set[str] | frozenset[str]) -> str:
        """`text`'s words, lower-cased, less those whose stem is in `stems` ("Brisk Velto moved to
        Oslo." without {brisk, velto} -> "moved to oslo")."""
        return " ".join(w for w in self.words(text) if self.stem(w) not in stems)

    def name_terms(self, text: str) -> set[str]:
        """The content terms of the names `text` mentions."""
        return {t for name in self.names(text) for t in self.terms(name)}


_LOADED: dict[str, Language] = {}


def get_language(code: str = DEFAULT_LANGUAGE) -> Language:
    """The `Language` for `code` ('en'); an unknown code is a ConfigError naming the known ones."""
    if code not in _LOADED:
        if code not in LANGUAGES:
            raise ConfigError(f"language {code!r} is not supported; choose from {', '.join(sorted(LANGUAGES))}")
        _LOADED[code] = import_module(LANGUAGES[code]).LANGUAGE
    return _LOADED[code]
