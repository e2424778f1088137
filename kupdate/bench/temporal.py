"""Real temporal QA: every dated version of every answer in ONE knowledge base, then each question.

A case is one JSON line: `question`, `docs` [{`text`, `date`}], `fresh` [strings], `stale`
[strings] (docs/benchmarks.md). All cases' documents are ingested together (a crowded memory, as in
real use); then each question is answered by every mode:

- `base`: the model alone; `rag`: the top-4 memories by dense similarity pasted into the prompt;
- `oracle`: the model handed only the case's newest document(s), with the same plain prompt;
- `gated_rag`: kupdate's `ask` (gate, freshness by reading, memory-aware decoding).

An answer is fresh when a normalised `fresh` string occurs in its first line, stale when a `stale`
one does and no fresh one does (DESIGN.md section 8). Rates carry 95% Wilson intervals; the p50
latency a 95% interval from the order statistics of the sample.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kupdate.bench import modes as M
from kupdate.bench.checkpoint import Checkpoint
from kupdate.errors import InputError
from kupdate.metrics import percentile, rate
from kupdate.text import hits

TEMPORAL_MODES = ("base", "rag", "oracle", "gated_rag")
BATCHED = ("base", "rag", "oracle")


@dataclass
class TemporalCase:
    id: str
    question: str
    docs: list[dict[str, str]]
    fresh: list[str]
    stale: list[str]

    def newest(self) -> list[str]:
        """The text of the newest document(s): what the `oracle` mode is handed."""
        last = max(d["date"] for d in self.docs)
        return [d["text"] for d in self.docs if d["date"] == last]


def load_temporal(path: str | Path, n: int | None = None) -> list[TemporalCase]:
    """The first `n` cases of a temporal JSONL file; a bad line is one InputError naming it."""
    cases = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read temporal cases ({exc}); check the path") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            case = TemporalCase(str(row["id"]), row["question"], [{"text": d["text"], "date": d["date"]} for d in row["docs"]],
                                list(row["fresh"]), list(row.get("stale", [])))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InputError(f"{path}:{lineno}: not a temporal case ({exc}); need id, question, docs, fresh") from None
        cases.append(case)
        if n is not None and len(cases) >= n:
            break
    return cases


def judge(answer: str, case: TemporalCase) -> tuple[bool, bool]:
    """(fresh, stale) for one answer."""
    fresh = any(hits(answer, f) for f in case.fresh)
    return fresh, not fresh and any(hits(answer, s) for s in case.stale)


def median_interval(values: Sequence[float]) -> tuple[float, float]:
    """A distribution-free 95% interval for the median: the order statistics n/2 -+ 1.96 sqrt(n)/2."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return 0.0, 0.0
    half = 1.96 * math.sqrt(n) / 2
    lo, hi = max(0, math.floor(n / 2 - half)), min(n - 1, math.ceil(n / 2 + half) - 1)
    return ordered[lo], ordered[hi]


@dataclass
class TemporalResult:
    dataset: str
    n: int
    documents: int
    modes: list[str]
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    gate_threshold: float | None = None
    ingest_seconds: float = 0.0
    answers: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self) -> str:
        rows = [f"### {self.dataset}: {self.n} questions, {self.documents} dated documents in one KB",
                "", "| mode | fresh recall | stale rate | p50 latency (ms) |", "|---|---|---|---|"]
        for mode in self.modes:
            m = self.metrics[mode]
            f, s, lat = m["fresh_recall"], m["stale_rate"], m["latency_ms"]
            rows.append(f"| `{mode}` | **{f['value']:.2f}** [{f['low']:.2f}, {f['high']:.2f}] | "
                        f"**{s['value']:.2f}** [{s['low']:.2f}, {s['high']:.2f}] | "
                        f"{lat['p50']:.0f} [{lat['p50_low']:.0f}, {lat['p50_high']:.0f}] |")
        if "gated_rag" in self.metrics:
            rows += ["", f"Gate threshold {self.gate_threshold}; the gate opened on "
                     f"{self.metrics['gated_rag']['gate_open']:.2f} of the questions."]
        return "\n".join(rows) + "\n"


