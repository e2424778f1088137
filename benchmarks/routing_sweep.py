"""Routing against its trade-off: on a consolidated KB, what each routing rule would give.

    python benchmarks/routing_sweep.py --kb PATH --domain cf                  # the serving version
    python benchmarks/routing_sweep.py --kb PATH --domain cf --version v0002 --facts 200

A domain's adapter answers a question only when the question's best key scores at least the
adapter's threshold (docs/consolidation.md, "Routing"). Where that threshold sits trades
paraphrases reached against unrelated questions changed. Training is not needed to see that
trade: every question is answered once with the adapter forced on and once with every adapter off,
and scored against the adapter's keys; a rule's figures then follow from which questions it routes.

Questions (the KB's current records of the domain, the first --facts of them by id):
- paraphrases (`checks.paraphrases`, never trained on) and fresh probes: right when the answer
  names the fresh value;
- exemplars (the KB's, with their stored base answers) and `checks.unrelated` prompts: kept when
  the answer is exactly the base model's. Exemplars are what calibration sees; the unrelated
  prompts are held out from it, so their locality is the honest one.

Rules: every fixed threshold from 0.40 to 0.85 (the curve); the version's calibrated threshold
(as shipped); and, calibrated on the exemplars as shipped calibration is, `per-key` (every
exemplar the adapter harms lifts only the keys it is scored against, to its score there plus the
gate's margin; the other keys stay at the gate's floor), and `allow-k`: the global threshold with the k
highest harmed exemplars let through.

Writes <out>/results.json, <out>/table.md and <out>/routing_sweep.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRID = [round(0.40 + 0.01 * i, 2) for i in range(46)]


@dataclass
class Item:
    kind: str  # paraphrase | fresh | exemplar | unrelated
    text: str
    keys: list[tuple[int, float]]  # (key index, relevance) of the keys scored in full
    on: bool = False  # forced on: right (paraphrase, fresh) or kept (exemplar, unrelated)
    off: bool = False  # every adapter off: the same
    extra: dict = field(default_factory=dict)

    @property
    def score(self) -> float:
        return max([0.0] + [s for _, s in self.keys])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--kb", required=True, help="a KB with a consolidated domain")
    p.add_argument("--domain", required=True)
    p.add_argument("--version", default=None, help="an adapter version of the domain (default: the serving one)")
    p.add_argument("--facts", type=int, default=None, help="only the first N current records of the domain")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results/routing_sweep/<time>)")
    return p.parse_args(argv)


def collect(kb, domain: str, version: str | None, facts: int | None) -> tuple[list[Item], object]:
    """Every question with its key scores and its answers forced on and off."""
    from kupdate.consolidate import dataset, evaluate
    from kupdate.consolidate.run import current_records
    from kupdate.text import hits

    if version is not None:
        v = kb.adapters.registry.get(domain, version)
        kb.adapters.override[domain] = (v.version, v.path)
    [router] = kb.adapters.routers(domain)
    records = sorted(current_records(kb).get(domain, []), key=lambda r: r.id)[:facts]
    checks = [(r, (r.meta or {}).get("checks") or {}) for r in records]
    items = [Item("paraphrase", q, [], extra={"answer": c["answer"]})
             for _, c in checks if c.get("answer") for q in c.get("paraphrases", [])]
    items += [Item("fresh", p.question, [], extra={"answer": p.answer}) for p in dataset.probes_for(records)]
    items += [Item("exemplar", e.text, [], extra={"base": e.meta["base_answer"]})
              for e in kb.exemplars() if (e.meta or {}).get("base_answer") is not None]
    unrelated = [q for _, c in checks for q in c.get("unrelated", [])]
    items += [Item("unrelated", q, []) for q in unrelated]
    vecs = kb.embedder.encode([it.text for it in items])
    for it, v in zip(items, vecs):
        [it.keys] = kb.adapters.key_scores(it.text, v, [router])
    forced = kb.adapters.route_to(domain)
    for kind in ("paraphrase", "fresh"):
        group = [it for it in items if it.kind == kind]
        on, _ = evaluate.answers(kb, [it.text for it in group], forced=forced, first_line=True)
        off, _ = evaluate.answers(kb, [it.text for it in group], forced=[], first_line=True)
        for it, a, b in zip(group, on, off):
            it.on, it.off = hits(a, it.extra["answer"]), hits(b, it.extra["answer"])
    group = [it for it in items if it.kind == "exemplar"]
    on, _ = evaluate.answers(kb, [it.text for it in group], forced=forced)
    for it, a in zip(group, on):
        it.on, it.off = a.strip() == it.extra["base"].strip(), True
    group = [it for it in items if it.kind == "unrelated"]
    on, _ = evaluate.answers(kb, [it.text for it in group], forced=forced)
    off, _ = evaluate.answers(kb, [it.text for it in group], forced=[])
    for it, a, b in zip(group, on, off):
        it.on, it.off = a.strip() == b.strip(), True
    return items, router


def key_limits(harmed: list[list[tuple[int, float]]], n_keys: int, gate) -> list[float]:
    """Per-key limits: every key starts at the gate's floor, and each exemplar the adapter changes
    (`harmed`: the (key, score) pairs it is scored against) lifts only those keys, to its score
    there plus the gate's margin (at most the ceiling)."""
    limits = [gate.floor] * n_keys
    for keys in harmed:
        for k, s in keys:
            limits[k] = max(limits[k], min(s + gate.margin, gate.ceiling))
    return limits


