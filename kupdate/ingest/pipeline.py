"""Ingest: files -> documents -> chunks -> de-duplicate -> embed -> memory store.

Every file is read and parsed before anything is written, so a bad file in strict mode stores
nothing. Chunks are embedded and committed in batches: a killed process loses at most the batch
it had not acknowledged, and re-running the same ingest skips what is already stored (content hash).

Upserts by source (DESIGN.md section 5: nothing is silently deleted). A document is identified by
its `source` (the resolved path, or the `source` its front matter / JSONL line names); after the
new chunks are stored, each source read in this run is reconciled with what the store holds:

* a current chunk of the source that its new version no longer contains is retired: `valid_to` =
  the ingest time and `superseded_by` = its successor, the chunk of the same document (`doc_id`)
  that the new version brought in (added or restored by this run, or first seen after the old
  chunk) most similar to it by cosine; none when the document brought nothing in (text removed);
* a chunk the new version contains that is not current (a reverted edit; or a chunk another
  document shared and then dropped) becomes current again and moves to this document, unless a
  newer structured fact superseded it (facts are decided by date, not by file contents);
* chunks in both versions (same content hash) simply stay current: unchanged files cost no
  embedding at all.

`prune` retires the current chunks of files under the given folders that no longer exist. The
write lock is held for the whole run, so two ingests never reconcile the same source at once.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kupdate.config import Config
from kupdate.errors import InputError
from kupdate.ingest.chunking import chunk_text
from kupdate.ingest.dates import now_iso, parse_date
from kupdate.ingest.loaders import Document, expand_paths, load_file
from kupdate.text import plain
from memory_store import Record

EMBED_GROUP_BATCHES = 8


@dataclass
class IngestReport:
    """The summary `kupdate ingest` prints (and returns with --json)."""

    files: int = 0
    documents: int = 0
    chunks: int = 0
    added: int = 0
    duplicates: int = 0
    superseded: int = 0
    retired: int = 0
    restored: int = 0
    pruned: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """The one-line summary `kupdate ingest` prints."""
        return (f"{self.files} files, {self.documents} documents, {self.chunks} chunks: "
                f"{self.added} added, {self.duplicates} duplicates, {self.superseded} superseded, "
                f"{self.retired} retired, {self.restored} restored, {self.pruned} pruned "
                f"({self.seconds:.1f} s)")

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
    # HTML left in a document (tags, entities) is markup, not content: a reader sees the text only.
    chunks = chunk_text(plain(doc.text), max_tokens=cfg.ingest.chunk_tokens, overlap=cfg.ingest.chunk_overlap,
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
           progress: bool = False, prune: bool = False, engine: str = "local") -> IngestReport:
    """Ingest files, folders or globs into `store`; returns what was added, retired, skipped and why.

    Changed files replace their old chunks (kept in history, see the module docstring); with
    `prune`, chunks of files under the given folders that no longer exist are retired too.
    `engine="ray"` loads, chunks and embeds on a Ray cluster (`kupdate.compute.ray_ingest`; then
    `embedder` is not used); either way this process alone writes, in the same order.
    """
    start = time.perf_counter()
    report = IngestReport()
    as_of = parse_date(as_of, where="--as-of") if as_of else None
    observed_at = now_iso()
    if engine == "ray":
        from kupdate.compute.ray_ingest import RayIngest

        ray_job = RayIngest(cfg)
        records = ray_job.chunk(paths, skip_bad=skip_bad, report=report, domain=domain, as_of=as_of,
                                observed_at=observed_at)
        embed = ray_job.embed
    else:
        docs = collect(paths, cfg, skip_bad=skip_bad, report=report)
        records = [r for doc in docs for r in _records_for(doc, cfg, domain=domain, as_of=as_of,
                                                           observed_at=observed_at,
                                                           count_tokens=embedder.count_tokens)]
        embed = functools.partial(embed_locally, embedder)
    with store.write_lock():
        _store_records(store, records, embed, cfg, report, observed_at=observed_at, progress=progress)
        if prune:
            report.pruned = _prune(store, paths, now_iso())
    report.seconds = round(time.perf_counter() - start, 3)
    return report


def records_for_file(path: Path, cfg: Config, *, domain: str | None, as_of: str | None,
                     observed_at: str, count_tokens: Any) -> tuple[int, list[Record]]:
    """(documents, chunk records in order) of one file; raises InputError for an unusable file."""
    docs = load_file(path, max_bytes=int(cfg.ingest.max_file_mb * 1024 * 1024))
    return len(docs), [r for doc in docs for r in _records_for(doc, cfg, domain=domain, as_of=as_of,
                                                    observed_at=observed_at, count_tokens=count_tokens)]


#: Embeds records batch by batch: (records, batch size) -> (records of a batch, their vectors), in order.
Embed = Callable[[list[Record], int], Iterator[tuple[list[Record], np.ndarray]]]


def embed_locally(embedder: Any, todo: list[Record], batch: int) -> Iterator[tuple[list[Record], np.ndarray]]:
    """Embed in groups of several batches (the embedder sorts a call's texts by length, so bigger
    calls pad less) but hand them back batch by batch, each committed before the next."""
    group = batch * EMBED_GROUP_BATCHES
    for g in range(0, len(todo), group):
        chunk = todo[g : g + group]
        vectors = embedder.encode([r.text for r in chunk], batch_size=batch)
        for i in range(0, len(chunk), batch):
            yield chunk[i : i + batch], vectors[i : i + batch]


def _store_records(store: Any, records: list[Record], embed: Embed, cfg: Config, report: IngestReport, *,
                   observed_at: str, progress: bool) -> None:
    """Embed and add the chunks not yet stored, then reconcile each source with its new version."""
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
    # Committed batch by batch, so a kill loses at most what was not yet acknowledged.
    for part, vectors in embed(todo, cfg.ingest.batch_size):
        ids = store.add(part, vectors)
        added = [r for r in part if r.id in set(ids)]
        report.added += len(ids)
        report.superseded += _supersede_facts(store, added)
        bar.update(len(part))
    bar.close()
    report.retired, report.restored = _reconcile(store, records, {r.id for r in todo if r.id}, observed_at)


def _is_current(record: Record) -> bool:
    return record.valid_to is None and record.superseded_by is None


def _reconcile(store: Any, chunks: list[Record], added_ids: set[int], now: str) -> tuple[int, int]:
    """Make the store's current chunks of every source in `chunks` equal its new version.

    Returns (retired, restored). Idempotent: re-running after a crash finishes the job.
    """
    if not chunks:
        return 0, 0
    new_hashes: dict[str, set[str]] = defaultdict(set)  # source -> hashes of its new version
    doc_hashes: dict[str, set[str]] = defaultdict(set)  # doc_id -> hashes of its new version
    home: dict[str, Record] = {}  # hash -> the chunk of this run that holds it (first one)
    for c in chunks:
        new_hashes[c.source].add(c.content_hash)
        doc_hashes[c.doc_id].add(c.content_hash)
        home.setdefault(c.content_hash, c)
    held = {r.content_hash: r for r in store.find(hashes=list(home))}  # the stored record of each

    # 1. Chunks the new versions contain but that are not current (or belong to a source that
    #    dropped them) become current in the document that holds them now.
    restore: list[int] = []
    moves: dict[int, tuple[str, str, int]] = {}
    for h, r in held.items():
        still_home = h in new_hashes.get(r.source, ())
        if not _is_current(r):
            if r.subject is not None and r.superseded_by is not None:
                continue  # a newer structured fact replaced it: the dates decide, not the file
            restore.append(r.id)
        elif still_home or r.source not in new_hashes:
            continue  # its own document still says it, or was not re-read: leave it
        if not still_home:
            c = home[h]
            moves[r.id] = (c.source, c.doc_id, c.position)
    if restore or moves:
        store.restore(restore, moves)
    restored = set(restore)

    # 2. Current chunks of the re-read sources that their new versions no longer contain.
    gone = [r for r in store.find(sources=list(new_hashes))
            if _is_current(r) and r.id not in restored and r.id not in moves
            and r.content_hash not in new_hashes[r.source]]
    if not gone:
        return 0, len(restore)
    brought_in = added_ids | restored
    candidates = {r.id: [held[h] for h in doc_hashes.get(r.doc_id, ()) if h in held]
                  for r in gone if r.subject is None}
    wanted = {r.id for r in gone} | {c.id for cs in candidates.values() for c in cs}
    vectors = dict(zip(sorted(wanted), store.vectors(sorted(wanted))))
    successors: dict[int, int | None] = {}
    for r in gone:
        if r.subject is not None:
            # A structured fact is superseded only by a fact with its subject and relation (see
            # _supersede_facts); a removed line is simply retired.
            successors[r.id] = None
            continue
        fresh = [c for c in candidates[r.id]
                 if c.id != r.id and (c.id in brought_in or c.observed_at > r.observed_at)]
        successors[r.id] = _most_similar(vectors[r.id], fresh, vectors)
    store.retire(successors, now)
    return len(successors), len(restore)


def _most_similar(vector: np.ndarray, candidates: Iterable[Record], vectors: dict[int, np.ndarray]) -> int | None:
    """Id of the candidate whose vector has the highest cosine with `vector` (lowest id on ties)."""
    best: tuple[float, int] | None = None
    for c in sorted(candidates, key=lambda c: c.id):
        score = float(vectors[c.id] @ vector)
        if best is None or score > best[0]:
            best = (score, c.id)
    return None if best is None else best[1]


def _prune(store: Any, paths: Sequence[str | Path], now: str) -> int:
    """Retire the current chunks of files under the given folders that no longer exist."""
    folders = [Path(p).expanduser().resolve() for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    gone = {r.id: None for folder in folders if folder.is_dir()
            for r in store.find(under=str(folder))
            if _is_current(r) and not Path(r.source).exists()}
    store.retire(gone, now)
    return len(gone)


def _progress(total: int, enabled: bool) -> Any:
    from tqdm import tqdm  # plain tqdm on stderr: no widget warning in notebooks

    return tqdm(total=total, unit="chunk", desc="embedding", disable=not enabled or total == 0, leave=False)

