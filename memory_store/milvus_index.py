"""The dense index of backend "milvus": one Milvus collection per record kind, keyed by SQLite id.

SQLite stays the source of truth (records, metadata, vectors, FTS); each collection
`kupdate_<store_id>_<kind>_<embedder fingerprint>` only holds `(id, vector)` pairs for
inner-product search on normalised vectors (= cosine). Like the FAISS files it is derived: when a
collection is missing, has the wrong width or disagrees with SQLite on open, it is rebuilt from
SQLite. Domain and as_of filters are applied in SQLite after an over-fetch, as with FAISS.

`uri` is a milvus-lite file (a local path ending in `.db`; default `<store>/milvus.db`, served
in-process and usable by one process at a time) or a server URL (`http://host:19530`), with the
token, if any, in the environment variable KUPDATE_MILVUS_TOKEN.

pymilvus is imported only when a store with this backend is opened.

The connection is in `milvus_connection`, the collection's schema, index type and raw writes in
`milvus_collection`; their public names are re-exported here.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from typing import Any

import numpy as np

from .errors import StoreLocked
from .index_types import HNSW, HNSW_EF_SEARCH, IVF
from .milvus_collection import (  # noqa: F401  (re-exported)
    MILVUS_TYPES,
    OUR_TYPES,
    UPSERT_BYTES,
    MilvusCollection,
    VectorSource,
)
from .milvus_connection import (  # noqa: F401  (re-exported)
    DEFAULT_LITE_FILE,
    INSTALL_HINT,
    SERVER_SCHEMES,
    TOKEN_ENV,
    MilvusConnection,
    display_uri,
    resolve_uri,
)

log = logging.getLogger("memory_store")

#: Milvus refuses a search limit above this; larger searches scan the SQLite vectors instead.
MAX_TOPK = 16384
#: () -> (number of records, highest id) of one kind in SQLite.
Stats = Callable[[], tuple[int, int]]


class MilvusBackend(MilvusConnection):
    """One store's connection to Milvus; hands out a MilvusIndex per record kind."""

    # -- indexes ---------------------------------------------------------------------------

    def collection(self, kind: str, embedder: str, dim: int) -> str:
        """`kupdate_<store id>_<kind>_<embedder fingerprint>`: after a re-embed (or a crash in
        one) the old vectors' collection is not taken for the new ones, it is rebuilt."""
        fingerprint = hashlib.sha1(f"{embedder}\0{dim}".encode()).hexdigest()[:8]
        return f"{self.prefix}_{kind}_{fingerprint}"

    def open_index(self, kind: str, *, dim: int, embedder: str, stats: Stats, source: VectorSource) -> MilvusIndex:
        """The kind's index, its collection created, re-indexed or rebuilt from SQLite as needed.

        Changing the collection is done under the store's write lock, as it is shared with other
        processes. If a writer holds the lock, a collection that is only out of sync is used as it
        is: that writer keeps it in line with SQLite itself (its own open reconciled it).
        """
        assert self.lock is not None
        index = MilvusIndex(self, self.collection(kind, embedder, dim), dim, source)
        count, max_id = stats()
        reason = index.check(count, max_id)
        with ExitStack() as held:
            try:
                held.enter_context(self.lock(0))
            except StoreLocked:
                if reason is None:
                    return index  # usable as it is; a type change waits for a later open
                if reason.startswith("is out of sync"):
                    log.info("dense index %s %s; the busy writer brings it in line", index.path, reason)
                    index.ntotal, index.max_id = count, max_id
                    return index
                held.enter_context(self.lock(None))  # missing or malformed: wait for the writer
            if reason is not None:
                count, max_id = stats()  # look again: another process may have fixed it meanwhile
                reason = index.check(count, max_id)
            if reason is None:
                index.ensure_index(count)
            elif reason == "is missing" and count == 0:
                index.create(count)  # a new store: nothing to rebuild
            elif reason == "is missing" and self._stale(kind, index.name):
                # Expected after a re-embed: the old embedder's collection is replaced.
                log.info("dense index %s is new for embedder %r; building it from SQLite (%d vectors)",
                         index.path, embedder, count)
                index.rebuild(count)
            else:
                log.warning("dense index %s %s; rebuilding it from SQLite (%d vectors)", index.path, reason, count)
                index.rebuild(count)
            for name in self._stale(kind, index.name):
                log.info("dropping Milvus collection %s: its vectors are from another embedder", name)
                with self.calls(f"dropping collection {name}"):
                    self.client.drop_collection(name)
        return index

    def _stale(self, kind: str, current: str) -> list[str]:
        """This store's collections of `kind` other than `current`: built for another embedder."""
        with self.calls("listing collections"):
            names = self.client.list_collections()
        return [n for n in names if n.startswith(f"{self.prefix}_{kind}_") and n != current]


