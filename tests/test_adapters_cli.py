"""`kupdate consolidate`, `adapters list|show|rollback` and `ask --no-adapter` from the command line."""

from __future__ import annotations

import json

import pytest
from conftest import doc

from kupdate.adapters import AdapterRegistry
from kupdate.cli.main import run
from kupdate.config import Config, dump_config
from kupdate.consolidate.run import report_line


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def report(before: float, after: float, *, reason: str, seconds: float = 212.4) -> dict:
    return {"metrics": {"before": {"fresh_recall": before, "paraphrase_recall": before / 2, "locality": 1.0},
                        "after": {"fresh_recall": after, "paraphrase_recall": after / 2, "locality": 0.97}},
            "decision": {"promoted": after > before, "reason": reason},
            "seconds": {"total": seconds}, "data": {"records": 24, "questions": 72, "replay": 64}}


def populate(kb: str) -> AdapterRegistry:
    """cf: v0001 promoted, v0002 rejected, v0003 promoted (serving); orgs: v0001 rejected."""
    reg = AdapterRegistry(f"{kb}/adapters")
    for domain, before, after, promote in [("cf", 0.1, 0.8, True), ("cf", 0.8, 0.7, False),
                                           ("cf", 0.8, 0.92, True), ("orgs", 0.0, 0.0, False)]:
        version, _ = reg.allocate(domain)
        reason = "recall up, locality held" if promote else "no better than the serving version"
        made = report(before, after, reason=reason)
        if version == "v0003":  # an incremental round (docs/consolidation.md)
            made["data"]["incremental"] = {"from": "v0001", "new_records": 8, "examples": 120,
                                           "rehearsed_examples": 40}
            made["routing"] = {"threshold": 0.74, "max_exemplar_score": 0.66, "n_exemplars": 120, "n_checked": 9,
                               "n_harmless": 0, "keys": 24}
        reg.finish(domain, version, made, promote=promote)
    reg.allocate("cf")  # an attempt killed half way: never listed
    return reg


@pytest.fixture
def bare_kb(tmp_path) -> str:
    """A KB folder as far as adapters are concerned: its config, no memory opened, no model loaded."""
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "kupdate.toml").write_text(dump_config(Config()))
    return str(tmp_path / "kb")


@pytest.fixture
def kb_path(tiny_kb, tmp_path):
    """A tiny real KB with one record in domain "orgs" (fewer than a consolidation needs)."""
    tiny_kb.ingest([doc(tmp_path / "docs", "a.md", "2025-01-01", "Veltrane Robotics is led by CEO Ilse Marsh.")])
    path = str(tiny_kb.path)
    tiny_kb.close()
    return path


def test_report_line():
    r = {"domain": "cf", "version": "v0003", "status": "promoted", **report(0.1, 0.92, reason="better")}
    assert report_line(r) == ("cf: v0003 promoted in 212 s: no-memory recall 0.10 -> 0.92, "
                              "paraphrase recall 0.05 -> 0.46, locality 0.97")
    r = {"domain": "cf", "version": "v0004", "status": "rejected", "decision": {"reason": "locality 0.90 < 0.95"},
         "metrics": {"after": {"fresh_recall": 0.5}}}
    assert report_line(r) == "cf: v0004 rejected: no-memory recall - -> 0.50 (locality 0.90 < 0.95)"
    assert report_line({}) == "?: ? ?"
    r = {"domain": "cf", "version": "v0005", "status": "promoted", **report(0.5, 0.9, reason="better")}
    r["data"]["incremental"] = {"from": "v0003", "new_records": 100, "examples": 1500, "rehearsed_examples": 480}
    assert report_line(r).startswith("cf: v0005 promoted (continued v0003, 100 new records) in 212 s: ")


def test_report_line_reads_metrics_as_consolidation_stores_them():
    from kupdate.metrics import rate

    r = {"domain": "cf", "version": "v0001", "status": "promoted", "seconds": {"total": 5.0},
         "metrics": {"before": {"fresh_recall": rate([False] * 4).to_dict(), "locality": rate([True] * 4).to_dict()},
                     "after": {"fresh_recall": rate([True] * 3 + [False]).to_dict(),
                               "locality": rate([True] * 4).to_dict()}}}
    assert report_line(r) == "cf: v0001 promoted in 5 s: no-memory recall 0.00 -> 0.75, locality 1.00"


def test_adapters_list(capsys, bare_kb):
    code, out, _ = cli(capsys, "adapters", "list", "--kb", bare_kb)
    assert code == 0 and "No adapters yet" in out
    populate(bare_kb)
    code, out, _ = cli(capsys, "adapters", "list", "--kb", bare_kb, "--json")
    rows = {r["domain"]: r for r in json.loads(out)}
    assert code == 0 and list(rows) == ["cf", "orgs"]
    assert rows["cf"]["serving"] == "v0003" and rows["cf"]["versions"] == 3
    assert (rows["cf"]["promoted"], rows["cf"]["rejected"]) == (2, 1)
    assert rows["cf"]["metrics"] == {"fresh_recall": 0.92, "paraphrase_recall": 0.46, "locality": 0.97}
    assert rows["orgs"]["serving"] is None and rows["orgs"]["last_attempt_at"]
    code, out, _ = cli(capsys, "adapters", "list", "--kb", bare_kb)
    cf = next(line for line in out.splitlines() if line.startswith("cf "))
    assert "v0003" in cf and "3 (2 promoted, 1 rejected)" in cf and "no-memory recall 0.92" in cf
    orgs = next(line for line in out.splitlines() if line.startswith("orgs "))
    assert " none " in orgs