def allow(items: list[Item], k: int, floor: float, margin: float, ceiling: float) -> float:
    """The global threshold with the k highest-scoring harmed exemplars let through."""
    harmed = sorted((it.score for it in items if it.kind == "exemplar" and not it.on), reverse=True)[k:]
    return min(max((harmed[0] if harmed else 0.0) + margin, floor), ceiling)


def figures(items: list[Item], routed) -> dict:
    """Each kind's rate under a rule (`routed(item)`: answered with the adapter on)."""
    out = {}
    for kind in ("paraphrase", "fresh", "exemplar", "unrelated"):
        group = [it for it in items if it.kind == kind]
        if group:
            got = [it.on if routed(it) else it.off for it in group]
            out[kind] = round(sum(got) / len(group), 4)
            out[f"{kind}_routed"] = round(sum(map(routed, group)) / len(group), 4)
    return out


def rules(items: list[Item], router, gate) -> dict[str, dict]:
    out = {f"fixed {t:.2f}": {"threshold": t, **figures(items, lambda it, t=t: it.score >= t)} for t in GRID}
    shipped = router.threshold if router.threshold is not None else gate.floor
    out["calibrated (as shipped)"] = {"threshold": shipped, **figures(items, lambda it: it.score >= shipped)}
    limits = key_limits([it.keys for it in items if it.kind == "exemplar" and not it.on], len(router.keys), gate)
    out["per-key"] = {"threshold": None, "keys_lifted": sum(x > gate.floor for x in limits),
                      **figures(items, lambda it: any(s >= limits[k] for k, s in it.keys))}
    for k in (1, 2, 4):
        t = allow(items, k, gate.floor, gate.margin, gate.ceiling)
        out[f"allow-{k}"] = {"threshold": t, **figures(items, lambda it, t=t: it.score >= t)}
    return out


def table(results: dict) -> str:
    lines = ["| rule | threshold | paraphrase | paraphrases routed | fresh | locality, unrelated (held out) | "
             "unrelated routed | locality, exemplars | exemplars routed |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["rules"].items():
        if name.startswith("fixed") and round(r["threshold"] * 100) % 5:
            continue
        t = "per key" if r["threshold"] is None else f"{r['threshold']:.2f}"
        lines.append(f"| {name} | {t} | {r.get('paraphrase', 0):.2f} | {r.get('paraphrase_routed', 0):.2f} | "
                     f"{r.get('fresh', 0):.2f} | {r.get('unrelated', 1):.3f} | {r.get('unrelated_routed', 0):.3f} | "
                     f"{r.get('exemplar', 1):.3f} | {r.get('exemplar_routed', 0):.3f} |")
    n = results["counts"]
    return ("\n".join(lines) + f"\n\n{results['domain']} {results['version']}: {n}; memory shut; fixed thresholds "
            "every 0.05 here, every 0.01 in results.json.\n")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fixed = [r for name, r in results["rules"].items() if name.startswith("fixed")]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    x = [r["threshold"] for r in fixed]
    for key, style in (("paraphrase", "s-"), ("fresh", "o-"), ("unrelated", "^:"), ("exemplar", "v:")):
        if key in fixed[0]:
            ax.plot(x, [r[key] for r in fixed], style, markersize=3, label=key)
    t = results["rules"]["calibrated (as shipped)"]["threshold"]
    ax.axvline(t, color="grey", linestyle="--", linewidth=1, label=f"calibrated {t:.2f}")
    ax.set_xlabel("routing threshold")
    ax.set_ylabel("rate, memory shut")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    ax.set_title(f"Routing trade-off ({results['domain']} {results['version']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from kupdate import KnowledgeBase
    from kupdate.errors import KupdateError

    out = Path(args.out or ROOT / "benchmarks" / "results" / "routing_sweep" / time.strftime("%Y%m%d-%H%M%S"))
    try:
        kb = KnowledgeBase.open(args.kb)
    except KupdateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        if not kb.adapters.routers(args.domain) and args.version is None:
            print(f"error: domain {args.domain!r} of {args.kb} serves no adapter; consolidate it first", file=sys.stderr)
            return 1
        t = time.perf_counter()
        items, router = collect(kb, args.domain, args.version, args.facts)
        gate = kb.config.gate
        counts = {kind: sum(it.kind == kind for it in items) for kind in ("paraphrase", "fresh", "exemplar", "unrelated")}
        results = {"kb": str(args.kb), "domain": args.domain, "version": router.version, "facts": args.facts,
                   "keys": len(router.keys), "counts": counts, "seconds": round(time.perf_counter() - t, 1),
                   "gate": {"floor": gate.floor, "margin": gate.margin, "ceiling": gate.ceiling},
                   "rules": rules(items, router, gate)}
    except KupdateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        kb.close()
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    text = table(results)
    (out / "table.md").write_text(text)
    plot(results, out / "routing_sweep.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
