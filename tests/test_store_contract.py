"""The MemoryStore contract: every test here runs against every backend, on real storage and
tiny seeded vectors:

- faiss: FAISS index files in the store directory (the default);
- milvus: Milvus through its default uri, a milvus-lite file in the store directory;
- milvus-server: Milvus through a server URL (milvus-lite's gRPC server, one per session).

Backend-specific behaviour (FAISS files, Milvus uris and locking) is tested in test_store.py and
test_milvus_backend.py.
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import store_helpers
from milvus_helpers import drop_collections, needs_milvus
from store_helpers import EMBEDDER, knowledge

from memory_store import (
    FORMAT_VERSION,
    EmbedderMismatch,
    FormatVersionError,
    MemoryStore,
    Record,
    StoreError,
    StoreLocked,
    content_hash,
    open_store,
)

DIM = 12
REPO = Path(__file__).resolve().parents[1]
FLAVOURS = ["faiss", pytest.param("milvus", marks=needs_milvus), pytest.param("milvus-server", marks=needs_milvus)]


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    return store_helpers.unit(rng, n, dim)


@pytest.fixture(params=FLAVOURS)
def flavour(request) -> str:
    return request.param


@pytest.fixture
def backend(flavour) -> str:
    return flavour.split("-")[0]


@pytest.fixture
def uri(flavour, request) -> str | None:
    return request.getfixturevalue("milvus_server") if flavour == "milvus-server" else None


@pytest.fixture
def open_(backend, uri):
    """open_store with this test's backend and the test embedder unless told otherwise."""

    def opener(path: Path, **kw):
        kw.setdefault("dim", DIM)
        kw.setdefault("embedder", EMBEDDER)
        return open_store(path, backend=backend, uri=uri, **kw)

    return opener


@pytest.fixture
def store(open_, tmp_path):
    with open_(tmp_path / "kb") as s:
        yield s


def drop_dense_index(path: Path, backend: str, uri: str | None) -> None:
    """Lose the derived index the way an operator could: delete the files / drop the collections."""
    if backend == "faiss":
        files = list(path.glob("index-*.faiss"))
        assert files
        for f in files:
            f.unlink()
    else:
        assert len(drop_collections(path, uri)) == 2  # knowledge and exemplar


def store_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "memory_store" and r.levelno >= logging.WARNING]


# -- add, search, get ------------------------------------------------------------------------


def test_round_trip_add_search_get_count(store, rng):
    assert isinstance(store, MemoryStore)
    records, vecs = knowledge(20), unit(rng, 20)
    ids = store.add(records, vecs)
    assert len(ids) == 20 and len(set(ids)) == 20
    assert [r.id for r in records] == ids
    assert store.count() == store.count("knowledge") == 20 and store.count("exemplar") == 0

    # A slightly perturbed copy of vector 7 must find record 7 first, near cosine 1.
    query = vecs[7] + 0.01 * rng.standard_normal(DIM).astype(np.float32)
    hits = store.search(query * 5.0, k=3)  # not normalised: the store normalises defensively
    assert hits[0].record.id == ids[7]
    assert hits[0].record.text == "fact number 7 about topic7"
    assert hits[0].score == pytest.approx(1.0, abs=0.01)
    assert hits[0].score >= hits[1].score >= hits[2].score
    # Scores are cosines, whatever the backend.
    assert [h.score for h in hits] == pytest.approx([float(vecs[ids.index(h.record.id)] @ (query / np.linalg.norm(query)))
                                                     for h in hits], abs=1e-4)
    assert len(store.search(vecs[0], k=50)) == 20 and store.search(vecs[0], k=0) == []

    got = store.get([ids[3], 999_999, ids[1]])
    assert [r.text for r in got] == [records[3].text, records[1].text]
    assert got[0].source == "t.txt" and got[0].content_hash == content_hash(records[3].text)
    assert [r.id for r in store.records(kind="knowledge")] == sorted(ids)

    back = store.vectors([ids[5], ids[0]])
    assert back.shape == (2, DIM) and back.dtype == np.float32
    np.testing.assert_allclose(back, vecs[[5, 0]], atol=1e-6)
    assert store.vectors([]).shape == (0, DIM)
    with pytest.raises(ValueError, match="no records with ids"):
        store.vectors([ids[0], 999_999])


def test_empty_store_searches_return_nothing(store, rng):
    assert store.search(unit(rng, 1)[0], k=5) == []
    assert store.search(unit(rng, 1)[0], k=5, kind="exemplar", domain="x", as_of="2025-01-01") == []
    assert store.lexical_search("anything") == [] and store.count() == 0


