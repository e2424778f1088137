"""The KnowledgeBase path end to end on tiny real models: ingest, fresh over stale, gate, ask."""

from __future__ import annotations

import json

import pytest
from conftest import doc, write

from kupdate import KnowledgeBase
from kupdate.errors import KBNotFound, KupdateError


def test_reingesting_the_same_folder_adds_nothing(tiny_kb, tmp_path):
    docs = tmp_path / "docs"
    doc(docs, "a.md", "2023-01-01", "Veltrane Robotics is led by CEO Tomas Greel. It builds carts.")
    doc(docs, "b.md", "2024-01-01", "Orla Marine Institute is based in Bergen.")
    first = tiny_kb.ingest([docs])
    assert first.added == 2 and first.files == 2
    again = tiny_kb.ingest([docs])
    assert again.added == 0 and again.duplicates == 2
    assert tiny_kb.store.count("knowledge") == 2


def test_newer_document_wins_and_older_is_flagged_outdated(tiny_kb, tmp_path):
    docs = tmp_path / "docs"
    doc(docs, "old.md", "2023-03-14", "Veltrane Robotics is led by CEO Tomas Greel.")
    doc(docs, "new.md", "2025-02-10", "Veltrane Robotics is led by CEO Ilse Marsh.")
    tiny_kb.ingest([docs])
    found = tiny_kb.search("Who is the CEO of Veltrane Robotics?", k=5)
    by_text = {m.record.text: m for m in found}
    assert not by_text["Veltrane Robotics is led by CEO Ilse Marsh."].outdated
    old = by_text["Veltrane Robotics is led by CEO Tomas Greel."]
    assert old.outdated and old.outdated_by == by_text["Veltrane Robotics is led by CEO Ilse Marsh."].id
    answer = tiny_kb.ask("Who is the CEO of Veltrane Robotics?")
    assert answer.gate.open
    assert [m.record.text for m in answer.citations] == ["Veltrane Robotics is led by CEO Ilse Marsh."]
    assert any(m.outdated for m in answer.memories)


def test_same_shape_about_another_entity_is_not_outdated(tiny_kb, tmp_path):
    docs = tmp_path / "docs"
    doc(docs, "a.md", "2023-01-01", "Veltrane Robotics is led by CEO Tomas Greel.")
    doc(docs, "b.md", "2025-01-01", "Quillfeather Press is led by CEO Tomas Greel.")
    tiny_kb.ingest([docs])
    assert not any(m.outdated for m in tiny_kb.search("Veltrane Robotics CEO", k=5))


def test_structured_facts_supersede_exactly(tiny_kb, tmp_path):
    facts = write(tmp_path / "facts.jsonl", "\n".join(json.dumps(x) for x in [
        {"subject": "Orla Institute", "relation": "vessel", "object": "RV Kestrel", "date": "2022-06-01"},
        {"subject": "Orla Institute", "relation": "vessel", "object": "RV Dunlin", "date": "2024-08-15"},
        {"subject": "Orla Institute", "relation": "founded", "object": "1999", "date": "2020-01-01"},
    ]))
    report = tiny_kb.ingest([facts])
    assert report.added == 3 and report.superseded == 1
    current = {r.object: r for r in tiny_kb.store.records("knowledge")}
    assert current["RV Kestrel"].superseded_by == current["RV Dunlin"].id
    assert current["RV Kestrel"].valid_to == "2024-08-15"
    assert current["RV Dunlin"].superseded_by is None and current["1999"].superseded_by is None


def test_unrelated_question_keeps_gate_shut_and_base_answer(tiny_kb, tmp_path):
    doc(tmp_path / "docs", "a.md", "2025-01-01", "Veltrane Robotics is led by CEO Ilse Marsh.")
    tiny_kb.ingest([tmp_path / "docs"])
    question = "How many continents are there?"
    answer = tiny_kb.ask(question)
    assert not answer.gate.open
    assert answer.memories == []
    assert answer.answer == tiny_kb.ask(question, memory=False).answer


def test_gate_threshold_is_calibrated_above_every_exemplar(tiny_kb, tmp_path):
    doc(tmp_path / "docs", "a.md", "2025-01-01", "Veltrane Robotics sells maps of all continents.")
    tiny_kb.ingest([tmp_path / "docs"])
    cal = tiny_kb.store.get_meta("gate_calibration")
    assert cal["n_exemplars"] == 6 and cal["n_knowledge"] == 1
    assert cal["max_exemplar_score"] > 0  # the continents exemplar does overlap the memory
    assert cal["threshold"] > cal["max_exemplar_score"]
    # ... and still does not open the gate, while the memory's own topic does.
    assert not tiny_kb.ask("How many continents are there?").gate.open
    assert tiny_kb.ask("What does Veltrane Robotics sell?").gate.open


