"""Retrieval: dense + lexical candidates, one fused relevance score, fresh over stale.

DESIGN.md section 5: when retrieved memories talk about the same thing (close in embedding space,
sharing their named entities, different content), the one with the newest `valid_from` is current
and the older ones are outdated. Records the store took out of the current memory are outdated
too: superseded (a newer fact or a new version of their document replaced them) or retired
(`valid_to` passed: their file changed or was pruned). Only current memories outdate others: a
retired memory must not push aside the one still in force.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kupdate.config import GateConfig, RetrievalConfig
from kupdate.conflicts import mark_conflicts
from kupdate.gate import QueryTerms, relevance
from kupdate.ingest.chunking import split_sentences
from kupdate.ingest.dates import now_iso
from kupdate.text import entities, terms
from memory_store import Record


@dataclass
class Memory:
    """A retrieved memory as the user sees it (`ask --json` -> `memories`)."""

    record: Record
    score: float
    dense: float
    lexical: float
    entity: float
    outdated: bool = False
    outdated_by: int | None = None
    # When this memory replaced another on the question (conflicts): its answering sentence, and
    # the names of the value it replaced.
    statement: str | None = None
    replaced: list[str] = field(default_factory=list)

    @property
    def id(self) -> int:
        return self.record.id

    def to_dict(self) -> dict[str, Any]:
        r = self.record
        return {
            "id": r.id,
            "text": r.text,
            "source": r.source,
            "domain": r.domain,
            "valid_from": r.valid_from,
            "valid_to": r.valid_to,
            "score": self.score,
            "dense": self.dense,
            "outdated": self.outdated,
            "outdated_by": self.outdated_by,
        }


def _valid_at(record: Record, as_of: str | None) -> bool:
    if as_of is None:
        return True
    if record.valid_from and record.valid_from[: len(as_of)] > as_of:
        return False
    return record.valid_to is None or record.valid_to[: len(as_of)] > as_of


def _newer(a: Record, b: Record) -> bool:
    """True when `a` is the fresher statement: later valid_from, then later observed, then later id."""
    return (a.valid_from, a.observed_at, a.id) > (b.valid_from, b.observed_at, b.id)


def taken_out(record: Record, as_of: str | None = None) -> bool:
    """Whether the store took `record` out of the memory current at `as_of` (default: now).

    Superseded records always are when asking about now (even if the successor's date is still
    ahead); at a past `as_of`, a record counts as current where it was valid then.
    """
    if as_of is not None:
        return (record.superseded_by is not None or record.valid_to is not None) and not _valid_at(record, as_of)
    return record.superseded_by is not None or (record.valid_to is not None and record.valid_to <= now_iso())


def mark_outdated(memories: list[Memory], vectors: np.ndarray, same_fact: float, as_of: str | None) -> None:
    """Flag memories superseded by a fresher one among the candidates (in place)."""
    for m in memories:
        if taken_out(m.record, as_of):
            m.outdated, m.outdated_by = True, m.record.superseded_by
    if len(memories) < 2:
        return
    stale = [m.outdated for m in memories]
    sims = vectors @ vectors.T
    ents = [entities(m.record.text) for m in memories]
    # A memory of several statements is never outdated whole: a newer one may replace one of its
    # facts, not the others (per question, `kupdate.conflicts` settles which statement is current).
    single = [len(split_sentences(m.record.text)) <= 1 for m in memories]
    for i, a in enumerate(memories):
        for j, b in enumerate(memories):
            if i == j or stale[j] or not single[i] or sims[i, j] < same_fact or a.record.content_hash == b.record.content_hash:
                continue
            shared = ents[i] & ents[j]
            # Same shape, different subject ("X's CEO is ..." vs "Y's CEO is ...") is not the same fact.
            if min(len(ents[i]), len(ents[j])) and len(shared) < 0.5 * min(len(ents[i]), len(ents[j])):
                continue
            if _newer(b.record, a.record) and not a.outdated:
                a.outdated, a.outdated_by = True, b.record.id


def retrieve(
    store: Any,
    question: str,
    qvec: np.ndarray,
    *,
    retrieval: RetrievalConfig,
    gate: GateConfig,
    domain: str | None = None,
    as_of: str | None = None,
    encode: Callable[[list[str]], np.ndarray] | None = None,
) -> list[Memory]:
    """Candidates from dense and lexical search, scored for the gate, sorted best first.

    `encode` (the embedder's): also apply the per-question same-fact rule of `kupdate.conflicts`."""
    k = retrieval.candidates
    query = QueryTerms.build(question, store.document_frequencies(terms(question)), store.count("knowledge"))
    # The asking sentence of a question of several is embedded and searched on its own as well.
    fvec = encode([query.asking])[0] if query.asking and encode is not None else None
    ids: dict[int, None] = {}
    for vec in (qvec, fvec):
        for hit in store.search(vec, k=k, domain=domain, as_of=as_of) if vec is not None else []:
            ids.setdefault(hit.record.id, None)
    for hit in store.lexical_search(question, k=k, domain=domain):
        ids.setdefault(hit.record.id, None)
    records = [r for r in store.get(list(ids)) if r.kind == "knowledge" and _valid_at(r, as_of)]
    if not records:
        return []
    vectors = store.vectors([r.id for r in records])
    dense = vectors @ qvec.astype(np.float32)
    focus_dense = vectors @ np.asarray(fvec, dtype=np.float32) if fvec is not None else [None] * len(records)
    memories = []
    for r, d, fd in zip(records, dense, focus_dense):
        rel = relevance(query, r.text, float(d), gate, focus_dense=None if fd is None else float(fd))
        memories.append(Memory(r, rel.score, rel.dense, rel.lexical, rel.entity))
    mark_outdated(memories, vectors, retrieval.same_fact_similarity, as_of)
    if encode is not None:
        mark_conflicts(memories, question, encode, _newer)
    memories.sort(key=lambda m: (-m.score, m.id))
    return memories