def test_adapters_show(capsys, bare_kb):
    populate(bare_kb)
    code, out, _ = cli(capsys, "adapters", "show", "cf", "--kb", bare_kb)
    assert code == 0
    heads = [line for line in out.splitlines() if line.startswith("v")]
    assert [h.split()[:2] for h in heads] == [["v0001", "promoted"], ["v0002", "rejected"], ["v0003", "promoted"]]
    assert "[serving]" in heads[2] and "[serving]" not in heads[0] and heads[2].endswith("(212 s)")
    assert "data: records 24, questions 72, replay 64" in out
    assert "no-memory recall 0.80 -> 0.92" in out and "locality 1.00 -> 0.97" in out
    assert "decision: no better than the serving version" in out
    assert out.count("continued ") == 1 and "continued v0001: 8 new records, 120 examples trained (40 rehearsed)" in out
    assert out.count("routing: ") == 1 and "routing: threshold 0.74 (best exemplar 0.66 against 24 keys)" in out
    code, out, _ = cli(capsys, "adapters", "show", "cf", "--kb", bare_kb, "--json")
    shown = json.loads(out)
    assert shown["serving"] == "v0003" and [v["status"] for v in shown["versions"]] == ["promoted", "rejected",
                                                                                     "promoted"]
    assert shown["versions"][1]["report"]["decision"]["promoted"] is False


def test_adapters_errors_are_one_line(capsys, bare_kb, tmp_path):
    populate(bare_kb)
    code, _, err = cli(capsys, "adapters", "show", "nope", "--kb", bare_kb)
    assert code == 1 and err.strip() == ("Error: domain 'nope' has no adapter versions "
                                         "(domains with adapters: cf, orgs)")
    code, _, err = cli(capsys, "adapters", "show", "../etc", "--kb", bare_kb)
    assert code == 1 and err.startswith("Error: invalid domain name '../etc'") and err.count("\n") == 1
    code, _, err = cli(capsys, "adapters", "list", "--kb", str(tmp_path / "missing"))
    assert code == 1 and err.startswith("Error: no knowledge base at")


def test_adapters_rollback(capsys, kb_path):
    populate(kb_path)
    code, out, _ = cli(capsys, "adapters", "rollback", "cf", "--kb", kb_path)
    assert code == 0 and out.startswith("cf: now serving v0001")
    code, _, err = cli(capsys, "adapters", "rollback", "cf", "v0002", "--kb", kb_path)
    assert code == 1 and "v0002 was rejected" in err
    code, out, _ = cli(capsys, "adapters", "rollback", "cf", "3", "--kb", kb_path, "--json")
    assert code == 0 and json.loads(out)["serving"]["version"] == "v0003"
    code, out, _ = cli(capsys, "adapters", "rollback", "cf", "--kb", kb_path)
    code, out, _ = cli(capsys, "adapters", "rollback", "cf", "--kb", kb_path, "--json")
    assert code == 0 and json.loads(out) == {"domain": "cf", "serving": None}
    code, out, _ = cli(capsys, "adapters", "list", "--kb", kb_path, "--json")
    assert {r["domain"]: r["serving"] for r in json.loads(out)} == {"cf": None, "orgs": None}


def test_ask_no_adapter(capsys, kb_path):
    code, out, err = cli(capsys, "ask", "Who is the CEO of Veltrane Robotics?", "--kb", kb_path,
                         "--no-adapter", "--json")
    answer = json.loads(out)
    assert code == 0 and answer["adapter"] is None and answer["gate"]["open"] is True
    code, out, err = cli(capsys, "ask", "Who is the CEO of Veltrane Robotics?", "--kb", kb_path, "--no-adapter")
    assert code == 0 and "[gate open" in err and "[adapter:" not in err


def test_consolidate_if_due_reports_the_domain_skipped(capsys, kb_path):
    code, out, err = cli(capsys, "consolidate", "--if-due", "--kb", kb_path, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["reports"] == [] and "1 new record, needs 20" in result["skipped"]["orgs"]
    code, out, _ = cli(capsys, "consolidate", "--if-due", "--kb", kb_path)
    assert code == 0 and out.startswith("orgs: not consolidated (") and "1 new record, needs 20" in out
    assert AdapterRegistry(f"{kb_path}/adapters").domains() == []


def test_adapters_list_names_versions_trained_on_forgotten_records(capsys, kb_path):
    from kupdate import KnowledgeBase

    populate(kb_path)
    rows = {r["domain"]: r for r in json.loads(cli(capsys, "adapters", "list", "--kb", kb_path, "--json")[1])}
    assert rows["cf"]["needs_rebuild"] == []
    with KnowledgeBase.open(kb_path) as kb:  # what `kupdate forget` records when it removes distilled records
        kb.store.set_meta("adapters_needing_rebuild", {"cf": ["v0001", "v0003"]})
    rows = {r["domain"]: r for r in json.loads(cli(capsys, "adapters", "list", "--kb", kb_path, "--json")[1])}
    assert rows["cf"]["needs_rebuild"] == ["v0001", "v0003"] and rows["orgs"]["needs_rebuild"] == []
    code, out, _ = cli(capsys, "adapters", "list", "--kb", kb_path)
    assert code == 0 and "trained on forgotten records: v0001, v0003" in out and "--domain cf --force" in out
