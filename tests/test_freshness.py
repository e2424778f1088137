"""Which memory is current for a question, and whether the gate opens: one table of cases.

Every case is two dated memories about a made-up subject (older, newer) and a question. The real
default models read them (integration); the pure pieces of the rule are checked first without
any model. Subjects and values here are invented for these tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kupdate.answering.freshness import Reading, competitors, same_value, settle, value_of
from kupdate.language import get_language

EN = get_language("en")


# -- the rule, without a model -------------------------------------------------------------------


class _Rec:
    def __init__(self, i: int, day: str, text: str = "") -> None:
        self.id, self.valid_from, self.observed_at, self.text = i, day, day, text


class _Mem:
    def __init__(self, i: int, day: str, score: float = 0.9) -> None:
        self.record, self.score, self.outdated, self.outdated_by, self.replaced = _Rec(i, day), score, False, None, []

    @property
    def id(self) -> int:
        return self.record.id


@pytest.mark.parametrize(
    ("answer", "question", "memory", "value", "grounded"),
    [
        ("The ceo of orvik mills is Tana Bell.", "who is the ceo of orvik mills?",
         "Orvik Mills named Tana Bell chief executive.", {"tana", "bell"}, True),
        ("12", "how many moons does keplo have?", "Update 2021: how many moons does keplo have? Answer: 12.",
         {"12"}, True),
        # the model's own words, not the memory's: no answer from this memory
        ("It is Paris.", "what is the capital of lorvenia?", "Lorvenia exports timber.", {"pari"}, False),
        # an echo of the question adds nothing
        ("Who is the ceo of orvik mills?", "who is the ceo of orvik mills?", "Orvik Mills makes paper.", set(), False),
    ],
)
def test_what_a_reading_adds_to_the_question(answer, question, memory, value, grounded):
    got, ok = value_of(answer, question, memory, EN, min_grounded=0.5)
    assert got == {EN.stem(v) for v in value} and ok is grounded


def test_a_memory_s_own_date_is_a_value_only_when_it_is_the_whole_answer():
    note = "Update 2019: when did the keplo rovers last win the cup? Answer: 2019."
    question = "when did the keplo rovers last win the cup?"
    assert value_of("2019.", question, note, EN, 0.5, "2019-06-01") == ({"2019"}, True)
    # the header's year beside another value is not part of that value
    assert value_of("Update 2019: 2016.", question, note.replace("2019.", "2016."), EN, 0.5,
                    "2019-06-01")[0] == {EN.stem("update"), "2016"}


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [({"tana", "bell"}, {"tana", "bell", "nam"}, True), ({"11"}, {"12"}, False),
     ({"updat", "2018", "amir", "kan"}, {"updat", "2020", "amir", "kan"}, True),
     ({"updat", "2017", "chri", "eub"}, {"updat", "2020", "amir", "kan"}, False), (set(), {"x"}, False)],
)
def test_two_readings_give_the_same_value_when_their_added_words_overlap(a, b, same):
    assert same_value(a, b, 0.5) is same


def test_words_every_reading_gives_are_a_frame_not_a_value():
    # "Answer: 2" against "Answer: 3": only the numbers are compared
    assert not same_value({"answ", "update", "2"}, {"answ", "update", "3"}, 0.5, frame={"answ", "update"})
    # one reading adds a word to the shared value: nothing left to compare but the value itself
    assert same_value({"lake", "varn"}, {"still", "lake", "varn"}, 0.5, frame={"lake", "varn"})


def test_the_newest_answering_memory_outdates_older_ones_with_another_value_only():
    old, mid, new, mute = _Mem(1, "2019"), _Mem(2, "2020"), _Mem(3, "2021"), _Mem(4, "2022")
    readings = [Reading(1, "607", {"607"}, True), Reading(2, "614", {"614"}, True),
                Reading(3, "614", {"614"}, True), Reading(4, "It is unknown.", {"unknown"}, False)]
    pairs = settle([old, mid, new, mute], readings, 0.5)
    # the 2022 memory does not answer, so it outdates nothing; 2020 agrees with 2021 and stays
    assert [(a.id, b.id) for a, b in pairs] == [(1, 3)]
    assert old.outdated and old.outdated_by == 3 and not mid.outdated and not new.outdated and not mute.outdated
    assert new.replaced == ["607"]


def test_only_memories_the_gate_would_quote_and_of_different_dates_compete():
    a, b, c = _Mem(1, "2020", 0.9), _Mem(2, "2021", 0.85), _Mem(3, "2022", 0.5)
    assert [m.id for m in competitors([a, b, c], threshold=0.6, window=0.15, limit=6)] == [1, 2]
    assert competitors([a, _Mem(4, "2020", 0.88)], threshold=0.6, window=0.15, limit=6) == []


def test_statements_are_compared_on_what_they_say_of_the_subject_their_memories_share():
    """Every statement retrieved for "who leads tarnwick foods?" names Tarnwick Foods, so the
    name says nothing about which answers: each statement's `about` vector leaves the shared
    subject's words out, and `asked` compares it with the question's, left out likewise."""
    from kupdate.answering.notes import scored_statements
    from kupdate.answering.query import Query
    from kupdate.config import GateConfig
    from kupdate.models.embedder import HashingEmbedder

    emb = HashingEmbedder(256)
    leads, plant = "Mira Olsen leads Tarnwick Foods.", "Tarnwick Foods opened a plant in Porto."
    given = [_Mem(1, "2020"), _Mem(2, "2021")]
    given[0].record.text, given[1].record.text = leads, plant
    question = "who leads tarnwick foods?"
    query = Query.build(question, {}, 100)
    scored = scored_statements(query, emb.encode([question])[0], given, emb.encode, GateConfig())
    by_text = {st.text: st for st in scored}
    assert scored[0].text == leads
    assert by_text[leads].asked > 0.3 > abs(by_text[plant].asked)  # nothing shared once the name is out
    assert EN.without(plant, {EN.stem(w) for w in ("tarnwick", "foods")}) == "opened a plant in porto"


def test_a_newer_memory_s_reading_does_not_propose_the_values_its_older_rivals_give():
    """Read from "The Vintra amp replaced the Corra speaker ...", the value proposed is the one the
    older memory does not give; the older memory's reading avoids nothing."""
    from kupdate.answering.freshness import older_values
    from kupdate.answering.notes import Note

    old, new = _Mem(1, "2020"), _Mem(2, "2023")
    notes_old = [Note(1, "Pellam Audio sells the Corra speaker.", "2020")]
    notes_new = [Note(2, "The Vintra amp replaced the Corra speaker at Pellam Audio.", "2023")]
    avoid = older_values([(old, notes_old), (new, notes_new)], EN)
    assert avoid[0] == () and set(avoid[1]) == {"Pellam Audio", "Corra"}


