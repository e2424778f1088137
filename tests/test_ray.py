"""The `ray` compute engine: the same KB as a local run, from ingest and from consolidation.

One local Ray instance (2 CPUs) serves the whole session (`ray_address` in conftest).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import test_consolidate
from conftest import doc, write
from test_consolidate import ingest

from kupdate import KnowledgeBase
from kupdate.cli.main import run
from kupdate.consolidate import masks

pytestmark = pytest.mark.usefixtures("ray_address")
learner = test_consolidate.learner  # the tiny KB set up to learn in seconds

ORGS = "Brindlemoor Robotics is led by CEO Renzo Halbrook. " * 3


def corpus(folder):
    """Front-matter documents, a file long enough for several chunks, structured facts, a shared
    chunk (de-duplicated) and a file without a date (dated at ingest)."""
    doc(folder, "a.md", "2024-05-01", "Veltrane Robotics is led by CEO Tomas Greel.")
    doc(folder, "b.md", "2025-02-01", "Veltrane Robotics is led by CEO Ilse Marsh.")
    doc(folder, "long.md", "2024-01-01", " ".join(f"Sentence {i} says the tide code {i} is k{i * 37}." for i in range(120)))
    write(folder / "facts.jsonl", "".join(json.dumps(x) + "\n" for x in [
        {"subject": "Orla Marine Institute", "relation": "is based in", "object": "Bergen", "date": "2023-01-01"},
        {"subject": "Orla Marine Institute", "relation": "is based in", "object": "Tromso", "date": "2024-06-01"},
        {"text": "Pellucid Kiln Works makes the Glasshook kiln.", "domain": "kilns", "date": "2024-02-02"}]))
    write(folder / "copy.txt", "Veltrane Robotics is led by CEO Ilse Marsh.")
    write(folder / "undated.txt", ORGS)
    return folder


def snapshot(kb_path) -> tuple[list[dict], np.ndarray]:
    """Every knowledge record (times of this ingest made comparable) and its vector, in id order."""
    with KnowledgeBase.open(kb_path) as kb:
        records = sorted(kb.store.records("knowledge"), key=lambda r: r.id)
        vectors = kb.store.vectors([r.id for r in records])
    rows = []
    for r in records:
        row = r.to_dict()
        now = row.pop("observed_at")
        row["valid_from"] = "ingest time" if row["valid_from"] == now else row["valid_from"]
        row["valid_to"] = row["valid_to"] and (row["valid_to"] >= now)
        rows.append(row)
    return rows, vectors


def cli_json(capsys, *args):
    code = run([*args, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


@pytest.fixture
def two_kbs(tmp_path, tiny_llm_dir, exemplars_file):
    paths = []
    for name in ("local", "ray"):
        KnowledgeBase.init(tmp_path / name, model=str(tiny_llm_dir), embedder="hashing",
                           exemplars=exemplars_file).close()
        paths.append(str(tmp_path / name))
    return paths


def test_ray_ingest_gives_the_same_records_and_vectors_as_local(capsys, two_kbs, tmp_path):
    folder = corpus(tmp_path / "docs")
    reports = {}
    for kb_path, engine in zip(two_kbs, ("local", "ray")):
        reports[engine] = cli_json(capsys, "ingest", str(folder), "--kb", kb_path, "--engine", engine)
    # A second round: one file changed, one removed; the stored history must match too.
    doc(folder, "b.md", "2025-03-01", "Veltrane Robotics is led by CEO Ada Quill.")
    (folder / "undated.txt").unlink()
    for kb_path, engine in zip(two_kbs, ("local", "ray")):
        reports[engine + "2"] = cli_json(capsys, "ingest", str(folder), "--kb", kb_path, "--engine", engine,
                                         "--prune")
    for r in reports.values():
        r.pop("seconds")
    assert reports["ray"] == reports["local"] and reports["ray"]["chunks"] > 8
    assert reports["ray2"] == reports["local2"] and reports["ray2"]["added"] == reports["ray2"]["pruned"] == 1
    (local, local_vecs), (ray, ray_vecs) = snapshot(two_kbs[0]), snapshot(two_kbs[1])
    assert ray == local
    np.testing.assert_allclose(ray_vecs, local_vecs, atol=1e-6)
    found = cli_json(capsys, "search", "Who leads Veltrane Robotics?", "--kb", two_kbs[1])
    assert found[0]["text"].endswith("Ada Quill.")


def test_ray_ingest_keeps_strict_mode_and_skip_bad(capsys, two_kbs, tmp_path):
    folder = corpus(tmp_path / "docs")
    write(folder / "zz-binary.txt", b"\x00\x01\x02 not text")
    code = run(["ingest", str(folder), "--kb", two_kbs[1], "--engine", "ray"])
    out, err = capsys.readouterr()
    assert code == 1 and err.startswith("Error: ") and "zz-binary.txt" in err and len(err.strip().splitlines()) == 1
    assert cli_json(capsys, "status", "--kb", two_kbs[1])["knowledge"] == 0  # nothing stored
    local = cli_json(capsys, "ingest", str(folder), "--kb", two_kbs[0], "--skip-bad")
    ray = cli_json(capsys, "ingest", str(folder), "--kb", two_kbs[1], "--skip-bad", "--engine", "ray")
    assert [s["path"] for s in ray["skipped"]] == [s["path"] for s in local["skipped"]] == [str(folder / "zz-binary.txt")]
    assert ray["added"] == local["added"] > 0


def test_two_domains_consolidated_on_ray_get_disjoint_masks_and_both_serve(learner, tmp_path):
    ingest(learner, tmp_path, "orgs")
    ingest(learner, tmp_path, "geo")
    result = learner.consolidate(engine="ray")
    assert [r["domain"] for r in result.reports] == ["geo", "orgs"]
    assert all(r["status"] == "promoted" for r in result.reports), [r["decision"] for r in result.reports]
    registry = learner.adapters.registry
    geo, orgs = (masks.load(registry.serving(d).path) for d in ("geo", "orgs"))
    assert masks.overlap(geo, orgs) == 0
    assert masks.count(geo)[0] > 0 and masks.count(orgs)[0] > 0
    assert [r["mask"]["disjoint_from"] for r in result.reports] == [["orgs"], ["geo"]]
    # The same files as a sequential run writes; the records are marked as consolidated.
    files = {p.name for p in registry.serving("geo").path.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "mask.safetensors", "report.json"} <= files
    assert {r.adapter_version for r in learner.store.records(kind="knowledge")} == {"v0001"}
    for question, domain in (("The capital of Zentaria is", "geo"), ("Brindlemoor Robotics is led by", "orgs")):
        assert learner.ask(question, memory=False).adapter.startswith(f"{domain} ")
    # A new record in one domain: on Ray too, its next version continues the serving one, same mask.
    learner.ingest([write(tmp_path / "more.jsonl", json.dumps({"text": "Quillon Freight is based in Tartu.",
                                                               "domain": "orgs"}) + "\n")])
    [again] = learner.consolidate(engine="ray").reports
    assert again["domain"] == "orgs" and again["data"]["incremental"]["from"] == "v0001"
    assert masks.load(registry.get("orgs", again["version"]).path).keys() == orgs.keys()
    assert all(bool((masks.load(registry.get("orgs", again["version"]).path)[n] == m).all()) for n, m in orgs.items())


def test_without_ray_installed_one_line_names_the_extra(capsys, tiny_kb, tmp_path, monkeypatch):
    kb_path = str(tiny_kb.path)
    tiny_kb.close()
    folder = corpus(tmp_path / "docs")
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where it is not installed
    for command in (["ingest", str(folder)], ["consolidate", "--force"]):
        code = run([*command, "--kb", kb_path, "--engine", "ray"])
        out, err = capsys.readouterr()
        assert code == 1 and out == "" and len(err.strip().splitlines()) == 1
        assert err.startswith("Error: engine 'ray' needs Ray") and "pip install 'kupdate[ray]'" in err
    assert cli_json(capsys, "status", "--kb", kb_path)["knowledge"] == 0


def test_local_engine_imports_no_ray(tiny_kb, tmp_path):
    kb_path = str(tiny_kb.path)
    tiny_kb.close()
    folder = corpus(tmp_path / "docs")
    script = ("import sys\nfrom kupdate.cli.main import run\n"
              f"code = run(['ingest', {str(folder)!r}, '--kb', {kb_path!r}, '--engine', 'local'])\n"
              "print(code, 'ray' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.stdout.split()[-2:] == ["0", "False"], proc.stderr