def test_record_fields_survive_storage(store, rng):
    rec = Record(
        text="Alice works at Acme", kind="knowledge", domain="hr", doc_id="d1", position=4,
        observed_at="2025-01-02", valid_from="2025-01-01", subject="Alice", relation="works at",
        object="Acme", adapter_version="a1", meta={"lang": "en", "tags": ["x", 1]},
    )
    [rid] = store.add([rec], unit(rng, 1))
    [back] = store.get([rid])
    assert back == rec  # every field, meta JSON included, comes back equal


def test_duplicates_by_content_hash_are_skipped(store, rng):
    vecs = unit(rng, 3)
    first = store.add(
        [Record(text="Paris is in France"), Record(text="Paris   is in\nFrance"), Record(text="Rome")], vecs,
    )
    assert len(first) == 2  # the second differs only in whitespace: same content hash
    dup = Record(text="Paris is in France")
    again = store.add([dup, Record(text="Oslo")], unit(rng, 2))
    assert len(again) == 1 and dup.id == 0
    assert store.count() == 3
    # A skipped duplicate adds no second vector: its text comes back once.
    assert [h.record.text for h in store.search(vecs[0], k=10)].count("Paris is in France") == 1
    # The same text as another kind is a different memory.
    assert len(store.add([Record(text="Rome", kind="exemplar")], unit(rng, 1))) == 1
    assert store.existing_hashes([content_hash("Rome"), content_hash("Berlin")]) == {content_hash("Rome")}


def test_bad_vectors_are_rejected(store, rng):
    with pytest.raises(EmbedderMismatch, match="12 dims"):
        store.add(knowledge(2), unit(rng, 2, dim=DIM + 1))
    with pytest.raises(ValueError, match="2 records but 3 vectors"):
        store.add(knowledge(2), unit(rng, 3))
    with pytest.raises(EmbedderMismatch):
        store.search(unit(rng, 1, dim=4)[0])
    with pytest.raises(ValueError, match="NaN"):
        store.add(knowledge(1), np.full((1, DIM), np.nan, np.float32))
    assert store.count() == 0
    assert store.search(unit(rng, 1)[0]) == []  # nothing half-added to the dense index either


# -- persistence and the derived index -------------------------------------------------------


def test_reopen_persists(open_, tmp_path, rng):
    path, vecs = tmp_path / "kb", unit(rng, 10)
    with open_(path) as s:
        ids = s.add(knowledge(10), vecs)
        s.add([Record(text="an exemplar", kind="exemplar")], vecs[:1])
    with open_(path, create=False) as s:
        assert s.count() == 11 and s.count("exemplar") == 1
        assert s.search(vecs[4], k=1)[0].record.id == ids[4]
        assert s.search(vecs[0], k=5, kind="exemplar")[0].record.text == "an exemplar"
        assert [h.record.text for h in s.lexical_search("topic3")] == ["fact number 3 about topic3"]


def test_lost_dense_index_is_rebuilt_from_sqlite(open_, backend, uri, tmp_path, rng, caplog):
    path, vecs = tmp_path / "kb", unit(rng, 10)
    with open_(path) as s:
        ids = s.add(knowledge(10), vecs)
        s.add([Record(text="an exemplar", kind="exemplar")], vecs[:1])
    drop_dense_index(path, backend, uri)

    with caplog.at_level(logging.WARNING, logger="memory_store"):
        with open_(path) as s:
            assert [s.search(v, k=1)[0].record.id for v in vecs] == ids
            assert s.search(vecs[0], k=1, kind="exemplar")[0].record.text == "an exemplar"
    assert any("rebuilding" in m for m in store_warnings(caplog))
    # The rebuilt index was persisted: the next open is quiet.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="memory_store"):
        with open_(path) as s:
            assert s.search(vecs[2], k=1)[0].record.id == ids[2]
    assert store_warnings(caplog) == []


def test_index_out_of_sync_with_sqlite_is_rebuilt(open_, tmp_path, rng, caplog):
    path = tmp_path / "kb"
    vecs = unit(rng, 7)
    with open_(path) as s:
        ids = s.add(knowledge(6), vecs[:6])
    # Simulate crashes between a SQLite commit and the index update: a row the index lacks, and
    # a deleted row it still has.
    conn = sqlite3.connect(path / "store.sqlite")
    with conn:
        conn.execute(
            "INSERT INTO records (kind, text, content_hash, vector) VALUES ('knowledge', ?, ?, ?)",
            ("a late arrival", content_hash("a late arrival"), vecs[6].astype("<f4").tobytes()),
        )
        conn.execute("DELETE FROM records WHERE id = ?", (ids[0],))
    conn.close()
    with caplog.at_level(logging.WARNING, logger="memory_store"):
        with open_(path) as s:
            hit = s.search(vecs[6], k=1)[0]
            assert hit.record.text == "a late arrival" and hit.score == pytest.approx(1.0, abs=1e-5)
            assert [h.record.text for h in s.lexical_search("late arrival")] == ["a late arrival"]
            assert ids[0] not in [h.record.id for h in s.search(vecs[0], k=10)]
            assert len(s.search(vecs[0], k=10)) == 6
    assert any("out of sync" in m for m in store_warnings(caplog))


