"""Where the time of an `ask` goes, and what memory adds to answering with the model alone.

    python benchmarks/speed.py                           # 60-fact synthetic stream, 40 questions
    python benchmarks/speed.py --n 1000 --questions 100 --out /tmp/speed

Builds a KB from the seeded synthetic stream (kupdate.bench.synthetic; all rounds ingested), warms
up, then asks each question twice: with gated memory (`kb.ask(q, adapter=False)`, whose
`timings_ms` split embed / search / gate / focus / generate) and with the model alone
(`kb.ask(q, memory=False, adapter=False)`). Questions: the stream's fact questions (the gate
opens) and its control questions (it stays shut).

Overhead = (embed + search + gate + focus) / (model-alone total), as a ratio of means; the target
is at most 0.10. The model's own work is reported apart: `freshness` (the batched readings of the
competing versions, one of which is the answer) and `generate` (the answer, when no reading gave
it), with the ratio of the whole ask to the model alone. Writes <out>/results.json (with config and environment), <out>/table.md and
<out>/speed.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("embed", "search", "gate", "focus")
MODEL = ("freshness", "generate")  # the model's work: readings of competing versions, or the answer
TARGET = 0.10


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--n", type=int, default=60, help="facts in the synthetic stream (the memory's size)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the stream")
    p.add_argument("--questions", type=int, default=40, help="questions timed (fact questions, then controls)")
    p.add_argument("--warmup", type=int, default=3, help="untimed asks first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=None, help="LLM (default: SmolLM2-135M-Instruct)")
    p.add_argument("--embedder", default=None, help="embedder (default: all-MiniLM-L6-v2)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: auto)")
    p.add_argument("--exemplars", default=None, help="gate exemplar questions, JSONL (default: the shipped set)")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results/speed/<time>)")
    return p.parse_args(argv)


def pick_questions(stream, count: int) -> list[str]:
    """Fact questions and control questions in proportion, interleaved."""
    facts = [c.prompt for c in stream.cases_at(len(stream.rounds) - 1)]
    controls = list(stream.controls)
    n_controls = min(len(controls), count // 4)
    picked = facts[: count - n_controls] + controls[:n_controls]
    return picked[:count]


def summarise(rows: list[dict]) -> dict:
    from kupdate.metrics import percentile

    def stats(values: list[float]) -> dict:
        return {"mean": round(sum(values) / len(values), 2) if values else 0.0,
                "p50": round(percentile(values, 50), 2), "p95": round(percentile(values, 95), 2)}

    out: dict = {}
    for label, subset in (("all", rows), ("gate open", [r for r in rows if r["open"]]),
                          ("gate shut", [r for r in rows if not r["open"]])):
        if not subset:
            continue
        parts = {k: stats([r["memory"].get(k, 0.0) for r in subset]) for k in (*PARTS, *MODEL, "total")}
        alone = stats([r["alone"] for r in subset])
        overhead = sum(sum(r["memory"].get(k, 0.0) for k in PARTS) for r in subset) / len(subset)
        out[label] = {"n": len(subset), "with_memory_ms": parts, "model_alone_ms": alone,
                      "overhead_ms": round(overhead, 2), "overhead_ratio": round(overhead / alone["mean"], 4),
                      "total_ratio": round(parts["total"]["mean"] / alone["mean"], 4),
                      "read": sum(1 for r in subset if r["memory"].get("freshness"))}
    return out


def table(summary: dict) -> str:
    lines = ["| questions | n | read | embed | search | gate | focus | memory overhead | freshness (readings) | generate "
             "| ask total | model alone | overhead ratio | total ratio |", "|---" * 14 + "|"]
    for label, s in summary.items():
        p = s["with_memory_ms"]
        cells = [f"{p[k]['mean']:.1f}" for k in PARTS]
        lines.append(f"| {label} | {s['n']} | {s['read']} | " + " | ".join(cells)
                     + f" | {s['overhead_ms']:.1f} | {p['freshness']['mean']:.0f} | {p['generate']['mean']:.0f}"
                     f" | {p['total']['mean']:.0f} | {s['model_alone_ms']['mean']:.0f}"
                     f" | **{s['overhead_ratio']:.3f}** | {s['total_ratio']:.2f} |")
    ratio = summary["all"]["overhead_ratio"]
    verdict = "meets" if ratio <= TARGET else "misses"
    return ("\n".join(lines) + "\n\nMean milliseconds per ask; `read`: asks whose competing versions were read. "
            "Overhead ratio = (embed + search + gate + focus) / model-alone total; the target is <= "
            f"{TARGET:.2f}: this run {verdict} it ({ratio:.3f}). Total ratio = the whole ask (readings and "
            "generation included) / the model alone.\n")


def plot(summary: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(summary)
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, label in enumerate(labels):
        parts = summary[label]["with_memory_ms"]
        bottom = 0.0
        for k in (*PARTS, *MODEL):
            ax.bar(i - 0.2, parts[k]["mean"], 0.4, bottom=bottom, label=k if i == 0 else None,
                   color=f"C{(*PARTS, *MODEL).index(k)}")
            bottom += parts[k]["mean"]
        ax.bar(i + 0.2, summary[label]["model_alone_ms"]["mean"], 0.4, color="grey",
               label="model alone" if i == 0 else None)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("ms per ask (mean)")
    ax.set_title("ask with memory (left, by stage) vs the model alone (right)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    from kupdate import KnowledgeBase
    from kupdate.bench import synthetic_stream

    args = parse_args(argv)
    out = Path(args.out or ROOT / "benchmarks" / "results" / "speed" / time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    stream = synthetic_stream(args.n, rounds=args.rounds, seed=args.seed)
    questions = pick_questions(stream, args.questions)
    overrides = {k: v for k, v in (("model", args.model), ("embedder", args.embedder), ("device", args.device)) if v}
    with tempfile.TemporaryDirectory() as tmp:
        kb = KnowledgeBase.init(Path(tmp) / "kb", exemplars=args.exemplars, **overrides)
        with kb:
            t0 = time.perf_counter()
            kb.ingest([stream.write_round(r, tmp) for r in range(len(stream.rounds))], domain=stream.name)
            ingest_s = time.perf_counter() - t0
            for q in questions[: args.warmup]:
                kb.ask(q, adapter=False)
                kb.ask(q, memory=False, adapter=False)
            rows = []
            for q in tqdm(questions, desc="asks", unit="q", file=sys.stderr, leave=False):
                a = kb.ask(q, adapter=False)
                b = kb.ask(q, memory=False, adapter=False)
                rows.append({"question": q, "open": a.gate.open, "memory": a.timings_ms, "alone": b.timings_ms["total"]})
            config = {"n": args.n, "rounds": args.rounds, "questions": len(questions), "warmup": args.warmup,
                      "seed": args.seed, "model": kb.config.model, "embedder": kb.config.embedder,
                      "records": kb.store.count("knowledge"), "gate_threshold": kb.threshold()}
            device = str(kb.llm.device)
    summary = summarise(rows)
    env = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "device": device}
    data = {"config": config, "environment": env, "ingest_seconds": round(ingest_s, 2), "summary": summary,
            "target_ratio": TARGET, "rows": rows}
    (out / "results.json").write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    text = table(summary)
    (out / "table.md").write_text(text, encoding="utf-8")
    plot(summary, out / "speed.png")
    print(text)
    print(f"results in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
