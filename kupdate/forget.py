"""Forgetting for real: records leave SQLite, the full-text index and the dense index.

DESIGN.md section 5: superseded records stay for history; `forget` is the one way to remove
something, e.g. a document that should never have been ingested. What goes is chosen by exactly
one selector:

* `source`: every record (all versions, all kinds) whose source is that path, or lies under it
  when it is a folder; a source that is not a path (a URL named in front matter) matches as written;
* `ids`: those records;
* `query`: the memories the KB's search retrieves for the text (dense and lexical candidates)
  whose gate score reaches the current threshold, i.e. those that would open the gate for it,
  current and outdated alike. It never falls back to weaker matches: the rule is the gate's.

A domain's build cache (what its last consolidation made of each record, text included) is
deleted too; the next consolidation builds it again from what remains.

Records already distilled into an adapter (`adapter_version` set) cannot be taken back out of its
weights, so the adapter versions trained on them are flagged for a rebuild in the store meta key
`adapters_needing_rebuild` ({domain: [versions]}) before anything is deleted (a crash in between
flags too much, never too little). A dry run selects and reports but changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kupdate.errors import KupdateError
from memory_store import Record

#: Store meta key: {domain: [adapter versions trained on records that were since forgotten]}.
REBUILD_KEY = "adapters_needing_rebuild"


def needing_rebuild(kb: str | Path | None) -> dict[str, list[str]]:
    """{domain: [adapter versions trained on since-forgotten records]} of the KB chosen like `--kb`,
    read from its store's meta without opening the memory or loading a model."""
    from kupdate import paths
    from memory_store.sqlite import connect, read_meta
    from memory_store.store import DB_NAME

    db = paths.memory_dir(paths.resolve_kb(kb)) / DB_NAME
    if not db.exists():
        return {}
    conn = connect(db)
    try:
        return dict(read_meta(conn, REBUILD_KEY) or {})
    finally:
        conn.close()


@dataclass
class ForgetReport:
    """What `kupdate forget` removed (or, with --dry-run, would remove)."""

    selector: dict[str, Any]
    dry_run: bool
    records: list[dict[str, Any]] = field(default_factory=list)
    removed: int = 0
    not_found: list[int] = field(default_factory=list)
    adapters_needing_rebuild: dict[str, list[str]] = field(default_factory=dict)
    gate: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe(record: Record) -> dict[str, Any]:
    """The fields a user needs to recognise a record before it goes."""
    return {
        "id": record.id, "kind": record.kind, "text": record.text, "source": record.source,
        "domain": record.domain, "valid_from": record.valid_from, "valid_to": record.valid_to,
        "superseded_by": record.superseded_by, "adapter_version": record.adapter_version,
    }


def select(kb: Any, *, source: str | Path | None = None, ids: Sequence[int] | None = None,
           query: str | None = None) -> tuple[dict[str, Any], list[Record], list[int]]:
    """(selector as reported, the records it selects in id order, ids asked for but not stored)."""
    given = [name for name, value in (("source", source), ("ids", ids), ("query", query)) if value]
    if len(given) != 1:
        raise KupdateError("forget needs exactly one of --source, --id or --query; "
                           "e.g. kupdate forget --source notes/old.md --dry-run")
    store = kb.store
    if source:
        raw = str(source)
        path = Path(raw).expanduser().resolve()
        found = {r.id: r for r in store.find(kind=None, sources=list({raw, str(path)}))}
        found.update((r.id, r) for r in store.find(kind=None, under=str(path)))
        return {"source": str(path)}, [found[i] for i in sorted(found)], []
    if ids:
        wanted = list(dict.fromkeys(int(i) for i in ids))
        records = store.get(wanted)
        have = {r.id for r in records}
        return {"ids": wanted}, sorted(records, key=lambda r: r.id), [i for i in wanted if i not in have]
    if not str(query).strip():
        raise KupdateError("forget --query is empty; pass the text whose memories should go")
    from kupdate.answering.retrieval import retrieve

    threshold = kb.threshold()
    qvec = kb.embedder.encode([str(query)])[0]
    found_memories = retrieve(store, str(query), qvec, retrieval=kb.config.retrieval, gate=kb.config.gate)
    records = sorted((m.record for m in found_memories if m.score >= threshold), key=lambda r: r.id)
    return {"query": str(query), "threshold": threshold}, records, []


def forget(kb: Any, *, source: str | Path | None = None, ids: Sequence[int] | None = None,
           query: str | None = None, dry_run: bool = False) -> ForgetReport:
    """Remove the selected records everywhere (see the module docstring); recalibrates the gate."""
    store = kb.store
    with store.write_lock():
        selector, records, missing = select(kb, source=source, ids=ids, query=query)
        report = ForgetReport(selector, dry_run, [describe(r) for r in records], not_found=missing)
        for r in records:
            if r.adapter_version is not None:
                versions = report.adapters_needing_rebuild.setdefault(r.domain, [])
                if r.adapter_version not in versions:
                    versions.append(r.adapter_version)
        for versions in report.adapters_needing_rebuild.values():
            versions.sort()
        if dry_run or not records:
            return report
        if report.adapters_needing_rebuild:
            marked: dict[str, list[str]] = dict(store.get_meta(REBUILD_KEY, {}) or {})
            for domain, versions in report.adapters_needing_rebuild.items():
                marked[domain] = sorted(set(marked.get(domain, [])) | set(versions))
            store.set_meta(REBUILD_KEY, marked)
        report.removed = len(store.delete([r.id for r in records]))
        _drop_build_caches(kb, {r.domain for r in records if r.kind == "knowledge" and r.domain})
        report.gate = kb.calibrate().to_dict()
    return report


def _drop_build_caches(kb: Any, domains: set[str]) -> None:
    from kupdate.consolidate.resume import BuildCache

    for domain in domains:
        try:
            (kb.adapters.registry.folder(domain) / BuildCache.NAME).unlink(missing_ok=True)
        except (KupdateError, OSError):
            continue  # a domain name no adapter folder can have holds no cache
