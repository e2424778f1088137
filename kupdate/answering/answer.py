"""Answering a question: retrieve, gate, settle fresh over stale, prompt, generate, cite.

The steps, each its own module of `kupdate.answering` (docs/answering.md): query analysis
(`query`), candidates scored for the gate (`retrieval`, `gate`), which memory is current for this
question (`freshness`: each competing memory read on its own), the statements worth quoting
(`notes`), the prompt (`prompt`) and memory-aware decoding (`decoding`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from kupdate.answering.decoding import generate
from kupdate.answering.freshness import Reading, competitors, read_notes, settle, value_of
from kupdate.answering.gate import GateDecision, decide
from kupdate.answering.notes import Note, focus
from kupdate.answering.prompt import base_prompt, memory_prompt
from kupdate.answering.query import Query
from kupdate.answering.retrieval import Memory, retrieve
from kupdate.text import plain


@dataclass
class Answer:
    """The result of `KnowledgeBase.ask` (and `kupdate ask --json`)."""

    question: str
    answer: str
    gate: GateDecision
    memories: list[Memory] = field(default_factory=list)
    adapter: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    readings: list[Reading] = field(default_factory=list)

    @property
    def citations(self) -> list[Memory]:
        """The current memories the model was given."""
        return [m for m in self.memories if not m.outdated]

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.answer,
            "gate": self.gate.to_dict(),
            "memories": [m.to_dict() for m in self.memories],
            "adapter": self.adapter,
            "timings_ms": self.timings_ms,
            "readings": [r.to_dict() for r in self.readings],
        }

    # Rich display: the rendering lives in kupdate.jupyter.display (stdlib only, no Jupyter needed).
    def __str__(self) -> str:
        from kupdate.jupyter.display import answer_text

        return answer_text(self)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))

    def _repr_html_(self) -> str:
        from kupdate.jupyter.display import answer_html

        return answer_html(self)


def select(memories: list[Memory], window: float, top_k: int) -> tuple[list[Memory], list[Memory]]:
    """The current memories to quote and the outdated ones they displace.

    Quoted: up to `top_k` current memories scoring within `window` of the best one (the gate
    already checked the best against the threshold).
    """
    current = [m for m in memories if not m.outdated]
    current = [m for m in current if m.score >= current[0].score - window][:top_k] if current else []
    ids = {m.id for m in current}
    outdated = [m for m in memories if m.outdated and m.outdated_by in ids]
    return current, outdated


class _Clock:
    """Milliseconds per step of one `ask`, for `timings_ms`."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.ms: dict[str, float] = {}

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.ms[step] = round((now - self.last) * 1000, 2)
        self.last = now

    def done(self) -> dict[str, float]:
        self.ms["total"] = round((time.perf_counter() - self.start) * 1000, 2)
        return self.ms


def read_competitors(kb: Any, question: str, query: Query, qvec: Any, memories: list[Memory],
                     threshold: float) -> list[Reading]:
    """Settle fresh over stale among the memories the gate would quote (`kupdate.answering.freshness`):
    each is read on its own, and older ones whose answer differs from the newest are outdated."""
    cfg = kb.config
    rivals = competitors(memories, threshold, cfg.retrieval.window, cfg.freshness.candidates)
    if not rivals:
        return []
    groups = [focus(query, qvec, [m], kb.embedder.encode, cfg.gate, cfg.retrieval.focus_sentences,
                    cfg.retrieval.window) for m in rivals]
    texts = read_notes(kb.llm, question, groups, max_new_tokens=cfg.generation.max_new_tokens,
                       copy_mix=cfg.generation.copy_mix, lang=query.lang)
    readings = []
    for m, text in zip(rivals, texts):
        value, grounded = value_of(text, query.text, plain(m.record.text), query.lang, cfg.freshness.min_grounded,
                                   m.record.valid_from or "")
        readings.append(Reading(m.id, text, value, grounded))
        m.reading = text
    settle(rivals, readings, cfg.freshness.same_value)
    return readings


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


def _winner(memories: list[Memory], readings: list[Reading]) -> Memory | None:
    """The newest current memory whose reading answered the question, if any was read."""
    answered = {r.memory_id for r in readings if r.answers}
    found = [m for m in memories if m.id in answered and not m.outdated]
    return max(found, key=lambda m: (m.record.valid_from, m.record.observed_at, m.id), default=None)


