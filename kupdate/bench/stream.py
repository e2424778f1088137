"""Update streams: dated rounds of documents and the edit cases they set.

A benchmark feeds a stream to a knowledge base round by round: each round's documents are ingested
with that round's date (JSONL lines with `date`), and the facts current at the end of the round are
asked. Nothing is removed between rounds, so a stale statement stays in memory and competes with
the fresh one at retrieval, as in a real document stream.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kupdate.bench.datasets import EditCase


@dataclass
class Round:
    """One round of a stream: its date, its documents (JSONL objects) and the facts they set."""

    index: int
    date: str
    documents: list[dict[str, str]]
    cases: list[EditCase]


@dataclass
class Stream:
    """Rounds of updates plus unrelated control questions asked after every round (locality)."""

    name: str
    rounds: list[Round]
    controls: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def cases_at(self, r: int) -> list[EditCase]:
        """The facts current at the end of round `r`: the latest case of each key, in key order."""
        latest: dict[str, EditCase] = {}
        for rnd in self.rounds[: r + 1]:
            for case in rnd.cases:
                latest[case.key] = case
        return list(latest.values())

    def updates_through(self, r: int) -> int:
        """How many fact values the stream has stated by the end of round `r`."""
        return sum(len(rnd.cases) for rnd in self.rounds[: r + 1])

    def write_round(self, r: int, folder: str | Path) -> Path:
        """Round `r`'s documents as a JSONL file that `kb.ingest` reads (one document per line)."""
        path = Path(folder) / f"{self.name}-round-{r:03d}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in self.rounds[r].documents),
                        encoding="utf-8")
        return path


def round_dates(rounds: int, start: str = "2023-01-16", step_days: int = 91) -> list[str]:
    """One ISO date per round, `step_days` apart (quarterly by default)."""
    first = dt.date.fromisoformat(start)
    return [(first + dt.timedelta(days=step_days * r)).isoformat() for r in range(rounds)]


def stream_from_cases(name: str, cases: list[EditCase], rounds: int = 1) -> Stream:
    """A stream of file-based edit cases split into `rounds` consecutive prefixes, one document each.

    With one round (the default) every case is ingested at once and asked of the final state.
    """
    rounds = max(1, min(rounds, len(cases) or 1))
    dates = round_dates(rounds, start="2024-01-08", step_days=28)
    out: list[Round] = []
    size = -(-len(cases) // rounds)
    for r in range(rounds):
        part = [replace(c, round=r, key=c.key or f"{name}-{i}")
                for i, c in enumerate(cases[r * size : (r + 1) * size], r * size)]
        docs = [{"text": c.statement, "date": dates[r], "source": f"{name}/{c.key}"} for c in part]
        out.append(Round(r, dates[r], docs, part))
    return Stream(name, out)
