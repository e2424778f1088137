"""SQLite layer: schema, numbered migrations and Record <-> row conversion.

SQLite is the source of truth of a store: every record, its metadata and its vector live here.
The FAISS files are derived from it and can always be rebuilt (see `faiss_index`).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FormatVersionError, StoreError
from .records import Record

#: Version of the on-disk format as a whole (meta key `format_version`). Bump it when a
#: store written by this code can no longer be read by older code.
FORMAT_VERSION = 1

#: Waited on SQLite's own locks (a concurrent reader checkpointing, a writer committing).
BUSY_TIMEOUT_MS = 10_000

# Migration N (1-based) brings `PRAGMA user_version` from N-1 to N. Never edit a released
# entry: append a new one, because stores in the wild have already run the old ones.
MIGRATIONS: list[str] = [
    # 1: initial schema.
    """
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL          -- JSON text (a column typed JSON would get NUMERIC affinity)
    );

    -- No CHECK on kind: new kinds should not need a table rebuild; Record validates kinds.
    CREATE TABLE records (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,  -- ids are never reused: FAISS keys on them
        kind            TEXT    NOT NULL,
        text            TEXT    NOT NULL,
        source          TEXT    NOT NULL DEFAULT '',
        domain          TEXT    NOT NULL DEFAULT 'default',
        doc_id          TEXT    NOT NULL DEFAULT '',
        position        INTEGER NOT NULL DEFAULT 0,
        observed_at     TEXT    NOT NULL DEFAULT '',
        valid_from      TEXT    NOT NULL DEFAULT '',
        valid_to        TEXT,
        superseded_by   INTEGER REFERENCES records(id),
        adapter_version TEXT,
        subject         TEXT,
        relation        TEXT,
        object          TEXT,
        meta            TEXT    NOT NULL DEFAULT '{}',      -- JSON object
        content_hash    TEXT    NOT NULL,
        vector          BLOB    NOT NULL,                   -- float32, L2-normalised, `dim` values
        subject_key     TEXT,                               -- casefolded, whitespace-collapsed subject
        relation_key    TEXT,
        UNIQUE (kind, content_hash)
    );
    -- (kind, rowid): makes MAX(id) per kind a seek, which the index freshness check runs often.
    CREATE INDEX records_kind ON records(kind);
    CREATE INDEX records_kind_domain ON records(kind, domain);
    CREATE INDEX records_fact ON records(subject_key, relation_key) WHERE kind = 'knowledge';

    -- Full-text search over knowledge only. The content is a view so that even an FTS
    -- 'rebuild' can never pull exemplar text into the index.
    CREATE VIEW knowledge_text AS SELECT id, text FROM records WHERE kind = 'knowledge';
    CREATE VIRTUAL TABLE knowledge_fts USING fts5(text, content='knowledge_text', content_rowid='id');
    CREATE VIRTUAL TABLE knowledge_vocab USING fts5vocab(knowledge_fts, 'row');

    CREATE TRIGGER records_fts_insert AFTER INSERT ON records WHEN new.kind = 'knowledge' BEGIN
        INSERT INTO knowledge_fts(rowid, text) VALUES (new.id, new.text);
    END;
    CREATE TRIGGER records_fts_delete AFTER DELETE ON records WHEN old.kind = 'knowledge' BEGIN
        INSERT INTO knowledge_fts(knowledge_fts, rowid, text) VALUES ('delete', old.id, old.text);
    END;
    CREATE TRIGGER records_fts_update AFTER UPDATE OF text, kind ON records BEGIN
        INSERT INTO knowledge_fts(knowledge_fts, rowid, text)
            SELECT 'delete', old.id, old.text WHERE old.kind = 'knowledge';
        INSERT INTO knowledge_fts(rowid, text) SELECT new.id, new.text WHERE new.kind = 'knowledge';
    END;
    """,
    # 2: lookups by document (re-ingest of a changed file, --prune, forget --source) and by
    # successor (history, and the foreign-key check that deleting a record runs on every row).
    """
    CREATE INDEX records_source ON records(source);
    CREATE INDEX records_superseded_by ON records(superseded_by) WHERE superseded_by IS NOT NULL;
    """,
]

# Record fields stored as plain columns, in Record's order (meta and id handled separately).
_PLAIN_FIELDS = (
    "text", "source", "kind", "domain", "doc_id", "position", "observed_at", "valid_from",
    "valid_to", "superseded_by", "adapter_version", "subject", "relation", "object",
)
_INSERT_COLUMNS = (*_PLAIN_FIELDS, "meta", "content_hash", "vector", "subject_key", "relation_key")
INSERT_SQL = (
    f"INSERT INTO records ({', '.join(_INSERT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_INSERT_COLUMNS))}) "
    "ON CONFLICT (kind, content_hash) DO NOTHING"
)
#: Columns to select to build a Record (everything but the vector and the lookup keys).
RECORD_COLUMNS = ", ".join(("id", *_PLAIN_FIELDS, "meta", "content_hash"))

# FTS5 query syntax has quotes, operators, NEAR, column filters, `*`...; user text keeps only
# its word characters (no `_`: unicode61 separates on it), each token quoted as a plain string.
_TOKEN = re.compile(r"[^\W_]+")

#: Larger IN (...) lists are split: old SQLite builds allow only 999 bound parameters.
CHUNK = 900


def connect(path: Path) -> sqlite3.Connection:
    """Open the database in autocommit mode (transactions are explicit) with WAL and a busy timeout."""
    try:
        conn = sqlite3.connect(
            str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # WAL lets readers in other processes search while a writer adds.
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL is safe from corruption in WAL mode; a power cut may lose the last commit,
        # and the FAISS consistency check on open then rebuilds the index to match.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as exc:
        raise StoreError(
            f"cannot open SQLite database {path}: {exc}; check the file is a memory store and not damaged"
        ) from exc
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def needs_migration(conn: sqlite3.Connection, path: Path) -> bool:
    """True if migrations are pending; FormatVersionError if the schema is newer than this code."""
    version = schema_version(conn)
    if version > len(MIGRATIONS):
        raise FormatVersionError(
            f"store at {path} has schema version {version} but this code knows up to "
            f"{len(MIGRATIONS)}; upgrade kupdate to open it"
        )
    return version < len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Run the pending migrations, each in its own transaction with its user_version bump."""
    for number in range(schema_version(conn) + 1, len(MIGRATIONS) + 1):
        script = MIGRATIONS[number - 1]
        try:
            # user_version lives in the database header and is part of the transaction, so a
            # failed migration leaves neither half a schema nor a wrong version behind.
            conn.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(
                f"migration {number} of the store at {path} failed: {exc}; "
                "check that this SQLite has FTS5 and the disk is writable"
            ) from exc


def fact_key(value: str | None) -> str | None:
    """Case- and whitespace-insensitive key for subject/relation lookups."""
    return None if value is None else " ".join(value.split()).casefold()


def record_params(record: Record, vector: np.ndarray) -> tuple[Any, ...]:
    """Bound parameters of INSERT_SQL for one record and its (normalised float32) vector."""
    try:
        meta = json.dumps(record.meta, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"meta of record {record.text[:40]!r} is not JSON-serialisable: {exc}") from exc
    return (
        *(getattr(record, name) for name in _PLAIN_FIELDS),
        meta,
        record.content_hash,
        np.ascontiguousarray(vector, dtype="<f4").tobytes(),
        fact_key(record.subject),
        fact_key(record.relation),
    )


def row_to_record(row: sqlite3.Row) -> Record:
    """Build a Record from a row selected with RECORD_COLUMNS."""
    fields = {name: row[name] for name in _PLAIN_FIELDS}
    return Record(**fields, meta=json.loads(row["meta"]), id=row["id"], content_hash=row["content_hash"])


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



# -- re-embedding: new vectors wait in a temporary table (private to the connection, gone if the
# process dies) and replace the old ones in one UPDATE, so a store never mixes the two.


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

def chunks(values: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))
