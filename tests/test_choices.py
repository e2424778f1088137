"""Questions that list their alternatives ("... Options: a; b; c; d."): parsed, weighed by the gate,
and answered with one of them. Subjects and values are made up for these tests."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kupdate.answering.compose import one_of
from kupdate.answering.gate import relevance
from kupdate.answering.query import Query
from kupdate.config import GateConfig

QUESTION = ("The Tarnby rowing club picked a new boat this week. Which yard built it? "
            "Options: Orlen Yard; Bexa Marine; Haldor & Sons; Pike Boats.")


class _Rec:
    def __init__(self, text: str) -> None:
        self.text = text


class _Mem:
    def __init__(self, text: str) -> None:
        self.record = _Rec(text)


def test_the_alternatives_are_parsed_without_their_label_and_are_not_what_is_asked_about():
    query = Query.build(QUESTION, {}, 10)
    assert query.choices == ("Orlen Yard", "Bexa Marine", "Haldor & Sons", "Pike Boats")
    assert "Options" not in query.about and "Pike" not in query.about
    assert Query.build("who built the tarnby club's boat?", {}, 10).choices == ()


@pytest.mark.parametrize(
    ("memory", "boosted"),
    [
        ("The Tarnby rowing club's new eight was built by Bexa Marine in Kelso.", True),
        # naming two alternatives rules nothing out
        ("Tarnby rowers tried boats from Bexa Marine and Pike Boats before choosing.", False),
        ("The Tarnby rowing club picked a new boat this week.", False),
    ],
)
def test_a_memory_naming_exactly_one_alternative_scores_higher(memory, boosted):
    query = Query.build(QUESTION, {}, 10)
    cfg = GateConfig()
    with_choice = relevance(query, memory, 0.5, cfg)
    without = relevance(query, memory, 0.5, replace(cfg, choice_weight=0.0))
    assert (with_choice.score > without.score) is boosted
    if boosted:
        assert with_choice.score == pytest.approx(without.score + cfg.choice_weight * (1 - without.score), abs=1e-3)


def test_a_question_without_alternatives_scores_as_before():
    query = Query.build("Which yard built the Tarnby rowing club's new boat?", {}, 10)
    memory = "The Tarnby rowing club's new eight was built by Bexa Marine in Kelso."
    cfg = GateConfig()
    assert relevance(query, memory, 0.5, cfg) == relevance(query, memory, 0.5, replace(cfg, choice_weight=0.0))


@pytest.mark.parametrize(
    ("answer", "cited", "expected"),
    [
        # the answer names one alternative: kept as written
        ("It was built by Pike Boats.", ["Built by Bexa Marine."], "It was built by Pike Boats."),
        # the answer names none: the one the memory names
        ("The club picked a new boat.", ["The new eight was built by Bexa Marine."], "Bexa Marine."),
        # the memory names two: nothing to decide with, the answer stays
        ("The club picked a new boat.", ["Bexa Marine and Pike Boats both offered one."], "The club picked a new boat."),
    ],
)
def test_the_answer_to_a_choice_question_names_one_alternative(answer, cited, expected):
    query = Query.build(QUESTION, {}, 10)
    assert one_of(query, answer, [_Mem(t) for t in cited]) == expected
    assert one_of(Query.build("which yard built it?", {}, 10), answer, [_Mem(t) for t in cited]) == answer