def ingest_cases(kb: Any, cases: Sequence[TemporalCase], workdir: Path, name: str) -> float:
    """Write every case's documents to one JSONL file and ingest it; seconds taken (0 on resume)."""
    path = workdir / f"{name}-docs.jsonl"
    workdir.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for c in cases:
            for i, d in enumerate(c.docs):
                f.write(json.dumps({"text": d["text"], "date": d["date"], "source": f"{c.id}#{i}"}) + "\n")
    t0 = time.perf_counter()
    kb.ingest([path], domain=name)
    return time.perf_counter() - t0


def _batched(kb: Any, mode: str, cases: Sequence[TemporalCase]) -> list[M.Reply]:
    if mode == "oracle":
        from kupdate.answering.decoding import generate

        t0 = time.perf_counter()
        prompts = [M.rag_prompt(kb, c.question, c.newest()) for c in cases]
        with M.without_adapters(kb):
            texts = generate(kb.llm, prompts, max_new_tokens=kb.config.generation.max_new_tokens)
        ms = (time.perf_counter() - t0) * 1000 / max(len(cases), 1)
        return [M.Reply(t, ms) for t in texts]
    return M.answer_batch(kb, [c.question for c in cases], mode)


def run_temporal(kb: Any, name: str, cases: Sequence[TemporalCase], modes: Sequence[str], *,
                 checkpoint: Checkpoint, workdir: Path, batch_size: int = 16,
                 progress: bool = False) -> TemporalResult:
    """Ingest all cases into `kb`, answer every question in every mode (resumable), score."""
    from tqdm import tqdm

    unknown = [m for m in modes if m not in TEMPORAL_MODES]
    if unknown:
        raise InputError(f"mode {unknown[0]!r} does not apply to temporal data; choose from {', '.join(TEMPORAL_MODES)}")
    seconds = ingest_cases(kb, cases, workdir, name)
    if not checkpoint.event(name, "ingest"):
        checkpoint.add_event(name, "ingest", seconds=round(seconds, 3))
    bar = tqdm(total=len(cases) * len(modes), desc=f"{name} answers", unit="q", file=sys.stderr,
               disable=not progress, leave=False)
    for mode in modes:
        todo = [c for c in cases if checkpoint.answer(name, "final", mode, c.question) is None]
        bar.update(len(cases) - len(todo))
        if mode in BATCHED:
            todo.sort(key=lambda c: len(c.question))
            for i in range(0, len(todo), batch_size):
                part = todo[i : i + batch_size]
                for c, reply in zip(part, _batched(kb, mode, part)):
                    checkpoint.add_answer(name, "final", mode, c.question, reply.to_dict())
                bar.update(len(part))
            continue
        for c in todo:
            checkpoint.add_answer(name, "final", mode, c.question, M.ask_one(kb, c.question, mode).to_dict())
            bar.update(1)
    bar.close()
    result = score(name, cases, modes, checkpoint)
    result.gate_threshold = round(kb.threshold(), 4)
    result.ingest_seconds = (checkpoint.event(name, "ingest") or {}).get("seconds", 0.0)
    return result


def score(name: str, cases: Sequence[TemporalCase], modes: Sequence[str], ck: Checkpoint) -> TemporalResult:
    result = TemporalResult(name, len(cases), sum(len(c.docs) for c in cases), list(modes))
    rows = {c.id: {"id": c.id, "question": c.question, "fresh": c.fresh, "stale": c.stale} for c in cases}
    for mode in modes:
        flags, ms, opened = [], [], []
        for c in cases:
            reply = ck.answer(name, "final", mode, c.question)
            fresh, stale = judge(reply["answer"], c)
            flags.append((fresh, stale))
            ms.append(reply["ms"])
            if reply.get("gate"):
                opened.append(bool(reply["gate"]["open"]))
            rows[c.id][mode] = {"answer": reply["answer"], "fresh": fresh, "stale": stale}
        low, high = median_interval(ms)
        result.metrics[mode] = {
            "fresh_recall": rate([f for f, _ in flags]).to_dict(),
            "stale_rate": rate([s for _, s in flags]).to_dict(),
            "latency_ms": {"p50": round(percentile(ms, 50), 1), "p50_low": round(low, 1),
                           "p50_high": round(high, 1), "p95": round(percentile(ms, 95), 1)},
        }
        if opened:
            result.metrics[mode]["gate_open"] = round(sum(opened) / len(opened), 4)
    result.answers = list(rows.values())
    return result