class MilvusIndex(MilvusCollection):
    """The vectors of one kind in a Milvus collection; the interface of faiss_index.DenseIndex."""

    # -- updates ---------------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add (upsert) normalised vectors under their record ids; may re-index (logged).

        On failure max_id stays put, so the store's next search or add catches the ids up from SQLite.
        """
        if len(ids) == 0:
            return
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self.backend.calls(f"adding {len(ids)} vectors to {self.name}"):
            self._upsert(ids, vectors)
            self._settle()
        self.max_id = max(self.max_id, int(ids.max()))
        self.ntotal += len(ids)
        if self.backend.options.wanted(self.ntotal, self.type) != self.type:
            self.ensure_index(self.ntotal)  # e.g. auto crossing approximate_above (the caller holds the lock)

    def catch_up(self, source: VectorSource | None = None) -> int:
        """Index SQLite's vectors beyond max_id that the collection lacks; returns how many were beyond."""
        source = source or self._source
        seen = 0
        with self.backend.calls(f"catching {self.name} up with SQLite"):
            for ids, vectors in source(self.max_id):
                present = {int(row["id"]) for row in self._client.get(self.name, ids=ids.tolist(), output_fields=["id"])}
                missing = np.fromiter((int(i) not in present for i in ids), dtype=bool, count=len(ids))
                if missing.any():
                    self._upsert(ids[missing], vectors[missing])
                self.max_id = max(self.max_id, int(ids.max()))
                self.ntotal += len(ids)
                seen += len(ids)
            self._settle()
        return seen

    def remove_ids(self, ids: Iterable[int]) -> int:
        """Delete the vectors of these record ids; returns how many were indexed."""
        wanted = sorted({int(i) for i in ids})
        if not wanted:
            return 0
        removed = 0
        with self.backend.calls(f"deleting {len(wanted)} vectors from {self.name}"):
            for start in range(0, len(wanted), 4096):
                chunk = wanted[start:start + 4096]
                present = [int(row["id"]) for row in self._client.get(self.name, ids=chunk, output_fields=["id"])]
                if present:
                    self._client.delete(self.name, ids=present)
                    removed += len(present)
            if removed:
                self._settle()
        self.ntotal = max(0, self.ntotal - removed)
        return removed

    def save(self) -> None:
        """Nothing to do: Milvus persists each upsert itself."""

    # -- search ----------------------------------------------------------------------------

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) for one normalised query row, best first."""
        if k <= 0:
            return np.empty(0, np.float32), np.empty(0, np.int64)
        if k > MAX_TOPK:
            return self._scan(query, k)
        params: dict[str, Any] = {"metric_type": "IP"}
        if self.type == HNSW:
            params["params"] = {"ef": max(k, HNSW_EF_SEARCH)}  # Milvus needs ef >= k
        elif self.type == IVF:
            params["params"] = {"nprobe": self._nprobe}
        with self.backend.calls(f"searching {self.name}"):
            result = self._client.search(
                self.name, data=[np.asarray(query, dtype=np.float32).reshape(-1).tolist()], limit=k,
                output_fields=["id"], search_params=params, consistency_level="Strong",
            )
        hits = result[0] if result else []
        ids = np.fromiter((int(h["id"]) for h in hits), dtype=np.int64, count=len(hits))
        scores = np.fromiter((float(h["distance"]) for h in hits), dtype=np.float32, count=len(hits))
        return scores, ids

    def _scan(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over the SQLite vectors: for the rare filtered search past Milvus's limit."""
        log.info("search of %s asks for %d > %d results; scanning the SQLite vectors", self.path, k, MAX_TOPK)
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        best_ids, best_scores = np.empty(0, np.int64), np.empty(0, np.float32)
        for ids, vectors in self._source(0):
            best_ids = np.concatenate([best_ids, ids])
            best_scores = np.concatenate([best_scores, vectors @ q])
            if len(best_ids) > k:
                keep = np.argpartition(-best_scores, k - 1)[:k]
                best_ids, best_scores = best_ids[keep], best_scores[keep]
        order = np.argsort(-best_scores, kind="stable")
        return best_scores[order], best_ids[order]
