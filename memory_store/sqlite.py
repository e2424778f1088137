"""SQLite layer: the queries a store runs on its records and meta, as plain functions of a connection.

SQLite is the source of truth of a store: every record, its metadata and its vector live here.
The FAISS files are derived from it and can always be rebuilt (see `faiss_index`). The schema,
migrations and Record <-> row conversion are in `sqlite_schema`, the staging of re-embedded
vectors in `sqlite_staging`; both are re-exported here, so `from . import sqlite as db` is the
whole layer.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import StoreError
from .records import Record
from .sqlite_schema import (  # noqa: F401  (re-exported)
    BUSY_TIMEOUT_MS,
    FORMAT_VERSION,
    INSERT_SQL,
    MIGRATIONS,
    RECORD_COLUMNS,
    connect,
    fact_key,
    migrate,
    needs_migration,
    record_params,
    row_to_record,
    schema_version,
    transaction,
)
from .sqlite_staging import (  # noqa: F401  (re-exported)
    create_staging,
    drop_staging,
    stage_vectors,
    swap_staged_vectors,
    texts_page,
)

# FTS5 query syntax has quotes, operators, NEAR, column filters, `*`...; user text keeps only
# its word characters (no `_`: unicode61 separates on it), each token quoted as a plain string.
_TOKEN = re.compile(r"[^\W_]+")

#: Larger IN (...) lists are split: old SQLite builds allow only 999 bound parameters.
CHUNK = 900


# -- queries -------------------------------------------------------------------------------
# Plain functions of a connection; FaissStore adds locking, validation and the dense index.


def read_meta(conn: sqlite3.Connection, key: str) -> Any:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else json.loads(row[0])


def write_meta(conn: sqlite3.Connection, key: str, value: Any) -> None:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"meta value for {key!r} is not JSON-serialisable: {exc}") from exc
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, text),
    )


def kind_stats(conn: sqlite3.Connection, kind: str) -> tuple[int, int]:
    """(number of records, highest id or 0) of one kind."""
    row = conn.execute("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM records WHERE kind = ?", (kind,)).fetchone()
    return int(row[0]), int(row[1])


def max_id(conn: sqlite3.Connection, kind: str) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM records WHERE kind = ?", (kind,)).fetchone()[0])


def iter_vectors(
    conn: sqlite3.Connection, kind: str, after_id: int, dim: int, path: Path
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, vectors) batches of the kind's records with id > after_id, in id order."""
    cursor = conn.execute("SELECT id, vector FROM records WHERE kind = ? AND id > ? ORDER BY id", (kind, after_id))
    while rows := cursor.fetchmany(4096):
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        yield ids, _stack(rows, dim, path)


def fetch_vectors(conn: sqlite3.Connection, ids: Sequence[int], dim: int, path: Path) -> dict[int, np.ndarray]:
    """Stored vectors by id (ids not stored are absent)."""
    found: dict[int, np.ndarray] = {}
    for chunk in chunks(list(dict.fromkeys(ids))):
        rows = conn.execute(f"SELECT id, vector FROM records WHERE id IN ({marks(chunk)})", tuple(chunk)).fetchall()
        found.update(zip((r[0] for r in rows), _stack(rows, dim, path)))
    return found


def _stack(rows: Sequence[Any], dim: int, path: Path) -> np.ndarray:
    """(id, blob) rows -> float32 [n, dim], refusing a blob of the wrong size rather than mis-slicing."""
    for record_id, blob in rows:
        if len(blob) != dim * 4:
            raise StoreError(
                f"record {record_id} in {path} has a {len(blob) // 4}-value vector but the store has "
                f"{dim} dims; the database is damaged, rebuild the KB"
            )
    return np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), dim)


def fetch_records(conn: sqlite3.Connection, ids: Iterable[int]) -> dict[int, Record]:
    found: dict[int, Record] = {}
    for chunk in chunks(list(dict.fromkeys(ids))):
        sql = f"SELECT {RECORD_COLUMNS} FROM records WHERE id IN ({marks(chunk)})"
        found.update((row["id"], row_to_record(row)) for row in conn.execute(sql, tuple(chunk)))
    return found


