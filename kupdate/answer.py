"""Answering a question: retrieve, gate, prompt, generate, cite."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from kupdate.gate import GateDecision, QueryTerms, decide, relevance
from kupdate.generate import base_prompt, generate, memory_prompt
from kupdate.ingest.chunking import split_sentences
from kupdate.retrieval import Memory, retrieve
from kupdate.text import terms


@dataclass
class Answer:
    """The result of `KnowledgeBase.ask` (and `kupdate ask --json`)."""

    question: str
    answer: str
    gate: GateDecision
    memories: list[Memory] = field(default_factory=list)
    adapter: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

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


def _statements(text: str) -> list[str]:
    """Sentences, with a question kept together with the sentence that answers it
    ("What is the twin city of Lyon? It is Manila." is one statement)."""
    out: list[str] = []
    for sentence in split_sentences(text):
        if out and out[-1].endswith("?"):
            out[-1] = f"{out[-1]} {sentence}"
        else:
            out.append(sentence)
    return out


FOCUS_DENSE_WEIGHT, FOCUS_LEXICAL_WEIGHT = 0.2, 0.5


def focus(kb: Any, question: str, qvec: np.ndarray, given: list[Memory], n: int,
          window: float) -> list[dict[str, Any]]:
    """The notes to quote: the sentences of the given memories most relevant to the question.

    A chunk holds several facts; a small model handed all of them copies the wrong one (asked who
    leads a firm, it answers when the firm was founded; asked where it is based, it repeats what it
    makes). Sentences are scored like memories are; the best `n` within `window` of the best are kept.
    """
    notes = [m.to_dict() for m in given]
    sentences = [(note, s) for note in notes for s in _statements(note["text"])]
    if n <= 0 or len(sentences) <= 1:
        return notes
    vecs = kb.embedder.encode([s for _, s in sentences])
    store = kb.store
    query = QueryTerms.build(question, store.document_frequencies(terms(question)), store.count("knowledge"))
    # Sentences of the memories given share their subject, so the words asked weigh more in picking
    # among them than in the gate ("What is the flagship product of X?": the sentence saying
    # "flagship product", not the one about X's chief executive).
    gate = replace(kb.config.gate, dense_weight=FOCUS_DENSE_WEIGHT, lexical_weight=FOCUS_LEXICAL_WEIGHT,
                   entity_weight=1 - FOCUS_DENSE_WEIGHT - FOCUS_LEXICAL_WEIGHT)
    # A memory that replaced another on this question answers with its replacing sentence, ranked
    # as high as the memory (`kupdate.conflicts`): "X relocated its head office from A to B."
    answers = {m.id: (m.statement, m.score) for m in given if m.statement}
    scored = []
    for i, ((note, s), v) in enumerate(zip(sentences, vecs)):
        score = relevance(query, s, float(v @ qvec), gate, context=note["text"]).score
        statement, memory_score = answers.get(note["id"], (None, 0.0))
        scored.append((max(score, memory_score) if s == statement else score, i))
    scored.sort(key=lambda x: (-x[0], x[1]))
    best = [(score, i) for score, i in scored[:n] if score >= scored[0][0] - window]
    return [{**sentences[i][0], "text": sentences[i][1]} for _, i in best]


def ask(kb: Any, question: str, *, memory: bool = True, adapter: bool = True, as_of: str | None = None,
        domain: str | None = None, threshold: float | None = None) -> Answer:
    """Answer `question` with the gated memory of `kb` (a KnowledgeBase).

    `threshold`: the gate's, instead of the calibrated one (0.0 opens it on any current memory)."""
    cfg = kb.config
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    memories: list[Memory] = []
    qvec = None
    if memory:
        qvec = kb.embedder.encode([question])[0]
        t1 = time.perf_counter()
        t["embed"] = (t1 - t0) * 1000
        memories = retrieve(kb.store, question, qvec, retrieval=cfg.retrieval, gate=cfg.gate,
                            domain=domain, as_of=as_of, encode=kb.embedder.encode)
        t2 = time.perf_counter()
        t["search"] = (t2 - t1) * 1000
    t3 = time.perf_counter()
    best = next((m.score for m in memories if not m.outdated), None)
    gate = decide(best, kb.threshold() if threshold is None else threshold, forced_shut=not memory)
    given, outdated = select(memories, cfg.retrieval.window, cfg.retrieval.top_k) if gate.open else ([], [])
    t4 = time.perf_counter()
    t["gate"] = (t4 - t3) * 1000
    notes: list[dict[str, Any]] = []
    if gate.open:
        notes = focus(kb, question, qvec, given, cfg.retrieval.focus_sentences, cfg.retrieval.window)
        # Cite what the model was given, in the order it was given: memories whose sentences were
        # all left out of the notes are not citations.
        rank: dict[int, int] = {}
        for i, note in enumerate(notes):
            rank.setdefault(note["id"], i)
        given = sorted((m for m in given if m.id in rank), key=lambda m: rank[m.id])
        outdated = [m for m in outdated if m.outdated_by in rank]
        t["focus"] = (time.perf_counter() - t4) * 1000
    t4 = time.perf_counter()
    routes = []
    if adapter and kb.adapters.registry.domains():
        if qvec is None:
            qvec = kb.embedder.encode([question])[0]
        routes = kb.adapters.route(question, qvec, domain=domain)
        t["route"] = (time.perf_counter() - t4) * 1000
        t4 = time.perf_counter()
    llm = kb.llm
    if gate.open:
        sources = [note["text"] for note in notes]
        if cfg.retrieval.show_outdated:
            notes += [m.to_dict() for m in outdated]
        prompt = memory_prompt(llm.tokenizer, question, notes)
    else:
        prompt, sources = base_prompt(llm.tokenizer, question), []
    with kb.adapters.active(routes):
        text = generate(llm, [prompt], max_new_tokens=cfg.generation.max_new_tokens,
                        copy_sources=sources, copy_mix=cfg.generation.copy_mix,
                        avoid=[v for m in given for v in m.replaced])[0]
    t["generate"] = (time.perf_counter() - t4) * 1000
    t["total"] = (time.perf_counter() - t0) * 1000
    timings = {k: round(v, 2) for k, v in t.items()}
    label = ", ".join(r.label for r in routes) or None
    return Answer(question, text, gate, given + outdated, label, timings)
