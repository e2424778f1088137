"""The threads that own a knowledge base: every model and store call of the server runs on one.

Why threads that own a KB rather than a KB shared by request handlers: answering activates the
routed domain adapters on the model in place (`Adapters.active`), so two answers running at once on
one model could generate with each other's adapters. Each `KBWorker` opens its own
`KnowledgeBase` in its thread and runs jobs one at a time, in arrival order:

- the answer worker serves ask, chat, search, history and status;
- the ingest worker holds a second `KnowledgeBase` (its own store connection and models) and writes
  under the store's write lock, so the answer worker keeps answering while it ingests, and sees the
  new records on its next search (the store catches its index up with SQLite).

Requests wait in a bounded queue; when it is full `submit` raises `ServerBusy` (HTTP 503 with
Retry-After) instead of letting latency grow without bound.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from kupdate.serve.errors import ServerBusy

Job = Callable[[Any], Any]
_STOP = object()


class KBWorker:
    """A thread that opens the KB at `path`, runs `warm(kb)`, then runs submitted jobs `job(kb)`."""

    def __init__(self, name: str, path: Path, *, queue_size: int, warm: Job | None = None) -> None:
        self.name = name
        self.path = path
        self.warm = warm
        self._jobs: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name=f"kupdate-{name}", daemon=True)
        self.ready: Future[None] = Future()

    @property
    def waiting(self) -> int:
        """Jobs queued and not yet started."""
        return self._jobs.qsize()

    def start(self) -> Future[None]:
        """Start the thread; the returned future resolves once the KB is open (and warm), or fails."""
        self._thread.start()
        return self.ready

    def submit(self, job: Job) -> Future[Any]:
        """Queue `job(kb)`; its future holds the result or the exception it raised."""
        future: Future[Any] = Future()
        try:
            self._jobs.put_nowait((job, future))
        except queue.Full:
            raise ServerBusy(f"the server is busy ({self._jobs.maxsize} {self.name} requests waiting); "
                             "retry after the Retry-After delay") from None
        return future

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the queued jobs, close the KB and end the thread."""
        if self._thread.is_alive():
            self._jobs.put(_STOP)
            self._thread.join(timeout)

    def _run(self) -> None:
        from kupdate import KnowledgeBase

        try:
            kb = KnowledgeBase.open(self.path)
            if self.warm is not None:
                self.warm(kb)
        except BaseException as exc:  # reported to whoever awaits `ready`
            self.ready.set_exception(exc)
            return
        self.ready.set_result(None)
        try:
            while (item := self._jobs.get()) is not _STOP:
                job, future = item
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    future.set_result(job(kb))
                except BaseException as exc:  # the request that asked gets it, the worker goes on
                    future.set_exception(exc)
        finally:
            kb.close()


def warm_models(kb: Any) -> None:
    """Load the embedder and the LLM now, so the first request does not pay for it."""
    _ = kb.embedder, kb.llm
