"""Ingest: files -> documents -> chunks -> de-duplicate -> embed -> memory store.

Every file is read and parsed before anything is written, so a bad file in strict mode stores
nothing. Chunks are embedded and committed in batches: a killed process loses at most the batch
it had not acknowledged, and re-running the same ingest skips what is already stored (content hash).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kupdate.config import Config
from kupdate.errors import InputError
from kupdate.ingest.chunking import chunk_text
from kupdate.ingest.dates import now_iso, parse_date
from kupdate.ingest.loaders import Document, expand_paths, load_file
from memory_store import Record


@dataclass
class IngestReport:
    """The summary `kupdate ingest` prints (and returns with --json)."""

    files: int = 0
    documents: int = 0
    chunks: int = 0
    added: int = 0
    duplicates: int = 0
    superseded: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _records_for(doc: Document, cfg: Config, *, domain: str | None, as_of: str | None,
                 observed_at: str, count_tokens: Any) -> list[Record]:
    valid_from = as_of or doc.valid_from or observed_at
    dom = domain or doc.domain or cfg.default_domain
    doc_id = hashlib.sha1(f"{doc.source}#{doc.line or 0}".encode()).hexdigest()[:16]
    common = dict(source=doc.source, domain=dom, doc_id=doc_id, observed_at=observed_at,
                  valid_from=valid_from, meta=dict(doc.meta))
    if doc.subject is not None:
        # A structured fact is one record: it must supersede exactly, so it is never split.
        return [Record(text=" ".join(doc.text.split()), subject=doc.subject, relation=doc.relation,
                       object=doc.object, **common)]
    chunks = chunk_text(doc.text, max_tokens=cfg.ingest.chunk_tokens, overlap=cfg.ingest.chunk_overlap,
                        count_tokens=count_tokens)
    return [Record(text=c, position=i, **common) for i, c in enumerate(chunks)]


def collect(paths: Sequence[str | Path], cfg: Config, *, skip_bad: bool,
            report: IngestReport) -> list[Document]:
    """Read and parse every file first; in strict mode the first bad file raises before any write."""
    files, skipped = expand_paths(paths)
    report.skipped += [{"path": str(p), "reason": reason} for p, reason in skipped]
    max_bytes = int(cfg.ingest.max_file_mb * 1024 * 1024)
    docs: list[Document] = []
    for path in files:
        try:
            docs += load_file(path, max_bytes=max_bytes)
        except InputError as exc:
            if not skip_bad:
                raise
            report.skipped.append({"path": str(path), "reason": str(exc)})
            continue
        report.files += 1
    report.documents = len(docs)
    return docs


def _supersede_facts(store: Any, added: list[Record]) -> int:
    """Structured facts: a newer object for the same (subject, relation) supersedes the older one."""
    n = 0
    for new in added:
        if new.subject is None:
            continue
        for old in store.find_facts(new.subject, new.relation):
            if old.id == new.id or " ".join(old.object.split()).lower() == " ".join(new.object.split()).lower():
                continue
            older, newer = (old, new) if (old.valid_from, old.id) < (new.valid_from, new.id) else (new, old)
            store.supersede([older.id], newer.id, newer.valid_from)
            n += 1
    return n


def ingest(store: Any, embedder: Any, paths: Sequence[str | Path], cfg: Config, *,
           domain: str | None = None, as_of: str | None = None, skip_bad: bool = False,
           progress: bool = False) -> IngestReport:
    """Ingest files, folders or globs into `store`; returns what was added, skipped and why."""
    start = time.perf_counter()
    report = IngestReport()
    as_of = parse_date(as_of, where="--as-of") if as_of else None
    docs = collect(paths, cfg, skip_bad=skip_bad, report=report)
    observed_at = now_iso()
    records: list[Record] = []
    for doc in docs:
        records += _records_for(doc, cfg, domain=domain, as_of=as_of, observed_at=observed_at,
                                count_tokens=embedder.count_tokens)
    report.chunks = len(records)
    # De-duplicate before embedding: unchanged files cost no embedding at all.
    known = store.existing_hashes({r.content_hash for r in records}, kind="knowledge")
    fresh: dict[str, Record] = {}
    for r in records:
        if r.content_hash not in known:
            fresh.setdefault(r.content_hash, r)
    todo = list(fresh.values())
    report.duplicates = len(records) - len(todo)
    bar = _progress(len(todo), progress)
    batch = cfg.ingest.batch_size
    for i in range(0, len(todo), batch):
        part = todo[i : i + batch]
        vectors = embedder.encode([r.text for r in part], batch_size=batch)
        ids = store.add(part, vectors)
        added = [r for r in part if r.id in set(ids)]
        report.added += len(ids)
        report.superseded += _supersede_facts(store, added)
        bar.update(len(part))
    bar.close()
    report.seconds = round(time.perf_counter() - start, 3)
    return report


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="chunk", desc="embedding", disable=not enabled or total == 0, leave=False)

