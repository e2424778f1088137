"""Stale-vs-fresh benchmark: updates arrive in dated rounds; every mode is scored after each round.

    python benchmarks/stale_fresh.py            # 200 CounterFact records, a 20-fact synthetic stream, real temporal QA
    python benchmarks/stale_fresh.py --dataset temporal --modes base,rag,oracle,gated_rag
    python benchmarks/stale_fresh.py --dataset synthetic --n 24 --rounds 3 --out /tmp/synth
    python benchmarks/stale_fresh.py --dataset qaedit --n 100 --prefixes 4
    python benchmarks/stale_fresh.py --dataset zsre --zsre data/zsre_mend_eval.json --n 500 --device cuda
    python benchmarks/stale_fresh.py --modes base,gated_rag,adapter,adapter+gated_rag   # needs consolidation

Datasets: counterfact and qaedit are read by path from ../shared/data (never copied into the project),
zsre from --zsre (the MEND split's JSON), synthetic is generated (kupdate.bench.synthetic, seeded),
temporal reads each --temporal file (real dated QA: all of a file's documents in ONE KB, then every
question; kupdate.bench.temporal), with the modes base, rag, oracle and gated_rag.
Modes: base, rag, gated_rag (default), adapter and adapter+gated_rag (opt-in; they consolidate the
domain after each round). Writes <out>/results.json (metrics, curve, forgetting, per-case answers, the
config and environment), <out>/table.md, <out>/<dataset>-metrics.png and <out>/<dataset>-curve.png.
Answers are appended to <out>/checkpoint.jsonl as they come: rerunning with the same --out resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEFAULT_N = {"counterfact": 200, "qaedit": 200, "zsre": 200, "synthetic": 20, "temporal": None}
DATASETS = tuple(DEFAULT_N)
# Each temporal file with the number of its cases read (None: all).
TEMPORAL = {"situatedqa-dev.jsonl": None, "realtimeqa-2023.jsonl": 300}
TEMPORAL_MODES = "base,rag,oracle,gated_rag"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--dataset", default="counterfact,synthetic,temporal", help=f"comma-separated, from {', '.join(DATASETS)}")
    p.add_argument("--n", type=int, default=None,
                   help="updates per dataset: records read, or facts of the synthetic stream "
                        f"(default: {', '.join(f'{k} {v}' for k, v in DEFAULT_N.items())})")
    p.add_argument("--synthetic-n", type=int, default=None, help="facts of the synthetic stream (default: --n)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the synthetic stream (>= 2)")
    p.add_argument("--prefixes", type=int, default=1,
                   help="file datasets arrive in this many rounds (prefixes of the records); 1: all at once")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic stream")
    p.add_argument("--synthetic-style", default="news", choices=("news", "uniform"),
                   help="news: varied dated news items, several facts in some (default); uniform (a diagnostic): "
                        "one fact per document, every version in the same sentence")
    p.add_argument("--modes", default="base,rag,gated_rag", help="comma-separated modes")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results/stale_fresh/<time>)")
    p.add_argument("--counterfact", default=str(SHARED / "counterfact-edit.json"), help="CounterFact-edit JSON")
    p.add_argument("--qaedit", default=str(SHARED / "QAEdit_inter_1k.json"), help="QAEdit JSON")
    p.add_argument("--zsre", default=None, help="zsRE JSON in the MEND split (needed for --dataset zsre)")
    p.add_argument("--temporal", default=",".join(f"{SHARED / 'temporal' / f}:{n or 'all'}" for f, n in TEMPORAL.items()),
                   help="comma-separated temporal JSONL files, each as PATH[:N] (its first N cases) or PATH:A-B "
                        "(cases A to B, from 1; a held-out slice; default: "
                        + ", ".join(f"{f} {n or 'all'}" for f, n in TEMPORAL.items()) + ")")
    p.add_argument("--temporal-modes", default=TEMPORAL_MODES, help="modes of the temporal dataset")
    p.add_argument("--lower-case", action="store_true",
                   help="ask every temporal question in lower case, as people type them (a robustness check)")
    p.add_argument("--model", default=None, help="LLM (default: the KB default, SmolLM2-135M-Instruct)")
    p.add_argument("--embedder", default=None, help="embedder (default: all-MiniLM-L6-v2)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: auto)")
    p.add_argument("--exemplars", default=None, help="gate exemplar questions, JSONL (default: the shipped set)")
    p.add_argument("--batch-size", type=int, default=None, help="batch of the base and rag modes (default 16; 64 on cuda)")
    p.add_argument("--check-batch", type=int, default=4,
                   help="questions also answered one at a time to check batched answers (0: none)")
    p.add_argument("--teacher-forced", action="store_true", help="also report teacher-forced token accuracy")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    return p.parse_args(argv)


def build_stream(name: str, n: int, args: argparse.Namespace):
    from kupdate.bench import LOADERS, stream_from_cases, synthetic_stream
    from kupdate.errors import KupdateError

    if name == "synthetic":
        return synthetic_stream(n, rounds=args.rounds, seed=args.seed, style=args.synthetic_style)
    path = getattr(args, name)
    if path is None:
        raise KupdateError(f"--dataset {name} needs --{name} PATH (the data file)")
    return stream_from_cases(name, LOADERS[name](path, n), rounds=args.prefixes)


def temporal_sets(args: argparse.Namespace) -> list[tuple[str, str, list]]:
    """(name, path, cases) of each --temporal file: the file's stem names its KB and its results."""
    from kupdate.bench.temporal import load_temporal

    sets = []
    for spec in (s for s in args.temporal.split(",") if s):
        path, _, n = spec.rpartition(":")
        first, _, last = n.partition("-")
        if first.isdigit() and last.isdigit() and 1 <= int(first) <= int(last):
            sets.append((f"{Path(path).stem}-{first}-{last}", path, load_temporal(path, int(last))[int(first) - 1 :]))
            continue
        if not (n.isdigit() or n == "all"):
            path, n = spec, "all"
        sets.append((Path(path).stem, path, load_temporal(path, None if n == "all" else int(n))))
    if args.lower_case:
        for _name, _path, cases in sets:
            for case in cases:
                case.question = case.question.lower()
        sets = [(f"{name}-lower", path, cases) for name, path, cases in sets]
    return sets


