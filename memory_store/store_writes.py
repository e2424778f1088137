"""Writing to a FaissStore: the inter-process write lock, adding records, and retiring,
restoring or deleting them.

`StoreWrites` is a mixin of `store.FaissStore`, which holds the connection, the dense indexes
and the locks these methods use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from . import sqlite as db
from .faiss_index import as_matrix, normalise
from .records import Record

#: Meta keys the store owns; set_meta refuses them so a store cannot be relabelled by accident.
RESERVED_META = ("format_version", "embedder", "dim", "backend", "store_id", "deletions")
#: Meta key counting `delete` calls: a changed value tells other processes' open indexes to reload.
DELETIONS_KEY = "deletions"


class StoreWrites:
    """FaissStore's write lock and writes: each write holds it and the in-process mutex."""

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

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value under `key` (the store's identity keys are refused)."""
        self._check_open()
        if key in RESERVED_META:
            raise ValueError(f"meta key {key!r} is managed by the store; use another key name")
        with self.write_lock(), self._mutex, db.transaction(self._conn):
            db.write_meta(self._conn, key, value)