# -- the table, read by the real default models ----------------------------------------------------

OLD, NEW = "2019-03-01", "2024-03-01"
CASES = [
    # (id, older memory, newer memory, question, fresh value, stale value, gate open?, current version)
    ("lower-case question", "The chief executive of Orvik Mills is Tana Bell.",
     "Orvik Mills appointed Joss Kemper as its chief executive.", "who is the ceo of orvik mills?",
     "Joss Kemper", "Tana Bell", True, "new"),
    ("q/a notes", "Update 2019: how many moons does the planet keplo have? Answer: 9.",
     "Update 2024: how many moons does the planet keplo have? Answer: 14.",
     "how many moons does the planet keplo have?", "14", "9", True, "new"),
    # asked when something last happened, each note dated the year it happened: the year is the value
    ("a year that changed", "Update 2019: when did the brindle rovers last win the cup? Answer: 2019.",
     "Update 2024: when did the brindle rovers last win the cup? Answer: 2024.",
     "when did the brindle rovers last win the cup?", "2024", "2019", True, "new"),
    ("a number that changed", "The Brastow bridge is 410 metres long.",
     "After the extension, the Brastow bridge is 520 metres long.", "How long is the Brastow bridge?",
     "520", "410", True, "new"),
    ("html in the text", 'The <b>Velden Choir</b> is conducted by <a href="https://e.test/x">Mira Oakes</a>.',
     'Since January the <a href="https://e.test/y">Velden Choir</a> is conducted by <i>Piet Larsen</i>.',
     "Who conducts the Velden Choir?", "Piet Larsen", "Mira Oakes", True, "new"),
    ("a paragraph with several facts", "Quenby Foods was founded in 1961 in Harlow. It makes biscuits and "
     "crackers. Its chief executive is Lena Marsh, and it employs about 900 people in three plants.",
     "Quenby Foods said on Monday that Omar Reyes has become its chief executive.",
     "Who is the chief executive of Quenby Foods?", "Omar Reyes", "Lena Marsh", True, "new"),
    ("a lower-case question listing its options", "The Harrow book fair was held in Lima in 2019.",
     "The Harrow book fair moves to Pune this year, its organisers said.",
     "where is the harrow book fair held this year? options: oslo; lima; pune; kobe.", "Pune", "Lima", True, "new"),
    ("nothing changed", "The river Ossel flows into Lake Varn.", "The river Ossel, still, flows into Lake Varn.",
     "Where does the river Ossel flow into?", "Varn", None, True, "both"),
    # the newer memory is about the same subject but not about what is asked: it outdates nothing
    ("a newer memory about something else", "The Harwick Museum is directed by Ines Vogel.",
     "The Harwick Museum reopened its east wing in May. Its collection now holds 40,000 objects. "
     "The museum is open every day but Monday.", "Who directs the Harwick Museum?", "Ines Vogel", None, True,
     "old"),
    # a newer item on another attribute of the same subject, which the question's words match no
    # worse than the answer (none has "headquartered"): it says something else of the subject
    ("a newer item on another attribute", "Tarrow Press has its head office in Lisle. Its chief executive "
     "is Ada Rook.", "Tarrow Press now works mainly with its new partner Belk Group. Tarrow Press reported "
     "higher sales in the last quarter.", "where is tarrow press headquartered?", "Lisle", None, True, "old"),
    # the new version worded otherwise, beside a fact the older memory does not have
    ("a new version worded otherwise", "The chief executive of Kelvar Optics is Rena Holt. Kelvar Optics is "
     "based in Dunmore.", "The board of Kelvar Optics appointed Ivo Brandt as CEO. Kelvar Optics employs "
     "about 300 people.", "Who is the chief executive of Kelvar Optics?", "Ivo Brandt", "Rena Holt", True, "new"),
    # a later news story on a neighbouring topic, naming less of what is asked: it outdates nothing
    ("a later story on another subject", "The Norland film prize was back on television this week after a "
     "year off the air, following a row over its judges.",
     "The Tessel music awards, shown on television on Sunday, were dominated by a single album.",
     "Which awards show returned to television this week after a year off the air? "
     "Options: Norland film prize; Tessel music awards; Varda theatre prize.", "Norland", None, True, "old"),
]
SHUT = ["What is the capital of France?", "How many legs does a spider have?",
        "Who is the chief executive of Pallow Shipping?",
        # typed in lower case: "velden" is a name the memories know, "orchestra" a word none holds
        "who conducts the velden orchestra?"]


