"""A foreground schedule: run a job now and then every N seconds until SIGINT or SIGTERM.

`kupdate schedule --every 6h` runs consolidation this way; cron or a systemd timer running
`kupdate consolidate --if-due` is the alternative that needs no process left running.

Stopping. While the schedule sleeps, a signal wakes it at once and it returns. While a job runs,
the signal raises KeyboardInterrupt inside the job (what Ctrl-C does anyway, now for SIGTERM too), so
the job unwinds through its own `finally`/`with` blocks; an interrupted consolidation leaves an
unfinished version folder, which the adapter registry ignores. The handlers never touch the stop
event themselves: setting a `threading.Event` from a signal handler can deadlock when the signal
lands while the main thread holds the event's lock, so the event is set after unwinding.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from kupdate.errors import USER_ERRORS

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Wake(BaseException):
    """Raised by the signal handler to end a sleep early (never escapes `run_schedule`)."""


class _State:
    def __init__(self) -> None:
        self.phase = "idle"  # "job" | "sleep" | "idle": what a signal interrupts
        self.signal: int | None = None


def run_schedule(every_s: float, job: Callable[[], Any], *, log: Callable[[str], None],
                 stop: threading.Event | None = None, max_runs: int | None = None) -> int:
    """Run `job` now and then every `every_s` seconds; return the number of completed runs.

    Each run is logged as one line with a timestamp: what `job` returned (a string is logged as
    it is), or the error. A kupdate error (a bad config, a busy lock) is logged and the schedule goes
    on at the next tick; any other exception propagates. It ends when `stop` is set, after
    `max_runs` runs, or on SIGINT/SIGTERM (handled only when called from the main thread; the
    previous handlers are restored on return).
    """
    if every_s <= 0:
        raise ValueError(f"every_s must be positive, got {every_s}")
    stop = stop or threading.Event()
    state = _State()
    runs = 0
    with _stop_signals(state):
        try:
            while not (stop.is_set() or state.signal or (max_runs is not None and runs >= max_runs)):
                outcome = _run_once(job, state)
                runs += 1
                last = max_runs is not None and runs >= max_runs
                nxt = "" if last else f"; next run at {_stamp(datetime.now() + timedelta(seconds=every_s))}"
                log(f"{_stamp()} run {runs}: {outcome}{nxt}")
                if last:
                    break
                state.phase = "sleep"  # from here a signal raises _Wake
                if not state.signal:
                    stop.wait(every_s)
                state.phase = "idle"
        except KeyboardInterrupt:
            what = f"signal {signal.Signals(state.signal).name}" if state.signal else "KeyboardInterrupt"
            log(f"{_stamp()} run {runs + 1} interrupted by {what}")
        except _Wake:
            pass
        finally:
            state.phase = "idle"
    if state.signal:
        stop.set()
    return runs


def _run_once(job: Callable[[], Any], state: _State) -> str:
    state.phase = "job"
    try:
        result = job()
    except USER_ERRORS as exc:  # the user's to fix (config, lock held): report and retry next tick
        return f"error: {exc}"
    finally:
        state.phase = "idle"
    return result if isinstance(result, str) else "done" if result is None else str(result)


@contextmanager
def _stop_signals(state: _State) -> Iterator[None]:
    """Route SIGINT/SIGTERM to `state` while the schedule runs (main thread only: Python allows
    signal handlers nowhere else, and a schedule in another thread is stopped by its event)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: Any) -> None:
        state.signal = signum
        if state.phase == "job":
            raise KeyboardInterrupt
        if state.phase == "sleep":
            raise _Wake

    previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _stamp(t: datetime | None = None) -> str:
    return (t or datetime.now()).astimezone().isoformat(timespec="seconds")
