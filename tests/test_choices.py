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
        # most of one alternative's words, none of the others': it points at that one
        ("The Tarnby rowing club's new eight came from the Bexa yard in Kelso.", True),
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


NAMED = ("Which animals came back to the Norland valley this spring? "
         "Options: Grey wolves; Lynx; Beavers; Brown bears.")


@pytest.mark.parametrize(
    ("memory", "supports"),
    [
        # the story never names the valley but points at one alternative: judged on what it says
        ("Beavers are building dams in the river again, four centuries after they were hunted out.", True),
        # missing the question's name and picking out no alternative: another subject, scaled down
        ("Otters are building dams in the river again, four centuries after they were hunted out.", False),
    ],
)
def test_a_memory_supporting_an_alternative_is_not_scaled_down_for_the_questions_names(memory, supports):
    query = Query.build(NAMED, {}, 10)
    cfg = GateConfig()
    r = relevance(query, memory, 0.5, cfg)
    assert r.entity == 0.0
    base = cfg.dense_weight * r.dense + cfg.lexical_weight * r.lexical
    if supports:
        assert r.score == pytest.approx(base + cfg.choice_weight * (1 - base), abs=1e-3)
    else:
        assert r.score == 0.0


@pytest.mark.parametrize(
    ("answer", "cited", "expected"),
    [
        # the memory names one alternative: it decides, whatever the model's wording picked
        ("It was built by Pike Boats.", ["Built by Bexa Marine."], "Bexa Marine."),
        ("The club picked a new boat.", ["The new eight was built by Bexa Marine."], "Bexa Marine."),
        # the memory holds one alternative's rarest word only: still that one
        ("The club picked a new boat.", ["The new eight came from the Bexa yard."], "Bexa Marine."),
        # the memory names two: nothing to decide with, the answer stays as written
        ("The club picked a new boat.", ["Bexa Marine and Pike Boats both offered one."], "The club picked a new boat."),
        ("It was built by Pike Boats.", ["Bexa Marine and Pike Boats both offered one."], "It was built by Pike Boats."),
        # the first memory rules nothing out, the second supports one
        ("The club picked a new boat.", ["The club picked a new boat this week.", "Pike Boats delivered it."],
         "Pike Boats."),
    ],
)
def test_the_answer_to_a_choice_question_is_the_alternative_the_memory_supports(answer, cited, expected):
    query = Query.build(QUESTION, {}, 10)
    margin = GateConfig().choice_margin
    assert one_of(query, answer, [_Mem(t) for t in cited], margin) == expected
    assert one_of(Query.build("which yard built it?", {}, 10), answer, [_Mem(t) for t in cited], margin) == answer


def test_support_weighs_an_alternatives_words_by_how_rare_they_are_in_the_kb():
    # "marine" is in every memory of the KB, "bexa" in one: finding "bexa" says more
    df = {"bexa": 1, "marine": 9, "pike": 1, "boats": 9, "orlen": 1, "yard": 9, "haldor": 1, "sons": 9}
    query = Query.build(QUESTION, df, 10)
    from kupdate.answering.gate import support, supported

    bexa, pike = support(query, "The Bexa yard did it."), support(query, "A marine yard did it.")
    assert bexa[1] > 0.8 and pike[1] < 0.2
    assert supported(query, "The Bexa yard did it.", 0.2) == 1
    assert supported(query, "A marine yard did it.", 0.2) is None
