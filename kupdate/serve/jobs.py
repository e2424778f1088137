"""What the answer worker runs for a request: `KnowledgeBase` calls, results as plain dicts.

Answers are batched (`KBWorker.submit(..., batch=answer_batch)`): the asks waiting together are
checked one by one, grouped by their options (memory, adapter, domain, as_of, max_tokens: the
questions of one `ask_batch` call share them), and each group is answered by one
`kupdate.answering.ask_batch` call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from kupdate.serve.workers import KBWorker


async def run_on(worker: KBWorker, job: Callable[[Any], Any]) -> Any:
    """Queue `job(kb)` on `worker` (ServerBusy when its queue is full) and await its result."""
    return await asyncio.wrap_future(worker.submit(job))


async def answer_on(worker: KBWorker, question: str, *, max_tokens: int | None = None, **options: Any) -> dict[str, Any]:
    """`kb.ask(question, **options).to_dict()` plus `_tokens`/`_limit` (the answer's length in tokens
    and the budget it had), answered on `worker` in a batch with the asks waiting with it.
    `max_tokens` replaces `[generation] max_new_tokens` for this answer only."""
    return await asyncio.wrap_future(worker.submit(AskJob(question, max_tokens, options), batch=answer_batch))


@dataclass(frozen=True)
class AskJob:
    """`kb.ask(question, **options)` with `max_tokens` replacing `[generation] max_new_tokens`."""

    question: str
    max_tokens: int | None
    options: dict[str, Any]

    def __call__(self, kb: Any) -> dict[str, Any]:
        """This ask alone (what a batch falls back to when it fails as a whole)."""
        with _budget(kb, self.max_tokens) as limit:
            return _result(kb, kb.ask(self.question, **self.options), limit)


def answer_batch(kb: Any, jobs: list[AskJob]) -> list[Any]:
    """Each job's dict (as `AskJob(kb)` gives it), or the exception it raised: a question `kb.ask`
    refuses fails alone, and the others are answered by one `ask_batch` call per set of options."""
    from kupdate.answering.answer import ask_batch
    from kupdate.errors import KupdateError
    from kupdate.ingest.dates import parse_date

    outcomes: list[Any] = [None] * len(jobs)
    groups: dict[tuple[Any, ...], list[int]] = {}
    checked: dict[int, dict[str, Any]] = {}
    for i, job in enumerate(jobs):
        try:
            # `KnowledgeBase.ask`'s checks, so that a bad request fails before the batch, alone.
            if not job.question.strip():
                raise KupdateError("the question is empty; pass a question, e.g. kupdate ask 'Who leads X?'")
            options = dict(job.options)
            if options.get("as_of"):
                options["as_of"] = parse_date(options["as_of"], where="--as-of")
        except Exception as exc:  # noqa: BLE001 - handed to the request that sent it
            outcomes[i] = exc
            continue
        checked[i] = options
        groups.setdefault((job.max_tokens, *sorted(options.items())), []).append(i)
    for members in groups.values():
        first = jobs[members[0]]
        try:
            with _budget(kb, first.max_tokens) as limit:
                answers = ask_batch(kb, [jobs[i].question for i in members], **checked[members[0]])
            for i, answer in zip(members, answers):
                outcomes[i] = _result(kb, answer, limit)
        except Exception:  # the group failed as a whole: each ask alone, so only the bad one fails
            for i in members:
                try:
                    outcomes[i] = jobs[i](kb)
                except Exception as exc:  # noqa: BLE001 - handed to the request that sent it
                    outcomes[i] = exc
    return outcomes


@contextmanager
def _budget(kb: Any, max_tokens: int | None) -> Iterator[int]:
    """`max_tokens` as `[generation] max_new_tokens` within the block (safe: the worker runs one job
    or batch at a time); yields the budget in force."""
    config = kb.config.generation
    if max_tokens is not None:
        kb.config.generation = replace(config, max_new_tokens=max_tokens)
    try:
        yield kb.config.generation.max_new_tokens
    finally:
        kb.config.generation = config


def _result(kb: Any, answer: Any, limit: int) -> dict[str, Any]:
    out = answer.to_dict()
    out["_tokens"] = len(kb.llm.tokenizer(answer.answer, add_special_tokens=False)["input_ids"])
    out["_limit"] = limit
    return out


def citations(answer: dict[str, Any]) -> dict[str, Any]:
    """The extra `kupdate` field of a chat completion: the gate decision and the memories given to
    the model (current ones, and the outdated ones they displaced, flagged), with source and date."""
    return {
        "gate": answer["gate"],
        "citations": [{"id": m["id"], "text": m["text"], "source": m["source"], "date": m["valid_from"],
                       "outdated": m["outdated"], "score": m["score"]} for m in answer["memories"]],
        "adapter": answer["adapter"],
        "timings_ms": answer["timings_ms"],
        "decoding": "greedy",
    }
