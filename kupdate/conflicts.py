"""Fresh over stale for one question: memories stating the question's attribute of the question's
subject with different values (DESIGN.md section 5).

Whole-memory similarity misses many updates: in "The flagship product of Brurounus Energy is the
Betrom kiln." against "... is the Neme drone." the values are a large part of the sentence, and
MiniLM puts the two at a cosine of 0.53; and a memory holding several facts is close to none of
them. So, per question naming a subject, every sentence of the memories about that subject is
reduced to its shape, with all names masked ("The flagship product of X is the X kiln."), and
compared with the question's shape ("What is the flagship product of X?"). Each memory's closest
sentence answers the question if it matches at least SLOT_MIN; of two such memories whose answering
sentences state the same attribute (`_same_attribute`: close shapes, the question's attribute words
in both, or the newer naming the older's value), the older is outdated by the newer. A newer
sentence about another attribute of the same subject ("X moved its headquarters to X.") has another
shape and outdates nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from kupdate.text import STOPWORDS, entities, names, stem, subject, terms, words

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

    about_whom = {stem(w) for w in subject(question)}
    if not about_whom:
        return
    about = [m for m in memories if not m.outdated and about_whom <= _stems(m.record.text)]
    if len(about) < 2:
        return
    per = [_statements(m.record.text) or [m.record.text] for m in about]
    flat = [x for sents in per for x in sents]
    vecs = np.asarray(encode([shape(question), *[shape(x) for x in flat], question, *flat]), dtype=np.float32)
    vecs, raw = vecs[: len(flat) + 1], vecs[len(flat) + 1 :]
    to_question = vecs[1:] @ vecs[0]
    # Which sentence of a memory answers: shape and words together ("X has its head office in Bergen."
    # for "Where is X headquartered?" rather than "X's chief executive is Y.", close in shape alone).
    fit = to_question + raw[1:] @ raw[0]
    # The attribute's own words: "flagship product" in "What is the flagship product of X?".
    attribute = {stem(t) for t in terms(question)} - about_whom
    answering, starts, start = [], [], 0
    for sents in per:  # each memory's answering sentence: the closest in shape of those naming the attribute
        rows = range(start, start + len(sents))
        naming = [r for r in rows if attribute and attribute <= _stems(flat[r])]
        best = max(naming or rows, key=lambda r: fit[r])
        answering.append(best if to_question[best] >= SLOT_MIN else None)
        starts.append(start)
        start += len(sents)
    # Oldest first, so that a replaced memory's rank passes along a chain of versions (v1 -> v2 -> v3).
    order = sorted(range(len(about)), key=lambda i: (about[i].record.valid_from, about[i].record.observed_at, about[i].id))
    for i in order:
        a = about[i]
        for j in order:
            b = about[j]
            if a is b or a.outdated or not newer(b.record, a.record) or a.record.content_hash == b.record.content_hash:
                continue
            ra = answering[i]
            if ra is None:
                continue
            rb = _replacing(ra, answering[j], starts[j], len(per[j]), flat, vecs, attribute, about_whom)
            if rb is not None:
                a.outdated, a.outdated_by = True, b.record.id
                # The newer memory now answers for the one it replaced: its rank and its sentence.
                b.score = max(b.score, a.score)
                b.statement = flat[rb]
                # ... and the value it replaced is one the answer must not give.
                b.replaced += [n for n in names(flat[ra]) if not {stem(w) for w in words(n)} & (about_whom | attribute)]


def _stems(text: str) -> set[str]:
    """Stems of a sentence's words, plus the initials of each run of two to four content words, so
    that an acronym asked about is found spelled out: "chief executive officer" carries "ceo"."""
    content = [w for w in words(text) if w not in STOPWORDS]
    runs = {"".join(w[0] for w in content[i : i + n]) for n in (2, 3, 4) for i in range(len(content) - n + 1)}
    # A chief-officer title often drops "officer": "chief executive" is the CEO.
    runs |= {"c" + content[i + 1][0] + "o" for i, w in enumerate(content[:-1]) if w == "chief"}
    return {stem(w) for w in words(text)} | runs


def _replacing(ra: int, rb: int | None, start: int, count: int, flat: list[str], vecs: np.ndarray,
               attribute: set[str], about_whom: set[str]) -> int | None:
    """The row of the newer memory's sentence that restates the older answering sentence `ra` with
    another value, or None: its own answering sentence `rb` by any rule of `_same_attribute`, else
    any of its sentences by the word rules alone (a sentence naming the value it replaces may be
    far from the question in shape: "X relocated its head office from Tartu to Gothenburg.")."""
    if rb is not None and _same_attribute(flat[ra], flat[rb], float(vecs[1 + ra] @ vecs[1 + rb]), attribute, about_whom):
        return rb
    return next((r for r in range(start, start + count)
                 if r != rb and _same_attribute(flat[ra], flat[r], None, attribute, about_whom)), None)


def _same_attribute(older: str, newer: str, shape_sim: float | None, attribute: set[str], about_whom: set[str]) -> bool:
    """Whether two sentences about the question's subject state the same attribute:
    - the newer one names the older one's value ("X is headquartered in Tartu." / "X relocated its
      head office from Tartu to Gothenburg."): news of a change mentions what it replaces;
    - both carry every word of the question's attribute ("X sells the X as its flagship product." /
      "X launched the X, now its flagship product.");
    - their shapes are within SAME_SHAPE ("The CEO of X is X." / "X is the new CEO of X."), when
      `shape_sim` is given;
    - or the newer carries every relation word of the older ("X is the chief executive of X." /
      "X named X as its new chief executive.").
    """
    old_words, new_words = _stems(older), _stems(newer)
    value = {stem(w) for w in entities(older)} - about_whom - attribute
    if value and value <= new_words:
        return True
    if attribute and attribute <= old_words:
        # The older names the attribute asked: the newer must too ("X replaced X as the main partner
        # of X" and "X replaced X as the flagship product of X" have one shape, not one attribute).
        return attribute <= new_words
    if shape_sim is not None and shape_sim >= SAME_SHAPE:
        return True
    relation = {stem(t) for t in terms(older)} - {stem(w) for w in entities(older)}
    return bool(relation) and relation <= new_words
