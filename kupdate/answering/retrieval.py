"""Retrieval: dense + lexical candidates, one fused relevance score each, sorted best first.

Records the store took out of the current memory come back flagged outdated: superseded (a newer
structured fact or a new version of their document replaced them) or retired (`valid_to` passed:
their file changed or was pruned). Which of the remaining memories is current *for a question* is
decided by reading them (`kupdate.answering.freshness`), not here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kupdate.answering.gate import relevance
from kupdate.answering.query import Query
from kupdate.config import GateConfig, RetrievalConfig
from kupdate.ingest.dates import now_iso
from kupdate.language import Language
from kupdate.text import plain
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
    # What this memory said in answer to the question, when freshness read it, and the answers of
    # the older memories it outdated (values the answer must not give).
    reading: str | None = None
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
            **({"reading": self.reading} if self.reading is not None else {}),
        }


def _valid_at(record: Record, as_of: str | None) -> bool:
    if as_of is None:
        return True
    if record.valid_from and record.valid_from[: len(as_of)] > as_of:
        return False
    return record.valid_to is None or record.valid_to[: len(as_of)] > as_of


def newer(a: Record, b: Record) -> bool:
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
    lang: Language | None = None,
    query: Query | None = None,
) -> list[Memory]:
    """Candidates from dense and lexical search, scored for the gate, sorted best first.

    `encode` (the embedder's): also search with the asking sentence of a question of several."""
    k = retrieval.candidates
    query = query or Query.for_store(question, store, lang)
    # The asking sentence of a question of several is embedded and searched on its own as well.
    fvec = encode([query.asking])[0] if query.asking and encode is not None else None
    ids: dict[int, None] = {}
    for vec in (qvec, fvec):
        for hit in store.search(vec, k=k, domain=domain, as_of=as_of) if vec is not None else []:
            ids.setdefault(hit.record.id, None)
    for hit in store.lexical_search(query.text, k=k, domain=domain):
        ids.setdefault(hit.record.id, None)
    records = [r for r in store.get(list(ids)) if r.kind == "knowledge" and _valid_at(r, as_of)]
    if not records:
        return []
    # A question typed without capitals takes its names from how these memories write its words.
    query.learn_names([plain(r.text) for r in records])
    vectors = store.vectors([r.id for r in records])
    dense = vectors @ qvec.astype(np.float32)
    focus_dense = vectors @ np.asarray(fvec, dtype=np.float32) if fvec is not None else [None] * len(records)
    memories = []
    for r, d, fd in zip(records, dense, focus_dense):
        rel = relevance(query, plain(r.text), float(d), gate, focus_dense=None if fd is None else float(fd))
        memories.append(Memory(r, rel.score, rel.dense, rel.lexical, rel.entity))
    for m in memories:
        if taken_out(m.record, as_of):
            m.outdated, m.outdated_by = True, m.record.superseded_by
    memories.sort(key=lambda m: (-m.score, m.id))
    return memories

