"""FAISS-specific tests of memory_store (index files on disk), on tiny seeded vectors.

Behaviour every backend shares is tested once per backend in test_store_contract.py.
"""

from __future__ import annotations

import logging
import sqlite3

import numpy as np
import pytest
import store_helpers
from store_helpers import EMBEDDER, knowledge

from memory_store import EmbedderMismatch, StoreError, open_store

DIM = 12


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    return store_helpers.unit(rng, n, dim)


def test_reopen_persists_and_rebuilds_damaged_index(tmp_path, rng, caplog):
    path = tmp_path / "kb"
    vecs = unit(rng, 10)
    with open_store(path, dim=DIM, embedder=EMBEDDER) as s:
        ids = s.add(knowledge(10), vecs)
    index_file = path / "index-knowledge.faiss"
    assert index_file.exists()

    with open_store(path, dim=DIM, embedder=EMBEDDER, create=False) as s:
        assert s.count() == 10 and s.search(vecs[4], k=1)[0].record.id == ids[4]

    for damage in (index_file.unlink, lambda: index_file.write_bytes(b"not a faiss index" * 7)):
        damage()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="memory_store"):
            with open_store(path, dim=DIM, embedder=EMBEDDER) as s:
                assert s.search(vecs[2], k=1)[0].record.id == ids[2]
        assert any("rebuilding" in r.getMessage() for r in caplog.records)
        assert index_file.exists()
        # The rebuilt file was persisted: the next open is quiet.
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="memory_store"):
            open_store(path, dim=DIM, embedder=EMBEDDER).close()
        assert not caplog.records


def test_refused_open_leaves_index_files_untouched(tmp_path, rng):
    path = tmp_path / "kb"
    with open_store(path, dim=DIM, embedder=EMBEDDER) as s:
        s.add(knowledge(3), unit(rng, 3))
    before = {p.name: p.read_bytes() for p in path.glob("index-*.faiss")}
    assert before
    with pytest.raises(EmbedderMismatch):
        open_store(path, dim=768, embedder="other")
    with pytest.raises(StoreError, match="backend 'faiss' but 'milvus'"):
        open_store(path, dim=DIM, embedder=EMBEDDER, backend="milvus")
    assert {p.name: p.read_bytes() for p in path.glob("index-*.faiss")} == before


def test_store_from_before_backends_were_recorded_is_a_faiss_store(tmp_path, rng):
    path, vecs = tmp_path / "kb", unit(rng, 2)
    with open_store(path, dim=DIM, embedder=EMBEDDER) as s:
        ids = s.add(knowledge(2), vecs)
    conn = sqlite3.connect(path / "store.sqlite")
    with conn:
        conn.execute("DELETE FROM meta WHERE key IN ('backend', 'store_id')")
    conn.close()
    with open_store(path, dim=DIM, embedder=EMBEDDER) as s:
        assert s.search(vecs[1], k=1)[0].record.id == ids[1]
    with pytest.raises(StoreError, match="created with memory backend 'faiss'"):
        open_store(path, dim=DIM, embedder=EMBEDDER, backend="milvus")
