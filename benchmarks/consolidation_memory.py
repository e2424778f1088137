"""Peak memory of one consolidation against the number of records in the domain.

    python benchmarks/consolidation_memory.py                       # 250, 1,000, 2,000, 4,000 records, tiny model
    python benchmarks/consolidation_memory.py --sizes 100,400 --model default --embedder default

Each size runs in its own process (peak resident memory is a per-process high-water mark): a fresh
KB, the first N CounterFact-edit records (read by path from ../shared/data/counterfact-edit.json)
ingested into domain `cf` as in consolidate_scale.py, then one `kb.consolidate("cf", force=True)`.
Reported per size: peak resident memory before the consolidation (model, embedder, store) and
after it, the difference, the wall time, and the training examples built.

What it measures is how the consolidation's own data (training set, teacher distributions, saved
build work, evaluation) grows with the domain, not the model's size: by default the model is a
2-layer Llama built from a config (tests/tiny.py) with the hashing embedder and one training pass,
so 4,000 records take minutes instead of the hours the default model needs on a CPU. `--model
default` runs the default models. Writes <out>/results.json (with config and environment),
<out>/table.md and <out>/consolidation_memory.png.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from consolidate_counterfact import DEFAULT_DATA, ROOT, write_domain  # noqa: E402
from consolidate_scale import environment  # noqa: E402

from kupdate.bench.report import write_outputs  # noqa: E402

EXEMPLARS = ["What is 7 times 8?", "Who wrote Hamlet?", "How many continents are there?",
             "What is photosynthesis?", "The chemical symbol for gold is"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--sizes", default="250,1000,2000,4000", help="records per run (comma-separated)")
    p.add_argument("--model", default="tiny", help="'tiny' (a 2-layer Llama from a config), 'default', or a model")
    p.add_argument("--embedder", default="hashing", help="'hashing', 'default', or an embedder")
    p.add_argument("--epochs", type=int, default=1, help="training passes (the tiny model never stops early)")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results/consolidation_memory/<time>)")
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # one size, in this process
    return p.parse_args(argv)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def one(args: argparse.Namespace, n: int) -> dict:
    """One consolidation of `n` records in this process; its figures."""
    from kupdate import KnowledgeBase
    from kupdate.config import dump_config

    records = json.loads(Path(args.data).read_text(encoding="utf-8"))[:n]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = None if args.model == "default" else args.model
        if args.model == "tiny":
            sys.path.insert(0, str(ROOT / "tests"))
            from tiny import build_tiny_llm

            model = str(build_tiny_llm(tmp / "tiny-llm"))
        exemplars = tmp / "exemplars.jsonl"
        exemplars.write_text("".join(json.dumps({"question": q}) + "\n" for q in EXEMPLARS), encoding="utf-8")
        kb = KnowledgeBase.init(tmp / "kb", model=model, embedder=None if args.embedder == "default" else args.embedder,
                                exemplars=exemplars, progress=False)
        cfg = kb.config.consolidation
        cfg.epochs, cfg.min_epochs, cfg.checks_per_pass = args.epochs, min(cfg.min_epochs, args.epochs), 1
        (kb.path / "kupdate.toml").write_text(dump_config(kb.config), encoding="utf-8")
        kb.ingest([write_domain(tmp / "cf.jsonl", records, "cf")], domain="cf")
        before = peak_mb()
        t = time.perf_counter()
        report = kb.consolidate("cf", force=True)
        wall = time.perf_counter() - t
        after = peak_mb()
        [done] = report.reports
        examples = done["data"].get("examples")
        kb.close()
    return {"records": n, "peak_before_mb": round(before), "peak_mb": round(after),
            "consolidation_mb": round(after - before), "wall_s": round(wall, 1), "examples": examples}


def table(rows: list[dict]) -> str:
    lines = ["| records | examples | wall s | peak before MB | peak MB | added by the consolidation MB | MB per record |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['records']:,} | {r['examples'] or '-'} | {r['wall_s']:,.1f} | {r['peak_before_mb']:,} | "
                     f"{r['peak_mb']:,} | {r['consolidation_mb']:,} | {r['consolidation_mb'] / r['records']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> Path:
    from kupdate.bench.report import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = [r["records"] for r in rows]
    ax.plot(xs, [r["peak_mb"] for r in rows], marker="o", label="peak resident memory")
    ax.plot(xs, [r["peak_before_mb"] for r in rows], marker="o", linestyle="--", label="before the consolidation")
    ax.set_xlabel("records in the domain")
    ax.set_ylabel("MB")
    ax.set_title("One consolidation: peak memory against domain size")
    ax.legend()
    return save_figure(fig, plt, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one is not None:
        print(json.dumps(one(args, args.one)))
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s]
    out = Path(args.out or ROOT / "benchmarks" / "results" / "consolidation_memory" / time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in sizes:
        cmd = [sys.executable, __file__, "--one", str(n), "--data", args.data, "--model", args.model,
               "--embedder", args.embedder, "--epochs", str(args.epochs)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"error: the run with {n} records failed:\n{done.stderr[-2000:]}", file=sys.stderr)
            return 1
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{n} records: peak {rows[-1]['peak_mb']} MB (+{rows[-1]['consolidation_mb']}), {rows[-1]['wall_s']} s",
              file=sys.stderr)
    write_outputs(out, {"config": vars(args), "environment": environment(), "runs": rows}, table(rows),
                  lambda path: plot(rows, path), "consolidation_memory.png")
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
