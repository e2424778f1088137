"""Stale-vs-fresh benchmark: ingest updated facts, then score base / rag / gated_rag on the final state.

    python benchmarks/stale_fresh.py --n 100                 # first 100 CounterFact records
    python benchmarks/stale_fresh.py --n 20 --out results/smoke

Writes <out>/results.json (metrics, per-case answers, config and environment), <out>/table.md and
<out>/metrics.png. Data is read by path from ../shared/data (never copied into the project).
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
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "counterfact-edit.json"


def main(argv: list[str] | None = None) -> int:
    from kupdate import KnowledgeBase
    from kupdate.evaluate import MODES, evaluate, load_counterfact, plot

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="CounterFact-edit JSON file")
    p.add_argument("--n", type=int, default=100, help="number of records (from the start)")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated modes")
    p.add_argument("--out", default=None, help="output folder (default results/stale_fresh/<time>)")
    p.add_argument("--model", default=None, help="LLM (default: the KB default, SmolLM2-135M-Instruct)")
    p.add_argument("--embedder", default=None, help="embedder (default: all-MiniLM-L6-v2)")
    args = p.parse_args(argv)
    out = Path(args.out or ROOT / "results" / "stale_fresh" / time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    cases = load_counterfact(args.data, args.n)
    modes = [m for m in args.modes.split(",") if m]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        kb = KnowledgeBase.init(Path(tmp) / "kb", model=args.model, embedder=args.embedder)

        def progress(done: int, total: int) -> None:
            print(f"\r{done}/{total} case-modes", end="", file=sys.stderr, flush=True)

        result = evaluate(kb, cases, modes, progress=progress)
        print(file=sys.stderr)
        config = {"data": args.data, "n": args.n, "modes": modes, "model": kb.config.model,
                  "embedder": kb.config.embedder, "gate_threshold": kb.threshold()}
        kb.close()
    env = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        import torch

        env["torch"] = torch.__version__
        env["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        pass
    data = {"config": config, "environment": env, "wall_seconds": round(time.perf_counter() - start, 1),
            **result.to_dict()}
    (out / "results.json").write_text(json.dumps(data, indent=2, ensure_ascii=False))
    (out / "table.md").write_text(result.to_markdown())
    plot(result, out / "metrics.png")
    print(result.to_markdown())
    print(f"results in {out} ({data['wall_seconds']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
