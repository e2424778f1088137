"""What decided each answer to a quiz question: the question's own document, another one, or the model alone.

    python benchmarks/quiz_misses.py --temporal ../shared/data/temporal/realtimeqa-2023.jsonl:1-300

For temporal cases whose questions list their alternatives (RealTimeQA's news quiz): every case's
documents go into ONE knowledge base, as in `stale_fresh.py --dataset temporal`, each question is
asked as `kupdate ask` answers it, and each answer is put in one group by what decided it
(docs/answering.md, "Questions that list their alternatives"):

- `own`: the gate opened and the first cited memory supporting an alternative is the case's own document;
- `other`: that memory is another case's document (a story on the same topic from another week);
- `open, none supports`: the gate opened and no cited memory supports an alternative (the model's answer stands);
- `shut`: the gate stayed shut and the model answered alone (with how far under the threshold).

Each group reports how many of its answers are fresh, stale or neither. Writes <out>/results.json
(with config and environment), <out>/table.md and <out>/outcomes.png.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from stale_fresh import environment, temporal_sets

from kupdate.bench.report import write_outputs

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ("own", "other", "open, none supports", "shut")
NEAR = 0.05  # a shut gate this close under the threshold is reported apart


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--temporal", default="../shared/data/temporal/realtimeqa-2023.jsonl:1-300",
                   help="temporal JSONL file, optionally :N or :FIRST-LAST (default: RealTimeQA 2023, 1-300)")
    p.add_argument("--lower-case", action="store_true", help="ask every question in lower case")
    p.add_argument("--batch-size", type=int, default=16, help="questions answered together")
    p.add_argument("--model", default=None, help="LLM (default: SmolLM2-135M-Instruct)")
    p.add_argument("--embedder", default=None, help="embedder (default: all-MiniLM-L6-v2)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: auto)")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results/quiz_misses/<time>)")
    return p.parse_args(argv)


def outcome(kb, query, case_id: str, answer) -> tuple[str, float]:
    """The group of one answer, and how far the best score fell under the threshold (0 when open)."""
    from kupdate.answering.gate import supported

    gate = answer.gate
    if not gate.open:
        return "shut", round(gate.threshold - gate.score, 4)
    for m in answer.citations:
        if supported(query, m.record.text, kb.config.gate.choice_margin) is not None:
            return ("own" if m.record.source.split("#")[0] == case_id else "other"), 0.0
    return "open, none supports", 0.0


def diagnose(kb, name: str, cases: list, workdir: Path, batch_size: int) -> dict:
    from tqdm import tqdm

    from kupdate.answering.query import Query
    from kupdate.bench.temporal import ingest_cases, judge

    ingest_cases(kb, cases, workdir, name)
    counts: dict[str, Counter] = {g: Counter() for g in GROUPS}
    rows = []
    for i in tqdm(range(0, len(cases), batch_size), desc=f"{name} answers", unit="batch", file=sys.stderr):
        part = cases[i : i + batch_size]
        for case, answer in zip(part, kb.ask_batch([c.question for c in part])):
            fresh, stale = judge(answer.answer, case)
            query = Query.for_store(case.question, kb.store, kb.language)
            group, under = outcome(kb, query, case.id, answer)
            verdict = "fresh" if fresh else "stale" if stale else "neither"
            counts[group][verdict] += 1
            if group == "shut" and under <= NEAR:
                counts[group]["near"] += 1
            rows.append({"id": case.id, "group": group, "verdict": verdict, "under_threshold": under,
                         "answer": answer.answer, "fresh": case.fresh,
                         "cited": [m.record.source for m in answer.citations] if answer.gate.open else []})
    return {"name": name, "n": len(cases), "threshold": round(kb.threshold(), 4),
            "groups": {g: dict(c) for g, c in counts.items()}, "answers": rows}


def table(result: dict) -> str:
    n = result["n"]
    lines = [f"### {result['name']}: what decided each of {n} answers", "",
             "| group | questions | fresh | stale | neither |", "|---|---|---|---|---|"]
    for g in GROUPS:
        c = result["groups"][g]
        total = sum(c.get(v, 0) for v in ("fresh", "stale", "neither"))
        lines.append(f"| {g} | {total} | {c.get('fresh', 0)} | {c.get('stale', 0)} | {c.get('neither', 0)} |")
    fresh = sum(c.get("fresh", 0) for c in result["groups"].values())
    near = result["groups"]["shut"].get("near", 0)
    lines += ["", f"Fresh recall {fresh / max(n, 1):.2f}; gate threshold {result['threshold']}; "
              f"{near} of the shut questions scored within {NEAR} under it."]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> Path:
    from kupdate.bench.report import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3))
    left = [0] * len(GROUPS)
    for verdict, colour in (("fresh", "#2a9d8f"), ("stale", "#e76f51"), ("neither", "#bbbbbb")):
        widths = [result["groups"][g].get(verdict, 0) for g in GROUPS]
        ax.barh(GROUPS, widths, left=left, color=colour, label=verdict)
        left = [a + b for a, b in zip(left, widths)]
    ax.invert_yaxis()
    ax.set_xlabel("questions")
    ax.set_title(f"{result['name']}: what decided the answer")
    ax.legend(loc="lower right")
    return save_figure(fig, plt, path)


def main(argv: list[str] | None = None) -> int:
    from kupdate import KnowledgeBase
    from kupdate.errors import USER_ERRORS

    args = parse_args(argv)
    start = time.perf_counter()
    out = Path(args.out or ROOT / "benchmarks" / "results" / "quiz_misses" / time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    overrides = {k: v for k, v in {"model": args.model, "embedder": args.embedder, "device": args.device}.items() if v}
    try:
        [(name, path, cases)] = temporal_sets(args)[:1]
        with tempfile.TemporaryDirectory() as tmp:
            kb = KnowledgeBase.init(Path(tmp) / "kb", progress=False, **overrides)
            result = diagnose(kb, name, cases, Path(tmp), args.batch_size)
            device = str(kb.llm.device)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    data = {"config": vars(args) | {"path": path}, "environment": environment(device),
            "wall_seconds": round(time.perf_counter() - start, 1), "result": result}
    write_outputs(out, data, table(result), lambda path: plot(result, path), "outcomes.png")
    print(f"results in {out} ({data['wall_seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
