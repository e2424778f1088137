"""SQLite layer: schema, numbered migrations and Record <-> row conversion.

SQLite is the source of truth of a store: every record, its metadata and its vector live here.
The FAISS files are derived from it and can always be rebuilt (see `faiss_index`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
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

