"""Answering a question: retrieve, gate, prompt, generate, cite."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from kupdate.gate import GateDecision, decide
from kupdate.generate import base_prompt, generate, memory_prompt
from kupdate.retrieval import Memory, retrieve


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


def select(memories: list[Memory], threshold: float, top_k: int) -> tuple[list[Memory], list[Memory]]:
    """The current memories to quote (relevant ones, best first) and the outdated ones they displace."""
    current = [m for m in memories if not m.outdated and m.score >= threshold][:top_k]
    ids = {m.id for m in current}
    outdated = [m for m in memories if m.outdated and m.outdated_by in ids]
    return current, outdated


def ask(kb: Any, question: str, *, memory: bool = True, as_of: str | None = None,
        domain: str | None = None) -> Answer:
    """Answer `question` with the gated memory of `kb` (a KnowledgeBase)."""
    cfg = kb.config
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    memories: list[Memory] = []
    if memory:
        qvec = kb.embedder.encode([question])[0]
        t1 = time.perf_counter()
        t["embed"] = (t1 - t0) * 1000
        memories = retrieve(kb.store, question, qvec, retrieval=cfg.retrieval, gate=cfg.gate,
                            domain=domain, as_of=as_of)
        t2 = time.perf_counter()
        t["search"] = (t2 - t1) * 1000
    t3 = time.perf_counter()
    best = next((m.score for m in memories if not m.outdated), None)
    gate = decide(best, kb.threshold(), forced_shut=not memory)
    given, outdated = select(memories, gate.threshold, cfg.retrieval.top_k) if gate.open else ([], [])
    t["gate"] = (time.perf_counter() - t3) * 1000
    t4 = time.perf_counter()
    llm = kb.llm
    if gate.open:
        notes = [m.to_dict() for m in given]
        if cfg.retrieval.show_outdated:
            notes += [m.to_dict() for m in outdated]
        prompt = memory_prompt(llm.tokenizer, question, notes)
        sources = [m.record.text for m in given]
    else:
        prompt, sources = base_prompt(llm.tokenizer, question), []
    text = generate(llm, [prompt], max_new_tokens=cfg.generation.max_new_tokens,
                    copy_sources=sources, copy_bias=cfg.generation.copy_bias)[0]
    t["generate"] = (time.perf_counter() - t4) * 1000
    t["total"] = (time.perf_counter() - t0) * 1000
    timings = {k: round(v, 2) for k, v in t.items()}
    return Answer(question, text, gate, given + outdated, None, timings)