def test_answer_json_shape(tiny_kb, tmp_path):
    doc(tmp_path / "docs", "a.md", "2025-01-01", "Veltrane Robotics is led by CEO Ilse Marsh.")
    tiny_kb.ingest([tmp_path / "docs"])
    data = tiny_kb.ask("Who is the CEO of Veltrane Robotics?").to_dict()
    assert set(data) == {"question", "answer", "gate", "memories", "adapter", "timings_ms"}
    assert set(data["gate"]) >= {"score", "open"} and data["adapter"] is None
    assert set(data["memories"][0]) >= {"id", "text", "source", "valid_from", "score", "outdated"}
    assert data["memories"][0]["valid_from"] == "2025-01-01"
    assert {"embed", "search", "gate", "generate", "total"} <= set(data["timings_ms"])


def test_as_of_answers_from_memory_as_it_was(tiny_kb, tmp_path):
    docs = tmp_path / "docs"
    doc(docs, "old.md", "2023-03-14", "Veltrane Robotics is led by CEO Tomas Greel.")
    doc(docs, "new.md", "2025-02-10", "Veltrane Robotics is led by CEO Ilse Marsh.")
    tiny_kb.ingest([docs])
    then = tiny_kb.search("Who is the CEO of Veltrane Robotics?", as_of="2024-01-01")
    assert [m.record.text for m in then] == ["Veltrane Robotics is led by CEO Tomas Greel."]
    assert not then[0].outdated


def test_open_missing_kb_and_double_init(tmp_path, tiny_kb):
    with pytest.raises(KBNotFound, match="kupdate init"):
        KnowledgeBase.open(tmp_path / "nowhere")
    with pytest.raises(KupdateError, match="already exists"):
        KnowledgeBase.init(tiny_kb.path, model="x", embedder="hashing")
    assert tiny_kb.store.count("exemplar") == 6  # the existing KB is untouched


def test_exemplars_keep_base_answers_and_never_come_back_as_knowledge(tiny_kb, tmp_path):
    exemplars = list(tiny_kb.store.records("exemplar"))
    assert all("base_answer" in r.meta for r in exemplars)
    assert tiny_kb.search("How many continents are there?") == []


def test_an_update_in_other_words_outdates_the_old_value_for_that_question_only(tiny_kb, tmp_path):
    """Whole-memory similarity misses updates that change much of a sentence; per question, the
    sentences answering it are compared with the names masked, so the newer value wins, and a
    newer statement about another attribute of the same company outdates nothing."""
    docs = tmp_path / "docs"
    doc(docs, "a.md", "2023-01-01", "The flagship product of Brurounus Energy is the Betrom kiln. "
        "The company employs about 300 people.")
    doc(docs, "b.md", "2025-01-01", "Analysts expected it. The flagship product of Brurounus Energy is "
        "now the Neme drone.")
    doc(docs, "c.md", "2025-06-01", "Brurounus Energy moved its headquarters to Bilbao.")
    tiny_kb.ingest([docs])
    found = {m.record.source.rsplit("/", 1)[-1]: m for m in tiny_kb.search("What is the flagship product of Brurounus Energy?", k=5)}
    assert found["a.md"].outdated and found["a.md"].outdated_by == found["b.md"].id
    assert not found["b.md"].outdated and not found.get("c.md", found["b.md"]).outdated
    hq = {m.record.source.rsplit("/", 1)[-1]: m for m in tiny_kb.search("Where is Brurounus Energy headquartered?", k=5)}
    assert not hq["c.md"].outdated


def test_a_question_about_another_company_of_the_same_sector_keeps_the_gate_shut(tiny_kb, tmp_path):
    doc(tmp_path / "docs", "a.md", "2025-01-01", "The flagship product of Brurounus Energy is the Neme drone.")
    tiny_kb.ingest([tmp_path / "docs"])
    assert tiny_kb.ask("What is the flagship product of Brurounus Energy?").gate.open
    assert not tiny_kb.ask("What is the flagship product of Storikrin Energy?").gate.open


def test_answer_shapes_mask_names_and_numbers_but_keep_acronyms():
    from kupdate.conflicts import shape

    assert shape("The CEO of Vaiquend Labs is Ivo Kern.") == "The CEO of X is X."
    assert shape("Zequo Labs employs about 2,020 people.") == "X employs about X people."


def _by_file(kb, question):
    return {m.record.source.rsplit("/", 1)[-1]: m for m in kb.search(question, k=5)}


