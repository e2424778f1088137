"""The foreground schedule: runs now and every interval, logs each run, stops at once on its event,
SIGINT or SIGTERM (in a sleep or in a job), and `kupdate schedule` exits 0 on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import doc

from kupdate.errors import KupdateError
from kupdate.schedule import run_schedule

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d"


def test_runs_every_interval_until_the_stop_event(capsys):
    stop, lines, calls = threading.Event(), [], []

    def job():
        calls.append(time.monotonic())
        if len(calls) == 3:
            stop.set()
        return f"consolidated {len(calls)}"

    runs = run_schedule(0.05, job, log=lines.append, stop=stop)
    assert runs == 3 and len(lines) == 3
    assert lines[0].split(" ", 1)[1].startswith("run 1: consolidated 1; next run at ")
    assert all(b - a >= 0.04 for a, b in zip(calls, calls[1:]))
    assert all(re.match(STAMP + " run ", line) for line in lines)


def test_stop_event_wakes_a_long_sleep_from_another_thread():
    stop, lines = threading.Event(), []
    threading.Timer(0.2, stop.set).start()
    start = time.monotonic()
    assert run_schedule(3600, lambda: None, log=lines.append, stop=stop) == 1
    assert time.monotonic() - start < 5 and lines[0].split(" ", 1)[1].startswith("run 1: done")


def test_kupdate_errors_are_logged_and_the_schedule_goes_on():
    lines: list[str] = []
    outcomes = iter([KupdateError("another consolidation is running on kb (pid 1)"), "ok"])

    def job():
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert run_schedule(0.01, job, log=lines.append, max_runs=2) == 2
    assert "run 1: error: another consolidation is running" in lines[0]
    assert lines[1].endswith("run 2: ok")  # the last run announces no next one


def test_other_errors_propagate():
    def job():
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        run_schedule(0.01, job, log=lambda line: None)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_while_sleeping_stops_at_once_and_restores_handlers(sig):
    before = signal.getsignal(sig)
    lines: list[str] = []
    stop = threading.Event()
    threading.Timer(0.3, os.kill, (os.getpid(), sig)).start()
    start = time.monotonic()
    assert run_schedule(3600, lambda: "idle", log=lines.append, stop=stop) == 1
    assert time.monotonic() - start < 5
    assert stop.is_set() and len(lines) == 1
    assert signal.getsignal(sig) is before


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_a_job_interrupts_it_cleanly(sig):
    lines, cleaned = [], []

    def job():
        if lines:  # the second run: interrupted half way
            try:
                os.kill(os.getpid(), sig)
                time.sleep(5)  # the handler raises KeyboardInterrupt in here
                return "finished anyway"
            finally:
                cleaned.append(True)
        return "first"

    start = time.monotonic()
    assert run_schedule(0.01, job, log=lines.append) == 1
    assert time.monotonic() - start < 4 and cleaned == [True] and len(lines) == 2
    assert lines[-1].endswith(f"run 2 interrupted by signal {signal.Signals(sig).name}")


@pytest.fixture
def kb_path(tiny_kb, tmp_path):
    """A tiny KB with one record in domain "orgs": fewer new records than a consolidation needs."""
    tiny_kb.ingest([doc(tmp_path / "docs", "a.md", "2025-01-01", "Veltrane Robotics is led by CEO Ilse Marsh.")])
    path = str(tiny_kb.path)
    tiny_kb.close()
    return path


def _read_into(stream, lines: list[str]) -> threading.Thread:
    reader = threading.Thread(target=lambda: lines.extend(stream), daemon=True)
    reader.start()
    return reader


def test_schedule_command_stops_on_sigint_with_exit_0(kb_path):
    proc = subprocess.Popen([sys.executable, "-m", "kupdate.cli.main", "schedule", "--every", "1h", "--kb", kb_path],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err: list[str] = []
    reader = _read_into(proc.stderr, err)
    try:
        deadline = time.monotonic() + 120  # the first tick opens the KB: imports torch
        while not any(" run 1: " in line for line in err):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(err)
            time.sleep(0.1)
        assert "orgs: not consolidated" in "".join(err)  # 1 new record: nothing due, no training
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - sent < 5
    finally:
        proc.kill()
    reader.join(timeout=5)
    assert err[-1].strip() == "schedule stopped after 1 run"


def test_schedule_command_refuses_a_missing_kb(tmp_path, capsys):
    from kupdate.cli.main import run

    assert run(["schedule", "--every", "1h", "--kb", str(tmp_path / "none")]) == 1
    assert "Error: no knowledge base at" in capsys.readouterr().err
    assert run(["schedule", "--every", "often", "--kb", str(tmp_path / "none")]) == 1
    assert "--every: 'often' is not a duration" in capsys.readouterr().err
