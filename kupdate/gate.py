"""The gate: per question, does memory go into the prompt? (DESIGN.md section 6)

Each retrieved memory gets one relevance score in [0, 1] that mixes three signals:
dense cosine, IDF-weighted coverage of the question's content terms, and coverage of the
question's named entities. Entity coverage is what keeps the gate shut for a question about
another subject with the same shape ("Michel Rocard is a native speaker of" against a memory about
Danielle Darrieux), where dense similarity alone is high. The threshold is calibrated on the KB's
exemplars (questions the memory must not touch) so that they keep the base model's answer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from kupdate.config import GateConfig
from kupdate.text import entities, stem, terms, words


@dataclass
class QueryTerms:
    """What the gate needs to know about a question, computed once per question."""

    terms: list[str]
    entities: set[str]
    idf: dict[str, float]

    @classmethod
    def build(cls, question: str, df: Mapping[str, int], n_docs: int) -> QueryTerms:
        ts = terms(question)
        return cls(ts, entities(question) & set(ts), {t: bm25_idf(df.get(t, 0), n_docs) for t in ts})


def bm25_idf(df: int, n_docs: int) -> float:
    """BM25's IDF, always positive; a term no memory contains weighs the most."""
    return math.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))


def coverage(wanted: Iterable[str], idf: Mapping[str, float], present: set[str]) -> float:
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


def relevance(query: QueryTerms, text: str, dense: float, cfg: GateConfig, *, context: str | None = None) -> Relevance:
    """Score one memory for one question (the number the gate compares with its threshold).

    `context`: where the named entities are looked for when `text` is one sentence of a longer
    memory, since a paragraph names its subject once and then says "it".
    """
    present = {stem(w) for w in words(text)}
    lexical = coverage(query.terms, query.idf, present)
    # A question without named entities ("what is photosynthesis") is judged on its terms alone.
    around = present if context is None else {stem(w) for w in words(context)}
    entity = coverage(query.entities, query.idf, around) if query.entities else lexical
    dense_c = min(max(dense, 0.0), 1.0)
    score = cfg.dense_weight * dense_c + cfg.lexical_weight * lexical + cfg.entity_weight * entity
    if query.entities and entity < cfg.min_entity_coverage:
        # Missing the question's most specific names ("Storikrin Energy" against a memory about
        # "Brurounus Energy": only the sector word is shared) is strong evidence of another subject.
        score *= entity / cfg.min_entity_coverage
    return Relevance(round(score, 4), round(dense_c, 4), round(lexical, 4), round(entity, 4))


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

    def to_dict(self) -> dict:
        return asdict(self)


def calibrated_threshold(exemplar_scores: list[float], cfg: GateConfig, n_knowledge: int) -> Calibration:
    """Threshold = highest exemplar score + margin, kept within [floor, ceiling].

    Taking the maximum (not a quantile) is deliberate: every exemplar is a question whose answer
    must not change, so the gate must stay shut on all of them.
    """
    top = max(exemplar_scores, default=0.0)
    if cfg.threshold is not None:
        threshold = cfg.threshold
    else:
        threshold = min(max(top + cfg.margin, cfg.floor), cfg.ceiling)
    return Calibration(round(threshold, 4), round(top, 4), len(exemplar_scores), n_knowledge)
