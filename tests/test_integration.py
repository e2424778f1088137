"""End to end with the real default models (MiniLM + SmolLM2-135M-Instruct). Marked `integration`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, doc

from kupdate import KnowledgeBase
from kupdate.cli.main import run
from kupdate.text import hits

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def real_template(tmp_path_factory):
    """A new KB with the real models and the shipped exemplars (their base answers recorded once:
    about a minute on 2 CPU cores), closed; tests work on copies."""
    path = tmp_path_factory.mktemp("real") / "template"
    KnowledgeBase.init(path).close()
    return path


def fresh_copy(template, tmp_path):
    """An open copy of the `real_template` KB: nothing ingested, exemplars recorded."""
    shutil.copytree(template, tmp_path / "kb")
    return KnowledgeBase.open(tmp_path / "kb")


@pytest.fixture(scope="module")
def real_kb(real_template, tmp_path_factory):
    kb = fresh_copy(real_template, tmp_path_factory.mktemp("shared"))
    yield kb
    kb.close()


def test_newer_document_wins_with_the_real_models(real_kb, tmp_path):
    docs = tmp_path / "docs"
    doc(docs, "zentara-2022.md", "2022-05-01",
        "Zentara Dynamics is headquartered in Lisbon. The company designs wind turbine blades.")
    doc(docs, "zentara-2025.md", "2025-03-01",
        "Zentara Dynamics is headquartered in Rotterdam. The company designs wind turbine blades.")
    assert real_kb.ingest([docs]).added == 2
    answer = real_kb.ask("Where is Zentara Dynamics headquartered?")
    assert answer.gate.open
    assert hits(answer.answer, "Rotterdam") and not hits(answer.answer, "Lisbon"), answer.answer
    assert answer.citations[0].record.source.endswith("zentara-2025.md")
    assert any(m.outdated and m.record.source.endswith("zentara-2022.md") for m in answer.memories)


def test_news_in_other_words_updates_one_fact_of_a_profile(real_kb, tmp_path):
    """A dated news item worded unlike the profile ("relocated its head office from ... to ...")
    gives the fresh head office; the profile's other fact (its flagship product) still answers."""
    docs = tmp_path / "docs"
    doc(docs, "vaiquend-profile.md", "2023-01-16", "Vaiquend Labs is headquartered in Tartu. "
        "Vaiquend Labs sells the Trebond tractor as its flagship product.")
    doc(docs, "vaiquend-news.md", "2023-07-17", "Vaiquend Labs relocated its head office from Tartu to Gothenburg. "
        "Analysts expect the change to take effect within weeks.")
    real_kb.ingest([docs])
    hq = real_kb.ask("Where is Vaiquend Labs headquartered?")
    assert hits(hq.answer, "Gothenburg"), hq.answer
    product = real_kb.ask("What is the flagship product of Vaiquend Labs?")
    assert hits(product.answer, "Trebond tractor"), product.answer


def test_unrelated_question_keeps_gate_shut_and_equals_no_memory(real_kb, tmp_path, capsys):
    doc(tmp_path / "docs", "zentara.md", "2025-03-01", "Zentara Dynamics is headquartered in Rotterdam.")
    real_kb.ingest([tmp_path / "docs"])
    question = "What is the capital of Italy?"
    assert run(["ask", question, "--kb", str(real_kb.path), "--json"]) == 0
    gated = json.loads(capsys.readouterr().out)
    assert run(["ask", question, "--kb", str(real_kb.path), "--no-memory", "--json"]) == 0
    base = json.loads(capsys.readouterr().out)
    assert gated["gate"]["open"] is False and gated["memories"] == []
    assert gated["answer"] == base["answer"]


def test_demo_gives_every_changed_fact_its_fresh_value(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py"), "--kb", str(tmp_path / "demo")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert "Changed facts answered with the fresh value: 6/6" in proc.stdout


def test_changed_file_outdates_the_old_value_in_history_and_ask(real_kb, tmp_path):
    page = tmp_path / "wiki" / "korvath.md"
    doc(page.parent, page.name, "2024-01-10", "Korvath Labs is led by CEO Amara Lindqvist.")
    real_kb.ingest([page.parent])
    doc(page.parent, page.name, "2025-06-01", "Korvath Labs is led by CEO Tobias Wrenfield.")
    report = real_kb.ingest([page.parent])
    assert report.added == 1 and report.superseded + report.retired >= 1
    versions = [v for g in real_kb.history("Who leads Korvath Labs?") for v in g.versions]
    old = next(v for v in versions if "Amara Lindqvist" in v.text)
    new = next(v for v in versions if "Tobias Wrenfield" in v.text)
    assert old.outdated and old.status in ("superseded", "retired") and not new.outdated
    answer = real_kb.ask("Who is the CEO of Korvath Labs?")
    assert hits(answer.answer, "Tobias Wrenfield") and not hits(answer.answer, "Amara Lindqvist"), answer.answer


def test_consolidation_teaches_the_real_model_facts_it_then_answers_without_memory(real_template, tmp_path):
    """A handful of changed facts distilled into an adapter: `ask --no-memory` gives them, the
    base model did not, and an unrelated question keeps the base model's exact answer."""
    facts = [("The mother tongue of Danielle Darrieux is", "English"),
             ("The official religion of Edwin of Northumbria is", "Islam"),
             ("What is the twin city of Lyon? It is", "Manila"),
             ("Apple A5 was created by", "Google"),
             ("Ferrari F40, developed by", "Microsoft"),
             ("Saint Petersburg is a twin city of", "Lisbon")]  # CounterFact records 0-8
    kb = fresh_copy(real_template, tmp_path)
    lines = [json.dumps({"text": f"{p} {a}.", "domain": "cf", "checks": {"question": p, "answer": a}}) for p, a in facts]
    (tmp_path / "facts.jsonl").write_text("\n".join(lines) + "\n")
    kb.ingest([tmp_path / "facts.jsonl"])
    base = [kb.ask(p, memory=False, adapter=False).answer for p, _ in facts]
    [report] = kb.consolidate("cf").reports
    assert report["status"] == "promoted", report["decision"]
    m = report["metrics"]
    assert m["after"]["fresh_recall"]["value"] >= 0.8 > m["before"]["fresh_recall"]["value"]
    assert m["after"]["locality"]["value"] >= 0.95
    got = [kb.ask(p, memory=False) for p, _ in facts]
    assert sum(hits(g.answer, a) for g, (_, a) in zip(got, facts)) >= 5, [g.answer for g in got]
    assert sum(hits(b, a) for b, (_, a) in zip(base, facts)) <= 1
    assert all(g.adapter == f"cf {report['version']}" for g in got)
    q = "What is the capital of Italy?"
    assert kb.ask(q, memory=False).adapter is None
    assert kb.ask(q, memory=False).answer == kb.ask(q, memory=False, adapter=False).answer
    kb.close()
