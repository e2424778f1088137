"""Fresh over stale for one question: memories stating the same thing about the question's subject
with different values (DESIGN.md section 5).

Whole-memory similarity misses many updates: in "The flagship product of Brurounus Energy is the
Betrom kiln." against "... is the Neme drone." the values are a large part of the sentence, and
MiniLM puts the two at a cosine of 0.53. So, per question, each candidate memory is reduced to
the sentence that answers it, with every name the question does not mention masked ("The
flagship product of Brurounus Energy is the X kiln."). Two such shapes about the question's
subject that still embed within `same_fact_similarity` of each other state the same fact: the
one with the newer `valid_from` is current, the others are outdated by it. A sentence about
another attribute of the same subject ("Brurounus Energy moved its headquarters to X.") keeps
a different shape, so it never outdates the answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from kupdate.text import STOPWORDS, entities, stem, words

_SPAN = re.compile(r"\b[A-Z][\w'’-]*(?:\s+(?:of\s+|de\s+|van\s+|von\s+)?[A-Z][\w'’-]*)*|\d[\d,.]*")


def shape(sentence: str, keep: set[str]) -> str:
    """`sentence` with every name or number whose words are not in `keep` (stems) replaced by X."""
    def mask(m: re.Match[str]) -> str:
        ws = [w for w in words(m.group(0)) if w not in STOPWORDS]
        return m.group(0) if not ws or all(stem(w) in keep for w in ws) else "X"

    return _SPAN.sub(mask, sentence)


def answering_sentence(text: str, wanted: Sequence[str]) -> str:
    """The sentence of `text` holding most of the question's terms (stems); the first on a tie."""
    from kupdate.answer import _statements

    sentences = _statements(text) or [text]
    return max(sentences, key=lambda s: sum(stem(w) in {stem(x) for x in words(s)} for w in wanted))


def mark_conflicts(memories: Sequence[Any], question: str, encode: Callable[[list[str]], np.ndarray],
                   same_fact: float, newer: Callable[[Any, Any], bool]) -> None:
    """Flag (in place) current memories about the question's subject that a newer memory restates
    with another value. Only questions naming a subject take part."""
    subject = {stem(w) for w in entities(question)}
    if not subject:
        return
    wanted = [w for w in words(question) if w not in STOPWORDS]
    about = [m for m in memories if not m.outdated
             and subject <= {stem(w) for w in words(m.record.text)}]
    if len(about) < 2:
        return
    shapes = [shape(answering_sentence(m.record.text, wanted), subject) for m in about]
    vecs = np.asarray(encode(shapes), dtype=np.float32)
    sims = vecs @ vecs.T
    for i, a in enumerate(about):
        for j, b in enumerate(about):
            if (i != j and sims[i, j] >= same_fact and a.record.content_hash != b.record.content_hash
                    and newer(b.record, a.record) and not a.outdated):
                a.outdated, a.outdated_by = True, b.record.id
