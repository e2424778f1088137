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
    # Search only ranks: which version is current is settled per question, by reading, in ask.
    assert not any(m.outdated for m in tiny_kb.search("Who is the CEO of Veltrane Robotics?", k=5))
    answer = tiny_kb.ask("Who is the CEO of Veltrane Robotics?")
    assert answer.gate.open
    by_text = {m.record.text: m for m in answer.memories}
    old, new = by_text["Veltrane Robotics is led by CEO Tomas Greel."], by_text["Veltrane Robotics is led by CEO Ilse Marsh."]
    assert old.outdated and old.outdated_by == new.id and not new.outdated
    assert [m.record.text for m in answer.citations] == [new.record.text]
    assert {r.memory_id for r in answer.readings} == {old.id, new.id}


def test_same_shape_about_another_entity_is_not_outdated(tiny_kb, tmp_path):
    docs = tmp_path / "docs"
    doc(docs, "a.md", "2023-01-01", "Veltrane Robotics is led by CEO Tomas Greel.")
    doc(docs, "b.md", "2025-01-01", "Quillfeather Press is led by CEO Tomas Greel.")
    tiny_kb.ingest([docs])
    assert not any(m.outdated for m in tiny_kb.ask("Who is the CEO of Veltrane Robotics?").memories)


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
    assert set(data) == {"question", "answer", "gate", "memories", "adapter", "timings_ms", "readings"}
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


def test_a_question_about_another_company_of_the_same_sector_keeps_the_gate_shut(tiny_kb, tmp_path):
    doc(tmp_path / "docs", "a.md", "2025-01-01", "The flagship product of Brurounus Energy is the Neme drone.")
    tiny_kb.ingest([tmp_path / "docs"])
    assert tiny_kb.ask("What is the flagship product of Brurounus Energy?").gate.open
    assert not tiny_kb.ask("What is the flagship product of Storikrin Energy?").gate.open


def test_stems_of_what_is_asked():
    from kupdate.language import get_language

    stem = get_language("en").stem
    assert stem("headquartered") == stem("headquarters")
    assert stem("partners") == stem("partner") and stem("mainly") == stem("main")
    assert stem("leaders") == stem("leads")


def test_an_exemplar_the_memory_leaves_unchanged_does_not_bind_the_threshold():
    from kupdate.answering.gate import binding_exemplars, calibrated_threshold
    from kupdate.config import GateConfig

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
    from kupdate.answering.gate import relevance
    from kupdate.answering.query import Query
    from kupdate.config import GateConfig

    question = "Ádám Rajhona, 72, Hungarian actor. The twin city of Kharkiv is"
    memory = "Kharkiv is a twin city of Athens."
    query = Query.build(question, {}, 100)
    assert query.asking == "The twin city of Kharkiv is"
    cfg = GateConfig()
    focused = relevance(query, memory, 0.3, cfg, focus_dense=0.7)
    whole = relevance(Query(query.text, query.terms, query.names, query.idf, query.lang), memory, 0.3, cfg)
    assert focused.entity == 1.0 and focused.score > whole.score + 0.3




class _Neighbour:
    def __init__(self, text: str) -> None:
        self.record = type("R", (), {"text": text})()


def test_a_lower_case_question_finds_its_subject_in_what_its_memories_share():
    """The sentence "The company is headquartered in Lisbon." answers "where is tarnwick foods
    headquartered?" typed in lower case exactly as it answers the cased question: the subject's
    words are the question's terms every memory retrieved for it contains, not its capitals."""
    from kupdate.answering.gate import relevance
    from kupdate.answering.notes import shared_subject
    from kupdate.answering.query import Query
    from kupdate.config import GateConfig

    profile = "Mira Olsen is the chief executive of Tarnwick Foods. The company is headquartered in Lisbon."
    neighbours = [_Neighbour(profile), _Neighbour("Tarnwick Foods launched an oat drink."),
                  _Neighbour("Tarnwick Foods named Ivo Park chair of its board.")]
    lower = Query.build("where is tarnwick foods headquartered?", {}, 100)
    cased = Query.build("Where is Tarnwick Foods headquartered?", {}, 100)
    assert not lower.names and cased.names == {"tarnwick", "foods"}
    subject = shared_subject(lower, neighbours)
    assert subject == {"tarnwick", "foods"}
    cfg = GateConfig()

    def score(query, sentence, subject=frozenset()):
        return relevance(query, sentence, 0.5, cfg, context=profile, subject=subject).score

    hq, ceo = "The company is headquartered in Lisbon.", "Mira Olsen is the chief executive of Tarnwick Foods."
    assert score(lower, hq) < score(lower, ceo)  # without it, the sentence naming the company wins
    assert score(lower, hq, subject) > score(lower, ceo, subject)
    assert score(lower, hq, subject) == score(cased, hq)
    # one memory, or every term shared: nothing to tell the subject from what is asked
    assert shared_subject(lower, neighbours[:1]) == frozenset()
    assert shared_subject(lower, [_Neighbour(profile), _Neighbour(profile)]) == frozenset()


def test_a_question_typed_without_capitals_takes_its_names_from_how_the_memories_write_them():
    """"who leads tarnwick foods?" gets the names "Who leads Tarnwick Foods?" has; "who leads
    tarnwick robotics?" (no memory holds "robotics") names another subject, as its cased form would."""
    from kupdate.answering.query import Query

    memories = ["Mira Olsen leads Tarnwick Foods. The foods it sells are organic.",
                "Tarnwick Foods opened a plant in Porto.", "Leads from the survey were foods and drinks."]
    df = {"leads": 2, "tarnwick": 2, "foods": 3, "robotics": 0}
    query = Query.build("who leads tarnwick foods?", df, 3)
    assert query.caseless and not query.names
    query.learn_names(memories)
    # "foods" is written inside the name in 2 of the 3 memories holding it; "leads" in 1 of 2
    assert query.names == {"tarnwick", "foods"}
    other = Query.build("who leads tarnwick robotics?", df, 3)
    other.learn_names(memories)
    assert other.names == {"tarnwick", "robotics"}
    cased = Query.build("Who leads Tarnwick Robotics?", df, 3)
    assert cased.names == other.names
    cased.learn_names(["Tarnwick Robotics and Acme merged."])  # a question with capitals keeps its own
    assert cased.names == {"tarnwick", "robotics"}
