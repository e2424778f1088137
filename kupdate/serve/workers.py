"""The threads that own a knowledge base: every model and store call of the server runs on one.

Why threads that own a KB rather than a KB shared by request handlers: answering activates the
routed domain adapters on the model in place (`Adapters.active`), so two answers running at once on
one model could generate with each other's adapters. Each `KBWorker` opens its own
`KnowledgeBase` in its thread and runs jobs in arrival order:

- the answer worker serves ask, chat, search, history and status. Answers are micro-batched: a job
  submitted with a `batch` function is run together with the batchable jobs queued right behind it
  (up to `max_batch`, and waiting at most `window_s` after the first arrived for more to come), in
  one call `batch(kb, jobs)`; `kupdate.answering.ask_batch` then runs the model once for
  them all. Other jobs (search, status...) run one at a time between batches;
- the ingest worker holds a second `KnowledgeBase` (its own store connection and models) and writes
  under the store's write lock, so the answer worker keeps answering while it ingests, and sees the
  new records on its next search (the store catches its index up with SQLite).

Requests wait in a bounded queue; when it is full `submit` raises `ServerBusy` (HTTP 503 with
Retry-After) instead of letting latency grow without bound.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, NamedTuple

from kupdate.serve.errors import ServerBusy

Job = Callable[[Any], Any]
# `batch(kb, jobs)`: one outcome per job, in order: its result, or the exception it raised.
Batch = Callable[[Any, list[Any]], list[Any]]
_STOP = object()


class _Queued(NamedTuple):
    job: Any
    future: Future[Any]
    batch: Batch | None
    arrived: float


class KBWorker:
    """A thread that opens the KB at `path`, runs `warm(kb)`, then runs submitted jobs `job(kb)`,
    batchable ones (`submit(job, batch=...)`) in batches of at most `max_batch`."""

    def __init__(self, name: str, path: Path, *, queue_size: int, warm: Job | None = None, max_batch: int = 1,
                 window_s: float = 0.0, threads: int | None = None) -> None:
        self.name = name
        self.threads = threads  # torch threads of this worker's thread (None: torch's default)
        self.path = path
        self.warm = warm
        self.max_batch = max(1, max_batch)
        self.window_s = window_s
        self._jobs: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._next: Any = None  # taken off the queue while collecting a batch, runs next
        self._thread = threading.Thread(target=self._run, name=f"kupdate-{name}", daemon=True)
        self.ready: Future[None] = Future()

    @property
    def waiting(self) -> int:
        """Jobs queued and not yet started."""
        return self._jobs.qsize() + (self._next is not None and self._next is not _STOP)

    def start(self) -> Future[None]:
        """Start the thread; the returned future resolves once the KB is open (and warm), or fails."""
        self._thread.start()
        return self.ready

    def submit(self, job: Any, *, batch: Batch | None = None) -> Future[Any]:
        """Queue `job(kb)`; its future holds the result or the exception it raised. With `batch`,
        the job may run in one call `batch(kb, [jobs])` with other jobs submitted with the same
        `batch`; should that call itself fail, each job of it runs alone as `job(kb)`."""
        future: Future[Any] = Future()
        try:
            self._jobs.put_nowait(_Queued(job, future, batch, time.monotonic()))
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
            if self.threads:
                import torch

                # Set on this thread only (OpenMP's thread count is per thread): a worker that
                # runs beside the answering one takes fewer cores instead of contending for them.
                torch.set_num_threads(self.threads)
            kb = KnowledgeBase.open(self.path)
            if self.warm is not None:
                self.warm(kb)
        except BaseException as exc:  # reported to whoever awaits `ready`
            self.ready.set_exception(exc)
            return
        self.ready.set_result(None)
        try:
            while (item := self._take()) is not _STOP:
                items = self._collect(item) if item.batch is not None else [item]
                items = [it for it in items if it.future.set_running_or_notify_cancel()]
                if item.batch is None:
                    for it in items:
                        _settle(it.future, lambda it=it: it.job(kb))
                elif items:
                    self._run_batch(kb, items)
        finally:
            kb.close()

    def _take(self, timeout: float | None = None) -> Any:
        if self._next is not None:
            item, self._next = self._next, None
            return item
        return self._jobs.get(timeout=timeout) if timeout is None or timeout > 0 else self._jobs.get_nowait()

    def _collect(self, first: _Queued) -> list[_Queued]:
        """`first` and the jobs of its batch behind it: those already waiting, and those arriving
        within `window_s` of the start of collection (or of `first`'s arrival, if later), up to
        `max_batch`. A job of another kind ends the batch and runs after it.

        The window counts from now, not from when `first` arrived: on a busy server the requests
        answered by the last batch come back within a round trip, and joining the ones that queued
        meanwhile makes one full batch instead of two half ones taking turns (docs/serve.md).
        A lone request waits at most the window; a full batch waits for nothing."""
        items = [first]
        deadline = max(first.arrived, time.monotonic()) + self.window_s
        while len(items) < self.max_batch:
            try:
                item = self._take(deadline - time.monotonic())
            except queue.Empty:
                break
            if item is _STOP or item.batch is not first.batch:
                self._next = item
                break
            items.append(item)
        return items

    @staticmethod
    def _run_batch(kb: Any, items: list[_Queued]) -> None:
        batch = items[0].batch
        assert batch is not None
        try:
            outcomes = batch(kb, [it.job for it in items])
            if len(outcomes) != len(items):
                raise RuntimeError(f"a batch of {len(items)} jobs gave {len(outcomes)} outcomes")
        except Exception as exc:  # the batch as a whole failed: each job alone, so only the bad one fails
            if len(items) == 1:
                items[0].future.set_exception(exc)
                return
            for it in items:
                _settle(it.future, lambda it=it: it.job(kb))
            return
        for it, outcome in zip(items, outcomes):
            if isinstance(outcome, BaseException):
                it.future.set_exception(outcome)
            else:
                it.future.set_result(outcome)


def _settle(future: Future[Any], run: Callable[[], Any]) -> None:
    try:
        future.set_result(run())
    except BaseException as exc:  # the request that asked gets it, the worker goes on
        future.set_exception(exc)


def warm_models(kb: Any) -> None:
    """Load the embedder and the LLM now, so the first request does not pay for it."""
    _ = kb.embedder, kb.llm
