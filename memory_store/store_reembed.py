"""Re-embedding a FaissStore: every record's vector replaced by a new embedder's, all or nothing.

`StoreReembed` is a mixin of `store.FaissStore`; the SQLite staging it drives is in
`sqlite_staging`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import sqlite as db
from .faiss_index import DenseIndex, as_matrix, index_path, normalise
from .records import KINDS
from .store_writes import DELETIONS_KEY


class StoreReembed:
    """FaissStore's `reembed`: a new embedder for a whole store, its indexes rebuilt."""

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
