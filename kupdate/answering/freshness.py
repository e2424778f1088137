"""Which memory is current for this question: fresh over stale, decided by reading (docs/answering.md).

Two memories may state one fact in any wording: a dated Q/A note, a news paragraph holding several
facts, a sentence with HTML left in. Whether they disagree *on the question asked* is not a property
of their surface form, so it is not decided from it. Instead each competing memory is read on its
own: the model answers the question from that memory alone (the same prompt and memory-aware
decoding as the final answer, all competitors in one batch), and the answers are compared:

- a memory whose answer adds nothing to the question, or whose added words the memory does not
  contain, does not answer the question and takes no part (it is neither outdated nor outdating);
- among the memories that answer, the newest `valid_from` is current; every older one whose answer
  gives another value is outdated on this question, and its value is one the final answer avoids;
  older ones giving the same value stay current (nothing changed, nothing is called outdated).

Competitors are the current memories the gate would quote (within `window` of the best score and
above the threshold), so a memory about another question rarely competes; when one does, its
answer is usually not grounded in the memory or repeats nothing of value, and it drops out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kupdate.answering.decoding import generate
from kupdate.answering.notes import Note
from kupdate.answering.prompt import Prompt, memory_prompt
from kupdate.language import Language


@dataclass
class Reading:
    """What one memory says in answer to the question."""

    memory_id: int
    answer: str
    value: set[str] = field(default_factory=set)  # stems the answer adds to the question
    grounded: bool = False  # the memory itself contains those stems

    @property
    def answers(self) -> bool:
        return bool(self.value) and self.grounded

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.memory_id, "answer": self.answer, "value": sorted(self.value),
                "answers": self.answers}


def value_of(answer: str, question: str, memory_text: str, lang: Language, min_grounded: float,
             dated: str = "") -> tuple[set[str], bool]:
    """The stems `answer` adds to `question`, and whether at least `min_grounded` of them occur in
    the memory it was read from (an answer the memory does not support is the model's own).

    The memory's own date (`dated`, its `valid_from`) is when the fact held, not the fact: a note
    headed with its year gives the same value as the same note a year later. An answer that is
    nothing but that date is a value, though: asked when something last happened, a memory dated
    the year it happened answers with its own year."""
    asked = lang.stems(question) | {lang.stem(w) for w in lang.stopwords}
    added = lang.stems(answer) - asked
    value = (added - _date_words(dated)) or added
    if not value:
        return value, False
    present = lang.stems(memory_text)
    return value, len(value & present) >= min_grounded * len(value)


def _date_words(day: str) -> set[str]:
    """'2019-06-01T00:00:00' -> {'2019', '2019-06-01'}: the year and the day as a reading spells them."""
    return {day[:4], day[:10]} if len(day) >= 4 and day[:4].isdigit() else set()


def same_value(a: set[str], b: set[str], min_overlap: float, frame: set[str] = frozenset()) -> bool:
    """Two answers give the same value when their added stems overlap by `min_overlap` (Jaccard),
    or one's are all in the other's (a longer answer restating the value with more words).

    `frame`: stems every reading gives (a notes' shared "Answer:" label). They are left out of the
    comparison, unless that leaves one answer with nothing, which then agrees with any it is part of.
    """
    if a - frame and b - frame:
        a, b = a - frame, b - frame
    if not a or not b:
        return not a and not b
    inter = len(a & b)
    return inter / len(a | b) >= min_overlap or inter == min(len(a), len(b))


def settle(memories: Sequence[Any], readings: Sequence[Reading], min_overlap: float) -> list[tuple[Any, Any]]:
    """Mark (in place) the memories outdated on this question; returns (outdated, by) pairs.

    `memories[i]` was read as `readings[i]`. The newest answering memory is current; older
    answering memories whose value differs from it are outdated by it.
    """
    answering = [(m, r) for m, r in zip(memories, readings) if r.answers]
    if len(answering) < 2:
        return []
    # Words every reading gives are the notes' common frame ("Answer:", a shared unit), not a value.
    frame = set.intersection(*(r.value for _, r in answering))
    answering.sort(key=lambda mr: _order(mr[0].record), reverse=True)
    (winner, won), pairs = answering[0], []
    for m, r in answering[1:]:
        if _order(m.record) < _order(winner.record) and not same_value(r.value, won.value, min_overlap, frame):
            m.outdated, m.outdated_by = True, winner.id
            winner.replaced.append(r.answer)
            pairs.append((m, winner))
    return pairs


def _order(record: Any) -> tuple[str, str, int]:
    return record.valid_from, record.observed_at, record.id


def competitors(memories: Sequence[Any], threshold: float, window: float, limit: int) -> list[Any]:
    """The current memories that would be quoted: above `threshold`, within `window` of the best,
    at most `limit`; empty when they do not differ in date (no version to choose)."""
    current = [m for m in memories if not m.outdated]
    if not current:
        return []
    floor = max(threshold, current[0].score - window)
    chosen = [m for m in current if m.score >= floor][:limit]
    if len({m.record.valid_from for m in chosen}) < 2:
        return []
    return chosen


def reading_prompts(tokenizer: Any, question: str | Sequence[str],
                    notes: Sequence[Sequence[Note]]) -> tuple[list[Prompt], list[list[str]]]:
    """The prompt reading each group of notes alone, and what each copies from.
    `question`: one for every group, or one per group (groups of several questions read together)."""
    questions = [question] * len(notes) if isinstance(question, str) else list(question)
    prompts = [memory_prompt(tokenizer, q, group) for q, group in zip(questions, notes)]
    return prompts, [[n.copy_text for n in group] for group in notes]


def older_values(found: Sequence[tuple[Any, Sequence[Note]]], lang: Language) -> list[tuple[str, ...]]:
    """For each competitor (memory, notes), the names its older competitors' notes give.

    A newer memory naming an older one's value beside another ("The B replaced the A as ...")
    reports the change from it, so read from it the other value comes first: these names are the
    ones its reading does not propose as the value (`generate`'s `avoid`); it may still copy them."""
    out = []
    for m, _ in found:
        day = m.record.valid_from or ""
        names = {name for o, notes in found if (o.record.valid_from or "") < day
                 for note in notes for name in lang.names(note.text)}
        out.append(tuple(sorted(names)))
    return out


def read_notes(llm: Any, question: str | Sequence[str], notes: Sequence[Sequence[Note]], *, max_new_tokens: int,
               copy_mix: float, lang: Language | None = None,
               avoid: Sequence[Sequence[str]] | None = None) -> list[str]:
    """The answer to `question` from each group of notes alone, in one batch (greedy, first line);
    `avoid`: per group, names not proposed as its value (`older_values`)."""
    prompts, sources = reading_prompts(llm.tokenizer, question, notes)
    return generate(llm, prompts, max_new_tokens=max_new_tokens, copy_mix=copy_mix, row_sources=sources,
                    row_avoid=avoid, first_line=True, lang=lang)
