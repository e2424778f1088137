"""The stale-vs-fresh protocol: feed a stream round by round, ask every mode after each round.

1. `base` answers every question of every stage first: the model alone does not change with the
   memory, so each question is asked once (batched), before any update.
2. Round r: its documents are ingested with the round's date; with adapter modes the domain is
   consolidated (`kb.consolidate(domain=..., force=True)`); then every other mode answers the
   probes of stage r (the facts current now, their locality questions, the control questions; the
   paraphrases at the final stage only).
3. Scores: the final state (the headline, DESIGN.md section 8), the curve over rounds, forgetting.

Everything produced goes to a `Checkpoint` first, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kupdate.bench import modes as M
from kupdate.bench import scoring
from kupdate.bench.checkpoint import Checkpoint
from kupdate.bench.datasets import EditCase
from kupdate.bench.scoring import Probe
from kupdate.bench.stream import Stream, stream_from_cases

BASE_STAGE = "all"  # base answers hold for every stage


@dataclass
class StreamResult:
    """What a stream's benchmark measured: final metrics per mode, curve, forgetting, costs, answers."""

    dataset: str
    n: int
    rounds: int
    modes: list[str]
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    curve: list[dict[str, Any]] = field(default_factory=list)
    forgetting: dict[str, Any] = field(default_factory=dict)
    ingest: list[dict[str, Any]] = field(default_factory=list)
    consolidate: list[dict[str, Any]] = field(default_factory=list)
    batch_check: dict[str, Any] = field(default_factory=dict)
    teacher_forced: dict[str, Any] | None = None
    misses: dict[str, dict[str, int]] = field(default_factory=dict)
    gate_threshold: float | None = None
    answers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ingest_seconds(self) -> float:
        return round(sum(r["seconds"] for r in self.ingest), 3)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ingest_seconds": self.ingest_seconds}

    def to_markdown(self) -> str:
        from kupdate.bench.report import table

        return table(self)


EvalResult = StreamResult  # the name kupdate.evaluate used


def stage_probes(stream: Stream, r: int, final: bool) -> list[Probe]:
    """The questions of stage r: each current fact's prompt (and paraphrase at the final stage) and
    locality question, then the stream's control questions."""
    probes = []
    for case in stream.cases_at(r):
        probes.append(Probe("prompt", case.prompt, case))
        if final and case.rephrase:
            probes.append(Probe("rephrase", case.rephrase, case))
        if case.locality_prompt:
            probes.append(Probe("locality", case.locality_prompt, case))
    probes += [Probe("control", q) for q in stream.controls]
    return probes


def _questions(probes: Sequence[Probe]) -> list[str]:
    return list(dict.fromkeys(p.question for p in probes))


class _Runner:
    """Fills the checkpoint with the answers of one stream (see the module docstring)."""

    def __init__(self, kb: Any, stream: Stream, modes: Sequence[str], ck: Checkpoint, *, workdir: Path,
                 batch_size: int, check_batch: int, progress: bool) -> None:
        self.kb, self.stream, self.ck, self.workdir = kb, stream, ck, workdir
        self.name = stream.name
        self.modes = list(dict.fromkeys(["base", *modes]))  # locality compares with base answers
        self.batch_size, self.check_batch = batch_size, check_batch
        last = len(stream.rounds) - 1
        self.stages = [stage_probes(stream, r, r == last) for r in range(last + 1)]
        from tqdm import tqdm  # plain tqdm on stderr

        total = len(_questions([p for s in self.stages for p in s]))
        total += sum(len(_questions(s)) for s in self.stages) * (len(self.modes) - 1)
        self.bar = tqdm(total=total, desc=f"{self.name} answers", unit="q", file=sys.stderr,
                        disable=not progress, leave=False)

    def run(self) -> None:
        base_qs = _questions([p for s in self.stages for p in s])
        self.fill(BASE_STAGE, "base", base_qs)
        self.batch_check(BASE_STAGE, "base", base_qs)
        for r in range(len(self.stages)):
            self.ingest(r)
            if any(m in M.ADAPTER_MODES for m in self.modes):
                self.consolidate(r)
            for mode in self.modes[1:]:
                self.fill(f"r{r}", mode, _questions(self.stages[r]))
                if mode == "rag" and r == len(self.stages) - 1:
                    self.batch_check(f"r{r}", mode, _questions(self.stages[r]))
        self.bar.close()

    def ingest(self, r: int) -> None:
        # Re-ingesting a round on resume adds nothing (content hashes); its first timing is kept.
        t0 = time.perf_counter()
        report = self.kb.ingest([self.stream.write_round(r, self.workdir)], domain=self.name)
        if not self.ck.event(self.name, "ingest", r):
            self.ck.add_event(self.name, "ingest", r, seconds=round(time.perf_counter() - t0, 3),
                              documents=report.documents, added=report.added)

    def consolidate(self, r: int) -> None:
        if self.ck.event(self.name, "consolidate", r):
            return
        t0 = time.perf_counter()
        report = self.kb.consolidate(domain=self.name, force=True)
        self.ck.add_event(self.name, "consolidate", r, seconds=round(time.perf_counter() - t0, 3),
                          report=report.to_dict() if hasattr(report, "to_dict") else None)

    def fill(self, stage: str, mode: str, questions: list[str]) -> None:
        todo = [q for q in questions if self.ck.answer(self.name, stage, mode, q) is None]
        self.bar.update(len(questions) - len(todo))
        if mode in M.BATCHED:
            todo.sort(key=len)  # similar lengths in one batch: less padding
            for i in range(0, len(todo), self.batch_size):
                part = todo[i : i + self.batch_size]
                for q, reply in zip(part, M.answer_batch(self.kb, part, mode)):
                    self.ck.add_answer(self.name, stage, mode, q, reply.to_dict())
                self.bar.update(len(part))
            return
        for q in todo:
            self.ck.add_answer(self.name, stage, mode, q, M.ask_one(self.kb, q, mode).to_dict())
            self.bar.update(1)

    def batch_check(self, stage: str, mode: str, questions: list[str]) -> None:
        """Answer the first few questions unbatched too: the answers must match the batched ones
        (and give a single-question latency for the batched modes)."""
        if self.check_batch <= 0 or self.ck.event(self.name, f"batch_check:{mode}"):
            return
        mismatches, ms = [], []
        for q in questions[: self.check_batch]:
            reply = M.ask_one(self.kb, q, mode)
            ms.append(reply.ms)
            batched = self.ck.answer(self.name, stage, mode, q)["answer"]
            if reply.answer != batched:
                mismatches.append({"question": q, "batched": batched, "single": reply.answer})
        from kupdate.metrics import percentile

        self.ck.add_event(self.name, f"batch_check:{mode}", n=len(ms), mismatches=mismatches,
                          single_ms_p50=round(percentile(ms, 50), 1), single_ms_p95=round(percentile(ms, 95), 1))


