"""Milvus-specific behaviour of the store: uris, tokens, milvus-lite's one-process rule, index
types, the search-limit fallback and moving a store between backends. Shared behaviour is in
test_store_contract.py."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from milvus_helpers import needs_milvus

from memory_store import Record, StoreError, StoreLocked, open_store
from memory_store.backends import switch_backend
from memory_store.milvus_index import TOKEN_ENV, display_uri, resolve_uri

pytestmark = needs_milvus

DIM = 16
EMBEDDER = "test-embedder"
REPO = Path(__file__).resolve().parents[1]


def clustered(n: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((10, DIM))
    v = centres[rng.integers(0, 10, n)] + 0.5 * rng.standard_normal((n, DIM))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def records(n: int, start: int = 0, **kw) -> list[Record]:
    return [Record(text=f"record {i}", **kw) for i in range(start, start + n)]


def milvus(path: Path, **kw):
    return open_store(path, dim=DIM, embedder=EMBEDDER, backend="milvus", **kw)


def test_uri_forms(tmp_path):
    store = tmp_path / "kb"
    assert resolve_uri(store, None) == (str(store / "milvus.db"), True)
    assert resolve_uri(store, "vectors.db") == (str(store / "vectors.db"), True)  # relative to the store
    assert resolve_uri(store, "/srv/m.db") == ("/srv/m.db", True)
    assert resolve_uri(store, "http://milvus:19530") == ("http://milvus:19530", False)
    assert resolve_uri(store, "https://u:secret@cloud.example:443/db1")[1] is False
    with pytest.raises(StoreError, match="neither a server URL .* nor a milvus-lite file ending in .db"):
        resolve_uri(store, "/srv/milvus-data")
    assert display_uri("https://u:secret@cloud.example:443/db1") == "https://cloud.example:443/db1"
    assert display_uri("http://milvus:19530") == "http://milvus:19530"


def test_server_uri_gets_the_token_and_errors_hide_it(tmp_path, monkeypatch):
    import pymilvus

    seen = {}

    class Refusing:
        def __init__(self, uri, token="", **kw):
            seen.update(uri=uri, token=token)
            raise pymilvus.MilvusException(message="server unavailable")

    monkeypatch.setattr(pymilvus, "MilvusClient", Refusing)
    monkeypatch.setenv(TOKEN_ENV, "root:Milvus")
    with pytest.raises(StoreError, match=r"cannot connect to Milvus at http://milvus.example:19530 "
                                         r"\(server unavailable\); check the server") as err:
        milvus(tmp_path / "kb", uri="http://admin:pw@milvus.example:19530")
    assert seen == {"uri": "http://admin:pw@milvus.example:19530", "token": "root:Milvus"}
    assert "pw" not in str(err.value) and "root:Milvus" not in str(err.value)


def test_unreachable_server_is_one_clear_error(tmp_path):
    with pytest.raises(StoreError, match=r"cannot connect to Milvus at http://127.0.0.1:9 .*\[memory\] uri"):
        milvus(tmp_path / "kb", uri="http://127.0.0.1:9")


def test_missing_pymilvus_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pymilvus", None)  # import pymilvus -> ImportError
    with pytest.raises(StoreError, match="pip install pymilvus milvus-lite"):
        milvus(tmp_path / "kb")


def test_importing_the_package_loads_neither_faiss_nor_pymilvus():
    code = ("import sys, memory_store, memory_store.backends; "
            "print(sorted(m for m in ('faiss', 'pymilvus', 'milvus_lite') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


HOLD_STORE = """
import sys
from memory_store import open_store
store = open_store(sys.argv[1], dim=16, embedder="test-embedder", backend="milvus")
print("open", flush=True)
sys.stdin.readline()
store.close()
print("closed", flush=True)
sys.stdin.readline()
"""


def test_milvus_lite_file_serves_one_process_at_a_time(tmp_path):
    path = tmp_path / "kb"
    milvus(path).close()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_STORE, str(path)], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(StoreLocked, match=r"milvus-lite file .*milvus.db is open in another process.*"
                                              r"run a Milvus server"):
            milvus(path)
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "closed"
        with milvus(path) as s:  # closing the store released the file, though its process lives on
            assert s.count() == 0
    finally:
        holder.communicate("\n", timeout=30)
    assert holder.returncode == 0


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_index_types_are_built_searched_and_survive_reopen(tmp_path, kind, caplog):
    vecs, path = clustered(300), tmp_path / "kb"
    with milvus(path, index=kind) as s:
        ids = s.add(records(300), vecs)
        assert s.index_type() == kind
        assert all(s.search(vecs[i], k=5)[0].record.id == ids[i] for i in range(0, 300, 13))
    with caplog.at_level(logging.INFO, logger="memory_store"):
        with milvus(path, index=kind) as s:
            assert s.index_type() == kind and s.search(vecs[7], k=1)[0].record.id == ids[7]
    assert not [r for r in caplog.records if r.name == "memory_store" and "switching" in r.getMessage()]


def test_auto_switches_to_hnsw_above_the_threshold(tmp_path, caplog):
    vecs, path = clustered(200), tmp_path / "kb"
    with milvus(path, approximate_above=50) as s:
        ids = s.add(records(40), vecs[:40])
        assert s.index_type() == "flat"
        with caplog.at_level(logging.INFO, logger="memory_store"):
            ids += s.add(records(160, 40), vecs[40:])
        assert s.index_type() == "hnsw" and s.index_type("exemplar") == "flat"
        assert any("switching from flat to hnsw" in r.getMessage() for r in caplog.records)
        assert all(s.search(vecs[i], k=5)[0].record.id == ids[i] for i in range(0, 200, 7))
    # Asking for exact search again re-indexes on open.
    with milvus(path, index="flat") as s:
        assert s.index_type() == "flat" and s.search(vecs[3], k=1)[0].record.id == ids[3]


def test_filtered_search_past_milvus_limit_scans_sqlite(tmp_path, monkeypatch):
    from memory_store import milvus_index

    monkeypatch.setattr(milvus_index, "MAX_TOPK", 8)  # Milvus's real limit is 16384
    vecs = clustered(60)
    with milvus(tmp_path / "kb") as s:
        s.add(records(57, domain="big"), vecs[:57])
        rare = s.add(records(3, 57, domain="rare"), -vecs[:3])  # ranked last for a query near vecs[0]
        hits = s.search(vecs[0], k=3, domain="rare")
        assert sorted(h.record.id for h in hits) == sorted(rare)
        assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
        assert [h.record.id for h in s.search(vecs[5], k=20)][:1] == [s.search(vecs[5], k=1)[0].record.id]


def test_switch_backend_moves_a_store_without_touching_records(tmp_path, caplog):
    path, vecs = tmp_path / "kb", clustered(5)
    with open_store(path, dim=DIM, embedder=EMBEDDER) as s:
        ids = s.add(records(5), vecs)
    assert switch_backend(path, "milvus") == "faiss"
    assert not list(path.glob("index-*.faiss"))
    with pytest.raises(StoreError, match="backend 'milvus' but 'faiss' was requested"):
        open_store(path, dim=DIM, embedder=EMBEDDER)
    with caplog.at_level(logging.WARNING, logger="memory_store"):
        with milvus(path) as s:
            assert [s.search(v, k=1)[0].record.id for v in vecs] == ids
    assert any("rebuilding" in r.getMessage() for r in caplog.records)
    with pytest.raises(StoreError, match=r"python -m memory_store.backends .*kb faiss"):
        open_store(path, dim=DIM, embedder=EMBEDDER)
    done = subprocess.run([sys.executable, "-m", "memory_store.backends", str(path), "faiss"], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0 and "backend milvus -> faiss" in done.stdout
    with open_store(path, dim=DIM, embedder=EMBEDDER) as s:
        assert s.search(vecs[2], k=1)[0].record.id == ids[2]
    with pytest.raises(StoreError, match="unknown memory backend"):
        switch_backend(path, "chroma")


WRITE_ELSEWHERE = """
import sys
import numpy as np
from memory_store import Record, open_store
vector = np.array([float(x) for x in sys.argv[3].split(",")], dtype=np.float32)
with open_store(sys.argv[1], dim=16, embedder="test-embedder", backend="milvus", uri=sys.argv[2]) as s:
    print(s.add([Record(text="from another process")], vector[None, :])[0])
