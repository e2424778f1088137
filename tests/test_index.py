"""Dense index types (flat, HNSW, IVF), switching, deletes, `reindex`, and the memory benchmark."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from memory_store import Record, open_store
from memory_store.faiss_index import DenseIndex, index_path
from memory_store.index_types import IndexOptions

DIM = 16
EMBEDDER = "test-embedder"
REPO = Path(__file__).resolve().parents[1]
TYPES = ["flat", "hnsw", "ivf"]


def clustered(n: int, seed: int = 7, dim: int = DIM) -> np.ndarray:
    """Unit vectors around 10 centres: IVF has clusters to find, and neighbours are not noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((10, dim))
    v = centres[rng.integers(0, 10, n)] + 0.5 * rng.standard_normal((n, dim))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def records(n: int, start: int = 0) -> list[Record]:
    return [Record(text=f"record {i}", source="t.txt") for i in range(start, start + n)]


def top(store, vector: np.ndarray) -> int:
    return store.search(vector, k=5)[0].record.id


def test_auto_switches_to_hnsw_above_the_threshold(tmp_path, caplog):
    vecs = clustered(200)
    with open_store(tmp_path / "kb", dim=DIM, embedder=EMBEDDER, approximate_above=50) as s:
        ids = s.add(records(40), vecs[:40])
        assert s.index_type() == "flat"
        with caplog.at_level(logging.INFO, logger="memory_store"):
            ids += s.add(records(160, 40), vecs[40:])
        assert s.index_type() == "hnsw" and s.index_type("exemplar") == "flat"
        assert any("switching from flat to hnsw" in r.getMessage() for r in caplog.records)
        # Each stored vector still finds its own record first, as it did with exact search.
        assert all(top(s, vecs[i]) == ids[i] for i in range(0, 200, 7))
        assert len(s.search(vecs[0], k=10)) == 10


@pytest.mark.parametrize("kind", TYPES)
def test_forced_type_is_built_searched_and_survives_reopen(tmp_path, kind, caplog):
    vecs, path = clustered(200), tmp_path / "kb"
    with open_store(path, dim=DIM, embedder=EMBEDDER, index=kind) as s:
        ids = s.add(records(200), vecs)
        assert s.index_type() == kind
        assert all(top(s, vecs[i]) == ids[i] for i in range(0, 200, 11))
    saved = index_path(path, "knowledge").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="memory_store"):
        with open_store(path, dim=DIM, embedder=EMBEDDER, index=kind) as s:
            assert s.index_type() == kind and s.count() == 200
            assert top(s, vecs[3]) == ids[3]
    assert not caplog.records, "a file of the wanted type must load as is, without a rebuild"
    assert index_path(path, "knowledge").stat().st_mtime_ns == saved


def test_asking_for_another_type_rebuilds_on_open(tmp_path, caplog):
    vecs, path = clustered(200), tmp_path / "kb"
    with open_store(path, dim=DIM, embedder=EMBEDDER, index="flat") as s:
        ids = s.add(records(200), vecs)
    with caplog.at_level(logging.INFO, logger="memory_store"):
        with open_store(path, dim=DIM, embedder=EMBEDDER, index="ivf") as s:
            assert s.index_type() == "ivf" and top(s, vecs[9]) == ids[9]
    assert any("switching from flat to ivf" in r.getMessage() for r in caplog.records)
    # Auto with the threshold above the size goes back to exact search.
    with open_store(path, dim=DIM, embedder=EMBEDDER, index="auto") as s:
        assert s.index_type() == "flat"


def test_ivf_waits_for_enough_vectors_to_train(tmp_path):
    vecs = clustered(100)
    with open_store(tmp_path / "kb", dim=DIM, embedder=EMBEDDER, index="ivf") as s:
        ids = s.add(records(20), vecs[:20])
        assert s.index_type() == "flat"  # 20 vectors cannot train even one list
        ids += s.add(records(80, 20), vecs[20:])
        assert s.index_type() == "ivf" and top(s, vecs[50]) == ids[50]


def test_bad_index_option_is_refused(tmp_path):
    with pytest.raises(ValueError, match="index must be one of"):
        open_store(tmp_path / "kb", dim=DIM, embedder=EMBEDDER, index="annoy")


def array_source(ids: np.ndarray, vecs: np.ndarray, live: set[int] | None = None):
    """A VectorSource over arrays; `live` stands for what SQLite still holds after deletes."""

    def source(after: int):
        keep = (ids > after) & np.array([live is None or int(i) in live for i in ids])
        for start in range(0, int(keep.sum()), 64):
            yield ids[keep][start : start + 64], vecs[keep][start : start + 64]

    return source


