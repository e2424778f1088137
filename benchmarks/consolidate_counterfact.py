"""Consolidation on CounterFact: facts in, adapter out, recall with the memory shut.

    python benchmarks/consolidate_counterfact.py --n 50                 # domain cf: records 0-49
    python benchmarks/consolidate_counterfact.py --n 50 --second 50     # then domain cf2: records 50-99

Each record is ingested as `prompt + " " + target_new + "."` into domain `cf`, with held-out checks
(never trained on): `prompt` and `target_new` as the probe, `rephrase_prompt` as the paraphrase,
`locality_prompt` as an unrelated prompt. `kb.consolidate("cf")` trains, evaluates and promotes or
rejects; its report.json holds the figures (memory shut: fresh recall on `prompt`, paraphrase
recall on `rephrase_prompt`, locality on the exemplars and the locality prompts). With `--second`,
a second domain is consolidated afterwards and the first domain's figures are measured again with
both adapters serving (masks disjoint, questions routed).

Writes <out>/results.json (both reports, the re-measured first domain, mask overlap, times), <out>/table.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "counterfact-edit.json"


def write_domain(path: Path, records: list[dict], domain: str, first: int = 0) -> Path:
    """`records` as JSONL for `ingest`, sources `<domain>-<first>`, `<domain>-<first + 1>`, ... (a
    source ingested again is a new version of that document and supersedes the old one, so rounds
    of one domain number on)."""
    lines = [json.dumps({"text": f"{r['prompt']} {r['target_new']}.", "source": f"{domain}-{i}", "domain": domain,
                         "checks": {"question": r["prompt"], "answer": r["target_new"],
                                    "paraphrases": [r["rephrase_prompt"]], "unrelated": [r["locality_prompt"]]}})
             for i, r in enumerate(records, first)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def row(name: str, m: dict) -> str:
    def f(key: str) -> str:
        r = m.get(key)
        return "-" if r is None else f"{r['value']:.2f} [{r['low']:.2f}, {r['high']:.2f}]"
    return f"| {name} | {f('fresh_recall')} | {f('paraphrase_recall')} | {f('locality')} | {f('locality_forced')} |"


def main(argv: list[str] | None = None) -> int:
    from kupdate import KnowledgeBase
    from kupdate.consolidate import dataset, evaluate, masks
    from kupdate.consolidate.run import current_records, without_outdated

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--n", type=int, default=50, help="records of the first domain (cf)")
    p.add_argument("--second", type=int, default=0, help="records of a second domain (cf2), after the first")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    out = Path(args.out or ROOT / "benchmarks" / "results" / "consolidate_cf" / time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    data = json.loads(Path(args.data).read_text(encoding="utf-8"))
    start = time.perf_counter()
    kb = KnowledgeBase.init(out / "kb", progress=True)
    kb.ingest([write_domain(out / "cf.jsonl", data[: args.n], "cf")])
    [first] = kb.consolidate("cf", progress=True).reports
    result: dict = {"n": args.n, "second": args.second, "cf": first}
    rows = [row("cf before (no adapter)", first["metrics"]["before"]), row(f"cf {first['status']} {first['version']}",
                                                                          first["metrics"]["after"])]
    if args.second:
        kb.ingest([write_domain(out / "cf2.jsonl", data[args.n : args.n + args.second], "cf2")])
        [second] = kb.consolidate("cf2", progress=True).reports
        recs = without_outdated(kb, current_records(kb)["cf"])
        again = evaluate.measure(kb, dataset.probes_for(recs), recs, kb.exemplars())
        served = kb.adapters.registry.serving_all()
        overlap = masks.overlap(*(masks.load(served[d].path) for d in ("cf", "cf2"))) if len(served) == 2 else None
        result.update({"cf2": second, "cf_after_second": again, "mask_overlap": overlap})
        rows += [row(f"cf2 {second['status']} {second['version']}", second["metrics"]["after"]),
                 row("cf again, both adapters serving", again)]
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    kb.close()
    (out / "results.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    table = ("| state (memory shut) | fresh recall (`prompt`) | paraphrase recall | locality | locality, adapter forced |\n"
             "|---|---|---|---|---|\n" + "\n".join(rows) + f"\n\n{result['wall_seconds']} s wall.\n")
    (out / "table.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
