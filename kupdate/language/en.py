"""English: stopwords, words, a light stemmer and a sentence splitter (see `kupdate.language`)."""

from __future__ import annotations

import re

from kupdate.language import Language

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


def words(text: str) -> list[str]:
    """Lower-cased alphanumeric tokens (the same split SQLite FTS5's unicode61 tokenizer makes)."""
    return [w.lower() for w in _WORD.findall(text)]


def stem(word: str) -> str:
    """A crude suffix stripper so 'painted' meets 'paints' and 'leaders' meets 'leads'."""
    for suffix in ("ing", "ed", "es", "ly", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            word = word[: -len(suffix)]
            break
    if len(word) > 5 and word.endswith("er"):
        word = word[:-2]
    return word


_HEADING = re.compile(r" {0,3}#{1,6}(?:\s|$)")  # CommonMark ATX heading; '#tag' is not one
_LIST_ITEM = re.compile(r"\s*(?:[-*+]|\d{1,9}[.)])\s")
# Candidate boundary: terminal punctuation, optional closing quotes/brackets, then whitespace.
_BOUNDARY = re.compile(r"([.!?…]+)([\"'”’)\]]*)\s+")
_INITIALISM = re.compile(r"(?:[a-z]\.){2,}")  # u.s., e.g., a.m.
_INITIAL = re.compile(r"[A-Z]\.")  # John F. Kennedy
_ENUMERATOR = re.compile(r"\d{1,9}\.")  # "1." opening a list item
# Abbreviations that rarely end a sentence (titles, "vs.", "approx."): never split after them.
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt rev hon gen col capt lt sgt gov sen rep pres supt vs cf approx ca viz ph.d".split()
)
# Abbreviations that precede a number ("No. 5", "Fig. 3", "Jan. 12"); "no." before a capital
# letter is just the word "no" ending a sentence, so these only hold before a digit.
_NUMBER_ABBREVIATIONS = frozenset(
    "no nos fig figs eq vol pp p ch sec art jan feb mar apr jun jul aug sep sept oct nov dec".split()
)


def _is_boundary(block: str, match: re.Match[str], sentence_start: int, caseless: bool = False) -> bool:
    """Decide whether the candidate boundary `match` really ends a sentence. `caseless`: the
    block was typed without capitals, so a lower-case word after the mark may start a sentence."""
    following = block[match.end()]
    if following.islower() and not caseless:  # "e.g. the", "approx. five", "etc. and": a sentence starts uppercase
        return False
    if match[1] != ".":  # "!", "?", "...": a capital (or digit, quote) after them starts anew
        return True
    word = block[sentence_start : match.end(1)].rsplit(None, 1)[-1].lstrip("([{\"'“‘")
    lowered = word.lower()
    if lowered[:-1] in _ABBREVIATIONS or _INITIALISM.fullmatch(lowered) or _INITIAL.fullmatch(word):
        return False
    if lowered[:-1] in _NUMBER_ABBREVIATIONS and following.isdigit():
        return False
    # "1. First item": the list number is not a sentence of its own.
    return not (_ENUMERATOR.fullmatch(word) and block[sentence_start : match.start()].isdigit())


def _split_block(block: str) -> list[str]:
    """Split one whitespace-collapsed paragraph into sentences."""
    sentences: list[str] = []
    start = 0
    candidates = list(_BOUNDARY.finditer(block))
    # Typed in lower case ("when did it open? options: a; b; c."): neither the paragraph nor any
    # candidate sentence after a mark starts with a capital, so case says nothing about where
    # sentences start; the marks alone decide.
    caseless = not any(block[i].isupper() for i in [0, *(m.end() for m in candidates)])
    for match in candidates:
        if _is_boundary(block, match, start, caseless):
            sentences.append(block[start : match.end(2)])
            start = match.end()
    sentences.append(block[start:])
    return sentences


def _blocks(text: str) -> list[str]:
    """Paragraphs, headings and list items, each with its internal whitespace collapsed."""
    blocks: list[list[str]] = [[]]
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line.strip():
            blocks.append([])
        elif _HEADING.match(line):
            # A heading is its own sentence: it has no final period to split on, and merging it
            # into the paragraph below would glue "## Results" onto the first sentence.
            blocks += [[line], []]
        elif _LIST_ITEM.match(line):
            blocks.append([line])  # each list item starts afresh, like a paragraph
        else:
            blocks[-1].append(line)
    return [" ".join(" ".join(lines).split()) for lines in blocks if lines]


def split_sentences(text: str) -> list[str]:
    """Split text into stripped, non-empty sentences.

    Splits after ``.``, ``!``, ``?`` followed by whitespace and a non-lowercase character (any
    character in a paragraph typed without capitals at its sentence starts), and at
    blank lines, Markdown headings (``#`` lines) and list items. Does not split after common
    abbreviations ("Dr.", "e.g.", "U.S.", "No. 5"), initials ("J. Smith") or inside numbers
    ("3.5"). Whitespace inside a sentence is collapsed to single spaces.
    """
    sentences: list[str] = []
    for block in _blocks(text):
        sentences += [s.strip() for s in _split_block(block) if s.strip()]
    return sentences



_ENTITY = re.compile(r"\b[A-Z][\w'’-]*(?:\s+(?:of\s+|de\s+|van\s+|von\s+)?[A-Z][\w'’-]*)*")
_ROLE = re.compile(r"^(?:The\s+)?[A-Z]{2,4}\s+of\s+")


def names(text: str) -> list[str]:
    """Capitalised spans as written, without leading stopwords or a role: a cheap guess at the
    names a text mentions, used as a feature only (lower-case text has none, and then nothing
    depends on it). 'The Velmar loom was praised by the CEO of Acme Rail' -> ['Velmar', 'Acme Rail']."""
    found = []
    for match in _ENTITY.finditer(text):
        parts = _ROLE.sub("", match.group(0)).split()
        while parts and parts[0].lower() in STOPWORDS:
            parts.pop(0)
        if parts and len(parts[0]) > 1:
            found.append(" ".join(parts))
    return found


CUES = frozenset("is was are were by in of to at from as for on with has have into under named called".split())

LANGUAGE = Language("en", STOPWORDS, words, stem, split_sentences, names, CUES)
