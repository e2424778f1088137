"""Fresh over stale for one question: memories stating the question's attribute of the question's
subject with different values (DESIGN.md section 5).

Whole-memory similarity misses many updates: in "The flagship product of Brurounus Energy is the
Betrom kiln." against "... is the Neme drone." the values are a large part of the sentence, and
MiniLM puts the two at a cosine of 0.53; and a memory holding several facts is close to none of
them. So, per question naming a subject, every sentence of the memories about that subject is
reduced to its shape, with all names masked ("The flagship product of X is the X kiln."), and
compared with the question's shape ("What is the flagship product of X?"). Each memory's closest
sentence answers the question if it matches at least SLOT_MIN; of two such memories whose answering
sentences are within SAME_SHAPE of each other, the older is outdated by the newer. A newer sentence
about another attribute of the same subject ("X moved its headquarters to X.") has another shape
and outdates nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from kupdate.text import STOPWORDS, entities, stem, words

_WORD = re.compile(r"\b[A-Z][\w'’-]*|\b\d[\d,.]*\b")
_XS = re.compile(r"X(?:\s+(?:of\s+)?X)+")
SLOT_MIN = 0.5  # a sentence whose shape matches the question's less than this does not answer it
SAME_SHAPE = 0.72  # two answering sentences this close in shape state the same attribute


def shape(sentence: str) -> str:
    """`sentence` with names and numbers masked: 'The CEO of Vaiquend Labs is Ivo Kern.' ->
    'The CEO of X is X.' (stopwords and short acronyms such as CEO stay)."""
    def mask(m: re.Match[str]) -> str:
        w = m.group(0)
        keep = w.lower() in STOPWORDS or (w.isalpha() and w.isupper() and len(w) <= 4)
        return w if keep else "X"

    return _XS.sub("X", _WORD.sub(mask, sentence))


def mark_conflicts(memories: Sequence[Any], question: str, encode: Callable[[list[str]], np.ndarray],
                   newer: Callable[[Any, Any], bool]) -> None:
    """Flag (in place) current memories that a newer memory overrides on the question's attribute
    of the question's subject. Only questions naming a subject take part."""
    from kupdate.answer import _statements

    subject = {stem(w) for w in entities(question)}
    if not subject:
        return
    about = [m for m in memories if not m.outdated and subject <= {stem(w) for w in words(m.record.text)}]
    if len(about) < 2:
        return
    per = [_statements(m.record.text) or [m.record.text] for m in about]
    flat = [shape(x) for sents in per for x in sents]
    vecs = np.asarray(encode([shape(question), *flat]), dtype=np.float32)
    to_question = vecs[1:] @ vecs[0]
    best_rows, start = [], 0
    for sents in per:  # each memory's sentence closest in shape to the question
        k = int(np.argmax(to_question[start : start + len(sents)]))
        best_rows.append((start + k, float(to_question[start + k])))
        start += len(sents)
    slot = [(m, row) for m, (row, sim) in zip(about, best_rows) if sim >= SLOT_MIN]
    for a, ra in slot:
        for b, rb in slot:
            if (a is not b and not a.outdated and newer(b.record, a.record)
                    and a.record.content_hash != b.record.content_hash
                    and float(vecs[1 + ra] @ vecs[1 + rb]) >= SAME_SHAPE):
                a.outdated, a.outdated_by = True, b.record.id
