"""FaissStore: records in SQLite (the truth), dense vectors in FAISS (derived), text in FTS5.

A store directory holds `store.sqlite`, one `index-<kind>.faiss` per kind and `write.lock`.
Writers (add, supersede, retire, restore, delete, set_meta) serialise on the lock file across
processes; readers never take it and see other processes' additions because every search first
catches the in-memory index up with SQLite (and reloads it after another process's delete).

FaissStore's methods live in one module per part: opening and keeping the indexes in step with
SQLite here, writes in `store_writes`, re-embedding in `store_reembed`, reads in `store_reads`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from . import sqlite as db
from .backends import BACKENDS, backend_mismatch
from .errors import EmbedderMismatch, FormatVersionError, StoreError, StoreLocked
from .faiss_index import DenseIndex, VectorSource, index_path, normalise
from .index_types import IndexOptions
from .lock import WriteLock
from .records import KINDS
from .store_reads import StoreReads, valid_at  # noqa: F401  (valid_at re-exported)
from .store_reembed import StoreReembed
from .store_writes import DELETIONS_KEY, RESERVED_META, StoreWrites  # noqa: F401  (re-exported)

log = logging.getLogger("memory_store")

DB_NAME = "store.sqlite"
LOCK_NAME = "write.lock"


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


class FaissStore(StoreWrites, StoreReembed, StoreReads):
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
