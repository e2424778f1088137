"""What the final answer is generated from, when no single memory's reading already answers:
the memories quoted, the notes made of them, the prompt and the values to avoid."""

from __future__ import annotations

from typing import Any

from kupdate.answering.gate import supported
from kupdate.answering.notes import Note, focus
from kupdate.answering.prompt import Prompt, base_prompt, memory_prompt
from kupdate.answering.query import Query
from kupdate.answering.retrieval import Memory
from kupdate.text import plain


def select(memories: list[Memory], window: float, top_k: int) -> tuple[list[Memory], list[Memory]]:
    """The current memories to quote and the outdated ones they displace.

    Quoted: up to `top_k` current memories scoring within `window` of the best one (the gate
    already checked the best against the threshold).
    """
    current = [m for m in memories if not m.outdated]
    current = [m for m in current if m.score >= current[0].score - window][:top_k] if current else []
    ids = {m.id for m in current}
    outdated = [m for m in memories if m.outdated and m.outdated_by in ids]
    return current, outdated


def quote(kb: Any, query: Query, qvec: Any, memories: list[Memory],
          limit: float) -> tuple[list[Memory], list[Memory], list[Note]]:
    """The memories to quote, the outdated ones they displace, and the notes made of them (the
    question's subject found from every memory scoring at least the gate's `limit`)."""
    cfg = kb.config
    given, outdated = select(memories, cfg.retrieval.window, cfg.retrieval.top_k)
    notes = focus(query, qvec, given, kb.embedder.encode, cfg.gate, cfg.retrieval.focus_sentences,
                  cfg.retrieval.window, neighbours=[m for m in memories if m.score >= limit])
    # Cite what the model was given, in the order it was given: memories whose statements were all
    # left out of the notes are not citations.
    rank: dict[int, int] = {}
    for i, note in enumerate(notes):
        rank.setdefault(note.id, i)
    given = sorted((m for m in given if m.id in rank), key=lambda m: rank[m.id])
    return given, [m for m in outdated if m.outdated_by in rank], notes


def final_prompt(kb: Any, question: str, notes: list[Note], outdated: list[Memory]) -> tuple[Prompt, list[str], tuple[str, ...]]:
    """The prompt of the answer, what it copies from, and the names it must not give as the value.

    With notes: the question with the notes quoted (and the outdated versions, marked, when
    `retrieval.show_outdated`); without: the question alone, for the base model's own answer. The
    names an outdated version gave in its reading are never offered as the value (`CopyMix` slots).
    """
    cfg, tok = kb.config, kb.llm.tokenizer
    if notes:
        shown = notes + ([Note.of(m) for m in outdated] if cfg.retrieval.show_outdated else [])
        prompt, sources = memory_prompt(tok, question, shown), [n.copy_text for n in notes]
    else:
        prompt, sources = base_prompt(tok, question), []
    avoid = tuple(n for m in outdated if m.reading for n in kb.language.names(m.reading))
    return prompt, sources, avoid


def one_of(query: Query, answer: str, cited: list[Memory], margin: float) -> str:
    """For a question listing alternatives: the alternative that the first cited memory supporting
    one supports (`gate.supported`; the memory decides, whatever the model's wording picked), else
    the answer as the model wrote it (a memory naming none or several rules nothing out)."""
    if not query.choices or not cited:
        return answer
    for m in cited:
        found = supported(query, plain(m.record.text), margin)
        if found is not None:
            return f"{query.choices[found]}."
    return answer
