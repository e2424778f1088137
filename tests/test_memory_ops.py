"""Memory that never loses or misleads: upserts by source, prune, forget, history, exemplars,
a kill mid-ingest and two writers at once. Each test checks what a user would notice."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import faiss
import pytest
from conftest import doc, write

from kupdate import KnowledgeBase
from kupdate.cli.main import run
from kupdate.config import dump_config

OLD = "Veltrane Robotics is led by CEO Tomas Greel."
NEW = "Veltrane Robotics is led by CEO Ilse Marsh."
QUESTION = "Who is the CEO of Veltrane Robotics?"
ROOT = Path(__file__).resolve().parents[1]


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def cli_json(capsys, *args: str):
    code, out, err = cli(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def by_text(kb: KnowledgeBase) -> dict[str, object]:
    return {r.text: r for r in kb.store.records("knowledge")}


def index_ids(kb_path: Path, kind: str = "knowledge") -> set[int]:
    """The record ids in the dense index file on disk (what a fresh process would search)."""
    index = faiss.read_index(str(kb_path / "memory" / f"index-{kind}.faiss"))
    return {int(i) for i in faiss.vector_to_array(index.id_map) if i >= 0}


@pytest.fixture
def kb_path(tiny_kb) -> str:
    path = str(tiny_kb.path)
    tiny_kb.close()
    return path


# -- upserts by source ---------------------------------------------------------------------------


def test_changed_file_outdates_old_value_in_search_history_and_answers(capsys, kb_path, tmp_path):
    page = doc(tmp_path / "docs", "veltrane.md", "2024-01-01", OLD)
    assert cli_json(capsys, "ingest", str(page), "--kb", kb_path)["added"] == 1
    doc(tmp_path / "docs", "veltrane.md", "2025-02-10", NEW)

    report = cli_json(capsys, "ingest", str(page), "--kb", kb_path)
    assert (report["added"], report["retired"], report["duplicates"]) == (1, 1, 0)

    found = {m["text"]: m for m in cli_json(capsys, "search", QUESTION, "--kb", kb_path)}
    assert not found[NEW]["outdated"]
    assert found[OLD]["outdated"] and found[OLD]["outdated_by"] == found[NEW]["id"]

    groups = cli_json(capsys, "history", QUESTION, "--kb", kb_path)
    versions = [v for g in groups for v in g["versions"]]
    assert [(v["text"], v["status"]) for v in versions] == [(NEW, "current"), (OLD, "superseded")]
    assert versions[1]["superseded_by"] == versions[0]["id"] and versions[1]["valid_to"]
    assert versions[0]["source"] == versions[1]["source"] == str(page.resolve())

    answer = cli_json(capsys, "ask", QUESTION, "--kb", kb_path)
    assert [m["text"] for m in answer["memories"] if not m["outdated"]] == [NEW]


def test_unchanged_reingest_adds_nothing_and_embeds_nothing(tiny_kb, tmp_path, monkeypatch):
    tiny_kb.config.ingest.chunk_tokens, tiny_kb.config.ingest.chunk_overlap = 10, 0
    docs = tmp_path / "docs"
    page = doc(docs, "a.md", "2024-01-01",
               "Orla Marine Institute is based in Bergen. It runs the vessel RV Kestrel.\n\n"
               "Its director is Hanna Lund. The institute was founded in 1999.")
    doc(docs, "b.md", "2024-01-01", "Quillfeather Press prints maps of Bergen harbour.")
    first = tiny_kb.ingest([docs])
    assert first.added >= 3

    embedded: list[str] = []
    encode = tiny_kb.embedder.encode
    monkeypatch.setattr(tiny_kb.embedder, "encode", lambda texts, **kw: embedded.extend(texts) or encode(texts, **kw))
    again = tiny_kb.ingest([docs])
    assert (again.added, again.retired, again.restored, again.duplicates) == (0, 0, 0, first.chunks)
    assert embedded == []

    # One sentence changes: only its chunk is embedded; the chunks both versions share stay current.
    page.write_text(page.read_text().replace("Hanna Lund", "Piet Vos"))
    changed = tiny_kb.ingest([docs])
    assert changed.added == 1 and changed.retired == 1 and len(embedded) == 1 and "Piet Vos" in embedded[0]
    current = [r.text for r in tiny_kb.store.records("knowledge") if r.valid_to is None]
    assert len(current) == first.added and any("Piet Vos" in t for t in current)
    assert not any("Hanna Lund" in t for t in current)


def test_reverted_edit_makes_the_old_chunk_current_again(tiny_kb, tmp_path):
    page = doc(tmp_path / "docs", "v.md", "2024-01-01", OLD)
    tiny_kb.ingest([page])
    doc(tmp_path / "docs", "v.md", "2024-01-01", NEW)
    tiny_kb.ingest([page])
    doc(tmp_path / "docs", "v.md", "2024-01-01", OLD)
    report = tiny_kb.ingest([page])
    assert (report.added, report.restored, report.retired) == (0, 1, 1)
    records = by_text(tiny_kb)
    assert records[OLD].valid_to is None and records[OLD].superseded_by is None
    assert records[NEW].superseded_by == records[OLD].id
    found = {m.record.text: m for m in tiny_kb.search(QUESTION)}
    assert not found[OLD].outdated and found[NEW].outdated


def test_prune_retires_deleted_files_and_keeps_them_in_history(capsys, kb_path, tmp_path):
    docs = tmp_path / "docs"
    doc(docs, "old.md", "2023-03-14", OLD)
    gone = doc(docs, "sub/new.md", "2025-02-10", NEW)
    cli_json(capsys, "ingest", str(docs), "--kb", kb_path)
    gone.unlink()

    # Without --prune nothing changes: the newer statement still wins.
    assert cli_json(capsys, "ingest", str(docs), "--kb", kb_path)["pruned"] == 0
    found = {m["text"]: m for m in cli_json(capsys, "ask", QUESTION, "--kb", kb_path)["memories"]}
    assert found[OLD]["outdated"] and not found[NEW]["outdated"]

    report = cli_json(capsys, "ingest", str(docs), "--kb", kb_path, "--prune")
    assert report["pruned"] == 1 and report["added"] == 0
    # The retired memory is outdated, and it no longer pushes aside the one still in force.
    found = {m["text"]: m for m in cli_json(capsys, "search", QUESTION, "--kb", kb_path)}
    assert found[NEW]["outdated"] and found[NEW]["outdated_by"] is None
    assert not found[OLD]["outdated"]
    answer = cli_json(capsys, "ask", QUESTION, "--kb", kb_path)
    assert NEW not in [m["text"] for m in answer["memories"] if not m["outdated"]]
    versions = [v for g in cli_json(capsys, "history", QUESTION, "--kb", kb_path) for v in g["versions"]]
    assert {v["text"]: v["status"] for v in versions} == {NEW: "retired", OLD: "current"}
    assert cli_json(capsys, "status", "--kb", kb_path)["outdated"] == 1


def test_retired_structured_fact_no_longer_current(tiny_kb, tmp_path):
    facts = tmp_path / "facts.jsonl"
    lines = [{"subject": "Orla Institute", "relation": "vessel", "object": "RV Kestrel", "date": "2022-06-01"},
             {"subject": "Orla Institute", "relation": "director", "object": "Hanna Lund", "date": "2022-06-01"}]
    write(facts, "\n".join(json.dumps(x) for x in lines))
    tiny_kb.ingest([facts])
    write(facts, json.dumps(lines[0]))  # the director line is removed from the file
    assert tiny_kb.ingest([facts]).retired == 1
    assert tiny_kb.store.find_facts("Orla Institute", "director") == []
    assert [r.object for r in tiny_kb.store.find_facts("Orla Institute", "vessel")] == ["RV Kestrel"]


# -- forget --------------------------------------------------------------------------------------


def test_forget_dry_run_lists_and_changes_nothing(capsys, kb_path, tmp_path):
    docs = tmp_path / "docs"
    page = doc(docs, "a.md", "2025-01-01", NEW)
    doc(docs, "b.md", "2024-01-01", "Orla Marine Institute is based in Bergen.")
    cli_json(capsys, "ingest", str(docs), "--kb", kb_path)
    index_file = Path(kb_path) / "memory" / "index-knowledge.faiss"
    before = (index_file.read_bytes(), cli_json(capsys, "status", "--kb", kb_path))

    report = cli_json(capsys, "forget", "--source", str(page), "--dry-run", "--kb", kb_path)
    assert report["dry_run"] and report["removed"] == 0
    assert [r["text"] for r in report["records"]] == [NEW]
    assert (index_file.read_bytes(), cli_json(capsys, "status", "--kb", kb_path)) == before

    code, out, _ = cli(capsys, "forget", "--query", QUESTION, "--dry-run", "--kb", kb_path)
    assert code == 0 and "Would remove 1 records" in out and "Ilse Marsh" in out
    assert cli_json(capsys, "status", "--kb", kb_path)["knowledge"] == 2


def test_forget_removes_from_sqlite_full_text_and_dense_index(capsys, kb_path, tmp_path):
    docs = tmp_path / "docs"
    page = doc(docs, "a.md", "2024-01-01", OLD)
    doc(docs, "b.md", "2024-01-01", "Orla Marine Institute is based in Bergen.")
    cli_json(capsys, "ingest", str(docs), "--kb", kb_path)
    doc(docs, "a.md", "2025-01-01", NEW)  # a second version: forget takes all versions
    cli_json(capsys, "ingest", str(docs), "--kb", kb_path)
    with KnowledgeBase.open(kb_path) as kb:
        doomed = {r.id: r for r in kb.store.records("knowledge") if r.source == str(page.resolve())}
        vectors = kb.store.vectors(list(doomed))
    assert len(doomed) == 2 and set(doomed) <= index_ids(Path(kb_path))

    report = cli_json(capsys, "forget", "--source", str(page), "--kb", kb_path)
    assert report["removed"] == 2 and sorted(r["id"] for r in report["records"]) == sorted(doomed)
    assert report["gate"]["n_knowledge"] == 1  # recalibrated on what is left

    with KnowledgeBase.open(kb_path) as kb:
        store = kb.store
        assert store.count("knowledge") == 1 and store.get(list(doomed)) == []
        assert store.lexical_search("Veltrane Greel Marsh") == []
        for vector in vectors:
            assert all(h.record.id not in doomed for h in store.search(vector, k=5))
        assert kb.search(QUESTION) == [] or all(m.id not in doomed for m in kb.search(QUESTION))
    assert index_ids(Path(kb_path)).isdisjoint(doomed)


def test_forget_by_id_and_query_and_adapter_marker(capsys, kb_path, tmp_path):
    docs = tmp_path / "docs"
    doc(docs, "a.md", "2025-01-01", NEW)
    doc(docs, "b.md", "2024-01-01", "Orla Marine Institute is based in Bergen.")
    doc(docs, "c.md", "2024-01-01", "Quillfeather Press prints maps of Bergen harbour.")
    cli_json(capsys, "ingest", str(docs), "--kb", kb_path)
    ids = {m["text"]: m["id"] for m in cli_json(capsys, "search", "Bergen", "--kb", kb_path, "-k", "5")}
    # Consolidation marks records it distilled; forgetting one flags the adapter for a rebuild.
    with sqlite3.connect(Path(kb_path) / "memory" / "store.sqlite") as conn:
        conn.execute("UPDATE records SET adapter_version = 'v0002' WHERE text = ?", (NEW,))

    report = cli_json(capsys, "forget", "--query", QUESTION, "--kb", kb_path)
    assert [r["text"] for r in report["records"]] == [NEW] and report["removed"] == 1
    assert report["adapters_needing_rebuild"] == {"orgs": ["v0002"]}
    with KnowledgeBase.open(kb_path) as kb:
        assert kb.store.get_meta("adapters_needing_rebuild") == {"orgs": ["v0002"]}

    bergen = ids["Orla Marine Institute is based in Bergen."]
    report = cli_json(capsys, "forget", "--id", str(bergen), "--id", "99999", "--kb", kb_path)
    assert report["removed"] == 1 and report["not_found"] == [99999]
    assert cli_json(capsys, "status", "--kb", kb_path)["knowledge"] == 1

    code, _, err = cli(capsys, "forget", "--kb", kb_path)
    assert code == 2 and "exactly one" in err


def test_forgetting_the_successor_does_not_bring_back_the_stale_value(tiny_kb, tmp_path):
    page = doc(tmp_path / "docs", "v.md", "2024-01-01", OLD)
    tiny_kb.ingest([page])
    doc(tmp_path / "docs", "v.md", "2025-01-01", NEW)
    tiny_kb.ingest([page])
    new_id = by_text(tiny_kb)[NEW].id
    assert tiny_kb.forget(ids=[new_id]).removed == 1
    old = by_text(tiny_kb)[OLD]
    assert old.superseded_by is None and old.valid_to is not None  # still retired, no dangling link
    assert all(m.outdated for m in tiny_kb.search(QUESTION))


def test_forget_reaches_a_kb_another_process_holds_open(tiny_kb, tmp_path):
    """A notebook keeps its KB open while `kupdate forget` runs elsewhere: its searches stop
    returning the record, and its next write does not put the vector back into the index file."""
    page = doc(tmp_path / "docs", "a.md", "2025-01-01", NEW)
    tiny_kb.ingest([page])
    doomed = by_text(tiny_kb)[NEW].id
    vector = tiny_kb.store.vectors([doomed])[0]
    with KnowledgeBase.open(tiny_kb.path) as other:
        assert other.forget(source=page).removed == 1
    assert all(h.record.id != doomed for h in tiny_kb.store.search(vector, k=5))
    doc(tmp_path / "docs", "b.md", "2024-01-01", "Orla Marine Institute is based in Bergen.")
    assert tiny_kb.ingest([tmp_path / "docs" / "b.md"]).added == 1
    assert doomed not in index_ids(tiny_kb.path) and len(index_ids(tiny_kb.path)) == 1


# -- history -------------------------------------------------------------------------------------


def test_history_lists_every_version_newest_first_grouped_by_fact(tiny_kb, tmp_path):
    facts = write(tmp_path / "facts.jsonl", "\n".join(json.dumps(x) for x in [
        {"subject": "Orla Institute", "relation": "vessel", "object": "RV Kestrel", "date": "2022-06-01"},
        {"subject": "Orla Institute", "relation": "vessel", "object": "RV Dunlin", "date": "2024-08-15"},
        {"subject": "Orla Institute", "relation": "vessel", "object": "RV Tern", "date": "2023-03-01"},
        {"subject": "Orla Institute", "relation": "founded", "object": "1999", "date": "2020-01-01"},
    ]))
    tiny_kb.ingest([facts])
    groups = tiny_kb.history("Orla Institute vessel")
    vessel = next(g for g in groups if g.relation == "vessel")
    assert [v.text.split()[-1] for v in vessel.versions] == ["Dunlin.", "Tern.", "Kestrel."]
    assert [v.valid_from for v in vessel.versions] == ["2024-08-15", "2023-03-01", "2022-06-01"]
    assert [v.status for v in vessel.versions] == ["current", "superseded", "superseded"]
    assert [v.outdated for v in vessel.versions] == [False, True, True]
    assert vessel.versions[1].valid_to == "2024-08-15" and vessel.versions[1].superseded_by == vessel.versions[0].id
    assert all(g.subject == "Orla Institute" for g in groups)


# -- exemplars -----------------------------------------------------------------------------------


def test_exemplars_add_and_list_and_never_come_back_as_knowledge(capsys, kb_path, tmp_path):
    extra = write(tmp_path / "more.jsonl", "\n".join(json.dumps(x) for x in [
        {"question": "What colour is the sky on a clear day?", "domain": "science"},
        {"question": "How many legs does a spider have?"},
        {"question": "How many continents are there?"},  # already an exemplar
    ]) + "\n")
    report = cli_json(capsys, "exemplars", "add", str(extra), "--kb", kb_path)
    assert (report["read"], report["added"], report["duplicates"], report["total"]) == (3, 2, 1, 8)
    assert report["gate"]["n_exemplars"] == 8  # recalibrated

    listed = cli_json(capsys, "exemplars", "list", "--kb", kb_path)
    assert len(listed) == 8 and all(isinstance(x["base_answer"], str) for x in listed)
    sky = next(x for x in listed if x["question"].startswith("What colour"))
    assert sky["domain"] == "science"

    doc(tmp_path / "docs", "a.md", "2025-01-01", "Veltrane Robotics counts the legs of every spider robot.")
    cli_json(capsys, "ingest", str(tmp_path / "docs"), "--kb", kb_path)
    for question in ("How many legs does a spider have?", "What colour is the sky on a clear day?"):
        assert all(m["text"] != question for m in cli_json(capsys, "search", question, "--kb", kb_path))
    assert cli_json(capsys, "status", "--kb", kb_path)["exemplars"] == 8


# -- crashes and concurrent writers --------------------------------------------------------------

# A real `kupdate ingest`, each embedding batch slowed a little so the test can catch it mid-way,
# and held (while the file `hold` exists) before embedding its third batch, so that the test can
# act while it is known to be holding the write lock.
SLOW_KUPDATE = """
import os, sys, time
from kupdate.models.embedder import HashingEmbedder
encode, calls = HashingEmbedder.encode, [0]
def slow(self, texts, **kw):
    calls[0] += 1
    while calls[0] == 3 and os.path.exists({hold!r}):
        time.sleep(0.02)
    time.sleep({delay})
    return encode(self, texts, **kw)