def test_additions_through_another_handle_are_seen_without_reopening(open_, tmp_path, rng):
    path = tmp_path / "kb"
    vecs = unit(rng, 2)
    with open_(path) as reader, open_(path) as writer:
        writer.add([Record(text="written elsewhere")], vecs[:1])
        assert reader.search(vecs[0], k=1)[0].record.text == "written elsewhere"
        reader.add([Record(text="then here")], vecs[1:])
        assert writer.search(vecs[1], k=1)[0].record.text == "then here"
        assert len(reader.search(vecs[0], k=5)) == 2  # each vector indexed once
    with open_(path) as s:
        assert s.count() == 2 and s.search(vecs[0], k=1)[0].record.text == "written elsewhere"


def test_embedder_or_dim_mismatch_raises_and_leaves_store_usable(open_, tmp_path, rng):
    path = tmp_path / "kb"
    vecs = unit(rng, 3)
    with open_(path) as s:
        ids = s.add(knowledge(3), vecs)

    with pytest.raises(EmbedderMismatch, match=r"'test-embedder' \(12 dims\) but 'other' \(768 dims\)"):
        open_(path, dim=768, embedder="other")
    with pytest.raises(EmbedderMismatch, match="open it with 'test-embedder'"):
        open_(path, dim=DIM + 4)

    with open_(path, dim=0, create=False) as s:  # dim=0: the stored width
        assert s.dim == DIM and s.search(vecs[0], k=1)[0].record.id == ids[0]
    with pytest.raises(EmbedderMismatch):
        open_(path, dim=0, embedder="other")
    with open_(path) as s:
        assert s.count() == 3 and s.search(vecs[1], k=1)[0].record.id == ids[1]
        assert s.get_meta("embedder") == EMBEDDER and s.get_meta("dim") == DIM
        assert s.get_meta("format_version") == FORMAT_VERSION


def test_missing_store_and_newer_format(open_, tmp_path):
    with pytest.raises(StoreError, match="no memory store at"):
        open_(tmp_path / "nowhere", create=False)
    assert not (tmp_path / "nowhere").exists()
    with pytest.raises(ValueError, match="dim=0"):
        open_(tmp_path / "nowhere", dim=0)

    path = tmp_path / "kb"
    open_(path).close()
    conn = sqlite3.connect(path / "store.sqlite")
    with conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'format_version'", (str(FORMAT_VERSION + 1),))
    conn.close()
    with pytest.raises(FormatVersionError, match="upgrade"):
        open_(path)


def test_backend_is_recorded_and_enforced(open_, backend, tmp_path):
    path = tmp_path / "kb"
    with open_(path) as s:
        assert s.get_meta("backend") == backend
        with pytest.raises(ValueError, match="managed by the store"):
            s.set_meta("backend", "other")
    other = "milvus" if backend == "faiss" else "faiss"
    with pytest.raises(StoreError, match=rf"created with memory backend '{backend}' but '{other}' was requested"):
        open_store(path, dim=DIM, embedder=EMBEDDER, backend=other)
    with pytest.raises(StoreError, match=r"unknown memory backend 'qdrant'; use one of faiss, milvus"):
        open_store(tmp_path / "kb2", dim=DIM, embedder=EMBEDDER, backend="qdrant")
    assert not (tmp_path / "kb2").exists()


# -- lexical search ---------------------------------------------------------------------------


