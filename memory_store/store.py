"""FaissStore: records in SQLite (the truth), dense vectors in FAISS (derived), text in FTS5.

A store directory holds `store.sqlite`, one `index-<kind>.faiss` per kind and `write.lock`.
Writers (add, supersede, set_meta) serialise on the lock file across processes; readers never
take it and see other processes' additions because every search first catches the in-memory
index up with SQLite.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from . import sqlite as db
from .errors import EmbedderMismatch, FormatVersionError, StoreError, StoreLocked
from .faiss_index import DenseIndex, VectorSource, as_matrix, index_path, normalise
from .lock import WriteLock
from .records import KINDS, Hit, Record

log = logging.getLogger("memory_store")

DB_NAME = "store.sqlite"
LOCK_NAME = "write.lock"
#: Meta keys the store owns; set_meta refuses them so a store cannot be relabelled by accident.
RESERVED_META = ("format_version", "embedder", "dim")



def open_store(path: str | Path, *, dim: int, embedder: str, create: bool = True, backend: str = "faiss",
               uri: str | None = None, index: str = "auto", approximate_above: int = 100_000,
               lock_timeout: float = 30.0) -> FaissStore:
    """Open the store at `path` (a directory), creating it if `create` and it does not exist.

    `dim=0` opens an existing store at whatever width it was built with (the embedder name is
    still checked), so a caller need not load the embedder just to open a store.
    Raises StoreError if there is no store and `create` is false, FormatVersionError if it was
    written by a newer version, EmbedderMismatch if it was built with another embedder or dim.
    """
    path = Path(path)
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
    if backend != "faiss":
        raise StoreError(f"memory backend {backend!r} is not available; use 'faiss'")
    conn = db.connect(path / DB_NAME)
    try:
        store = FaissStore(path, conn, dim=dim, embedder=embedder)
        store.lock_timeout = lock_timeout
        return store
    except BaseException:
        conn.close()
        raise


def valid_at(record: Record, as_of: str) -> bool:
    """Whether the record was valid at `as_of`, comparing dates at as_of's precision."""
    n = len(as_of)
    if record.valid_from[:n] > as_of:
        return False
    return not record.valid_to or record.valid_to[:n] > as_of


class FaissStore:
    """The SQLite + FAISS implementation of the MemoryStore protocol. Use `open_store`."""

    def __init__(self, path: Path, conn: Any, *, dim: int, embedder: str) -> None:
        self.path = path
        self.dim = dim
        self.embedder = embedder
        self.lock_timeout: float = 30.0
        self._conn = conn
        self._closed = False
        self._lock = WriteLock(path / LOCK_NAME, timeout=self.lock_timeout)
        # One connection and one set of indexes shared by this process's threads.
        self._mutex = threading.RLock()
        self._initialise()
        self._identity = f"the store at {path} was built with embedder {embedder!r} ({self.dim} dims)"
        self._indexes: dict[str, DenseIndex] = {kind: self._open_index(kind) for kind in KINDS}

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
                                    "dim": self.dim}
                        for key, value in identity.items():
                            db.write_meta(self._conn, key, value)
        version = db.read_meta(self._conn, "format_version")
        if not isinstance(version, int) or version > db.FORMAT_VERSION:
            raise FormatVersionError(
                f"store at {self.path} has format version {version} but this code reads up to "
                f"{db.FORMAT_VERSION}; upgrade kupdate to open it"
            )
        built_with, built_dim = db.read_meta(self._conn, "embedder"), db.read_meta(self._conn, "dim")
        if self.dim == 0 and isinstance(built_dim, int):
            self.dim = built_dim  # dim=0: "whatever the store was built with"
        if built_with != self.embedder or built_dim != self.dim:
            raise EmbedderMismatch(
                f"store at {self.path} was built with embedder {built_with!r} ({built_dim} dims) but "
                f"{self.embedder!r} ({self.dim} dims) was requested; open it with {built_with!r} "
                "or build a new KB"
            )

    def _open_index(self, kind: str) -> DenseIndex:
        count, max_id = db.kind_stats(self._conn, kind)
        index, rebuilt = DenseIndex.open(
            index_path(self.path, kind), self.dim, count=count, max_id=max_id, source=self._source(kind)
        )
        if rebuilt:
            # Persist only if no writer is busy: it will persist a fresher index itself, and a
            # reader must not wait on it. A skipped save just means another rebuild next time.
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
            index = self._index(kind)
            self._sync(kind)
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

    def find_facts(self, subject: str, relation: str) -> list[Record]:
        """Current knowledge records with this subject and relation (case/whitespace-insensitive)."""
        self._check_open()
        with self._mutex:
            return db.current_facts(self._conn, subject, relation)

    def get_meta(self, key: str, default: Any = None) -> Any:
        """The JSON value stored under `key`, or `default`."""
        self._check_open()
        with self._mutex:
            value = db.read_meta(self._conn, key)
        return default if value is None else value

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database; the indexes are already persisted by each add."""
        with self._mutex:
            if not self._closed:
                self._closed = True
                self._indexes = {}
                self._conn.close()

    def __enter__(self) -> FaissStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FaissStore({str(self.path)!r}, embedder={self.embedder!r}, dim={self.dim})"

    # -- helpers ---------------------------------------------------------------------------

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
        index = self._indexes[kind]
        if db.max_id(self._conn, kind) > index.max_id:
            added = index.catch_up(self._source(kind))
            log.debug("dense index %s caught up with %d records from SQLite", index.path, added)

    def _save(self, index: DenseIndex) -> None:
        # SQLite already holds the data, so a failed save costs only a rebuild on next open.
        try:
            index.save()
        except OSError as exc:
            log.warning("could not write dense index %s (%s); it will be rebuilt on next open", index.path, exc)
