"""Which retrieved memories are current for one question: the competitors read and settled.

The rules of comparison are in `kupdate.answering.freshness`; this module applies them to the
memories retrieved from a knowledge base (docs/answering.md):

1. competitors are the current memories the gate would quote (`freshness.competitors`);
2. of those, a memory competes on the question only when one of its statements is about it as much
   as the best statement of any competitor: within `freshness.window` (versions of one fact answer
   the question about equally well), or within the wider `retrieval.window` when the memory names
   what the question is about as fully as the memory holding that best statement (a news item
   against a profile: one fact worded two ways). A newer profile of the same organisation that says
   nothing about what was asked, or a later news story on a neighbouring topic, scores well as a
   whole but its best statement does not, so it cannot outdate the older memory that does answer;
3. each competitor is read on its own, from its most relevant statements (`notes.focus` per memory),
   all in one batch by the caller; the readings are judged and settled (`judge`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from kupdate.answering.freshness import Reading, competitors, older_values, read_notes, settle, value_of
from kupdate.answering.gate import supported
from kupdate.answering.notes import Note, Statement, scored_statements, statements
from kupdate.answering.query import Query
from kupdate.answering.retrieval import Memory, retrieve
from kupdate.text import plain


def rivals(kb: Any, query: Query, qvec: Any, memories: list[Memory], threshold: float) -> list[tuple[Memory, list[Note]]]:
    """The memories competing on this question, each with the notes it is read from; empty when
    fewer than two dates compete (no version to choose)."""
    cfg = kb.config
    window, n = cfg.retrieval.window, cfg.retrieval.focus_sentences
    chosen = competitors(memories, threshold, window, cfg.freshness.candidates)
    if not chosen:
        return []
    scored = scored_statements(query, qvec, chosen, kb.embedder.encode, cfg.gate,
                               [m for m in memories if m.score >= threshold])
    if not scored:
        return []
    lead = scored[0]
    out = []
    for m in chosen:
        own = [st for st in scored if st.memory is m]
        if not own:
            continue
        if m is not lead.memory:
            # A memory competes with the statement that says what the best one says of their
            # subject (another version of that fact, in any wording) and is about the question as
            # much; a newer story on a neighbouring topic says something else and does not compete.
            # Asked to pick among alternatives, a statement as relevant as the best that picks one
            # out answers the question whatever its wording.
            near = own[0].score >= lead.score - cfg.freshness.window
            version = max(own, key=lambda st: _version(st, lead))
            if _version(version, lead) < cfg.freshness.version:
                if not (near and supported(query, own[0].text, cfg.gate.choice_margin) is not None):
                    continue
            elif not near:
                out.append((m, [replace(Note.of(m, version.text), score=version.score)]))
                continue
        if n <= 0 or len(statements(m.record.text, query.lang)) <= 1:
            notes = [replace(Note.of(m), score=own[0].score)]
        else:
            notes = [replace(Note.of(m, st.text), score=st.score) for st in own[:n] if st.score >= own[0].score - window]
        out.append((m, notes))
    if len({m.record.valid_from for m, _ in out}) < 2:
        return []
    return out


def _version(st: Statement, lead: Statement) -> float:
    """How surely `st` states another version of `lead`'s fact: their cosine plus its cosine with
    the question, the shared subject's words left out of all three (docs/answering.md)."""
    return float(st.about @ lead.about) + st.asked


def judge(kb: Any, query: Query, competing: list[Memory], texts: list[str]) -> list[Reading]:
    """The readings of the `competing` memories (`texts`, one each, in order), settled: memories
    outdated on this question are flagged in place (`freshness.settle`)."""
    cfg = kb.config
    readings = []
    for m, text in zip(competing, texts):
        value, grounded = value_of(text, query.text, plain(m.record.text), query.lang, cfg.freshness.min_grounded,
                                   m.record.valid_from or "")
        readings.append(Reading(m.id, text, value, grounded))
        m.reading = text
    settle(competing, readings, cfg.freshness.same_value)
    return readings


def read_competitors(kb: Any, question: str, query: Query, qvec: Any, memories: list[Memory],
                     threshold: float) -> list[Reading]:
    """Settle fresh over stale among `memories` for one question (reads its competitors)."""
    found = rivals(kb, query, qvec, memories, threshold)
    if not found:
        return []
    cfg = kb.config
    texts = read_notes(kb.llm, question, [notes for _, notes in found], max_new_tokens=cfg.generation.max_new_tokens,
                       copy_mix=cfg.generation.copy_mix, lang=query.lang, avoid=older_values(found, query.lang))
    return judge(kb, query, [m for m, _ in found], texts)


def memories_for(kb: Any, question: str, qvec: Any, *, domain: str | None = None, as_of: str | None = None,
                 threshold: float | None = None) -> tuple[list[Memory], list[Reading]]:
    """The memories retrieved for `question`, with those outdated on it flagged (freshness read,
    when the best clears the gate), best first; and the readings made."""
    cfg = kb.config
    query = Query.for_store(question, kb.store, kb.language)
    memories = retrieve(kb.store, question, qvec, retrieval=cfg.retrieval, gate=cfg.gate, domain=domain,
                        as_of=as_of, encode=kb.embedder.encode, lang=kb.language, query=query)
    limit = kb.threshold() if threshold is None else threshold
    best = next((m.score for m in memories if not m.outdated), None)
    readings = []
    if cfg.freshness.read and best is not None and best >= limit:
        readings = read_competitors(kb, question, query, qvec, memories, limit)
    return memories, readings


def winner(memories: list[Memory], readings: list[Reading]) -> Memory | None:
    """The newest current memory whose reading answered the question, if any was read."""
    answered = {r.memory_id for r in readings if r.answers}
    found = [m for m in memories if m.id in answered and not m.outdated]
    return max(found, key=lambda m: (m.record.valid_from, m.record.observed_at, m.id), default=None)