def run_stream(kb: Any, stream: Stream, modes: Sequence[str] = M.DEFAULT_MODES, *,
               checkpoint: Checkpoint | None = None, workdir: str | Path, batch_size: int = 16,
               check_batch: int = 0, teacher_forced: bool = False, progress: bool = False) -> StreamResult:
    """Run the protocol on `stream` against `kb` (a fresh KnowledgeBase, or the one an interrupted run
    of the same checkpoint left) and score it. `workdir` receives the rounds' JSONL files."""
    M.check_modes(modes, type(kb))
    ck = checkpoint or Checkpoint()
    runner = _Runner(kb, stream, modes, ck, workdir=Path(workdir), batch_size=batch_size,
                     check_batch=check_batch, progress=progress)
    runner.run()
    result = score(stream, runner.stages, list(modes), ck)
    result.gate_threshold = round(kb.threshold(), 4)
    if teacher_forced:
        result.teacher_forced = _teacher_forced(kb, stream, ck)
    return result


def score(stream: Stream, stages: list[list[Probe]], modes: list[str], ck: Checkpoint) -> StreamResult:
    """Metrics from the answers in the checkpoint (every answer of every stage must be there)."""
    name = stream.name
    all_modes = list(dict.fromkeys(["base", *modes]))
    answers: list[scoring.Answers] = []
    for r, probes in enumerate(stages):
        qs = _questions(probes)
        answers.append({m: {q: ck.answer(name, BASE_STAGE if m == "base" else f"r{r}", m, q) for q in qs}
                        for m in all_modes})
    last = len(stages) - 1
    result = StreamResult(name, len(stream.cases_at(last)), len(stages), modes)
    result.metrics = scoring.stage_metrics(stages[last], answers[last], modes)
    result.misses = scoring.diagnose(stages[last], answers[last], modes)
    for r, rnd in enumerate(stream.rounds):
        m = scoring.stage_metrics(stages[r], answers[r], modes)
        keep = ("fresh_recall", "stale_rate", "locality")
        result.curve.append({"round": r, "date": rnd.date, "updates": stream.updates_through(r),
                             "facts": len(stream.cases_at(r)),
                             "metrics": {mode: {k: v for k, v in m[mode].items() if k in keep} for mode in modes}})
    if last:
        result.forgetting = scoring.forgetting(stages, answers, modes)
    result.ingest = [_event(ck, name, "ingest", r) for r in range(last + 1)]
    if any(m in M.ADAPTER_MODES for m in modes):
        result.consolidate = [_event(ck, name, "consolidate", r) for r in range(last + 1)]
    for mode in ("base", "rag"):
        if event := ck.event(name, f"batch_check:{mode}"):
            result.batch_check[mode] = _strip(event)
    result.answers = scoring.case_rows(stages[last], answers[last], all_modes)
    return result


def _strip(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in ("type", "dataset", "name")}


def _event(ck: Checkpoint, name: str, what: str, r: int) -> dict[str, Any]:
    return _strip(ck.event(name, what, r) or {"round": r, "seconds": 0.0})


def _teacher_forced(kb: Any, stream: Stream, ck: Checkpoint) -> dict[str, Any]:
    from kupdate.bench.teacher import teacher_forced

    last = len(stream.rounds) - 1
    if event := ck.event(stream.name, "teacher_forced", last):
        return event["scores"]
    scores = teacher_forced(kb, stream.cases_at(last), ("base", "rag"))
    ck.add_event(stream.name, "teacher_forced", last, scores=scores)
    return scores


def evaluate(kb: Any, cases: Sequence[EditCase], modes: Sequence[str] = M.DEFAULT_MODES, *,
             batch_size: int = 16, progress: bool = False) -> StreamResult:
    """Ingest all `cases` into `kb` at once, ask every probe in every mode, score the final state."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return run_stream(kb, stream_from_cases("eval", list(cases)), modes, workdir=tmp,
                          batch_size=batch_size, progress=progress)
