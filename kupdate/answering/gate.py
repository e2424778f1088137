"""The gate: per question, does memory go into the prompt? (docs/answering.md, "The gate")

Each retrieved memory gets one relevance score in [0, 1] that mixes three signals: dense cosine,
IDF-weighted coverage of the question's content terms, and coverage of the names the question
mentions. Name coverage keeps the gate shut for a question about another subject of the same shape
("The native language of Ann Roe is" against a memory about Bo Lind), where dense similarity alone
is high; a question without names (typed in lower case) is judged on its terms instead. The
threshold is calibrated on the KB's exemplars (questions the memory must not touch) so that they
keep the base model's answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass

from kupdate.answering.query import Query
from kupdate.config import GateConfig
from kupdate.text import mentions


def coverage(wanted: Iterable[str], idf: Mapping[str, float], present: set[str],
             stem: Callable[[str], str]) -> float:
    """IDF-weighted share of `wanted` terms whose stem occurs in `present` (a set of stems)."""
    wanted = list(wanted)
    total = sum(idf[t] for t in wanted)
    if total == 0:
        return 0.0
    return sum(idf[t] for t in wanted if stem(t) in present) / total


@dataclass
class Relevance:
    score: float
    dense: float
    lexical: float
    entity: float
    choice: float = 0.0


def relevance(query: Query, text: str, dense: float, cfg: GateConfig, *, context: str | None = None,
              focus_dense: float | None = None, subject: frozenset[str] = frozenset()) -> Relevance:
    """Score one memory for one question (the number the gate compares with its threshold).

    `context`: where the named entities are looked for when `text` is one sentence of a longer
    memory, since a paragraph names its subject once and then says "it". `subject`: more of the
    question's terms known to say what it is about (`notes.shared_subject`), looked for in the
    context like its names. A question of several sentences scores the better of the whole and its
    last sentence (`Query.focus`), that one with `focus_dense`, its own cosine to the memory, when given.
    """
    whole = _relevance(query, text, dense, cfg, context, subject)
    if query.focus is None:
        return whole
    asking = _relevance(query.focus, text, dense if focus_dense is None else focus_dense, cfg, context, subject)
    return asking if asking.score > whole.score else whole


def _relevance(query: Query, text: str, dense: float, cfg: GateConfig, context: str | None,
               subject: frozenset[str] = frozenset()) -> Relevance:
    stem = query.lang.stem
    present = query.lang.stems(text)
    around = present if context is None else query.lang.stems(context)
    # A sentence saying "The firm opened its first store in Oslo." names its subject in its context:
    # the question's names (and `subject` terms) found there count as present in the sentence.
    about = {stem(e) for e in query.names} | {stem(e) for e in subject}
    lexical = coverage(query.terms, query.idf, present | (about & around), stem)
    # A question without names ("what is photosynthesis", or typed in lower case) is judged on its terms.
    entity = coverage(query.names, query.idf, around, stem) if query.names else lexical
    dense_c = min(max(dense, 0.0), 1.0)
    score = cfg.dense_weight * dense_c + cfg.lexical_weight * lexical + cfg.entity_weight * entity
    # A question listing alternatives: a memory that supports one of them ahead of the others speaks
    # to it (it points at a candidate answer and away from the rest).
    choice = 1.0 if supported(query, text, cfg.choice_margin) is not None else 0.0
    if query.names and entity < cfg.min_entity_coverage and not choice:
        # Missing the question's most specific names ("Acme Energy" against a memory about "Zenith
        # Energy": only the sector word is shared) is strong evidence of another subject. Not for a
        # memory that picks out one alternative: a quiz's names are often only its setting (a
        # region, a demonym, an organisation the story calls otherwise), and what the memory says
        # about the alternatives is the better evidence (docs/answering.md, "Questions that list
        # their alternatives").
        score *= entity / cfg.min_entity_coverage
    # Support closes part of the gap to 1, so it weighs most for a memory already close to the question.
    score += cfg.choice_weight * choice * (1 - score)
    return Relevance(round(score, 4), round(dense_c, 4), round(lexical, 4), round(entity, 4), choice)


def support(query: Query, text: str) -> list[float]:
    """How much `text` says for each of the question's alternatives: 1.0 when it names one whole,
    else the IDF-weighted share of that alternative's own terms (`Query.choice_terms`) it contains
    ("the yard in Kelso" for "Kelso Marine Yard" holds its rarest words, not the phrase). An
    alternative made only of the question's words gets 0: a memory repeating the question names it."""
    present = query.lang.stems(text)
    return [0.0 if not terms else 1.0 if mentions(text, c) else coverage(terms, query.choice_idf, present, query.lang.stem)
            for c, terms in zip(query.choices, query.choice_terms)]


def supported(query: Query, text: str, margin: float) -> int | None:
    """The index of the alternative `text` supports ahead of every other by at least `margin`
    (`support`), or None: naming two alternatives alike, or none, rules nothing out."""
    if len(query.choices) < 2:
        return None
    found = support(query, text)
    order = sorted(range(len(found)), key=lambda i: -found[i])
    return order[0] if found[order[0]] - found[order[1]] >= margin else None


@dataclass
class GateDecision:
    """What `ask --json` reports as `gate`."""

    score: float
    threshold: float
    open: bool
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def decide(best_score: float | None, threshold: float, *, forced_shut: bool = False) -> GateDecision:
    if forced_shut:
        return GateDecision(best_score or 0.0, threshold, False, "memory disabled (--no-memory)")
    if best_score is None:
        return GateDecision(0.0, threshold, False, "no current memory retrieved")
    is_open = best_score >= threshold
    reason = "relevant memory" if is_open else "best memory below threshold"
    return GateDecision(best_score, threshold, is_open, reason)


@dataclass
class Calibration:
    threshold: float
    max_exemplar_score: float
    n_exemplars: int
    n_knowledge: int
    # Exemplars scoring above the threshold whose answer the memory was checked to leave unchanged.
    n_harmless: int = 0
    n_checked: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def binding_exemplars(scores: list[float], cfg: GateConfig) -> list[int]:
    """Indices of the exemplars worth an answer check, best first: those that would put the
    threshold above the floor, at most `cfg.check_answers` of them."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return [i for i in order if scores[i] + cfg.margin > cfg.floor][: cfg.check_answers]


def calibrated_threshold(exemplar_scores: list[float], cfg: GateConfig, n_knowledge: int,
                         harmless: set[int] | frozenset[int] = frozenset(), n_checked: int = 0) -> Calibration:
    """Threshold = highest binding exemplar score + margin, kept within [floor, ceiling].

    Every exemplar is a question whose answer must not change, so the gate stays shut on all of
    them (the maximum, not a quantile), except on the `harmless` ones: asked with the memory, they
    kept the base model's exact answer (the memory was beside the point and the model ignored it),
    so letting them through changes nothing a user sees.
    """
    binding = [s for i, s in enumerate(exemplar_scores) if i not in harmless]
    top = max(binding, default=0.0)
    if cfg.threshold is not None:
        threshold = cfg.threshold
    else:
        threshold = min(max(top + cfg.margin, cfg.floor), cfg.ceiling)
    above = sum(1 for i in harmless if exemplar_scores[i] >= threshold)
    return Calibration(round(threshold, 4), round(top, 4), len(exemplar_scores), n_knowledge, above, n_checked)
