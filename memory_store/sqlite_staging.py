"""Re-embedding: new vectors wait in a temporary table (private to the connection, gone if the
process dies) and replace the old ones in one UPDATE, so a store never mixes the two.

Plain functions of a connection, driven by `FaissStore.reembed` (see store_reembed).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import StoreError


def texts_page(conn: sqlite3.Connection, after_id: int, limit: int) -> list[tuple[int, str]]:
    """(id, text) of up to `limit` records of any kind with id > after_id, in id order."""
    return [(row[0], row[1]) for row in
            conn.execute("SELECT id, text FROM records WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit))]


def create_staging(conn: sqlite3.Connection) -> None:
    conn.execute("DROP TABLE IF EXISTS temp.reembed_staging")
    conn.execute("CREATE TEMP TABLE reembed_staging (id INTEGER PRIMARY KEY, vector BLOB NOT NULL)")


def stage_vectors(conn: sqlite3.Connection, ids: Sequence[int], vectors: np.ndarray) -> None:
    conn.execute("BEGIN")  # writes only the temp database: takes no lock on the store
    try:
        conn.executemany("INSERT INTO temp.reembed_staging (id, vector) VALUES (?, ?)",
                         [(int(i), np.ascontiguousarray(v, dtype="<f4").tobytes()) for i, v in zip(ids, vectors)])
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def swap_staged_vectors(conn: sqlite3.Connection, path: Path) -> None:
    """Inside a transaction: give every record its staged vector; StoreError if one has none."""
    missing = conn.execute(
        "SELECT COUNT(*) FROM records WHERE id NOT IN (SELECT id FROM temp.reembed_staging)").fetchone()[0]
    if missing:
        raise StoreError(f"{missing} records of the store at {path} have no new vector; run the re-embedding again")
    # A correlated subquery rather than UPDATE ... FROM, which needs SQLite 3.33.
    conn.execute("UPDATE records SET vector = (SELECT s.vector FROM temp.reembed_staging AS s WHERE s.id = records.id)")


def drop_staging(conn: sqlite3.Connection) -> None:
    conn.execute("DROP TABLE IF EXISTS temp.reembed_staging")