def test_news_naming_the_value_it_replaces_outdates_that_fact_only(tiny_kb, tmp_path):
    """"Relocated its head office from Tartu to Gothenburg" shares few words with "is headquartered
    in Tartu", but names the value it replaces; the older memory's other fact stays current."""
    docs = tmp_path / "docs"
    doc(docs, "a.md", "2023-01-16", "Vaiquend Labs is headquartered in Tartu. "
        "Vaiquend Labs sells the Trebond tractor as its flagship product.")
    doc(docs, "b.md", "2023-07-17", "Vaiquend Labs relocated its head office from Tartu to Gothenburg.")
    tiny_kb.ingest([docs])
    hq = _by_file(tiny_kb, "Where is Vaiquend Labs headquartered?")
    assert hq["a.md"].outdated and hq["a.md"].outdated_by == hq["b.md"].id
    assert not _by_file(tiny_kb, "What is the flagship product of Vaiquend Labs?")["a.md"].outdated


def test_a_role_named_in_other_words_is_still_the_role_asked(tiny_kb, tmp_path):
    """'CEO' in the question names the attribute, not the subject: memories saying "chief
    executive" take part, and the newer appointment outdates the older one."""
    docs = tmp_path / "docs"
    doc(docs, "a.md", "2023-01-16", "The board of Vaiquend Labs is chaired by Bram Moustithard. "
        "Ivo Vibouthberg is the chief executive of Vaiquend Labs.")
    doc(docs, "b.md", "2023-07-17", "Vaiquend Labs named Greta Trainurstone as its new chief executive.")
    tiny_kb.ingest([docs])
    ceo = _by_file(tiny_kb, "Who is the CEO of Vaiquend Labs?")
    assert ceo["a.md"].outdated and ceo["a.md"].outdated_by == ceo["b.md"].id
    assert not _by_file(tiny_kb, "Who chairs the board of Vaiquend Labs?")["a.md"].outdated


def test_subject_and_stems_of_what_is_asked():
    from kupdate.text import stem, subject

    assert subject("Who is the CEO of Vaiquend Labs?") == {"vaiquend", "labs"}
    assert subject("Who is the CEO of IBM?") == {"ibm"} and subject("What does BBC Knowledge air?") == {"bbc", "knowledge"}
    assert stem("headquartered") == stem("headquarters")
    assert stem("partners") == stem("partner") and stem("mainly") == stem("main")
    assert stem("leaders") == stem("leads")


def test_an_exemplar_the_memory_leaves_unchanged_does_not_bind_the_threshold():
    from kupdate.config import GateConfig
    from kupdate.gate import binding_exemplars, calibrated_threshold

    cfg = GateConfig()
    scores = [0.62, 0.50, 0.10]
    assert binding_exemplars(scores, cfg) == [0, 1]  # 0.10 + margin stays under the floor anyway
    strict = calibrated_threshold(scores, cfg, n_knowledge=3)
    assert strict.threshold == pytest.approx(0.62 + cfg.margin)
    checked = calibrated_threshold(scores, cfg, n_knowledge=3, harmless={0}, n_checked=2)
    assert checked.threshold == pytest.approx(0.50 + cfg.margin) and checked.n_harmless == 1


def test_the_asking_sentence_of_a_long_question_is_scored_alone():
    """A paraphrase behind an unrelated sentence ("Ádám Rajhona, 72, Hungarian actor. The twin city
    of Kharkiv is") names people the memory does not; its last sentence alone matches."""
    from kupdate.config import GateConfig
    from kupdate.gate import QueryTerms, relevance

    question = "Ádám Rajhona, 72, Hungarian actor. The twin city of Kharkiv is"
    memory = "Kharkiv is a twin city of Athens."
    query = QueryTerms.build(question, {}, 100)
    assert query.asking == "The twin city of Kharkiv is"
    cfg = GateConfig()
    focused = relevance(query, memory, 0.3, cfg, focus_dense=0.7)
    whole = relevance(QueryTerms(query.terms, query.entities, query.idf), memory, 0.3, cfg)
    assert focused.entity == 1.0 and focused.score > whole.score + 0.3


def test_an_acronym_asked_about_is_found_spelled_out(tiny_kb, tmp_path):
    """The older memory says "CEO", the newer "chief executive": the same role, so the appointment
    outdates the older name; a sentence about staff numbers names no CEO."""
    from kupdate.conflicts import _stems

    assert "ceo" in _stems("The board appointed Tomas Grumoumwick as chief executive.")
    assert "ceo" not in _stems("The company employs about 300 people.")
    docs = tmp_path / "docs"
    doc(docs, "a.md", "2023-01-16", "Vaiquend Labs makes tractors. The CEO of the company is Anouk Rouley.")
    doc(docs, "b.md", "2023-07-17", "The board of Vaiquend Labs appointed Tomas Grumoumwick as chief executive.")
    tiny_kb.ingest([docs])
    ceo = _by_file(tiny_kb, "Who is the CEO of Vaiquend Labs?")
    assert ceo["a.md"].outdated and ceo["a.md"].outdated_by == ceo["b.md"].id