def environment(device: str) -> dict:
    env = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "device": device}
    try:
        import torch
        import transformers

        env.update(torch=torch.__version__, transformers=transformers.__version__,
                   torch_threads=torch.get_num_threads())
        if device.startswith("cuda"):
            env["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return env


def main(argv: list[str] | None = None) -> int:
    from kupdate import KnowledgeBase
    from kupdate.bench import Checkpoint, run_stream
    from kupdate.bench.modes import check_modes
    from kupdate.bench.temporal import run_temporal
    from kupdate.errors import USER_ERRORS

    args = parse_args(argv)
    names = [d for d in args.dataset.split(",") if d]
    modes = [m for m in args.modes.split(",") if m]
    try:
        unknown = [d for d in names if d not in DATASETS]
        if unknown:
            raise ValueError(f"unknown dataset {unknown[0]!r}; choose from {', '.join(DATASETS)}")
        check_modes(modes, KnowledgeBase)
        sizes = {d: (args.synthetic_n if d == "synthetic" else None) or args.n or DEFAULT_N[d]
                 for d in names if d != "temporal"}
        streams = [build_stream(d, sizes[d], args) for d in names if d != "temporal"]
        temporal = temporal_sets(args) if "temporal" in names else []
        temporal_modes = [m for m in args.temporal_modes.split(",") if m]
    except (*USER_ERRORS, ValueError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    out = Path(args.out or ROOT / "benchmarks" / "results" / "stale_fresh" / time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    # What the answers depend on: a rerun into the same --out must match it to resume.
    config = {"datasets": names, "n": sizes, "rounds": args.rounds, "prefixes": args.prefixes, "seed": args.seed,
              "synthetic_style": args.synthetic_style, "modes": modes, "model": args.model,
              "embedder": args.embedder, "exemplars": args.exemplars,
              "data": {d: getattr(args, d) for d in names if d != "synthetic"}}
    if temporal:
        config["temporal"] = {"files": {name: {"path": path, "cases": len(cases)} for name, path, cases in temporal},
                              "modes": temporal_modes}
    ck = Checkpoint(out / "checkpoint.jsonl")
    start = time.perf_counter()
    results, device = {}, "cpu"
    try:
        ck.check_config(config)
        for stream in streams:
            kb = open_kb(out / f"kb-{stream.name}", args)
            device = str(kb.llm.device)
            batch = args.batch_size or (64 if device.startswith("cuda") else 16)
            with kb:
                result = run_stream(kb, stream, modes, checkpoint=ck, workdir=out / "streams", batch_size=batch,
                                    check_batch=args.check_batch, teacher_forced=args.teacher_forced,
                                    progress=not args.no_progress)
            results[stream.name] = result
            config.setdefault("resolved", {})[stream.name] = {"model": kb.config.model, "embedder": kb.config.embedder,
                                                             "batch_size": batch, "stream": stream.meta}
        for name, _path, cases in temporal:
            kb = open_kb(out / f"kb-{name}", args)
            device = str(kb.llm.device)
            batch = args.batch_size or (64 if device.startswith("cuda") else 16)
            with kb:
                results[name] = run_temporal(kb, name, cases, temporal_modes, checkpoint=ck,
                                             workdir=out / "streams", batch_size=batch, progress=not args.no_progress)
    except USER_ERRORS as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    write_outputs(out, config, environment(device), results, time.perf_counter() - start)
    return 0


def open_kb(path: Path, args: argparse.Namespace):
    """The run's KB: a fresh one, or the one an interrupted run left (ingest de-duplicates)."""
    from kupdate import KnowledgeBase

    overrides = {k: v for k, v in (("model", args.model), ("embedder", args.embedder), ("device", args.device)) if v}
    if (path / "kupdate.toml").exists():
        return KnowledgeBase.open(path, **overrides)
    return KnowledgeBase.init(path, exemplars=args.exemplars, progress=not args.no_progress, **overrides)


def write_outputs(out: Path, config: dict, env: dict, results: dict, seconds: float) -> None:
    from kupdate.bench import plot, plot_curve

    data = {"config": config, "environment": env, "wall_seconds": round(seconds, 1),
            "datasets": {name: r.to_dict() for name, r in results.items()}}
    (out / "results.json").write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    text = "\n".join(r.to_markdown() for r in results.values())
    (out / "table.md").write_text(text, encoding="utf-8")
    for name, r in results.items():
        plot(r, out / f"{name}-metrics.png")
        if getattr(r, "curve", None):  # rounds: the stream datasets, not the temporal sets
            plot_curve(r, out / f"{name}-curve.png")
    print(text)
    print(f"results in {out} ({data['wall_seconds']} s)", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
