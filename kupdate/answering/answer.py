"""Answering questions: retrieve, gate, settle fresh over stale, prompt, generate, cite.

The steps, each its own module of `kupdate.answering` (docs/answering.md): query analysis
(`query`), candidates scored for the gate (`retrieval`, `gate`), which memory is current for this
question (`current`, `freshness`: each competing memory read on its own), the statements worth
quoting and the final prompt (`notes`, `compose`, `prompt`) and memory-aware decoding (`decoding`).

There is one implementation, batched: `ask` is `ask_batch` of one question. `ask_batch` runs the
model a few times for a whole batch instead of once or twice per question (what makes a busy
server faster than one answering in turn, docs/serve.md):

1. per question (cheap, no LLM): embed, retrieve, the gate, the adapter routes;
2. per adapter set: questions routed to different adapters cannot share the model at once
   (`Adapters.active` switches them in place), so each set of routes is one group;
3. per group, one generation reads every competitor of every question that has competitors and
   answers every question that has none (its answer does not wait for a reading); then each read
   question is settled;
4. per group, one generation for the read questions whose readings named no winner.
   Rows with memories copy from their own notes and avoid their own replaced values, rows without
   decode as the base model does. One call, not one per kind of row: a decoding step for 8 rows
   costs about 1.5 times one row's (SmolLM2-135M on 2 CPU cores: 98 ms against 67), so a rambling
   base answer no longer runs its steps on its own after the others, and a batch of questions
   costs two generations at most.

Greedy decoding with padding masked out gives a row the same text in a batch as alone, so batching
changes the time, not the answers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kupdate.answering.compose import final_prompt, one_of, quote
from kupdate.answering.current import judge, rivals, winner
from kupdate.answering.decoding import generate
from kupdate.answering.freshness import Reading, older_values, reading_prompts
from kupdate.answering.gate import GateDecision, decide
from kupdate.answering.notes import Note
from kupdate.answering.query import Query
from kupdate.answering.retrieval import Memory, retrieve


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



def ask(kb: Any, question: str, *, memory: bool = True, adapter: bool = True, as_of: str | None = None,
        domain: str | None = None, threshold: float | None = None) -> Answer:
    """Answer `question` with the gated memory of `kb` (a KnowledgeBase).

    `threshold`: the gate's, instead of the calibrated one (0.0 opens it on any current memory)."""
    return ask_batch(kb, [question], memory=memory, adapter=adapter, as_of=as_of, domain=domain,
                     threshold=threshold)[0]


@dataclass
class _Item:
    """One question on its way through the batch."""

    question: str
    clock: _Clock
    gate: GateDecision
    limit: float
    query: Query | None = None
    qvec: Any = None
    memories: list[Memory] = field(default_factory=list)
    routes: list[Any] = field(default_factory=list)
    readings: list[Reading] = field(default_factory=list)
    given: list[Memory] = field(default_factory=list)
    outdated: list[Memory] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    text: str | None = None

    @property
    def reads(self) -> bool:
        return self.gate.open and self.query is not None


def ask_batch(kb: Any, questions: Sequence[str], *, memory: bool = True, adapter: bool = True,
              domain: str | None = None, as_of: str | None = None, threshold: float | None = None) -> list[Answer]:
    """The `Answer` of `ask(kb, q, ...)` for each of `questions`, in order, with the model calls
    batched across questions. The options apply to every question.

        answers = ask_batch(kb, ["Who leads Acme?", "Where is Orvik Mills based?"])
    """
    items = [_prepare(kb, q, memory, adapter, domain, as_of, threshold) for q in questions]
    groups: dict[tuple[str, ...], list[_Item]] = {}
    for item in items:
        groups.setdefault(tuple(r.name for r in item.routes), []).append(item)
    for group in groups.values():
        with kb.adapters.active(group[0].routes):
            _first_pass(kb, group)
            _answer(kb, [it for it in group if it.text is None])
    answers = []
    for it in items:
        if it.query is not None and it.gate.open:
            it.text = one_of(it.query, it.text or "", it.given, kb.config.gate.choice_margin)
        it.clock.ms.setdefault("generate", 0.0)
        label = ", ".join(r.label for r in it.routes) or None
        answers.append(Answer(it.question, it.text or "", it.gate, it.given + it.outdated, label, it.clock.done(),
                              it.readings))
    return answers


