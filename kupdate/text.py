"""Small text helpers shared by the gate, freshness and metrics: terms, entities, normalisation."""

from __future__ import annotations

import re
import string

# Short on purpose: the gate weighs terms by IDF over the KB anyway; this only drops words that
# carry no topic at all, so a question like "what is it?" never counts as covered.
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just
    me more most my myself no nor not now of off on once only or other our ours ourselves out over
    own same she should so some such than that the their theirs them themselves then there these
    they this those through to too under until up very was we were what when where which while who
    whom why will with would you your yours yourself yourselves tell please called name named
    known current currently today now latest new""".split()
)

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_ENTITY = re.compile(r"\b[A-Z][\w'’-]*(?:\s+(?:of\s+|de\s+|van\s+|von\s+)?[A-Z][\w'’-]*)*")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def words(text: str) -> list[str]:
    """Lower-cased alphanumeric tokens (the same split SQLite FTS5's unicode61 tokenizer makes)."""
    return [w.lower() for w in _WORD.findall(text)]


def stem(word: str) -> str:
    """A crude suffix stripper so 'headquartered' meets 'headquarters' and 'leaders' meets 'leads'."""
    for suffix in ("ing", "ed", "es", "ly", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            word = word[: -len(suffix)]
            break
    if len(word) > 5 and word.endswith("er"):
        word = word[:-2]
    return word


def terms(text: str) -> list[str]:
    """Content terms: lower-cased words without stopwords or single characters, in order, unique."""
    seen: dict[str, None] = {}
    for w in words(text):
        if len(w) > 1 and w not in STOPWORDS:
            seen.setdefault(w, None)
    return list(seen)


_ROLE = re.compile(r"^(?:The\s+)?[A-Z]{2,4}\s+of\s+")


def _spans(text: str) -> list[list[str]]:
    """Capitalised spans as lists of lower-cased words, without stopwords and single characters.

    A short acronym opening a span before "of" is a role, not a name: 'CEO of Vaiquend Labs' ->
    ['vaiquend', 'labs'] ('BBC Knowledge' and 'IBM' stay whole).
    """
    spans = []
    for match in _ENTITY.finditer(text):
        span = [w for w in words(_ROLE.sub("", match.group(0))) if w not in STOPWORDS and len(w) > 1]
        if span:
            spans.append(span)
    return spans


def entities(text: str) -> set[str]:
    """Words of capitalised spans that are not sentence-initial stopwords: a cheap named-entity guess.

    'Who is the CEO of Veltrane Robotics?' -> {'veltrane', 'robotics'}. Used by the gate so that a
    question about Michel Rocard does not open on a memory about Danielle Darrieux, however close
    the two sentences are in embedding space.
    """
    return {w for span in _spans(text) for w in span}


def names(text: str) -> list[str]:
    """Capitalised spans as written, without leading stopwords or a role: 'The Sufos loom replaced
    the Faprend scanner' -> ['Sufos', 'Faprend']."""
    found = []
    for match in _ENTITY.finditer(text):
        parts = _ROLE.sub("", match.group(0)).split()
        while parts and parts[0].lower() in STOPWORDS:
            parts.pop(0)
        if parts and len(parts[0]) > 1:
            found.append(" ".join(parts))
    return found


def subject(text: str) -> set[str]:
    """Words of the longest capitalised span (the last of equals): what a question is about.

    'Where is Vaiquend Labs headquartered?' -> {'vaiquend', 'labs'}.
    """
    best: list[str] = []
    for span in _spans(text):
        if len(span) >= len(best):
            best = span
    return set(best)


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
    t = normalize_answer(target)
    return bool(t) and f" {t} " in f" {normalize_answer(first_line(answer))} "