@pytest.fixture(scope="module")
def table_kb(tmp_path_factory: pytest.TempPathFactory):
    from kupdate import KnowledgeBase

    root = tmp_path_factory.mktemp("freshness")
    exemplars = root / "exemplars.jsonl"
    exemplars.write_text("".join(json.dumps({"question": q}) + "\n" for q in SHUT[:2]
                                 + ["Who wrote Romeo and Juliet?", "What is 7 times 8?"]))
    docs = root / "docs.jsonl"
    with docs.open("w") as f:
        for i, (_, older, newer, *_rest) in enumerate(CASES):
            f.write(json.dumps({"text": older, "date": OLD, "source": f"case{i}-old"}) + "\n")
            f.write(json.dumps({"text": newer, "date": NEW, "source": f"case{i}-new"}) + "\n")
    kb = KnowledgeBase.init(root / "kb", exemplars=exemplars)
    kb.ingest([docs])
    yield kb
    kb.close()


def _source(kb, memory) -> str:
    return Path(memory.record.source).name


@pytest.mark.integration
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_the_newer_memory_is_current_and_answers(table_kb, case):
    from kupdate.text import hits

    name, _, _, question, fresh, stale, gate_open, current = case
    answer = table_kb.ask(question, adapter=False)
    assert answer.gate.open is gate_open, answer.to_dict()
    flags = {_source(table_kb, m): m.outdated for m in answer.memories}
    i = CASES.index(case)
    if stale is None:  # nothing changed: neither version is called outdated
        assert not any(flags.values()), answer.to_dict()
    else:
        assert flags.get(f"case{i}-old", True), answer.to_dict()  # outdated, or not quoted at all
        assert not hits(answer.answer, stale)
    # the current version is cited, not outdated
    assert flags.get(f"case{i}-{'old' if current == 'old' else 'new'}") is False, answer.to_dict()
    assert hits(answer.answer, fresh), answer.to_dict()


@pytest.mark.integration
@pytest.mark.parametrize("question", SHUT)
def test_the_gate_stays_shut_for_questions_the_memory_does_not_touch(table_kb, question):
    answer = table_kb.ask(question, adapter=False)
    assert not answer.gate.open, answer.to_dict()
    assert answer.answer == table_kb.ask(question, memory=False, adapter=False).answer


def test_the_answer_path_imports_one_way():
    """The modules of `kupdate/answering/` import each other without a cycle, function-level
    imports included (docs/answering.md lists the order)."""
    import ast
    from pathlib import Path

    import kupdate.answering as pkg

    folder = Path(pkg.__file__).parent
    names = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
    edges = {}
    for name in names:
        tree = ast.parse((folder / f"{name}.py").read_text(encoding="utf-8"))
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if parts[:2] == ["kupdate", "answering"]:
                    found |= {parts[2]} if len(parts) > 2 else {a.name for a in node.names}
        edges[name] = found & names - {name}
    assert edges["decoding"] and edges["answer"]  # the walk sees imports at all
    done, visiting = set(), []

    def visit(n):
        assert n not in visiting, f"import cycle: {' -> '.join(visiting + [n])}"
        if n not in done:
            visiting.append(n)
            for m in edges[n]:
                visit(m)
            visiting.pop()
            done.add(n)

    for n in sorted(names):
        visit(n)