@pytest.mark.parametrize("kind", TYPES)
def test_deleted_ids_never_come_back_and_stay_deleted_after_reload(tmp_path, kind):
    vecs = clustered(300)
    ids = np.arange(1, 301, dtype=np.int64) * 2
    live = {int(i) for i in ids}
    path = tmp_path / "index-knowledge.faiss"
    index, _ = DenseIndex.open(path, DIM, count=300, max_id=600, source=array_source(ids, vecs, live),
                               options=IndexOptions(kind))
    assert index.type == kind
    gone = ids[10:20]
    live -= {int(i) for i in gone}
    assert index.remove_ids(gone) == 10 and index.remove_ids(gone) == 0
    assert index.ntotal == 290
    for row in range(10, 20):
        _, found = index.search(vecs[row], 20)
        assert not set(found.tolist()) & set(gone.tolist())
    _, found = index.search(vecs[30], 1)
    assert found[0] == ids[30]
    index.save()
    again, rebuilt = DenseIndex.open(path, DIM, count=290, max_id=600, source=array_source(ids, vecs, live),
                                     options=IndexOptions(kind))
    assert not rebuilt and again.type == kind and again.ntotal == 290
    _, found = again.search(vecs[15], 290)
    assert len(found) == 290 and not set(found.tolist()) & set(gone.tolist())


def test_hnsw_is_compacted_from_sqlite_after_many_deletes(tmp_path, caplog):
    vecs = clustered(100)
    ids = np.arange(1, 101, dtype=np.int64)
    live = set(ids.tolist())
    index, _ = DenseIndex.open(tmp_path / "i.faiss", DIM, count=100, max_id=100,
                               source=array_source(ids, vecs, live), options=IndexOptions("hnsw"))
    live -= set(range(1, 31))
    with caplog.at_level(logging.INFO, logger="memory_store"):
        assert index.remove_ids(range(1, 31)) == 30
    assert any("compacting" in r.getMessage() for r in caplog.records)
    assert index.dead == 0 and index.cpu.ntotal == 70 and index.type == "hnsw"


# -- reindex ---------------------------------------------------------------------------------


def ingest_some(kb, folder: Path) -> None:
    from conftest import doc

    doc(folder, "a.md", "2024-01-01", "Brindlemoor Robotics is led by Ada Quill. It builds harvest drones.")
    doc(folder, "b.md", "2024-02-01", "Morrowgate Ltd has its headquarters in Port Ellery.")
    kb.ingest([folder])


def test_reindex_switches_embedder_vectors_config_and_gate(tiny_kb, tmp_path):
    from kupdate import KnowledgeBase
    from kupdate.models import load_embedder

    ingest_some(tiny_kb, tmp_path / "docs")
    store, n = tiny_kb.store, tiny_kb.store.count()
    report = tiny_kb.reindex("hashing-128")
    assert (report.records, report.embedder_before, report.dim_before) == (n, "hashing", 384)
    assert (report.embedder, report.dim, store.dim) == ("hashing-128", 128, 128)
    assert report.gate["threshold"] == tiny_kb.threshold()
    records = list(store.records())
    new = load_embedder("hashing-128").encode([r.text for r in records])
    np.testing.assert_allclose(store.vectors([r.id for r in records]), new, atol=1e-6)
    assert tiny_kb.search("Who leads Brindlemoor Robotics?")[0].record.source.endswith("a.md")
    tiny_kb.close()
    assert 'embedder = "hashing-128"' in (tiny_kb.path / "kupdate.toml").read_text()
    with KnowledgeBase.open(tiny_kb.path) as kb:
        assert kb.store.embedder == "hashing-128" and kb.store.count() == n
        assert kb.search("Morrowgate headquarters")[0].record.source.endswith("b.md")


def test_interrupted_reindex_leaves_the_old_vectors_and_embedder(tiny_kb, tmp_path, monkeypatch):
    from kupdate import KnowledgeBase
    from kupdate.models.embedder import HashingEmbedder

    ingest_some(tiny_kb, tmp_path / "docs")
    tiny_kb.config.ingest.batch_size = 2  # several batches, so the failure comes half-way
    store = tiny_kb.store
    ids = [r.id for r in store.records()]
    before = store.vectors(ids)
    calls = 0
    real = HashingEmbedder.encode

    def failing(self, texts, **kw):
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt  # as if the user hit Ctrl-C mid-way
        return real(self, texts, **kw)

    monkeypatch.setattr(HashingEmbedder, "encode", failing)
    with pytest.raises(KeyboardInterrupt):
        tiny_kb.reindex("hashing-128")
    assert (store.embedder, store.dim) == ("hashing", 384)
    np.testing.assert_array_equal(store.vectors(ids), before)
    tiny_kb.close()
    monkeypatch.setattr(HashingEmbedder, "encode", real)
    with KnowledgeBase.open(tiny_kb.path) as kb:
        assert kb.config.embedder == "hashing" and kb.store.dim == 384
        assert kb.search("Who leads Brindlemoor Robotics?")[0].record.source.endswith("a.md")


