"""Split text into sentences and pack sentences into overlapping, token-bounded chunks.

Chunks are what the memory stores and retrieves, so a chunk should be a self-contained run of
whole sentences: cutting mid-sentence produces fragments that embed poorly and read badly when
quoted back to the model. Overlap carries the last sentence(s) of one chunk into the next so a
fact split across a chunk boundary is still retrievable in one piece.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from kupdate.language.en import split_sentences

__all__ = ["split_sentences", "count_tokens_default", "chunk_text"]

_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens_default(text: str) -> int:
    """Approximate token count: words and single punctuation marks. Cheap and model-free.

    It over-counts relative to BPE tokenizers on plain prose and under-counts on rare words; it
    is a budget, not an exact figure. Pass a model's own counter to `chunk_text` for precision.
    """
    return len(_TOKEN.findall(text))


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
