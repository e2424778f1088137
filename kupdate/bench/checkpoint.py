"""A benchmark's checkpoint: answers and events appended to a JSONL file as they are produced.

Rerunning with the same output folder reads it back and skips what is done. A line cut short by
an interruption is ignored (its answer is simply produced again). The first line records the run's
config; a rerun with a config that would give other answers is refused instead of mixing the two.

    {"type": "config", "config": {...}}
    {"type": "answer", "dataset": "synthetic", "stage": "r1", "mode": "rag", "question": "...", "answer": "...", "ms": 812.5}
    {"type": "event", "dataset": "synthetic", "name": "ingest", "round": 1, "seconds": 3.2}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kupdate.errors import KupdateError

AnswerKey = tuple[str, str, str, str]  # dataset, stage, mode, question


class Checkpoint:
    """Answers by (dataset, stage, mode, question) and events by (dataset, name, round).

    With `path=None` it only keeps them in memory (nothing resumes; what `evaluate()` uses).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else None
        self.config: dict[str, Any] | None = None
        self.answers: dict[AnswerKey, dict[str, Any]] = {}
        self.events: dict[tuple[str, str, int], dict[str, Any]] = {}
        if self.path and self.path.exists():
            text = self.path.read_text(encoding="utf-8")
            if text and not text.endswith("\n"):
                # Interrupted mid-line: end that line so the next answer starts on a line of its own.
                with self.path.open("a", encoding="utf-8") as f:
                    f.write("\n")
            for line in text.splitlines():
                try:
                    self._take(json.loads(line))
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut short by an interruption

    def _take(self, item: dict[str, Any]) -> None:
        kind = item["type"]
        if kind == "config":
            self.config = item["config"]
        elif kind == "answer":
            self.answers[(item["dataset"], item["stage"], item["mode"], item["question"])] = item
        elif kind == "event":
            self.events[(item["dataset"], item["name"], item["round"])] = item

    def _append(self, item: dict[str, Any]) -> None:
        self._take(item)
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(item, ensure_ascii=False) + "\n")

    def check_config(self, config: dict[str, Any]) -> None:
        """Record `config`, or refuse when the checkpoint was written by a different one."""
        config = json.loads(json.dumps(config))  # the form it takes on disk (tuples become lists)
        if self.config is None:
            self._append({"type": "config", "config": config})
            return
        diff = sorted(k for k in set(config) | set(self.config) if config.get(k) != self.config.get(k))
        if diff:
            where = self.path or "memory"
            changes = ", ".join(f"{k}: {self.config.get(k)!r} -> {config.get(k)!r}" for k in diff)
            raise KupdateError(f"{where} holds answers of another run ({changes}); "
                               "pick another output folder or delete it")

    def answer(self, dataset: str, stage: str, mode: str, question: str) -> dict[str, Any] | None:
        return self.answers.get((dataset, stage, mode, question))

    def add_answer(self, dataset: str, stage: str, mode: str, question: str, reply: dict[str, Any]) -> None:
        self._append({"type": "answer", "dataset": dataset, "stage": stage, "mode": mode,
                      "question": question, **reply})

    def event(self, dataset: str, name: str, round: int = 0) -> dict[str, Any] | None:
        return self.events.get((dataset, name, round))

    def add_event(self, dataset: str, name: str, round: int = 0, **data: Any) -> None:
        self._append({"type": "event", "dataset": dataset, "name": name, "round": round, **data})