def test_lexical_search_and_hostile_queries(store, rng):
    texts = [
        "The quokka is a small marsupial",
        "Marsupials live in Australia",
        "Kangaroos are marsupials too",
        "Python is a programming language",
    ]
    ids = store.add([Record(text=t) for t in texts], unit(rng, 4))
    store.add([Record(text="quokka exemplar", kind="exemplar")], unit(rng, 1))

    hits = store.lexical_search("Where does the QUOKKA live?")
    assert hits[0].record.id == ids[0]
    assert all(h.record.kind == "knowledge" for h in hits)
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    assert [h.record.id for h in store.lexical_search("quokka", k=5)] == [ids[0]]

    for hostile in ['"AND OR ( NEAR*', "NEAR(a b", "col:quokka", '"""', "a' OR 1=1; --", "^*-+"]:
        store.lexical_search(hostile)  # must not raise
    assert [h.record.id for h in store.lexical_search('"quokka" AND (')] == [ids[0]]
    assert store.lexical_search("") == [] and store.lexical_search("?! -- ()") == []
    assert store.count() == 5  # and nothing was dropped by the hostile ones


def test_lexical_search_domain_filter(store, rng):
    store.add(
        [Record(text="zebra stripes", domain="zoo"), Record(text="zebra crossing", domain="roads")],
        unit(rng, 2),
    )
    assert [h.record.text for h in store.lexical_search("zebra", domain="roads")] == ["zebra crossing"]


def test_document_frequencies(store, rng):
    texts = ["apple banana", "apple cherry", "Apple apple apple", "durian"]
    store.add([Record(text=t) for t in texts], unit(rng, 4))
    store.add([Record(text="apple exemplar", kind="exemplar")], unit(rng, 1))
    assert store.document_frequencies(["apple", "Banana", "durian", "mango"]) == {
        "apple": 3, "banana": 1, "durian": 1, "mango": 0,
    }


# -- time, kinds, domains --------------------------------------------------------------------


def test_supersede_find_facts_and_as_of(store, rng):
    v = unit(rng, 2)
    old = Record(text="The CEO of Acme is Bob", subject="Acme", relation="CEO", object="Bob",
                 valid_from="2020-01-01")
    new = Record(text="The CEO of Acme is Carol", subject="Acme", relation="CEO", object="Carol",
                 valid_from="2025-03-01")
    # Nearly the same vector: dense search alone cannot tell them apart.
    store.add([old], v[:1])
    store.add([new], v[:1] + 0.01 * v[1:])

    assert [r.object for r in store.find_facts("  acme ", "ceo")] == ["Bob", "Carol"]
    store.supersede([old.id], new.id, "2025-03-01")

    [kept] = store.get([old.id])
    assert kept.superseded_by == new.id and kept.valid_to == "2025-03-01"
    assert store.count() == 2
    assert [r.object for r in store.find_facts("ACME", "CEO")] == ["Carol"]

    def objects(as_of):
        return [h.record.object for h in store.search(v[0], k=5, as_of=as_of)]

    assert objects("2024-06-30") == ["Bob"]
    assert objects("2025-03-01") == ["Carol"]
    assert objects("2025-06-30T10:00:00") == ["Carol"]
    assert objects("2019-01-01") == []
    assert sorted(objects(None)) == ["Bob", "Carol"]  # without as_of, history is searchable

    with pytest.raises(ValueError, match="no records with ids"):
        store.supersede([123456], new.id, "2025-03-01")


def test_kind_and_domain_separation(store, rng):
    vecs = unit(rng, 30)
    exemplars = [Record(text=f"exemplar {i}", kind="exemplar") for i in range(10)]
    store.add(exemplars, vecs[:10])
    facts = [Record(text=f"fact {i}", domain="a" if i % 5 else "b") for i in range(20)]
    store.add(facts, vecs[10:])

    for i in range(10):  # querying with an exemplar's own vector still returns only knowledge
        hits = store.search(vecs[i], k=30)
        assert hits and all(h.record.kind == "knowledge" for h in hits)
    assert store.search(vecs[0], k=1, kind="exemplar")[0].record.id == exemplars[0].id
    assert len(store.search(vecs[0], k=30, kind="exemplar")) == 10
    with pytest.raises(ValueError, match="unknown record kind"):
        store.search(vecs[0], kind="nonsense")

    only_b = store.search(vecs[11], k=10, domain="b")
    assert sorted(h.record.text for h in only_b) == ["fact 0", "fact 10", "fact 15", "fact 5"]
    assert [r.text for r in store.records(kind="exemplar")] == [r.text for r in exemplars]

    # A small domain far from the query: the first over-fetch misses it, widening must not.
    many = unit(rng, 300)
    store.add([Record(text=f"filler {i}", domain="big") for i in range(300)], many)
    rare = [Record(text=f"rare {i}", domain="rare") for i in range(3)]
    store.add(rare, -many[:3])  # opposite of the query's neighbours: ranked last
    hits = store.search(many[0], k=3, domain="rare")
    assert sorted(h.record.text for h in hits) == ["rare 0", "rare 1", "rare 2"]
    assert len(list(store.records(domain="b"))) == 4


