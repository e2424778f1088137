"""What the answer worker runs for a request: `KnowledgeBase` calls, results as plain dicts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from kupdate.serve.workers import KBWorker


async def run_on(worker: KBWorker, job: Callable[[Any], Any]) -> Any:
    """Queue `job(kb)` on `worker` (ServerBusy when its queue is full) and await its result."""
    return await asyncio.wrap_future(worker.submit(job))


def ask_job(question: str, *, max_tokens: int | None = None, **options: Any) -> Callable[[Any], dict[str, Any]]:
    """`kb.ask(question, **options).to_dict()`, plus `_tokens`/`_limit`: the answer's length in tokens
    and the budget it had. `max_tokens` replaces `[generation] max_new_tokens` for this answer only
    (safe: the worker runs one job at a time)."""

    def job(kb: Any) -> dict[str, Any]:
        config = kb.config.generation
        if max_tokens is not None:
            kb.config.generation = replace(config, max_new_tokens=max_tokens)
        try:
            answer = kb.ask(question, **options)
            limit = kb.config.generation.max_new_tokens
        finally:
            kb.config.generation = config
        out = answer.to_dict()
        out["_tokens"] = len(kb.llm.tokenizer(answer.answer, add_special_tokens=False)["input_ids"])
        out["_limit"] = limit
        return out

    return job


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
