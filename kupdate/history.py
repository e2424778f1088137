"""History: every version of the facts a query matches, current and superseded or retired.

Matching uses the KB's search: the memories whose gate score reaches the current threshold, or,
when none does (a short query like "Acme"), the best one and those within the retrieval
`window` of it. Each match is then expanded to all its versions: the records it superseded and
the ones that superseded it (following `superseded_by` both ways), and for a structured fact
every record with its subject and relation. Structured facts are grouped by (subject, relation);
free-text memories form one group. Versions are listed newest first: later `valid_from`, then
later `observed_at`, then higher id, the order fresh-over-stale uses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from memory_store import Record

#: Upper bound on the versions one history gathers, so a huge supersession chain cannot run away.
MAX_VERSIONS = 1000


@dataclass
class Version:
    """One stored version of a fact. `status`: current, superseded (a newer record replaced it)
    or retired (its document changed or went away with nothing replacing it)."""

    id: int
    text: str
    source: str
    domain: str
    valid_from: str
    valid_to: str | None
    observed_at: str
    superseded_by: int | None
    status: str
    outdated: bool
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class HistoryGroup:
    """The versions of one structured fact (subject, relation), or of the matching free text."""

    subject: str | None
    relation: str | None
    versions: list[Version] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "relation": self.relation,
                "versions": [v.to_dict() for v in self.versions]}


def status_of(record: Record) -> str:
    if record.superseded_by is not None:
        return "superseded"
    return "retired" if record.valid_to is not None else "current"


def _order(record: Record) -> tuple[str, str, int]:
    return record.valid_from, record.observed_at, record.id


def history(kb: Any, query: str) -> list[HistoryGroup]:
    """Every version of the facts matching `query`, grouped, newest first (see module docstring)."""
    from kupdate.answering.retrieval import retrieve, taken_out

    store = kb.store
    qvec = kb.embedder.encode([query])[0]
    memories = retrieve(store, query, qvec, retrieval=kb.config.retrieval, gate=kb.config.gate)
    if not memories:
        return []
    threshold = kb.threshold()
    matched = [m for m in memories if m.score >= threshold]
    if not matched:
        best = memories[0].score
        matched = [m for m in memories if m.score >= best - kb.config.retrieval.window]
    scores = {m.id: m.score for m in matched}
    flagged = {m.id for m in matched if m.outdated}
    records = _expand(store, [m.record for m in matched])

    groups: dict[tuple[str, str] | None, HistoryGroup] = {}
    for r in sorted(records.values(), key=_order, reverse=True):
        key = None if r.subject is None else (_key(r.subject), _key(r.relation))
        group = groups.setdefault(key, HistoryGroup(r.subject, r.relation))
        group.versions.append(Version(
            r.id, r.text, r.source, r.domain, r.valid_from, r.valid_to, r.observed_at, r.superseded_by,
            status_of(r), r.id in flagged or taken_out(r), scores.get(r.id)))
    # Groups in the order of their newest version, newest first (the dict keeps insertion order).
    return list(groups.values())


def _key(value: str | None) -> str:
    return " ".join((value or "").split()).casefold()


def _expand(store: Any, matched: list[Record]) -> dict[int, Record]:
    """The matched records plus all their versions (supersession chains both ways, same fact)."""
    records = {r.id: r for r in matched}
    facts = {(r.subject, r.relation) for r in matched if r.subject is not None}
    for subject, relation in facts:
        records.update((r.id, r) for r in store.find(subject=subject, relation=relation))
    todo = list(records.values())
    while todo and len(records) < MAX_VERSIONS:
        successors = [r.superseded_by for r in todo if r.superseded_by is not None]
        found = store.get([i for i in successors if i not in records])
        found += store.find(superseded_by=[r.id for r in todo])
        todo = [r for r in found if r.id not in records]
        records.update((r.id, r) for r in todo)
    return records