# -- meta and locking ------------------------------------------------------------------------


def test_meta_round_trip_and_reserved_keys(open_, tmp_path):
    path = tmp_path / "kb"
    with open_(path) as s:
        assert s.get_meta("config", default={}) == {}
        s.set_meta("config", {"gate": 0.5, "names": ["x"]})
        for reserved in ("dim", "embedder", "store_id"):
            with pytest.raises(ValueError, match="managed by the store"):
                s.set_meta(reserved, 3)
    with open_(path) as s:
        assert s.get_meta("config") == {"gate": 0.5, "names": ["x"]}
    with pytest.raises(StoreError, match="closed"):
        s.count()
    with pytest.raises(StoreError, match="closed"):
        s.search(np.ones(DIM, np.float32))


HOLD_LOCK = """
import sys
from memory_store.lock import WriteLock
lock = WriteLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
sys.stdin.readline()
lock.release()
"""


def test_write_lock_blocks_other_process_until_released(store, rng):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(store.path / "write.lock")],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        store.lock_timeout = 0.3
        with pytest.raises(StoreLocked, match=rf"another process \(pid {holder.pid}\)"):
            store.add(knowledge(1), unit(rng, 1))
        with pytest.raises(StoreLocked):
            store.set_meta("k", 1)
        assert store.count() == 0
        assert store.search(unit(rng, 1)[0]) == []  # readers are not blocked
    finally:
        holder.communicate("\n", timeout=10)
    assert holder.returncode == 0
    assert len(store.add(knowledge(1), unit(rng, 1))) == 1


def test_write_lock_is_reentrant(store, rng):
    with store.write_lock(), store.write_lock(timeout=0):
        store.add(knowledge(2), unit(rng, 2))
        store.set_meta("k", "v")
    assert store.count() == 2 and store.get_meta("k") == "v"


def test_rows_committed_but_never_indexed_are_found_by_an_open_store(store, rng):
    """A writer that crashed between its SQLite commit and its index update: readers catch up."""
    vecs = unit(rng, 3)
    store.add(knowledge(2), vecs[:2])
    conn = sqlite3.connect(store.path / "store.sqlite")
    with conn:
        conn.execute(
            "INSERT INTO records (kind, text, content_hash, vector) VALUES ('knowledge', ?, ?, ?)",
            ("committed, never indexed", content_hash("committed, never indexed"), vecs[2].astype("<f4").tobytes()),
        )
    conn.close()
    assert store.search(vecs[2], k=1)[0].record.text == "committed, never indexed"
    assert len(store.search(vecs[2], k=10)) == 3


def test_delete_removes_from_search_for_every_handle(open_, tmp_path, rng, caplog):
    path, vecs = tmp_path / "kb", unit(rng, 5)
    with open_(path) as s, open_(path) as other:
        ids = s.add(knowledge(5), vecs)
        assert other.search(vecs[1], k=1)[0].record.id == ids[1]
        assert s.delete([ids[1], 999_999]) == [ids[1]]
        assert ids[1] not in [h.record.id for h in s.search(vecs[1], k=5)]
        assert ids[1] not in [h.record.id for h in other.search(vecs[1], k=5)]
        assert s.count() == 4 and len(other.search(vecs[0], k=10)) == 4
    with caplog.at_level(logging.WARNING, logger="memory_store"):
        with open_(path) as s:
            assert len(s.search(vecs[0], k=10)) == 4 and s.get([ids[1]]) == []
    assert store_warnings(caplog) == []  # the index was kept in step: no rebuild


def test_reembed_replaces_the_vector_space(open_, tmp_path, rng, caplog):
    path, records = tmp_path / "kb", knowledge(5)
    with open_(path) as s:
        ids = s.add(records, unit(rng, 5))
        s.add([Record(text="an exemplar", kind="exemplar")], unit(rng, 1))
        table = dict(zip([r.text for r in records] + ["an exemplar"], unit(rng, 6, dim=8)))
        assert s.reembed(lambda texts: np.stack([table[t] for t in texts]), embedder="new", dim=8) == 6
        assert [s.search(table[r.text], k=1)[0].record.id for r in records] == ids
        assert s.search(table["an exemplar"], k=1, kind="exemplar")[0].score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(EmbedderMismatch):
        open_(path)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="memory_store"):
        with open_(path, dim=8, embedder="new") as s:
            assert s.search(table[records[2].text], k=1)[0].record.id == ids[2]
            assert len(s.search(table[records[2].text], k=10)) == 5
    assert store_warnings(caplog) == []
