"""Notes: what the model is handed from a memory, and which of its sentences are worth handing.

A memory (a chunk) may hold several facts; a small model handed all of them copies the wrong one
(asked who leads a firm, it answers when the firm was founded). `focus` keeps the sentences most
relevant to the question, scored as the gate scores memories. A question kept with the sentence
that answers it is one statement, so a Q/A note stays whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from kupdate.answering.gate import relevance
from kupdate.answering.query import Query
from kupdate.config import GateConfig
from kupdate.language import Language, get_language
from kupdate.text import plain


@dataclass
class Note:
    """One quoted piece of a memory: its text (HTML removed), date and standing."""

    id: int
    text: str
    valid_from: str
    source: str = ""
    outdated: bool = False
    score: float = 0.0
    # What an answer copies from: the note, or of a question kept with its answer ("When does X
    # open? It opens in May."), the answer alone, so that an answer states the value instead of
    # restating the question.
    reply: str = ""

    @property
    def copy_text(self) -> str:
        return self.reply or self.text

    @classmethod
    def of(cls, memory: Any, text: str | None = None) -> Note:
        """The note of a retrieved `Memory`, whole or one of its statements (`text`)."""
        r = memory.record
        body = plain(r.text if text is None else text)
        return cls(r.id, body, r.valid_from or "", r.source or "", memory.outdated, memory.score, reply_of(body))


def statements(text: str, lang: Language) -> list[str]:
    """Sentences, with a question kept together with the sentence that answers it
    ("What is the sister town of Orvik? It is Tarn." is one statement)."""
    out: list[str] = []
    for sentence in lang.split_sentences(plain(text)):
        if out and out[-1].endswith("?"):
            out[-1] = f"{out[-1]} {sentence}"
        else:
            out.append(sentence)
    return out


def reply_of(statement: str, lang: Language | None = None) -> str:
    """The answer of a statement that opens with a question ("Who won? The home side won." ->
    "The home side won."), else "" (the statement answers as a whole)."""
    lang = lang or get_language()
    sentences = lang.split_sentences(statement)
    ask = next((i for i, s in enumerate(sentences) if s.endswith("?")), None)
    if ask is None or ask == len(sentences) - 1:
        return ""
    return " ".join(sentences[ask + 1 :])


FOCUS_DENSE_WEIGHT, FOCUS_LEXICAL_WEIGHT = 0.2, 0.5


def shared_subject(query: Query, neighbours: Sequence[Any]) -> frozenset[str]:
    """The question's terms that every one of the `neighbours` contains (the memories that cleared
    the gate for it): what the memories retrieved for a question have in common is what they are
    about, so those terms say nothing about which of their statements answers. Found this way, not
    from capitals, so a question typed in lower case gets the same credit for "the company" as a
    cased one gets for its names. Empty for fewer than two memories, or when every term is shared
    (nothing then tells their statements apart)."""
    if len(neighbours) < 2:
        return frozenset()
    stem = query.lang.stem
    held = [query.lang.stems(plain(m.record.text)) for m in neighbours]
    shared = frozenset(t for t in query.terms if all(stem(t) in h for h in held))
    return shared if len(shared) < len(set(query.terms)) else frozenset()


@dataclass
class Statement:
    """One statement of a retrieved memory, scored for a question."""

    score: float
    memory: Any
    text: str
    # The statement's embedding without the words of the subject its memories share: what it says
    # about that subject (two versions of one fact say the same thing of it, docs/answering.md).
    about: np.ndarray = field(repr=False)
    asked: float = 0.0  # cosine of `about` and the question, the subject's words left out of both


def scored_statements(query: Query, qvec: np.ndarray, given: Sequence[Any], encode: Any,
                      gate: GateConfig, neighbours: Sequence[Any] | None = None) -> list[Statement]:
    """Every statement of the `given` memories scored for the question, best first, all embedded
    in one batch. `neighbours`: the memories the question's subject is found from
    (`shared_subject`; default the `given` ones)."""
    pieces = [(m, s) for m in given for s in statements(m.record.text, query.lang)]
    if not pieces:
        return []
    subject = shared_subject(query, given if neighbours is None else neighbours)
    # Every statement here names the subject the memories share, which then dominates their
    # embeddings: they are compared with the question on what they say about it, its words left out.
    drop = {query.lang.stem(t) for t in subject}
    texts = [(query.lang.without(s, drop) or s) if drop else s for _, s in pieces]
    if drop:
        question = query.about or query.text  # what `qvec` embeds: the question less its alternatives
        vecs = encode([query.lang.without(question, drop) or question, *texts])
        asked, vecs = vecs[0], vecs[1:]
    else:
        asked, vecs = qvec, encode(texts)
    # Statements of the memories given share their subject, so the words asked weigh more in
    # picking among them than in the gate ("What does X make?": the statement saying what it
    # makes, not the one about who leads X).
    weights = replace(gate, dense_weight=FOCUS_DENSE_WEIGHT, lexical_weight=FOCUS_LEXICAL_WEIGHT,
                      entity_weight=1 - FOCUS_DENSE_WEIGHT - FOCUS_LEXICAL_WEIGHT)
    scored = [(relevance(query, s, float(v @ asked), weights, context=plain(m.record.text), subject=subject).score, i,
               Statement(0.0, m, s, np.asarray(v, dtype=np.float32), float(v @ asked)))
              for i, ((m, s), v) in enumerate(zip(pieces, vecs))]
    scored.sort(key=lambda x: (-x[0], x[1]))
    return [replace(st, score=score) for score, _, st in scored]


def focus(query: Query, qvec: np.ndarray, given: Sequence[Any], encode: Any, gate: GateConfig,
          n: int, window: float, neighbours: Sequence[Any] | None = None) -> list[Note]:
    """The notes to quote: the statements of the `given` memories most relevant to the question,
    the best `n` within `window` of the best (`n` <= 0: whole memories). A note's `score` is its
    statement's relevance."""
    if n <= 0 or sum(len(statements(m.record.text, query.lang)) for m in given) <= 1:
        return [Note.of(m) for m in given]
    scored = scored_statements(query, qvec, given, encode, gate, neighbours)
    return [replace(Note.of(st.memory, st.text), score=st.score) for st in scored[:n] if st.score >= scored[0].score - window]