def _quote(kb: Any, query: Query, qvec: Any, memories: list[Memory]) -> tuple[list[Memory], list[Memory], list[Note]]:
    """The memories to quote, the outdated ones they displace, and the notes made of them."""
    cfg = kb.config
    given, outdated = select(memories, cfg.retrieval.window, cfg.retrieval.top_k)
    notes = focus(query, qvec, given, kb.embedder.encode, cfg.gate, cfg.retrieval.focus_sentences,
                  cfg.retrieval.window)
    # Cite what the model was given, in the order it was given: memories whose statements were all
    # left out of the notes are not citations.
    rank: dict[int, int] = {}
    for i, note in enumerate(notes):
        rank.setdefault(note.id, i)
    given = sorted((m for m in given if m.id in rank), key=lambda m: rank[m.id])
    return given, [m for m in outdated if m.outdated_by in rank], notes


def _generate(kb: Any, question: str, notes: list[Note], outdated: list[Memory]) -> str:
    """The answer: with the notes quoted and copied from, or (no notes) the base model's own."""
    cfg, llm = kb.config, kb.llm
    if notes:
        shown = notes + ([Note.of(m) for m in outdated] if cfg.retrieval.show_outdated else [])
        prompt, sources = memory_prompt(llm.tokenizer, question, shown), [n.copy_text for n in notes]
    else:
        prompt, sources = base_prompt(llm.tokenizer, question), []
    # The names an outdated version gave are never offered as the value (`CopyMix` slots).
    avoid = [n for m in outdated if m.reading for n in kb.language.names(m.reading)]
    return generate(llm, [prompt], max_new_tokens=cfg.generation.max_new_tokens, copy_sources=sources,
                    copy_mix=cfg.generation.copy_mix, avoid=avoid, lang=kb.language)[0]


def ask(kb: Any, question: str, *, memory: bool = True, adapter: bool = True, as_of: str | None = None,
        domain: str | None = None, threshold: float | None = None) -> Answer:
    """Answer `question` with the gated memory of `kb` (a KnowledgeBase).

    `threshold`: the gate's, instead of the calibrated one (0.0 opens it on any current memory)."""
    cfg = kb.config
    clock = _Clock()
    memories: list[Memory] = []
    qvec = query = None
    if memory:
        query = Query.for_store(question, kb.store, kb.language)
        qvec = kb.embedder.encode([query.about])[0]
        clock.lap("embed")
        memories = retrieve(kb.store, question, qvec, retrieval=cfg.retrieval, gate=cfg.gate, domain=domain,
                            as_of=as_of, encode=kb.embedder.encode, lang=kb.language, query=query)
        clock.lap("search")
    limit = kb.threshold() if threshold is None else threshold
    best = next((m.score for m in memories if not m.outdated), None)
    gate = decide(best, limit, forced_shut=not memory)
    clock.lap("gate")
    routes = []
    if adapter and kb.adapters.registry.domains():
        if qvec is None:
            qvec = kb.embedder.encode([question])[0]
        routes = kb.adapters.route(question, qvec, domain=domain)
        clock.lap("route")
    readings: list[Reading] = []
    notes: list[Note] = []
    given: list[Memory] = []
    outdated: list[Memory] = []
    with kb.adapters.active(routes):
        text = None
        if gate.open and query is not None:
            if cfg.freshness.read:
                readings = read_competitors(kb, question, query, qvec, memories, limit)
                clock.lap("freshness")
            winner = _winner(memories, readings)
            if winner is not None:
                # The current memory's reading is the answer: the model, given that memory's notes
                # alone, already answered the question with memory-aware decoding.
                text, given = winner.reading, [winner]
                outdated = [m for m in memories if m.outdated and m.outdated_by == winner.id]
            else:
                given, outdated, notes = _quote(kb, query, qvec, memories)
                clock.lap("focus")
        if text is None:
            text = _generate(kb, question, notes, outdated)
    clock.lap("generate")
    label = ", ".join(r.label for r in routes) or None
    return Answer(question, text, gate, given + outdated, label, clock.done(), readings)