HashingEmbedder.encode = slow
if "ray" in sys.argv:
    # With --engine ray the embedder runs in Ray workers; slow the driver's intake of their vectors.
    from kupdate.compute.ray_ingest import RayIngest
    ray_embed = RayIngest.embed
    def slow_intake(self, todo, batch):
        for part, vectors in ray_embed(self, todo, batch):
            time.sleep({delay})
            yield part, vectors
    RayIngest.embed = slow_intake
from kupdate.cli.main import main
main()
"""


def many_docs(folder: Path, n: int, word: str = "zephyr") -> Path:
    for i in range(n):
        write(folder / f"d{i:04d}.txt", f"Record {i} of the {word} archive: the {word} code {i} is k{i * 7919 % 100003}.")
    return folder


def configure(kb_path: str, **memory: object) -> None:
    """Small ingest batches (many commits) and the given [memory] settings in kupdate.toml."""
    kb = KnowledgeBase.open(kb_path)
    kb.config.ingest.batch_size = 4
    for key, value in memory.items():
        setattr(kb.config.memory, key, value)
    (Path(kb_path) / "kupdate.toml").write_text(dump_config(kb.config))
    kb.close()


def start_ingest(kb_path: str, folder: Path, delay: float, hold: Path | None = None,
                 ray_address: str | None = None) -> subprocess.Popen:
    """A `kupdate ingest` in another process; with `ray_address`, `--engine ray` on that cluster."""
    script = SLOW_KUPDATE.replace("{delay}", str(delay)).replace("{hold!r}", repr(str(hold or "")))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    engine = ["--engine", "ray"] if ray_address else []
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    return subprocess.Popen([sys.executable, "-c", script, "ingest", str(folder), "--kb", kb_path, "--json", *engine],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def knowledge_count(kb_path: str) -> int:
    # A plain reader connection, as another process would have (WAL: never blocks the writer).
    conn = sqlite3.connect(f"file:{Path(kb_path) / 'memory' / 'store.sqlite'}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT COUNT(*) FROM records WHERE kind = 'knowledge'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"ingest ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "timed out waiting for the ingest to progress"
        time.sleep(0.02)


def assert_all_searchable(kb_path: str) -> int:
    """Every knowledge record in SQLite is in the dense and the full-text index; returns the count."""
    with KnowledgeBase.open(kb_path) as kb:
        store = kb.store
        records = list(store.records("knowledge"))
        for r in records[:: max(1, len(records) // 25)]:
            assert store.search(store.vectors([r.id])[0], k=1)[0].record.id == r.id
            assert r.id in {h.record.id for h in store.lexical_search(r.text.split()[-1].rstrip("."), k=5)}
        query = store.vectors([records[0].id])[0]
        assert {h.record.id for h in store.search(query, k=len(records) + 10)} == {r.id for r in records}
        return len(records)


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_kill_mid_ingest_keeps_what_was_acknowledged_and_rerun_completes(capsys, kb_path, tmp_path, engine, request):
    """Kill the writer mid-ingest (with `ray`: the driver, while Ray workers embed): nothing it
    acknowledged is lost, and re-running completes without duplicates."""
    address = request.getfixturevalue("ray_address") if engine == "ray" else None
    configure(kb_path)
    folder = many_docs(tmp_path / "corpus", 300)
    proc = start_ingest(kb_path, folder, delay=0.03, ray_address=address)
    try:
        wait_for(lambda: knowledge_count(kb_path) >= 24, proc)
        acknowledged = knowledge_count(kb_path)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert 24 <= acknowledged < 300

    stored = assert_all_searchable(kb_path)  # opens without error; nothing acknowledged was lost
    assert stored >= acknowledged
    # A kill during an index save leaves its temp file (a whole index copy): the next save sweeps it.
    memory = Path(kb_path) / "memory"
    (memory / "index-knowledge.faiss.tmp-999999").write_bytes(b"half a faiss index")

    report = cli_json(capsys, "ingest", str(folder), "--kb", kb_path, "--engine", engine)
    assert report["added"] == 300 - stored and report["duplicates"] == stored
    assert assert_all_searchable(kb_path) == 300
    assert not list(memory.glob("*.tmp-*"))
    status = cli_json(capsys, "status", "--kb", kb_path)
    assert status["knowledge"] == 300 and status["gate"]["n_knowledge"] == 300


def test_second_writer_fails_clearly_while_readers_keep_working(capsys, kb_path, tmp_path):
    configure(kb_path, lock_timeout=0.5)
    doc(tmp_path / "small", "a.md", "2025-01-01", NEW)
    cli_json(capsys, "ingest", str(tmp_path / "small"), "--kb", kb_path)
    folder = many_docs(tmp_path / "corpus", 120)
    hold = write(tmp_path / "hold", "")
    proc = start_ingest(kb_path, folder, delay=0.01, hold=hold)
    try:
        wait_for(lambda: knowledge_count(kb_path) >= 9, proc)  # two batches in: it holds the lock
        doc(tmp_path / "other", "b.md", "2024-01-01", "Orla Marine Institute is based in Bergen.")
        code, out, err = cli(capsys, "ingest", str(tmp_path / "other"), "--kb", kb_path)
        assert code == 1 and out == ""
        assert err.startswith("Error: ") and "being written by another process" in err
        assert len(err.strip().splitlines()) == 1
        # Readers do not need the lock: search and ask work while the writer holds it.
        found = cli_json(capsys, "search", QUESTION, "--kb", kb_path)
        assert found[0]["text"] == NEW
        assert proc.poll() is None
    finally:
        hold.unlink()
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out)["added"] == 120
    assert cli_json(capsys, "ingest", str(tmp_path / "other"), "--kb", kb_path)["added"] == 1
    assert assert_all_searchable(kb_path) == 122


def test_two_writers_at_once_wait_for_each_other(kb_path, tmp_path):
    configure(kb_path, lock_timeout=120.0)
    first = start_ingest(kb_path, many_docs(tmp_path / "one", 60, "zephyr"), delay=0.02)
    second = start_ingest(kb_path, many_docs(tmp_path / "two", 60, "quokka"), delay=0.02)
    results = [p.communicate(timeout=240) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], results
    assert [json.loads(out)["added"] for out, _ in results] == [60, 60]
    assert assert_all_searchable(kb_path) == 120
    with KnowledgeBase.open(kb_path) as kb:
        assert kb.store.get_meta("gate_calibration")["n_knowledge"] == 120
        assert len({r.content_hash for r in kb.store.records("knowledge")}) == 120