def records_page(conn: sqlite3.Connection, after_id: int, kind: str | None, domain: str | None) -> list[Record]:
    """Up to 1000 records with id > after_id, optionally of one kind / domain, in id order."""
    where, params = ["id > ?"], [after_id]
    for column, value in (("kind", kind), ("domain", domain)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    sql = f"SELECT {RECORD_COLUMNS} FROM records WHERE {' AND '.join(where)} ORDER BY id LIMIT 1000"
    return [row_to_record(row) for row in conn.execute(sql, params)]


def existing_hashes(conn: sqlite3.Connection, hashes: Iterable[str], kind: str) -> set[str]:
    found: set[str] = set()
    for chunk in chunks(list(dict.fromkeys(hashes))):
        sql = f"SELECT content_hash FROM records WHERE kind = ? AND content_hash IN ({marks(chunk)})"
        found.update(row[0] for row in conn.execute(sql, (kind, *chunk)))
    return found


def current_facts(conn: sqlite3.Connection, subject: str, relation: str) -> list[Record]:
    sql = (
        f"SELECT {RECORD_COLUMNS} FROM records WHERE kind = 'knowledge' AND subject_key = ? "
        "AND relation_key = ? AND superseded_by IS NULL AND valid_to IS NULL ORDER BY id"
    )
    return [row_to_record(row) for row in conn.execute(sql, (fact_key(subject), fact_key(relation)))]


def fts_query(text: str) -> str | None:
    """A safe FTS5 MATCH expression: any of the words of `text`; None if it has no words."""
    tokens = list(dict.fromkeys(_TOKEN.findall(text)))
    return " OR ".join(f'"{token}"' for token in tokens) if tokens else None


def lexical(conn: sqlite3.Connection, match: str, k: int, domain: str | None) -> list[tuple[Record, float]]:
    """(record, bm25) of knowledge records matching an FTS5 `match` expression, best (lowest) first."""
    columns = ", ".join(f"r.{c}" for c in RECORD_COLUMNS.split(", "))
    sql = (
        f"SELECT {columns}, bm25(knowledge_fts) AS bm25 FROM knowledge_fts "
        "JOIN records AS r ON r.id = knowledge_fts.rowid WHERE knowledge_fts MATCH ?"
    )
    params: list[Any] = [match]
    if domain is not None:
        sql += " AND r.domain = ?"
        params.append(domain)
    rows = conn.execute(sql + " ORDER BY bm25 LIMIT ?", (*params, k)).fetchall()
    return [(row_to_record(row), float(row["bm25"])) for row in rows]


def document_frequencies(conn: sqlite3.Connection, terms: Sequence[str]) -> dict[str, int]:
    counts = dict.fromkeys(terms, 0)
    for chunk in chunks(list(counts)):
        sql = f"SELECT term, doc FROM knowledge_vocab WHERE term IN ({marks(chunk)})"
        counts.update({row[0]: int(row[1]) for row in conn.execute(sql, tuple(chunk))})
    return counts


def supersede(conn: sqlite3.Connection, old_ids: Sequence[int], new_id: int, valid_to: str) -> None:
    for chunk in chunks(old_ids):
        conn.execute(
            f"UPDATE records SET superseded_by = ?, valid_to = ? WHERE id IN ({marks(chunk)})",
            (new_id, valid_to, *chunk),
        )


def set_adapter_version(conn: sqlite3.Connection, ids: Sequence[int], version: str | None) -> None:
    for chunk in chunks(ids):
        conn.execute(f"UPDATE records SET adapter_version = ? WHERE id IN ({marks(chunk)})", (version, *chunk))


def find_records(conn: sqlite3.Connection, *, kind: str | None, sources: Sequence[str] | None,
                 under: str | None, hashes: Sequence[str] | None, superseded_by: Sequence[int] | None,
                 subject: str | None, relation: str | None) -> list[Record]:
    """Records matching every given filter (None: no filter), current and historical, in id order.

    List filters are OR within themselves; `under` is a directory: sources strictly below it.
    """
    where: list[str] = []
    params: list[Any] = []
    if kind is not None:
        where.append("kind = ?")
        params.append(kind)
    if under is not None:
        # A range on the source index rather than LIKE, whose `%`/`_` would need escaping in paths.
        prefix = under.rstrip("/") + "/"
        where.append("source >= ? AND source < ?")
        params += [prefix, prefix[:-1] + "0"]  # '0' is the character after '/'
    for column, value in (("subject_key", fact_key(subject)), ("relation_key", fact_key(relation))):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    lists = sorted(((c, list(dict.fromkeys(v))) for c, v in
                    (("source", sources), ("content_hash", hashes), ("superseded_by", superseded_by))
                    if v is not None), key=lambda item: len(item[1]))
    if any(not values for _, values in lists):
        return []
    # The longest list is split into IN (...) chunks; the others are small in practice.
    column, values = lists.pop() if lists else ("", [])
    for c, v in lists:
        where.append(f"{c} IN ({marks(v)})")
        params += v
    found: dict[int, Record] = {}
    for chunk in chunks(values) if column else [()]:
        clause = [*where, f"{column} IN ({marks(chunk)})"] if column else where
        sql = f"SELECT {RECORD_COLUMNS} FROM records" + (f" WHERE {' AND '.join(clause)}" if clause else "")
        found.update((row["id"], row_to_record(row)) for row in conn.execute(sql, (*params, *chunk)))
    return [found[i] for i in sorted(found)]


def retire(conn: sqlite3.Connection, successors: dict[int, int | None], valid_to: str) -> None:
    """Set valid_to on each record and superseded_by to its successor (None: retired, no successor)."""
    conn.executemany(
        "UPDATE records SET valid_to = ?, superseded_by = ? WHERE id = ?",
        [(valid_to, new, old) for old, new in successors.items()],
    )


def restore(conn: sqlite3.Connection, ids: Sequence[int], moves: dict[int, tuple[str, str, int]]) -> None:
    """Make records current again and move some to another document (source, doc_id, position)."""
    conn.executemany("UPDATE records SET valid_to = NULL, superseded_by = NULL WHERE id = ?",
                     [(i,) for i in ids])
    conn.executemany("UPDATE records SET source = ?, doc_id = ?, position = ? WHERE id = ?",
                     [(*where, i) for i, where in moves.items()])


def delete_records(conn: sqlite3.Connection, ids: Sequence[int]) -> list[int]:
    """Delete records (FTS follows by trigger); returns the ids that existed.

    Records a deleted one had superseded point to its own successor instead (following the chain
    past other deleted records), or to nothing: their valid_to stays, so they stay out of the
    current memory rather than silently becoming current again.
    """
    doomed = set(fetch_records(conn, ids))
    if not doomed:
        return []
    successor: dict[int, int | None] = {}
    for chunk in chunks(sorted(doomed)):
        rows = conn.execute(f"SELECT id, superseded_by FROM records WHERE id IN ({marks(chunk)})", tuple(chunk))
        successor.update((row[0], row[1]) for row in rows)

    def survivor(record_id: int | None) -> int | None:
        seen: set[int] = set()
        while record_id is not None and record_id in doomed and record_id not in seen:
            seen.add(record_id)
            record_id = successor.get(record_id)
        return None if record_id in doomed else record_id

    for chunk in chunks(sorted(doomed)):
        rows = conn.execute(
            f"SELECT id, superseded_by FROM records WHERE superseded_by IN ({marks(chunk)})", tuple(chunk)
        ).fetchall()
        conn.executemany("UPDATE records SET superseded_by = ? WHERE id = ?",
                         [(survivor(row[1]), row[0]) for row in rows if row[0] not in doomed])
    order = sorted(doomed)
    # Referrers among the doomed are cleared first, so the deletes never trip the foreign key.
    for chunk in chunks(order):
        conn.execute(f"UPDATE records SET superseded_by = NULL WHERE id IN ({marks(chunk)})", tuple(chunk))
    for chunk in chunks(order):
        conn.execute(f"DELETE FROM records WHERE id IN ({marks(chunk)})", tuple(chunk))
    return order


def chunks(values: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))