def _prepare(kb: Any, question: str, memory: bool, adapter: bool, domain: str | None, as_of: str | None,
             threshold: float | None) -> _Item:
    """Everything before the model for one question: retrieval, the gate and the routes."""
    cfg = kb.config
    clock = _Clock()
    memories: list[Memory] = []
    query, qvec = None, None
    if memory:
        query = Query.for_store(question, kb.store, kb.language)
        qvec = kb.embedder.encode([query.about])[0]
        clock.lap("embed")
        memories = retrieve(kb.store, question, qvec, retrieval=cfg.retrieval, gate=cfg.gate, domain=domain,
                            as_of=as_of, encode=kb.embedder.encode, lang=kb.language, query=query)
        clock.lap("search")
    limit = kb.threshold() if threshold is None else threshold
    best = next((m.score for m in memories if not m.outdated), None)
    item = _Item(question, clock, decide(best, limit, forced_shut=not memory), limit, query, qvec, memories)
    clock.lap("gate")
    if adapter and kb.adapters.registry.domains():
        if item.qvec is None:
            item.qvec = kb.embedder.encode([question])[0]
        item.routes = kb.adapters.route(question, item.qvec, domain=domain)
        clock.lap("route")
    return item


def _first_pass(kb: Any, items: list[_Item]) -> None:
    """One generation for the group: every competitor of every question that has some, and the
    final answer of every question that has none (its answer does not wait for a reading). Then
    each read question is settled: its winner's reading is its answer, or it is left for `_answer`."""
    cfg = kb.config
    start = time.perf_counter()
    found = []
    if cfg.freshness.read:
        found = [(it, rivals(kb, it.query, it.qvec, it.memories, it.limit)) for it in items if it.reads]
        found = [(it, rs) for it, rs in found if rs]
    read = {id(it) for it, _ in found}
    direct = [it for it in items if id(it) not in read]
    for it in direct:
        if it.reads:
            _choose(kb, it)
    questions = [it.question for it, rs in found for _ in rs]
    prompts, sources = reading_prompts(kb.llm.tokenizer, questions, [notes for _, rs in found for _, notes in rs])
    avoids: list[tuple[str, ...]] = [a for it, rs in found for a in older_values(rs, kb.language)]
    for it in direct:
        prompt, own, avoid = final_prompt(kb, it.question, it.notes, it.outdated)
        prompts.append(prompt)
        sources.append(own)
        avoids.append(avoid)
    if not prompts:
        return
    texts = iter(generate(kb.llm, prompts, max_new_tokens=cfg.generation.max_new_tokens,
                          row_sources=sources if any(sources) else None, copy_mix=cfg.generation.copy_mix,
                          row_avoid=avoids, first_line=[i < len(questions) for i in range(len(prompts))],
                          lang=kb.language))
    for it, rs in found:
        assert it.query is not None
        it.readings = judge(kb, it.query, [m for m, _ in rs], [next(texts) for _ in rs])
    for it in direct:
        it.text = next(texts)
    _share([it for it, _ in found], "freshness", start)
    _share(direct, "generate", start)
    for it, _ in found:
        _choose(kb, it)


def _choose(kb: Any, it: _Item) -> None:
    """The winner's reading as the answer, or the memories to quote."""
    assert it.query is not None
    found = winner(it.memories, it.readings)
    if found is not None:
        # The current memory's reading is the answer: the model, given that memory's notes
        # alone, already answered the question with memory-aware decoding.
        it.text, it.given = found.reading, [found]
        it.outdated = [m for m in it.memories if m.outdated and m.outdated_by == found.id]
    else:
        it.given, it.outdated, it.notes = quote(kb, it.query, it.qvec, it.memories, it.limit)
        it.clock.lap("focus")


def _answer(kb: Any, items: list[_Item]) -> None:
    """The generated answers, in one `generate` call (each row its own notes and values to avoid)."""
    if not items:
        return
    cfg = kb.config
    start = time.perf_counter()
    prompts, sources, avoids = zip(*(final_prompt(kb, it.question, it.notes, it.outdated) for it in items))
    texts = generate(kb.llm, list(prompts), max_new_tokens=cfg.generation.max_new_tokens,
                     row_sources=list(sources) if any(sources) else None, copy_mix=cfg.generation.copy_mix,
                     row_avoid=list(avoids), lang=kb.language)
    for it, text in zip(items, texts):
        it.text = text
    _share(items, "generate", start)


def _share(items: list[_Item], step: str, start: float) -> None:
    """Record a batched step's duration as that step of every item in it (the timings of a batched
    answer: its own retrieval steps, and the whole batch's model steps it took part in)."""
    ms = round((time.perf_counter() - start) * 1000, 2)
    for it in items:
        it.clock.ms[step] = ms
        it.clock.last = time.perf_counter()