def test_reindex_cli_json(tiny_kb, tmp_path, capsys):
    from kupdate.cli.main import run

    ingest_some(tiny_kb, tmp_path / "docs")
    path = str(tiny_kb.path)
    tiny_kb.close()
    assert run(["reindex", "--kb", path, "--embedder", "hashing-128", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["embedder"] == "hashing-128" and out["dim"] == 128 and out["records"] > 6
    # Same embedder again: vectors rebuilt in place, nothing else changes.
    assert run(["reindex", "--kb", path]) == 0
    assert "Re-embedded" in capsys.readouterr().out


def test_other_process_sees_reembedding_as_a_mismatch(tmp_path):
    vecs = clustered(10)
    path = tmp_path / "kb"
    with open_store(path, dim=DIM, embedder=EMBEDDER) as old, open_store(path, dim=DIM, embedder=EMBEDDER) as s:
        s.add(records(10), vecs)
        s.reembed(lambda texts: clustered(len(texts), seed=len(texts), dim=8), embedder="other", dim=8)
        assert s.search(clustered(1, dim=8)[0], k=3)
        from memory_store import EmbedderMismatch

        with pytest.raises(EmbedderMismatch, match="re-embedded with 'other'"):
            old.search(vecs[0], k=3)


# -- benchmark -------------------------------------------------------------------------------


def test_memory_bench_quick_writes_results_table_and_plot(tmp_path):
    out = tmp_path / "bench"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "memory_bench.py"), "--quick", "--embedder",
                    "hashing", "--out", str(out)], check=True, capture_output=True, text=True, timeout=300)
    assert {p.name for p in out.iterdir()} >= {"results.json", "table.md", "memory_bench.png"}
    results = json.loads((out / "results.json").read_text())
    assert results["environment"]["faiss"] and results["config"]["quick"]
    rows = results["search"]
    assert {r["type"] for r in rows} == {"flat", "hnsw", "ivf"} and len({r["n"] for r in rows}) == 2
    assert all(0.0 <= r["recall@10"] <= 1.0 and 0 < r["p50_ms"] <= r["p95_ms"] for r in rows)
    assert all(r["recall@10"] == 1.0 for r in rows if r["type"] == "flat")
    assert results["ingest"]["ratio"] > 0 and results["ingest"]["storage"]["bytes_per_record"] > 0


def test_large_index_saves_lazily_and_the_next_open_catches_up(tmp_path, monkeypatch, caplog):
    from memory_store import faiss_index

    # Scaled down: "large" is above 50 vectors, and a save waits for 50% more.
    monkeypatch.setattr(faiss_index, "SAVE_ALWAYS_UP_TO", 50)
    monkeypatch.setattr(faiss_index, "SAVE_GROWTH", 0.5)
    vecs, path = clustered(130), tmp_path / "kb"
    with open_store(path, dim=DIM, embedder=EMBEDDER, index="hnsw") as s:
        s.add(records(100), vecs[:100])
        saved = index_path(path, "knowledge").stat().st_mtime_ns
        ids = s.add(records(30, 100), vecs[100:])  # 30% more: not written yet
        assert index_path(path, "knowledge").stat().st_mtime_ns == saved
    with caplog.at_level(logging.INFO, logger="memory_store"):
        with open_store(path, dim=DIM, embedder=EMBEDDER, index="hnsw") as s:
            assert top(s, vecs[120]) == ids[20] and s.index_type() == "hnsw"
    assert any("caught up" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
    assert not any("rebuilt" in r.getMessage() for r in caplog.records)


def test_ivf_probes_more_lists_when_asked_for_a_large_share(tmp_path):
    vecs = clustered(2000)
    ids = np.arange(1, 2001, dtype=np.int64)
    index = DenseIndex.build(tmp_path / "i.faiss", DIM, "ivf", 2000, array_source(ids, vecs))
    assert index.cpu.nlist > 32  # more lists than a default search probes
    assert len(index.search(vecs[0], 10)[1]) == 10
    # The store widens filtered searches up to every vector: then every vector must come back.
    assert len(index.search(vecs[0], 2000)[1]) == 2000
