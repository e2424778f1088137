"""`ask_batch`: several questions answered with the model work batched, each exactly as `ask` answers it."""

from __future__ import annotations

import pytest
from conftest import doc

from kupdate.answering import answer as answer_mod
from kupdate.answering import freshness as freshness_mod
from kupdate.answering.answer import ask, ask_batch

QUESTIONS = [
    "Who is the CEO of Veltrane Robotics?",  # two dated versions: read, settled
    "Where is Morrowgate Marine Institute headquartered?",  # two dated versions
    "What does Quillmere Works build in Aldwick Harbour?",  # one version: quoted and generated
    "What is the capital of France?",  # nothing relevant: the gate stays shut, the base model answers
    "Who is the CEO of Veltrane Robotics now, after the change announced in the spring?",  # a longer prompt
]


@pytest.fixture
def kb(tiny_kb, tmp_path):
    docs = tmp_path / "docs"
    doc(docs, "v-old.md", "2023-03-14", "Veltrane Robotics is led by CEO Tomas Greel.")
    doc(docs, "v-new.md", "2025-02-10", "Veltrane Robotics is led by CEO Ilse Marsh.")
    doc(docs, "m-old.md", "2019-05-01", "Morrowgate Marine Institute is headquartered in Brest.")
    doc(docs, "m-new.md", "2024-09-30", "Morrowgate Marine Institute is headquartered in Tromso.")
    doc(docs, "q.md", "2022-01-01", "Quillmere Works builds ferries in Aldwick Harbour.")
    tiny_kb.ingest([docs])
    return tiny_kb


def seen(answer) -> dict:
    """What a user sees of an answer: everything but the timings."""
    out = answer.to_dict()
    out.pop("timings_ms")
    return out


def test_batched_answers_equal_asking_one_at_a_time(kb, monkeypatch):
    alone = [ask(kb, q) for q in QUESTIONS]
    assert any(a.gate.open and a.readings for a in alone), "a question must be settled by reading"
    assert any(not a.gate.open for a in alone), "a question must keep the gate shut"

    calls = []
    real = answer_mod.generate
    for mod in (answer_mod, freshness_mod):
        monkeypatch.setattr(mod, "generate", lambda llm, prompts, **kw: calls.append(len(prompts)) or
                            real(llm, prompts, **kw))
    batched = ask_batch(kb, QUESTIONS)

    assert [seen(a) for a in batched] == [seen(a) for a in alone]
    assert [(m.id, m.outdated, m.outdated_by) for a in batched for m in a.memories] == \
        [(m.id, m.outdated, m.outdated_by) for a in alone for m in a.memories]
    # one generation reads every competitor of every question and answers every question that has
    # no competitors (rows with notes and the gate-shut row, the question alone, together); one more
    # answers the read questions whose readings named no winner, if any
    readings = sum(len(a.readings) for a in alone)
    unread = sum(1 for a in alone if not a.readings)
    unsettled = sum(1 for a in alone if a.readings and a.answer not in {r.answer for r in a.readings})
    assert unread >= 2 and calls[0] == readings + unread
    assert calls[1:] == ([unsettled] if unsettled else [])
    assert all("generate" in a.timings_ms and a.timings_ms["total"] > 0 for a in batched)


def test_batched_answers_equal_alone_without_memory(kb):
    alone = [ask(kb, q, memory=False, adapter=False) for q in QUESTIONS]
    assert [seen(a) for a in ask_batch(kb, QUESTIONS, memory=False, adapter=False)] == [seen(a) for a in alone]
    assert ask_batch(kb, []) == []


def test_greedy_left_padded_batch_gives_each_row_its_text_alone(kb):
    from kupdate.answering.decoding import generate
    from kupdate.answering.prompt import base_prompt

    prompts = [base_prompt(kb.llm.tokenizer, q) for q in QUESTIONS]  # of different lengths
    assert len({len(p.text) for p in prompts}) > 1
    together = generate(kb.llm, prompts, max_new_tokens=12)
    assert together == [generate(kb.llm, [p], max_new_tokens=12)[0] for p in prompts]


@pytest.mark.integration
def test_batched_answers_equal_alone_with_the_default_models(tmp_path, exemplars_file):
    """SmolLM2 on the example KB: the batch `kupdate serve` runs gives each question its answer alone.
    (Six exemplars instead of the shipped set: they only set the gate's threshold.)"""
    import json
    from pathlib import Path

    from kupdate import KnowledgeBase

    root = Path(__file__).resolve().parents[1] / "examples"
    questions = [json.loads(line)["question"] for line in (root / "questions.jsonl").open()][:8]
    with KnowledgeBase.init(tmp_path / "kb", exemplars=exemplars_file) as kb:
        kb.ingest([root / "docs"])
        alone = [ask(kb, q) for q in questions]
        batched = ask_batch(kb, questions)
    assert [seen(a) for a in batched] == [seen(a) for a in alone]


def test_the_knowledge_base_batch_refuses_an_empty_question_before_answering_any(kb):
    from kupdate.errors import KupdateError

    with pytest.raises(KupdateError, match="question 2 of 2 is empty"):
        kb.ask_batch(["Who is the CEO of Veltrane Robotics?", "  "])
    answers = kb.ask_batch(["Who is the CEO of Veltrane Robotics?"])
    assert "Ilse Marsh" in answers[0].answer
