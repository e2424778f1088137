"""Memory backends: where a store's derived dense index lives. SQLite is the truth for all of them.

- `faiss`: one FAISS file per record kind in the store directory (embedded, the default).
- `milvus`: one Milvus collection per record kind, in milvus-lite (a local `.db` file served
  in-process) or on a Milvus server shared by several processes (see `milvus_index`).

A store records its backend in its meta at creation and refuses to open with another one; as
the dense index is derived from SQLite, `switch_backend` moves a store to another backend
without touching its records. This module imports neither faiss nor pymilvus.
"""

from __future__ import annotations

import shlex
import sys
import uuid
from pathlib import Path

from . import sqlite as db
from .errors import StoreError
from .lock import WriteLock

BACKENDS = ("faiss", "milvus")


def backend_mismatch(path: Path, built: str, requested: str) -> None:
    """StoreError if a store created with backend `built` is opened with `requested`."""
    if built != requested:
        raise StoreError(
            f"store at {path} was created with memory backend {built!r} but {requested!r} was requested; "
            f"set backend = \"{built}\" in kupdate.toml, or move the store to {requested!r} with "
            f"`python -m memory_store.backends {shlex.quote(str(path))} {requested}` (its records stay, "
            "its dense index is rebuilt from SQLite on the next open)"
        )


def switch_backend(path: str | Path, backend: str, *, lock_timeout: float = 30.0) -> str:
    """Record that the store at `path` now uses `backend`; returns the backend it had.

    Nothing is copied: the next `open_store(path, backend=backend, ...)` builds the new dense
    index from SQLite (logged as a rebuild). FAISS files are deleted when leaving `faiss`;
    Milvus collections (`kupdate_<store_id>_<kind>`) are left on the server for you to drop.
    """
    from .store import DB_NAME, LOCK_NAME  # here: store imports faiss

    if backend not in BACKENDS:
        raise StoreError(f"unknown memory backend {backend!r}; use one of {', '.join(BACKENDS)}")
    path = Path(path)
    if not (path / DB_NAME).exists():
        raise StoreError(f"no memory store at {path}; check the path")
    conn = db.connect(path / DB_NAME)
    try:
        with WriteLock(path / LOCK_NAME).hold(lock_timeout):
            if db.needs_migration(conn, path):
                db.migrate(conn, path)
            with db.transaction(conn):
                old = db.read_meta(conn, "backend") or "faiss"
                db.write_meta(conn, "backend", backend)
                if not db.read_meta(conn, "store_id"):  # stores from before store ids
                    db.write_meta(conn, "store_id", uuid.uuid4().hex)
            if old == "faiss" and backend != "faiss":
                for stale in path.glob("index-*.faiss"):
                    stale.unlink(missing_ok=True)
    finally:
        conn.close()
    return old


def main(argv: list[str] | None = None) -> int:
    """`python -m memory_store.backends STORE_DIR BACKEND`: switch_backend from a shell."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m memory_store.backends STORE_DIR {faiss,milvus}", file=sys.stderr)
        return 2
    try:
        old = switch_backend(args[0], args[1])
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args[0]}: backend {old} -> {args[1]}; the dense index is rebuilt from SQLite on the next open")
    return 0


if __name__ == "__main__":
    sys.exit(main())
