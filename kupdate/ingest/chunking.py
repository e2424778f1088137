"""Split text into sentences and pack sentences into overlapping, token-bounded chunks.

Chunks are what the memory stores and retrieves, so a chunk should be a self-contained run of
whole sentences: cutting mid-sentence produces fragments that embed poorly and read badly when
quoted back to the model. Overlap carries the last sentence(s) of one chunk into the next so a
fact split across a chunk boundary is still retrievable in one piece.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["split_sentences", "count_tokens_default", "chunk_text"]

_TOKEN = re.compile(r"\w+|[^\w\s]")
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


def count_tokens_default(text: str) -> int:
    """Approximate token count: words and single punctuation marks. Cheap and model-free.

    It over-counts relative to BPE tokenizers on plain prose and under-counts on rare words; it
    is a budget, not an exact figure. Pass a model's own counter to `chunk_text` for precision.
    """
    return len(_TOKEN.findall(text))


def _is_boundary(block: str, match: re.Match[str], sentence_start: int) -> bool:
    """Decide whether the candidate boundary `match` really ends a sentence."""
    following = block[match.end()]
    if following.islower():  # "e.g. the", "approx. five", "etc. and": a sentence starts uppercase
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
    for match in _BOUNDARY.finditer(block):
        if _is_boundary(block, match, start):
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

    Splits after ``.``, ``!``, ``?`` followed by whitespace and a non-lowercase character, and at
    blank lines, Markdown headings (``#`` lines) and list items. Does not split after common
    abbreviations ("Dr.", "e.g.", "U.S.", "No. 5"), initials ("J. Smith") or inside numbers
    ("3.5"). Whitespace inside a sentence is collapsed to single spaces.
    """
    sentences: list[str] = []
    for block in _blocks(text):
        sentences += [s.strip() for s in _split_block(block) if s.strip()]
    return sentences


def _hard_split(word: str, max_tokens: int, count_tokens: Callable[[str], int]) -> list[str]:
    """Split one over-long 'word' (a URL, a base64 blob) at character positions."""
    pieces: list[str] = []
    while word:
        # Binary search for the longest prefix that fits; counters are monotone enough for this.
        lo, hi = 1, len(word)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if count_tokens(word[:mid]) <= max_tokens else (lo, mid - 1)
        if count_tokens(word[:lo]) > max_tokens:
            raise ValueError(f"max_tokens={max_tokens} is too small: one character counts as more")
        pieces.append(word[:lo])
        word = word[lo:]
    return pieces


def _pack(
    units: list[tuple[str, int]], max_tokens: int, overlap: int, count: Callable[[str], int]
) -> list[str]:
    """Greedily pack (text, tokens) units, each <= max_tokens, into space-joined chunks.

    Packing sums per-unit counts (cheap: each unit is counted once); every chunk is then checked
    with `count` on the joined text, because a real tokenizer need not be additive across a join.
    A chunk that fails the check gives back its last unit, so no chunk ever exceeds max_tokens.
    """
    chunks: list[str] = []
    current: list[tuple[str, int]] = []
    total = 0  # sum of the counts in `current`, kept running so packing stays linear
    fresh = 0  # units in `current` not carried over from the previous chunk
    i = 0
    while i < len(units) or fresh:
        if i < len(units) and (not fresh or total + units[i][1] <= max_tokens):
            while current and total + units[i][1] > max_tokens:  # only carried-over units go
                total -= current.pop(0)[1]
            current.append(units[i])
            total, fresh, i = total + units[i][1], fresh + 1, i + 1
            continue
        while len(current) > 1 and count(" ".join(t for t, _ in current)) > max_tokens:
            if fresh > 1:
                current.pop()
                fresh, i = fresh - 1, i - 1  # re-pack the unit that did not fit
            else:
                current.pop(0)  # drop carried-over context before the chunk's own content
        chunks.append(" ".join(t for t, _ in current))
        # Carry the trailing units that fit in `overlap`, never the whole chunk (that would only
        # repeat it), and nothing after the last chunk.
        emitted = current[1:] if i < len(units) else []
        current, total, fresh = [], 0, 0
        for unit in reversed(emitted):
            if total + unit[1] > overlap:
                break
            current.insert(0, unit)
            total += unit[1]
    return chunks


def chunk_text(
    text: str,
    *,
    max_tokens: int = 200,
    overlap: int = 32,
    count_tokens: Callable[[str], int] = count_tokens_default,
) -> list[str]:
    """Pack whole sentences into chunks of at most `max_tokens` tokens (as `count_tokens` counts).

    Each chunk after the first starts with the trailing sentences of the previous chunk that fit
    in `overlap` tokens. A sentence longer than `max_tokens` is split at word boundaries (and a
    single over-long word at characters). A text that fits returns one chunk: its sentences
    joined by single spaces. Empty text returns no chunks. Deterministic.

    Raises ValueError when max_tokens < 1 or overlap is negative or not below max_tokens.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if not 0 <= overlap < max_tokens:
        raise ValueError(f"overlap must be >= 0 and < max_tokens ({max_tokens}), got {overlap}")
    units: list[tuple[str, int]] = []
    for sentence in split_sentences(text):
        n = count_tokens(sentence)
        if n <= max_tokens:
            units.append((sentence, n))
            continue
        # Too long for one chunk: re-pack its words (no overlap inside one sentence).
        words: list[tuple[str, int]] = []
        for word in sentence.split():
            pieces = (
                [word] if count_tokens(word) <= max_tokens else _hard_split(word, max_tokens, count_tokens)
            )
            words += [(piece, count_tokens(piece)) for piece in pieces]
        units += [(piece, count_tokens(piece)) for piece in _pack(words, max_tokens, 0, count_tokens)]
    return _pack(units, max_tokens, overlap, count_tokens)
