"""Scale-out on Ray against one process: ingest chunks/s and two-domain consolidation time.

    python benchmarks/scale_out.py                      # 480 documents, 2 domains x 3 facts
    python benchmarks/scale_out.py --docs 2000 --address auto --workers 1 2 4

Ingest: N seeded synthetic documents (one chunk each, every text distinct), embedded with the KB's
embedder (default all-MiniLM-L6-v2) into a fresh store: `engine=local` (this process), then Ray with
1 and 2 workers (one embedder each). Each run is timed around `kupdate.ingest.pipeline.ingest`
(read, chunk, de-duplicate, embed, write), after one untimed warm-up run of the same engine on a
few other documents; chunks/s is the median over --repeats runs, each into a fresh store.
Ray's figures include starting each run's worker pool (loading the embedder), as a user pays it.

Consolidation: two domains of --facts synthetic facts each, consolidated with the default model
(SmolLM2-135M) under a small config, once one after the other (`engine=local`) and once on Ray
(the domains train at the same time, one worker each), each on its own copy of the same KB. The
ratio is sequential / parallel wall time; the per-phase seconds from the reports show that only
building the training set and training run in parallel (the driver measures and promotes).

Writes <out>/results.json (config, environment, every run), <out>/table.md and <out>/scale_out.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("amber basalt cobalt delta ember fjord garnet harbor indigo juniper kestrel lumen "
         "meadow nickel onyx prairie quartz russet sable tundra umber vesper willow xenon yarrow zephyr").split()
FACTS = {  # fictional entities: a changed value per fact
    "alpha": [("Quillmere Foundry", "is led by", "Odile Varga"), ("Tessaly Port", "is the home of", "the Corvin ferry"),
              ("Brask Observatory", "is located in", "Halvik")],
    "beta": [("Marrow Lane Press", "is run by", "Ines Kolt"), ("Dunhollow Mill", "produces", "Ashgrain flour"),
             ("Verel Institute", "is based in", "Strand")],
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--docs", type=int, default=480, help="documents (one chunk each) per ingest run")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts to measure")
    p.add_argument("--repeats", type=int, default=2, help="timed ingest runs per engine")
    p.add_argument("--embedder", default="all-minilm-l6-v2")
    p.add_argument("--facts", type=int, default=3, help="facts per domain (at most 3)")
    p.add_argument("--epochs", type=int, default=2, help="consolidation epochs")
    p.add_argument("--skip-consolidation", action="store_true")
    p.add_argument("--address", default="local", help="Ray cluster ('local': start one with --cpus CPUs)")
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray instance")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results/scale_out/<time>)")
    return p.parse_args(argv)


def say(msg: str) -> None:
    print(f"[scale_out] {msg}", file=sys.stderr, flush=True)


def make_docs(folder: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(24))
        (folder / f"d{i:05d}.txt").write_text(f"Report {seed}-{i}: the {words} survey logged code k{rng.randrange(10**6)}.\n")
    return folder


def ingest_once(cfg, folder: Path, engine: str, embedder) -> tuple[float, int]:
    from kupdate.ingest.pipeline import ingest
    from memory_store import open_store

    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "memory", dim=384, embedder=cfg.embedder, create=True)
        t = time.perf_counter()
        report = ingest(store, embedder if engine == "local" else None, [folder], cfg, engine=engine)
        seconds = time.perf_counter() - t
        store.close()
    return seconds, report.chunks


def bench_ingest(args, work: Path) -> list[dict]:
    from kupdate.config import Config
    from kupdate.models import load_embedder

    cfg = Config(embedder=args.embedder)
    embedder = load_embedder(cfg.embedder)
    warm = make_docs(work / "warm", 16, seed=1)
    rows = []
    for engine, workers in [("local", 0)] + [("ray", w) for w in args.workers]:
        cfg.compute.workers = workers
        ingest_once(cfg, warm, engine, embedder)
        runs = []
        for r in range(args.repeats):
            folder = make_docs(work / f"{engine}{workers}-{r}", args.docs, seed=100 + r)
            seconds, chunks = ingest_once(cfg, folder, engine, embedder)
            runs.append({"seconds": round(seconds, 3), "chunks": chunks, "chunks_per_s": round(chunks / seconds, 1)})
            say(f"ingest {engine} workers={workers}: {chunks} chunks in {seconds:.1f} s")
        rows.append({"engine": engine, "workers": workers or None, "runs": runs,
                     "chunks_per_s": statistics.median(x["chunks_per_s"] for x in runs)})
    local = rows[0]["chunks_per_s"]
    for row in rows:
        row["vs_local"] = round(row["chunks_per_s"] / local, 3)
    return rows


def consolidation_kb(path: Path, args) -> None:
    from kupdate import KnowledgeBase
    from kupdate.config import dump_config

    exemplars = path.parent / "exemplars.jsonl"
    exemplars.write_text("".join(json.dumps({"question": q}) + "\n" for q in
                                 ("What is 7 times 8?", "Who wrote Romeo and Juliet?", "How many continents are there?")))
    with KnowledgeBase.init(path, exemplars=exemplars) as kb:
        c = kb.config.consolidation
        c.epochs, c.replay, c.batch_size, c.min_locality = args.epochs, 3, 8, 0.0
        (kb.path / "kupdate.toml").write_text(dump_config(kb.config))
        for domain, facts in FACTS.items():
            lines = [json.dumps({"subject": s, "relation": r, "object": o, "domain": domain, "date": "2025-01-01"})
                     for s, r, o in facts[: args.facts]]
            (path.parent / f"{domain}.jsonl").write_text("\n".join(lines) + "\n")
            kb.ingest([path.parent / f"{domain}.jsonl"])


def bench_consolidation(args, work: Path) -> dict:
    from kupdate import KnowledgeBase

    base = work / "kb-base" / "kb"
    base.parent.mkdir(parents=True)
    consolidation_kb(base, args)
    out = {}
    for engine in ("local", "ray"):
        path = work / f"kb-{engine}"
        shutil.copytree(base.parent, path)
        with KnowledgeBase.open(path / "kb") as kb:
            _ = kb.llm, kb.embedder  # the driver's models load before the clock starts, for both
            t = time.perf_counter()
            run = kb.consolidate(engine=engine)
            seconds = time.perf_counter() - t
        out[engine] = {"seconds": round(seconds, 2), "reports": [
            {"domain": r["domain"], "status": r["status"], "seconds": r["seconds"], "mask_entries": r["mask"]["entries"],
             "disjoint_from": r["mask"]["disjoint_from"]} for r in run.reports]}
        say(f"consolidate {engine}: {seconds:.1f} s, " + ", ".join(f"{r['domain']} {r['status']}" for r in run.reports))
    out["sequential_over_parallel"] = round(out["local"]["seconds"] / out["ray"]["seconds"], 3)
    return out


def environment() -> dict:
    import ray
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__,
            "cpus": os.cpu_count(), "cuda": torch.cuda.is_available(), "platform": platform.platform()}


def write_outputs(out: Path, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    lines = ["| ingest engine | workers | chunks/s (median) | vs local |", "|---|---|---|---|"]
    for r in results["ingest"]:
        lines.append(f"| {r['engine']} | {r['workers'] or '-'} | {r['chunks_per_s']:.1f} | {r['vs_local']:.2f} |")
    cons = results.get("consolidation")
    if cons:
        lines += ["", "| consolidation of 2 domains | wall s | per domain: build + train s |", "|---|---|---|"]
        for engine, label in (("local", "one after the other (local)"), ("ray", "at the same time (ray)")):
            phases = ", ".join(f"{r['domain']} {r['seconds'].get('build', 0) + r['seconds'].get('train', 0):.0f}"
                               for r in cons[engine]["reports"])
            lines.append(f"| {label} | {cons[engine]['seconds']:.1f} | {phases} |")
        lines.append(f"\nsequential / parallel: **{cons['sequential_over_parallel']:.2f}x**")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    fig, axes = plt.subplots(1, 2 if cons else 1, figsize=(10 if cons else 5, 3.5), squeeze=False)
    labels = ["local" if r["engine"] == "local" else f"ray x{r['workers']}" for r in results["ingest"]]
    axes[0][0].bar(labels, [r["chunks_per_s"] for r in results["ingest"]], color=["grey"] + ["tab:blue"] * (len(labels) - 1))
    axes[0][0].set_ylabel("chunks / s")
    axes[0][0].set_title(f"ingest ({results['config']['docs']} chunks)")
    if cons:
        axes[0][1].bar(["one after the other", "Ray, parallel"], [cons["local"]["seconds"], cons["ray"]["seconds"]],
                       color=["grey", "tab:blue"])
        axes[0][1].set_ylabel("seconds")
        axes[0][1].set_title(f"consolidate 2 domains ({cons['sequential_over_parallel']:.2f}x)")
    fig.tight_layout()
    fig.savefig(out / "scale_out.png", dpi=120)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import ray

    if args.address == "local":
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="warning")
    else:
        os.environ["RAY_ADDRESS"] = args.address
    out = Path(args.out or ROOT / "benchmarks" / "results" / "scale_out" / time.strftime("%Y%m%d-%H%M%S"))
    results: dict = {"config": vars(args), "environment": environment()}
    with tempfile.TemporaryDirectory() as tmp:
        results["ingest"] = bench_ingest(args, Path(tmp))
        if not args.skip_consolidation:
            results["consolidation"] = bench_consolidation(args, Path(tmp))
    write_outputs(out, results)
    print((out / "table.md").read_text())


if __name__ == "__main__":
    main()