"""


def test_processes_share_one_memory_through_a_server(tmp_path, milvus_server):
    path, vecs = tmp_path / "kb", clustered(3)
    with milvus(path, uri=milvus_server) as s:
        s.add(records(2), vecs[:2])
        assert not (path / "milvus.db").exists()  # nothing local but SQLite
        done = subprocess.run(
            [sys.executable, "-c", WRITE_ELSEWHERE, str(path), milvus_server, ",".join(map(str, vecs[2]))],
            cwd=REPO, capture_output=True, text=True, check=True,
        )
        hit = s.search(vecs[2], k=1)[0]
        assert hit.record.id == int(done.stdout) and hit.record.text == "from another process"
        assert len(s.search(vecs[0], k=10)) == 3  # indexed once: this process's catch-up added nothing


def test_records_added_while_milvus_fails_are_indexed_once_it_is_back(tmp_path, monkeypatch):
    from pymilvus import MilvusException

    from memory_store.milvus_index import MilvusIndex

    vecs, upsert = clustered(3), MilvusIndex._upsert
    with milvus(tmp_path / "kb") as s:
        s.add(records(1), vecs[:1])

        def unavailable(self, ids, vectors):
            raise MilvusException(message="server unavailable")

        monkeypatch.setattr(MilvusIndex, "_upsert", unavailable)
        with pytest.raises(StoreError, match=r"adding 2 vectors to .* failed \(server unavailable\); check the server"):
            s.add(records(2, 1), vecs[1:])
        assert s.count() == 3  # safe in SQLite
        monkeypatch.setattr(MilvusIndex, "_upsert", upsert)
        assert s.search(vecs[2], k=1)[0].record.text == "record 2"
        assert len(s.search(vecs[0], k=10)) == 3
