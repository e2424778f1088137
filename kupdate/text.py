"""Answer scoring (DESIGN.md section 8): normalisation and the hit test the metrics share.

Words, stems and stopwords are language-specific and live in `kupdate.language`."""

from __future__ import annotations

import html
import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_TAG = re.compile(r"</?[A-Za-z][^<>]{0,2000}>")


def plain(text: str) -> str:
    """`text` without HTML tags and entities, whitespace collapsed within lines: what a reader sees.

    'See <a href="https://x.test">the report</a> &amp; more' -> 'See the report & more'.
    """
    if "<" not in text and "&" not in text:
        return text
    lines = (" ".join(line.split()) for line in html.unescape(_TAG.sub(" ", text)).split("\n"))
    return "\n".join(lines)


def normalize_answer(text: str) -> str:
    """DESIGN section 8: lower-case, strip punctuation, articles and extra whitespace."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation + "“”‘’"))
    return " ".join(_ARTICLES.sub(" ", text).split())


def first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def hits(answer: str, target: str) -> bool:
    """True when the normalised target occurs in the normalised first line of the answer."""
    return mentions(first_line(answer), target)


def mentions(text: str, phrase: str) -> bool:
    """True when the normalised `phrase` occurs in the normalised `text` as whole words."""
    t = normalize_answer(phrase)
    return bool(t) and f" {t} " in f" {normalize_answer(text)} "
