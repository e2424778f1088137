"""Test helpers for the Milvus backend (the session's Milvus server is conftest's `milvus_server`)."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from pathlib import Path

import pytest

HAVE_MILVUS = all(importlib.util.find_spec(m) is not None for m in ("pymilvus", "milvus_lite"))
needs_milvus = pytest.mark.skipif(not HAVE_MILVUS, reason="pip install pymilvus milvus-lite")


def store_id(path: Path) -> str:
    conn = sqlite3.connect(path / "store.sqlite")
    try:
        return json.loads(conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()[0])
    finally:
        conn.close()


def drop_collections(path: Path, uri: str | None) -> list[str]:
    """Drop the Milvus collections of the store at `path` (uri None: its milvus-lite file)."""
    from milvus_lite.server_manager import server_manager_instance
    from pymilvus import MilvusClient

    local = uri is None
    uri = str(path / "milvus.db") if local else uri
    client = MilvusClient(uri, dedicated=True)
    try:
        names = [n for n in client.list_collections() if n.startswith(f"kupdate_{store_id(path)}_")]
        for name in names:
            client.drop_collection(name)
    finally:
        client.close()
        if local:
            server_manager_instance.release_server(uri)
    return names
