"""The modes a benchmark compares (DESIGN.md section 1), each answering a list of questions.

- `base`: the model alone, `kb.ask(q, memory=False, adapter=False)`;
- `rag`: plain top-k dense retrieval pasted into the chat prompt, no gate, no freshness, no
  memory-aware decoding (what a LlamaIndex-style setup gives the same model; the reference to beat);
- `gated_rag`: kupdate's `ask` without adapters;
- `adapter`: the consolidated domain adapters alone, `kb.ask(q, memory=False)`;
- `adapter+gated_rag`: both, `kb.ask(q)`.

`base` and `rag` are answered in batches (greedy decoding with padding masked out gives the same answers
as one at a time; the benchmark re-checks a few); the `ask` modes one question at a time, as a user
would ask them. Timings are per answer: for batched modes, the batch's time shared among its answers.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from kupdate.errors import KupdateError

MODES = ("base", "rag", "gated_rag", "adapter", "adapter+gated_rag")
DEFAULT_MODES = ("base", "rag", "gated_rag")
ADAPTER_MODES = ("adapter", "adapter+gated_rag")
BATCHED = ("base", "rag")
RAG_TOP_K = 4


@dataclass
class Reply:
    """One answer with its time; for the `ask` modes also the gate and the memories it was given
    or that they outdated, each as [valid_from, outdated, score, text]."""

    answer: str
    ms: float
    gate: dict[str, Any] | None = None
    memories: list[list[Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def check_modes(modes: Sequence[str], kb_class: Any) -> None:
    """Unknown modes, and adapter modes on a kupdate without consolidation, fail before any work."""
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise KupdateError(f"unknown mode {unknown[0]!r}; choose from {', '.join(MODES)}")
    if any(m in ADAPTER_MODES for m in modes) and not hasattr(kb_class, "consolidate"):
        raise KupdateError("the adapter modes need KnowledgeBase.consolidate(), which this version of "
                           "kupdate lacks; leave out adapter and adapter+gated_rag")


@contextlib.contextmanager
def without_adapters(kb: Any) -> Iterator[None]:
    """The base model for direct generation, also once peft adapters are attached to it."""
    model = getattr(kb.llm, "model", None)
    if hasattr(model, "disable_adapter") and hasattr(model, "peft_config"):
        with model.disable_adapter():
            yield
    else:
        yield


def rag_context(kb: Any, question: str, qvec: Any = None, k: int = RAG_TOP_K) -> list[str]:
    """The texts of the top-k memories by dense similarity, whatever their dates."""
    if qvec is None:
        qvec = kb.embedder.encode([question])[0]
    return [h.record.text for h in kb.store.search(qvec, k=k)]


def rag_prompt(kb: Any, question: str, context: Sequence[str]) -> Any:
    from kupdate.answering.prompt import Prompt, chat_text

    lines = "\n".join(f"- {t}" for t in context)
    content = f"Context:\n{lines}\n\nQuestion: {question}"
    return Prompt(chat_text(kb.llm.tokenizer, [{"role": "user", "content": content}]))


def rag_answer(kb: Any, question: str, k: int = RAG_TOP_K) -> str:
    """The `rag` reference for one question: top-k dense memories in the chat prompt, greedy."""
    from kupdate.answering.decoding import generate

    prompt = rag_prompt(kb, question, rag_context(kb, question, k=k))
    with without_adapters(kb):
        return generate(kb.llm, [prompt], max_new_tokens=kb.config.generation.max_new_tokens)[0]


def _compact(answer: Any) -> tuple[dict[str, Any], list[list[Any]]]:
    gate = {"open": answer.gate.open, "score": round(float(answer.gate.score), 3)}
    mems = [[m.record.valid_from[:10] if m.record.valid_from else None, m.outdated, round(m.score, 3),
             m.record.text[:400]] for m in answer.memories[:6]]
    return gate, mems


def ask_one(kb: Any, question: str, mode: str) -> Reply:
    """One question in one mode, unbatched."""
    t0 = time.perf_counter()
    if mode == "base":
        answer = kb.ask(question, memory=False, adapter=False)
    elif mode == "rag":
        return Reply(rag_answer(kb, question), (time.perf_counter() - t0) * 1000)
    elif mode == "gated_rag":
        answer = kb.ask(question, adapter=False)
    elif mode == "adapter":
        answer = kb.ask(question, memory=False)
    elif mode == "adapter+gated_rag":
        answer = kb.ask(question)
    else:
        raise KupdateError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    ms = (time.perf_counter() - t0) * 1000
    if mode == "base":
        return Reply(answer.answer, ms)
    gate, mems = _compact(answer)
    return Reply(answer.answer, ms, gate, mems)


def answer_batch(kb: Any, questions: Sequence[str], mode: str) -> list[Reply]:
    """`questions` in a batched mode (`base` or `rag`), one generate call; time shared per answer."""
    from kupdate.answering.decoding import generate
    from kupdate.answering.prompt import base_prompt

    t0 = time.perf_counter()
    if mode == "base":
        prompts = [base_prompt(kb.llm.tokenizer, q) for q in questions]
    elif mode == "rag":
        vecs = kb.embedder.encode(list(questions))
        prompts = [rag_prompt(kb, q, rag_context(kb, q, v)) for q, v in zip(questions, vecs)]
    else:
        raise KupdateError(f"mode {mode!r} is not batched; use ask_one")
    with without_adapters(kb):
        texts = generate(kb.llm, prompts, max_new_tokens=kb.config.generation.max_new_tokens)
    ms = (time.perf_counter() - t0) * 1000 / max(len(questions), 1)
    return [Reply(t, ms) for t in texts]

