"""FaissStore: records in SQLite (the truth), dense vectors in FAISS (derived), text in FTS5.

A store directory holds `store.sqlite`, one `index-<kind>.faiss` per kind and `write.lock`.
Writers (add, supersede, retire, restore, delete, set_meta) serialise on the lock file across
processes; readers never take it and see other processes' additions because every search first
catches the in-memory index up with SQLite (and reloads it after another process's delete).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from . import sqlite as db
from .backends import BACKENDS, backend_mismatch
from .errors import EmbedderMismatch, FormatVersionError, StoreError, StoreLocked
from .faiss_index import DenseIndex, VectorSource, as_matrix, index_path, normalise
from .index_types import IndexOptions
from .lock import WriteLock
from .records import KINDS, Hit, Record

log = logging.getLogger("memory_store")

DB_NAME = "store.sqlite"
LOCK_NAME = "write.lock"
#: Meta keys the store owns; set_meta refuses them so a store cannot be relabelled by accident.
RESERVED_META = ("format_version", "embedder", "dim", "backend", "store_id", "deletions")
#: Meta key counting `delete` calls: a changed value tells other processes' open indexes to reload.
DELETIONS_KEY = "deletions"



def open_store(path: str | Path, *, dim: int, embedder: str, create: bool = True, backend: str = "faiss",
               uri: str | None = None, index: str = "auto", approximate_above: int = 100_000,
               lock_timeout: float = 30.0) -> FaissStore:
    """Open the store at `path` (a directory), creating it if `create` and it does not exist.

    `dim=0` opens an existing store at whatever width it was built with (the embedder name is
    still checked), so a caller need not load the embedder just to open a store.
    Raises StoreError if there is no store and `create` is false, FormatVersionError if it was
    written by a newer version, EmbedderMismatch if it was built with another embedder or dim.
    `index` (auto|flat|hnsw|ivf) and `approximate_above` choose each kind's dense index type; a
    store whose index files are of another type is rebuilt to it on open (see faiss_index).
    """
    path = Path(path)
    index_options = IndexOptions(index, approximate_above)
    if backend not in BACKENDS:
        raise StoreError(f"unknown memory backend {backend!r}; use one of {', '.join(BACKENDS)}")
    milvus = None
    if backend == "milvus":  # pymilvus is imported only now, and only when connecting
        from .milvus_index import MilvusBackend

        milvus = MilvusBackend(path, uri=uri, options=index_options)
    if dim < 0:
        raise ValueError(f"dim must be positive, got {dim}; pass the embedder's output width")
    if not (path / DB_NAME).exists():
        if not create:
            raise StoreError(f"no memory store at {path}; create one there first or check the path")
        if dim == 0:
            raise ValueError(f"cannot create a store at {path} with dim=0; pass the embedder's output width")
        if path.exists() and not path.is_dir():
            raise StoreError(f"{path} is a file, not a store directory; choose another path")
        path.mkdir(parents=True, exist_ok=True)
    conn = db.connect(path / DB_NAME)
    try:
        store = FaissStore(path, conn, dim=dim, embedder=embedder, index_options=index_options,
                           backend=backend, milvus=milvus)
        store.lock_timeout = lock_timeout
        return store
    except BaseException:
        conn.close()
        if milvus is not None:
            milvus.close()
        raise


def valid_at(record: Record, as_of: str) -> bool:
    """Whether the record was valid at `as_of`, comparing dates at as_of's precision."""
    n = len(as_of)
    if record.valid_from[:n] > as_of:
        return False
    return not record.valid_to or record.valid_to[:n] > as_of


