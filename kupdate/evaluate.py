"""Stale-vs-fresh evaluation over the public API: edit cases in, metrics per mode out.

Modes (DESIGN.md section 1):
- `base`: the model alone (`ask --no-memory`);
- `rag`: plain top-k dense retrieval pasted into the chat prompt, no gate, no freshness, no
  memory-aware decoding (what a LlamaIndex-style setup gives; the reference to beat);
- `gated_rag`: kupdate's `ask`.
Every case is ingested first and all questions are asked of the final state (section 8).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kupdate.errors import InputError
from kupdate.metrics import fresh_recall, locality, percentile, stale_rate

MODES = ("base", "rag", "gated_rag")


@dataclass
class EditCase:
    """One updated fact: a statement of the new value and the questions that probe it."""

    statement: str
    prompt: str
    fresh: str
    stale: str | None = None
    rephrase: str | None = None
    locality_prompt: str | None = None


def load_counterfact(path: str | Path, n: int | None = None) -> list[EditCase]:
    """CounterFact-edit records (see ../shared/data/README.md): the first `n` as EditCases."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read CounterFact data ({exc}); check the path") from None
    cases = []
    for i, rec in enumerate(data[:n] if n else data):
        try:
            cases.append(EditCase(
                statement=f"{rec['prompt']} {rec['target_new']}.",
                prompt=rec["prompt"], fresh=rec["target_new"], stale=rec.get("ground_truth"),
                rephrase=rec.get("rephrase_prompt"), locality_prompt=rec.get("locality_prompt"),
            ))
        except (KeyError, TypeError):
            raise InputError(f"{path}: record {i} lacks prompt/target_new; is this CounterFact-edit?") from None
    return cases


def rag_answer(kb: Any, question: str, k: int = 4) -> str:
    """The `rag` reference: top-k dense memories pasted into the chat prompt, greedy decoding."""
    from kupdate.generate import Prompt, chat_text, generate

    qvec = kb.embedder.encode([question])[0]
    hits = kb.store.search(qvec, k=k)
    context = "\n".join(f"- {h.record.text}" for h in hits)
    text = chat_text(kb.llm.tokenizer, [{"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question}"}])
    return generate(kb.llm, [Prompt(text)], max_new_tokens=kb.config.generation.max_new_tokens)[0]


def answer(kb: Any, question: str, mode: str) -> str:
    if mode == "base":
        return kb.ask(question, memory=False).answer
    if mode == "rag":
        return rag_answer(kb, question)
    if mode == "gated_rag":
        return kb.ask(question).answer
    raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")


@dataclass
class EvalResult:
    """Metrics per mode (each a dict of Rate dicts and latency figures) and per-case answers."""

    n: int
    modes: list[str]
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    answers: list[dict[str, Any]] = field(default_factory=list)
    ingest_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self) -> str:
        head = "| mode | fresh recall | stale rate | generalisation | locality | ask p50 ms | ask p95 ms |"
        rows = [head, "|---|---|---|---|---|---|---|"]
        for mode in self.modes:
            m = self.metrics[mode]
            cells = [_fmt(m.get(k)) for k in ("fresh_recall", "stale_rate", "generalisation", "locality")]
            rows.append(f"| {mode} | " + " | ".join(cells) + f" | {m['ask_ms_p50']:.0f} | {m['ask_ms_p95']:.0f} |")
        return "\n".join(rows) + f"\n\n{self.n} cases; 95% Wilson intervals in brackets.\n"


def _fmt(r: dict | None) -> str:
    return "-" if r is None else f"{r['value']:.2f} [{r['low']:.2f}, {r['high']:.2f}]"


def ingest_cases(kb: Any, cases: Sequence[EditCase], domain: str = "eval") -> float:
    """Ingest each case's statement as a document (one JSONL line each); returns seconds taken."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "updates.jsonl"
        path.write_text("".join(json.dumps({"text": c.statement, "source": f"case-{i}"}) + "\n"
                                for i, c in enumerate(cases)), encoding="utf-8")
        kb.ingest([path], domain=domain)
    return time.perf_counter() - start


def evaluate(kb: Any, cases: Sequence[EditCase], modes: Sequence[str] = MODES, *,
             progress: Callable[[int, int], None] | None = None) -> EvalResult:
    """Ingest all cases into `kb`, then ask every probe in every mode and score the final state."""
    result = EvalResult(len(cases), list(modes))
    result.ingest_seconds = round(ingest_cases(kb, cases), 3)
    modes_all = list(dict.fromkeys(["base", *modes]))  # locality needs the base answers
    per_mode: dict[str, dict[str, list]] = {m: {"prompt": [], "rephrase": [], "locality": [], "ms": []}
                                            for m in modes_all}
    total, done = len(cases) * len(modes_all), 0
    for case in cases:
        row: dict[str, Any] = {"prompt": case.prompt, "fresh": case.fresh, "stale": case.stale}
        for mode in modes_all:
            t0 = time.perf_counter()
            a = answer(kb, case.prompt, mode)
            per_mode[mode]["ms"].append((time.perf_counter() - t0) * 1000)
            per_mode[mode]["prompt"].append(a)
            per_mode[mode]["rephrase"].append(answer(kb, case.rephrase, mode) if case.rephrase else None)
            per_mode[mode]["locality"].append(
                answer(kb, case.locality_prompt, mode) if case.locality_prompt else None)
            row[mode] = {"prompt": a, "rephrase": per_mode[mode]["rephrase"][-1],
                         "locality": per_mode[mode]["locality"][-1]}
            done += 1
            if progress:
                progress(done, total)
        result.answers.append(row)
    fresh = [c.fresh for c in cases]
    for mode in modes:
        d = per_mode[mode]
        metrics: dict[str, Any] = {"fresh_recall": fresh_recall(d["prompt"], fresh).to_dict()}
        with_stale = [(a, c) for a, c in zip(d["prompt"], cases) if c.stale]
        if with_stale:
            metrics["stale_rate"] = stale_rate([a for a, _ in with_stale], [c.fresh for _, c in with_stale],
                                               [c.stale for _, c in with_stale]).to_dict()
        reph = [(a, c.fresh) for a, c in zip(d["rephrase"], cases) if a is not None]
        if reph:
            metrics["generalisation"] = fresh_recall([a for a, _ in reph], [f for _, f in reph]).to_dict()
        loc = [(a, b) for a, b in zip(d["locality"], per_mode["base"]["locality"]) if a is not None]
        if loc:
            metrics["locality"] = locality([a for a, _ in loc], [b for _, b in loc]).to_dict()
        metrics["ask_ms_p50"] = round(percentile(d["ms"], 50), 1)
        metrics["ask_ms_p95"] = round(percentile(d["ms"], 95), 1)
        result.metrics[mode] = metrics
    return result


def plot(result: EvalResult, path: str | Path) -> Path:
    """Bar chart of the four metrics per mode, with confidence intervals, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["fresh_recall", "stale_rate", "generalisation", "locality"]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(result.modes), 1)
    for i, mode in enumerate(result.modes):
        vals, errs = [], [[], []]
        for name in names:
            r = result.metrics[mode].get(name) or {"value": 0.0, "low": 0.0, "high": 0.0}
            vals.append(r["value"])
            errs[0].append(r["value"] - r["low"])
            errs[1].append(r["high"] - r["value"])
        xs = [j + i * width for j in range(len(names))]
        ax.bar(xs, vals, width, yerr=errs, capsize=3, label=mode)
    ax.set_xticks([j + width * (len(result.modes) - 1) / 2 for j in range(len(names))], names)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Stale vs fresh, {result.n} updates (final state)")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
