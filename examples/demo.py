"""The kupdate demo: ingest dated documents into a fresh KB, then ask with and without memory.

    python examples/demo.py --kb demo-kb      (what `make demo` runs)

Prints a table (question, answer without memory, answer with memory, gate score, cited source
and date) and a summary line; exits 1 if a changed fact is not answered with its fresh value.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from kupdate import KnowledgeBase
from kupdate.text import hits

HERE = Path(__file__).resolve().parent


def cell(text: str, width: int) -> str:
    text = " ".join(text.replace("|", "/").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kb", default="demo-kb", help="where to create the demo knowledge base")
    args = parser.parse_args()
    start = time.perf_counter()
    print(f"Creating {args.kb} and recording the base model's answers to the exemplars...", file=sys.stderr)
    kb = KnowledgeBase.init(args.kb, progress=True)
    report = kb.ingest([HERE / "docs"], progress=True)
    print(f"Ingested {report.files} files: {report.added} records, {report.superseded} superseded facts.",
          file=sys.stderr)
    questions = [json.loads(line) for line in (HERE / "questions.jsonl").read_text().splitlines() if line.strip()]
    print("| question | without memory | with memory | gate | cited source (date) | fresh? |")
    print("|---|---|---|---|---|---|")
    fresh_ok = changed = unrelated_same = unrelated = 0
    for q in questions:
        base = kb.ask(q["question"], memory=False)
        ans = kb.ask(q["question"])
        cited = ans.citations[0] if ans.citations else None
        source = f"{Path(cited.record.source).name} ({cited.record.valid_from[:10]})" if cited else "-"
        verdict = "-"
        if q["fresh"]:
            ok = hits(ans.answer, q["fresh"]) and not (q["stale"] and hits(ans.answer, q["stale"]))
            verdict = "yes" if ok else "NO"
            if q["kind"] == "changed":
                changed += 1
                fresh_ok += ok
        else:
            unrelated += 1
            same = ans.answer == base.answer
            unrelated_same += same
            verdict = "unchanged" if same else "CHANGED"
        gate = f"{ans.gate.score:.2f} {'open' if ans.gate.open else 'shut'}"
        print(f"| {cell(q['question'], 60)} | {cell(base.answer, 60)} | {cell(ans.answer, 70)} | {gate} "
              f"| {source} | {verdict} |")
    kb.close()
    print(f"\nChanged facts answered with the fresh value: {fresh_ok}/{changed}. "
          f"Unrelated questions answered as without memory: {unrelated_same}/{unrelated}. "
          f"Wall time {time.perf_counter() - start:.1f} s.")
    return 0 if fresh_ok == changed and unrelated_same == unrelated else 1


if __name__ == "__main__":
    sys.exit(main())