class FaissStore:
    """The SQLite + FAISS implementation of the MemoryStore protocol (with backend "milvus", the
    dense indexes are Milvus collections instead: see milvus_index). Use `open_store`."""

    def __init__(self, path: Path, conn: Any, *, dim: int, embedder: str,
                 index_options: IndexOptions | None = None, backend: str = "faiss", milvus: Any = None) -> None:
        self.path = path
        self.backend = backend
        self._milvus = milvus  # milvus_index.MilvusBackend: the dense index lives in Milvus
        self.index_options = index_options or IndexOptions()
        self.dim = dim
        self.embedder = embedder
        self.lock_timeout: float = 30.0
        self._conn = conn
        self._closed = False
        self._lock = WriteLock(path / LOCK_NAME, timeout=self.lock_timeout)
        # One connection and one set of indexes shared by this process's threads.
        self._mutex = threading.RLock()
        self._initialise()
        if milvus is not None:
            milvus.connect(db.read_meta(self._conn, "store_id"), self.write_lock)
        self._identity = f"the store at {path} was built with embedder {embedder!r} ({self.dim} dims)"
        # Read before the indexes load, so a delete racing the load is seen (as a reload) later.
        deletions = int(db.read_meta(self._conn, DELETIONS_KEY) or 0)
        self._indexes: dict[str, DenseIndex] = {kind: self._open_index(kind) for kind in KINDS}
        self._deletions_seen = dict.fromkeys(KINDS, deletions)

    # -- opening ---------------------------------------------------------------------------

    def _initialise(self) -> None:
        """Migrate and write the identity meta if needed (under the lock), then check identity."""
        if db.needs_migration(self._conn, self.path) or db.read_meta(self._conn, "format_version") is None:
            with self.write_lock():
                if db.needs_migration(self._conn, self.path):
                    db.migrate(self._conn, self.path)
                if db.read_meta(self._conn, "format_version") is None:  # another process may have won
                    if self.dim <= 0:
                        raise ValueError(
                            f"store at {self.path} was never fully created; open it with the embedder's dim"
                        )
                    with db.transaction(self._conn):
                        identity = {"format_version": db.FORMAT_VERSION, "embedder": self.embedder,
                                    "dim": self.dim, "backend": self.backend, "store_id": uuid.uuid4().hex}
                        for key, value in identity.items():
                            db.write_meta(self._conn, key, value)
        version = db.read_meta(self._conn, "format_version")
        if not isinstance(version, int) or version > db.FORMAT_VERSION:
            raise FormatVersionError(
                f"store at {self.path} has format version {version} but this code reads up to "
                f"{db.FORMAT_VERSION}; upgrade kupdate to open it"
            )
        # Stores from before backends were recorded are FAISS ones.
        backend_mismatch(self.path, db.read_meta(self._conn, "backend") or "faiss", self.backend)
        built_with, built_dim = db.read_meta(self._conn, "embedder"), db.read_meta(self._conn, "dim")
        if self.dim == 0 and isinstance(built_dim, int):
            self.dim = built_dim  # dim=0: "whatever the store was built with"
        if built_with != self.embedder or built_dim != self.dim:
            raise EmbedderMismatch(
                f"store at {self.path} was built with embedder {built_with!r} ({built_dim} dims) but "
                f"{self.embedder!r} ({self.dim} dims) was requested; open it with {built_with!r} "
                "or build a new KB",
                built_with=built_with,
            )

    def _open_index(self, kind: str) -> DenseIndex:
        self._check_identity()  # a reload after another process re-embedded must not mix spaces
        if self._milvus is not None:
            return self._milvus.open_index(kind, dim=self.dim, embedder=self.embedder, source=self._source(kind),
                                           stats=lambda: db.kind_stats(self._conn, kind))
        count, max_id = db.kind_stats(self._conn, kind)
        index, rebuilt = DenseIndex.open(
            index_path(self.path, kind), self.dim, count=count, max_id=max_id, source=self._source(kind),
            options=self.index_options,
        )
        if rebuilt:
            # Persist only if no writer is busy: it will persist a fresher index itself, and a
            # reader must not wait on it. A skipped save just means another catch-up (or rebuild) next time.
            try:
                with self.write_lock(timeout=0):
                    self._save(index)
            except StoreLocked:
                log.info("store %s is being written; not persisting the rebuilt %s index", self.path, kind)
        return index

    def _source(self, kind: str) -> VectorSource:
        """The kind's stored vectors after a given id, normalised again in case they were not."""

        def batches(after_id: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for ids, vectors in db.iter_vectors(self._conn, kind, after_id, self.dim, self.path):
                yield ids, normalise(vectors)

        return batches

    # -- writing ---------------------------------------------------------------------------

    def write_lock(self, timeout: float | None = None) -> AbstractContextManager[None]:
        """Hold the inter-process write lock (reentrant); StoreLocked after `timeout` (default lock_timeout)."""
        return self._lock.hold(self.lock_timeout if timeout is None else timeout)

    def add(self, records: Sequence[Record], vectors: np.ndarray) -> list[int]:
        """Store records not already present (same kind and content hash); return the new ids in order.

        Runs in one SQLite transaction; sets `id` on the added Record objects once committed.
        """
        self._check_open()
        records = list(records)
        if not records and len(vectors) == 0:
            return []
        matrix = as_matrix(vectors, self.dim, "vectors", self._identity)
        if len(records) != len(matrix):
            raise ValueError(f"got {len(records)} records but {len(matrix)} vectors; pass one vector per record")
        matrix = normalise(matrix)
        with self.write_lock(), self._mutex:
            for kind in self._indexes:
                self._sync(kind)  # so the file we persist also holds other processes' additions
            positions: list[int] = []
            ids: list[int] = []
            with db.transaction(self._conn):
                for position, record in enumerate(records):
                    cursor = self._conn.execute(db.INSERT_SQL, db.record_params(record, matrix[position]))
                    if cursor.rowcount == 1:  # 0: (kind, content_hash) already stored
                        positions.append(position)
                        ids.append(cursor.lastrowid)
            for position, record_id in zip(positions, ids):
                records[position].id = record_id
            for kind, index in self._indexes.items():
                mine = [i for i, p in enumerate(positions) if records[p].kind == kind]
                if mine:
                    index.add(np.array([ids[i] for i in mine]), matrix[[positions[i] for i in mine]])
                    self._save(index)
        return ids

    def supersede(self, old_ids: Sequence[int], new_id: int, valid_to: str) -> None:
        """Mark `old_ids` as replaced by `new_id`, valid until `valid_to`. Nothing is deleted."""
        self._check_open()
        old = sorted({int(i) for i in old_ids})
        if new_id in old:
            raise ValueError(f"record {new_id} cannot supersede itself; pass the ids of older records")
        with self.write_lock(), self._mutex:
            known = db.fetch_records(self._conn, [*old, new_id])
            missing = [i for i in (*old, new_id) if i not in known]
            if missing:
                raise ValueError(f"no records with ids {missing} in the store at {self.path}; check the ids")
            with db.transaction(self._conn):
                db.supersede(self._conn, old, new_id, valid_to)

    def retire(self, successors: Mapping[int, int | None], valid_to: str) -> None:
        """Take records out of the current memory, keeping them for history: each gets `valid_to`
        and `superseded_by` = its successor's id (None: retired without successor)."""
        self._check_open()
        successors = {int(old): (None if new is None else int(new)) for old, new in successors.items()}
        if not successors:
            return
        with self.write_lock(), self._mutex:
            wanted = set(successors) | {n for n in successors.values() if n is not None}
            missing = sorted(wanted - set(db.fetch_records(self._conn, wanted)))
            if missing:
                raise ValueError(f"no records with ids {missing[:10]} in the store at {self.path}; check the ids")
            if any(old == new for old, new in successors.items()):
                raise ValueError("a record cannot supersede itself; pass the ids of older records")
            with db.transaction(self._conn):
                db.retire(self._conn, successors, valid_to)

    def restore(self, ids: Sequence[int], moves: Mapping[int, tuple[str, str, int]] | None = None) -> None:
        """Make retired records current again (valid_to, superseded_by cleared); `moves` re-homes
        records to another document as (source, doc_id, position)."""
        self._check_open()
        with self.write_lock(), self._mutex, db.transaction(self._conn):
            db.restore(self._conn, [int(i) for i in ids], {int(i): m for i, m in (moves or {}).items()})

    def set_adapter_version(self, ids: Sequence[int], version: str | None) -> None:
        """Record that `ids` are distilled into adapter `version` of their domain (None: not any more)."""
        self._check_open()
        with self.write_lock(), self._mutex, db.transaction(self._conn):
            db.set_adapter_version(self._conn, [int(i) for i in ids], version)

    def delete(self, ids: Sequence[int]) -> list[int]:
        """Remove records for real: SQLite row, full-text entry and dense vector. Returns the ids
        that existed. Records they superseded keep valid_to and point to the next surviving successor.
        """
        self._check_open()
        with self.write_lock(), self._mutex:
            for kind in self._indexes:
                self._sync(kind)
            kinds = {r.kind for r in db.fetch_records(self._conn, [int(i) for i in ids]).values()}
            with db.transaction(self._conn):
                deleted = db.delete_records(self._conn, [int(i) for i in ids])
                deletions = int(db.read_meta(self._conn, DELETIONS_KEY) or 0) + bool(deleted)
                db.write_meta(self._conn, DELETIONS_KEY, deletions)
            # SQLite is committed first: a crash before the index is saved leaves an index with
            # extra vectors, which the next open detects (count differs) and rebuilds.
            for kind in kinds:
                index = self._indexes[kind]
                index.remove_ids(deleted)
                self._save(index)
            self._deletions_seen = dict.fromkeys(self._indexes, deletions)
        return deleted

    def reembed(self, encode: Callable[[list[str]], np.ndarray], *, embedder: str, dim: int,
                batch_size: int = 64, progress: Callable[[int], None] | None = None) -> int:
        """Replace every record's vector by `encode(texts)` of its text: the store is then built
        with `embedder` (`dim` wide) and its indexes are rebuilt. Returns the records re-embedded.

        All or nothing: new vectors are staged in a temporary table and swapped in with the new
        identity in one transaction, so a crash leaves the old vectors or the new ones, never a mix.
        Holds the write lock throughout; `progress(n)` is called after each batch of n records.
        """
        self._check_open()
        if dim < 1 or batch_size < 1:
            raise ValueError(f"dim and batch_size must be positive, got {dim} and {batch_size}")
        identity = f"embedder {embedder!r} was declared {dim} wide"
        with self.write_lock(), self._mutex:
            db.create_staging(self._conn)
            try:
                done = last = 0
                while page := db.texts_page(self._conn, last, batch_size):
                    ids = [row[0] for row in page]
                    last = ids[-1]
                    matrix = as_matrix(encode([row[1] for row in page]), dim, "re-embedded vectors", identity)
                    if len(matrix) != len(ids):
                        raise ValueError(f"encode returned {len(matrix)} vectors for {len(ids)} texts")
                    db.stage_vectors(self._conn, ids, normalise(matrix))
                    done += len(ids)
                    if progress is not None:
                        progress(len(ids))
                # A leftover file of the same width would pass for the new vectors: drop it first.
                for kind in KINDS:
                    index_path(self.path, kind).unlink(missing_ok=True)
                with db.transaction(self._conn):
                    db.swap_staged_vectors(self._conn, self.path)
                    db.write_meta(self._conn, "embedder", embedder)
                    db.write_meta(self._conn, "dim", dim)
                    # Other processes reload their indexes when this changes (see _sync).
                    deletions = int(db.read_meta(self._conn, DELETIONS_KEY) or 0) + 1
                    db.write_meta(self._conn, DELETIONS_KEY, deletions)
            finally:
                db.drop_staging(self._conn)
            self.embedder, self.dim = embedder, dim
            self._identity = f"the store at {self.path} was built with embedder {embedder!r} ({dim} dims)"
            for kind in KINDS:
                if self._milvus is not None:  # its collections name the old embedder: they are rebuilt
                    self._indexes[kind] = self._open_index(kind)
                    continue
                count, _ = db.kind_stats(self._conn, kind)
                self._indexes[kind] = DenseIndex.from_source(
                    index_path(self.path, kind), dim, count=count, source=self._source(kind),
                    options=self.index_options)
                self._save(self._indexes[kind])
            self._deletions_seen = dict.fromkeys(KINDS, deletions)
        return done

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value under `key` (the store's identity keys are refused)."""
        self._check_open()
        if key in RESERVED_META:
            raise ValueError(f"meta key {key!r} is managed by the store; use another key name")
        with self.write_lock(), self._mutex, db.transaction(self._conn):
            db.write_meta(self._conn, key, value)

    # -- reading ---------------------------------------------------------------------------

    def search(
        self,
        vector: np.ndarray,
        k: int = 10,
        *,
        kind: str = "knowledge",
        domain: str | None = None,
        as_of: str | None = None,
    ) -> list[Hit]:
        """Up to k records of `kind` by cosine similarity, optionally in `domain` / valid at `as_of`."""
        self._check_open()
        query = as_matrix(vector, self.dim, "query vector", self._identity)
        if len(query) != 1:
            raise ValueError(f"search takes one query vector, got {len(query)}; search them one at a time")
        query = normalise(query)
        if k <= 0:
            return []
        with self._mutex:
            self._index(kind)  # validates kind
            self._sync(kind)  # may reload the index: take it afterwards
            index = self._indexes[kind]
            filtered = domain is not None or as_of is not None
            # Filters are applied after the search, so fetch more and widen until k survive.
            fetch = max(4 * k, k + 32) if filtered else k
            cache: dict[int, Record] = {}
            while True:
                scores, ids = index.search(query, fetch)
                cache.update(db.fetch_records(self._conn, (int(i) for i in ids if int(i) not in cache)))
                hits = []
                for score, record_id in zip(scores, ids):
                    record = cache.get(int(record_id))
                    if record is None or (domain is not None and record.domain != domain):
                        continue
                    if as_of is not None and not valid_at(record, as_of):
                        continue
                    hits.append(Hit(record, float(score)))
                    if len(hits) == k:
                        return hits
                if fetch >= index.ntotal:
                    return hits
                fetch *= 4

    def lexical_search(self, query: str, k: int = 10, *, domain: str | None = None) -> list[Hit]:
        """Up to k knowledge records matching any word of `query`, best BM25 first (score = -bm25)."""
        self._check_open()
        match = db.fts_query(query)
        if match is None or k <= 0:
            return []
        with self._mutex:
            return [Hit(record, -bm25) for record, bm25 in db.lexical(self._conn, match, k, domain)]

    def document_frequencies(self, terms: Iterable[str]) -> dict[str, int]:
        """Knowledge records containing each term, keyed by the lower-cased term (0 if none)."""
        self._check_open()
        wanted = list(dict.fromkeys(term.lower() for term in terms))
        with self._mutex:
            return db.document_frequencies(self._conn, wanted)

    def count(self, kind: str | None = None) -> int:
        """Number of records, of `kind` or of all kinds."""
        self._check_open()
        sql, params = ("SELECT COUNT(*) FROM records", ()) if kind is None else (
            "SELECT COUNT(*) FROM records WHERE kind = ?", (kind,))
        with self._mutex:
            return int(self._conn.execute(sql, params).fetchone()[0])

    def get(self, ids: Sequence[int]) -> list[Record]:
        """Records by id in the order given; ids not in the store are skipped."""
        self._check_open()
        with self._mutex:
            found = db.fetch_records(self._conn, (int(i) for i in ids))
        return [found[int(i)] for i in ids if int(i) in found]

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """The stored (normalised) vectors of `ids` as float32 rows in the order given.

        Unlike `get`, an unknown id is an error: callers zip the rows with their records.
        """
        self._check_open()
        with self._mutex:
            found = db.fetch_vectors(self._conn, [int(i) for i in ids], self.dim, self.path)
        missing = [int(i) for i in ids if int(i) not in found]
        if missing:
            raise ValueError(f"no records with ids {missing[:10]} in the store at {self.path}; check the ids")
        if not found:
            return np.empty((0, self.dim), dtype=np.float32)
        return np.stack([found[int(i)] for i in ids]).astype(np.float32, copy=False)

    def records(self, kind: str | None = None, domain: str | None = None) -> Iterator[Record]:
        """All records (optionally of one kind / domain) in id order, read a page at a time."""
        self._check_open()
        last = 0
        # Paging by id keeps no read transaction open while the caller works between pages.
        while True:
            with self._mutex:
                page = db.records_page(self._conn, last, kind, domain)
            if not page:
                return
            yield from page
            last = page[-1].id

    def existing_hashes(self, hashes: Iterable[str], kind: str = "knowledge") -> set[str]:
        """The subset of `hashes` already stored as content hashes of `kind` records."""
        self._check_open()
        with self._mutex:
            return db.existing_hashes(self._conn, hashes, kind)

    def find(self, *, kind: str | None = "knowledge", sources: Sequence[str] | None = None,
             under: str | None = None, hashes: Sequence[str] | None = None,
             superseded_by: Sequence[int] | None = None, subject: str | None = None,
             relation: str | None = None) -> list[Record]:
        """Records, current and historical, matching every filter given, in id order.

        `sources`, `hashes`, `superseded_by`: any of the values; `under`: sources below this
        directory; `subject`/`relation`: case- and whitespace-insensitive; `kind=None`: all kinds.
        """
        self._check_open()
        with self._mutex:
            return db.find_records(
                self._conn, kind=kind, sources=None if sources is None else list(sources), under=under,
                hashes=None if hashes is None else list(hashes),
                superseded_by=None if superseded_by is None else [int(i) for i in superseded_by],
                subject=subject, relation=relation)

    def find_facts(self, subject: str, relation: str) -> list[Record]:
        """Current knowledge records with this subject and relation (case/whitespace-insensitive)."""
        self._check_open()
        with self._mutex:
            return db.current_facts(self._conn, subject, relation)

    def index_type(self, kind: str = "knowledge") -> str:
        """The dense index type `kind` is searched with now: 'flat', 'hnsw' or 'ivf'."""
        self._check_open()
        return self._index(kind).type

    def get_meta(self, key: str, default: Any = None) -> Any:
        """The JSON value stored under `key`, or `default`."""
        self._check_open()
        with self._mutex:
            value = db.read_meta(self._conn, key)
        return default if value is None else value

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database; the indexes are already persisted by each write (a large index
        may lag by its newest few percent, which the next open catches up: see faiss_index)."""
        with self._mutex:
            if not self._closed:
                self._closed = True
                self._indexes = {}
                self._conn.close()
                if self._milvus is not None:
                    self._milvus.close()

    def __enter__(self) -> FaissStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FaissStore({str(self.path)!r}, embedder={self.embedder!r}, dim={self.dim})"

    # -- helpers ---------------------------------------------------------------------------

    def _check_identity(self) -> None:
        built_with, built_dim = db.read_meta(self._conn, "embedder"), db.read_meta(self._conn, "dim")
        if (built_with, built_dim) != (self.embedder, self.dim):
            raise EmbedderMismatch(
                f"the store at {self.path} was re-embedded with {built_with!r} ({built_dim} dims) since "
                f"it was opened with {self.embedder!r}; open it again with {built_with!r}"
            )

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"store at {self.path} is closed; open it again with open_store")

    def _index(self, kind: str) -> DenseIndex:
        try:
            return self._indexes[kind]
        except KeyError:
            raise ValueError(f"unknown record kind {kind!r}; use one of {KINDS}") from None

    def _sync(self, kind: str) -> None:
        """Catch the kind's index up with rows other processes committed since we last looked."""
        deletions = int(db.read_meta(self._conn, DELETIONS_KEY) or 0)
        if deletions != self._deletions_seen[kind]:
            # Another process deleted records: reload the file it saved (or rebuild from SQLite).
            self._indexes[kind] = self._open_index(kind)
            self._deletions_seen[kind] = deletions
        index = self._indexes[kind]
        if db.max_id(self._conn, kind) > index.max_id:
            added = index.catch_up(self._source(kind))
            log.debug("dense index %s caught up with %d records from SQLite", index.path, added)

    def _save(self, index: DenseIndex) -> None:
        if self._milvus is not None:
            return  # Milvus persists each write itself: there is no file to save
        # Every save runs under the write lock, so any temp file is an orphan of a writer killed
        # mid-save; each is a whole copy of the index, so they must not pile up.
        for orphan in index.path.parent.glob(f"{index.path.name}.tmp-*"):
            orphan.unlink(missing_ok=True)
        # SQLite already holds the data, so a failed save costs only a rebuild on next open.
        try:
            index.save()
        except OSError as exc:
            log.warning("could not write dense index %s (%s); it will be rebuilt on next open", index.path, exc)
