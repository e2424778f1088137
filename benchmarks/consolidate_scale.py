"""Consolidation at scale: CounterFact facts in sequential rounds, recall and locality per round.

    python benchmarks/consolidate_scale.py --n 50 --compare          # the 50-fact check, before/after
    python benchmarks/consolidate_scale.py --n 500 --rounds 5        # 5 rounds of 100 on this CPU
    python benchmarks/consolidate_scale.py --device cuda --n 10000 --rounds 10   # on one GPU

The first --n CounterFact-edit records (read by path from ../shared/data/counterfact-edit.json) are
split into --rounds equal rounds. Each round's records are ingested into domain `cf` (as
`prompt + " " + target_new + "."` with held-out checks, as in consolidate_counterfact.py) and the
domain is consolidated at once (`kb.consolidate("cf", force=True)`): round 1 from a fresh adapter,
each later round continuing the serving version on its new records with older ones rehearsed
(incremental rounds; `--set incremental=false` retrains every fact so far each round). After each
round, with the memory shut (the adapter as served): fresh recall on every fact so far (`prompt`),
paraphrase recall (`rephrase_prompt`), locality (exemplars and `locality_prompt`s) from the
consolidation's report (with how many paraphrases were routed to the adapter and the share of
entries its mask holds), and the recall of round 1's facts; after the last round, paraphrase recall
with the adapter forced on for every paraphrase (what routing can reach at most).
Forgetting = round 1's recall at the end minus right after round 1.

Settings (each on its own copy of one freshly made KB, so all share the exemplars):
- `default`: the configuration as shipped;
- `before` (with --compare): the consolidation settings before the speed work (8 passes at a constant
  learning rate, no early stop), on the same records in the same run, for the wall-time ratio;
- `tuned` (with --set KEY=VALUE ...): the defaults with those [consolidation] settings changed.
`--only` keeps some of them (say `--compare --set learning_rate=0.01 --only before,tuned`).

Writes <out>/results.json (config, environment, every round's report figures), <out>/table.md and
<out>/consolidate_scale.png (recall and locality against the number of facts), again after every
round, so the rounds of a long run that has not finished are on disk. `--resume` continues such a
run in the same --out: each setting's finished rounds are kept and its KB goes on from the next
round (a consolidation killed part-way continues from its last saved pass; ingesting a round again
stores nothing twice). Wall time and peak memory then add up both runs (the later run's own
elapsed time added to the earlier's; the larger of the two peaks).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from consolidate_counterfact import DEFAULT_DATA, ROOT, write_domain  # noqa: E402

DOMAIN = "cf"
# The consolidation settings of the code before the speed work: 8 passes at a constant rate of
# 0.005, no early stop, every row run whole, one padded pass a step (batching by length is not a
# setting: it stays on).
BEFORE = {"epochs": 8, "schedule": "constant", "stop_recall": 0.0, "focus": False, "learning_rate": 0.005,
          "share_start": False, "contexts": 1, "incremental": False, "pass_slack": 0}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--n", type=int, default=50, help="CounterFact records in all")
    p.add_argument("--rounds", type=int, default=1, help="sequential rounds (records split evenly)")
    p.add_argument("--compare", action="store_true", help="also run the settings before the speed work")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: the KB's, auto)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a [consolidation] setting of a third setting, 'tuned' (repeatable; e.g. learning_rate=0.01)")
    p.add_argument("--only", default=None, help="run only these settings (comma-separated: before, default, tuned)")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results/consolidate_scale/<time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue an unfinished run in --out: keep its finished rounds, go on with its KBs")
    return p.parse_args(argv)


def environment() -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
           "machine": platform.machine()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def figure(r: dict | None) -> float | None:
    return None if r is None else r["value"]


def run_setting(name: str, template: Path, out: Path, rounds: list[list[dict]], overrides: dict,
                device: str | None, on_round: Callable[[dict], None] = lambda got: None,
                done_rows: list[dict] | None = None, done_wall: float = 0.0) -> dict:
    """Every round ingested and consolidated on a copy of `template`; the figures per round
    (also handed to `on_round` after each round, so a long run's finished rounds are on disk).
    `done_rows`: the rounds of an earlier run of this setting (`done_wall` seconds), whose KB goes on
    from the next one."""
    from kupdate import KnowledgeBase
    from kupdate.config import dump_config
    from kupdate.consolidate import dataset, evaluate
    from kupdate.consolidate.run import current_records
    from kupdate.metrics import rate
    from kupdate.text import hits

    path = out / f"kb-{name}"
    rows = list(done_rows or [])
    if not rows:
        shutil.rmtree(path, ignore_errors=True)
        shutil.copytree(template, path)
    kb = KnowledgeBase.open(path, **({"device": device} if device else {}))
    for key, value in overrides.items():
        setattr(kb.config.consolidation, key, value)
    (path / "kupdate.toml").write_text(dump_config(kb.config), encoding="utf-8")
    start, first_ids, done = time.perf_counter() - done_wall, None, 0
    if rows:
        first_ids = {f"{DOMAIN}-{j}" for j in range(len(rounds[0]))}
        done = sum(len(r) for r in rounds[: len(rows)])
    for i, records in enumerate(rounds, 1):
        if i <= len(rows):
            continue
        kb.ingest([write_domain(out / f"{name}-round-{i}.jsonl", records, DOMAIN, first=done)])
        t = time.perf_counter()
        [report] = kb.consolidate(DOMAIN, force=True, progress=True).reports
        seconds = time.perf_counter() - t
        done += len(records)
        after = report["metrics"]["after"]
        current = current_records(kb)[DOMAIN]
        if first_ids is None:
            first_ids = {r.source for r in current}
            first_recall = figure(after["fresh_recall"])
        else:
            first = [r for r in current if r.source in first_ids]
            if not first:
                raise SystemExit("[consolidate_scale] round 1's records are no longer current "
                                 "(superseded by a later round?); forgetting cannot be measured")
            again = evaluate.measure(kb, dataset.probes_for(first), first, [])
            first_recall = figure(again["fresh_recall"])
        training = report.get("training", {})
        forced = None
        if i == len(rounds) and report["status"] == "promoted":
            # The adapter itself, forced on for every paraphrase: what routing can reach at most.
            para = [(q, c["answer"]) for r in current for c in [(r.meta or {}).get("checks") or {}]
                    for q in c.get("paraphrases", []) if c.get("answer")]
            got, _ = evaluate.answers(kb, [q for q, _ in para], forced=kb.adapters.route_to(DOMAIN), first_line=True)
            forced = rate([hits(a, w) for a, (_, w) in zip(got, para)]).to_dict() if para else None
        rows.append({"round": i, "facts": done, "status": report["status"], "seconds": round(seconds, 1),
                     "phases": report["seconds"], "fresh_recall": after["fresh_recall"],
                     "paraphrase_recall": after.get("paraphrase_recall"), "locality": after["locality"],
                     "round1_recall": first_recall, "epochs": training.get("epochs"), "passes": training.get("passes"),
                     "checked_at": training.get("checked_at"),
                     "examples_per_s": training.get("examples_per_s"),
                     "recalled_per_epoch": training.get("recalled_per_epoch"), "data": report["data"],
                     "paraphrases_routed": after.get("paraphrases_routed"), "paraphrase_forced": forced,
                     "mask": report.get("mask"), "routing": report.get("routing")})
        print(f"[consolidate_scale] {name} round {i}: {done} facts, {seconds:.0f} s, fresh "
              f"{figure(after['fresh_recall']):.2f}, locality {figure(after['locality']):.2f}", file=sys.stderr)
        on_round(figures(overrides, rows, time.perf_counter() - start, finished=i == len(rounds)))
    kb.close()
    return figures(overrides, rows, time.perf_counter() - start, finished=True)


def figures(overrides: dict, rows: list[dict], wall: float, *, finished: bool) -> dict:
    """A setting's figures after the rounds in `rows`."""
    return {"overrides": overrides, "rounds": rows, "wall_seconds": round(wall, 1), "finished": finished,
            "forgetting": round(rows[-1]["round1_recall"] - rows[0]["round1_recall"], 4) if len(rows) > 1 else None}


def peak_memory(earlier: dict | None = None) -> dict:
    """This process's peak memory, or an `earlier` run's (resumed) where that was higher."""
    import torch

    out = {"rss_max_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available():
        out["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    for key, value in (earlier or {}).items():
        out[key] = max(out.get(key, 0.0), value)
    return out


def table(results: dict) -> str:
    def rate(r: dict | None) -> str:
        return "-" if r is None else f"{r['value']:.2f} [{r['low']:.2f}, {r['high']:.2f}]"

    def share(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    lines = ["| setting | round | facts | status | passes | examples/s | seconds | fresh recall | paraphrase | "
             "paraphrases routed | paraphrase, adapter forced on | mask share | locality | round-1 recall |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in results["settings"].items():
        for r in s["rounds"]:
            n_para = (r.get("paraphrase_recall") or {}).get("n")
            routed = r.get("paraphrases_routed")
            lines.append(f"| {name} | {r['round']} | {r['facts']} | {r['status']} | {r.get('passes') or r['epochs']} | "
                         f"{r['examples_per_s']} | {r['seconds']:.0f} | {rate(r['fresh_recall'])} | "
                         f"{rate(r['paraphrase_recall'])} | {share(routed / n_para if routed is not None and n_para else None)} | "
                         f"{rate(r.get('paraphrase_forced'))} | {share((r.get('mask') or {}).get('density'))} | "
                         f"{rate(r['locality'])} | {r['round1_recall']:.2f} |")
    notes = []
    for name, s in results["settings"].items():
        forget = "" if s["forgetting"] is None else f", forgetting (round-1 recall, end minus after round 1) {s['forgetting']:+.2f}"
        done = "every round" if s.get("finished", True) else f"the rounds made so far ({len(s['rounds'])})"
        notes.append(f"- {name}: {s['wall_seconds']:.0f} s wall for {done}{forget}")
    if "before" in results["settings"] and "default" in results["settings"]:
        ratio = results["settings"]["default"]["wall_seconds"] / results["settings"]["before"]["wall_seconds"]
        notes.append(f"- wall time default / before: **{ratio:.2f}**")
    mem = results["peak_memory"]
    notes.append(f"- peak memory: {mem['rss_max_mb']:.0f} MB resident"
                 + (f", {mem['cuda_max_allocated_mb']:.0f} MB on the GPU" if "cuda_max_allocated_mb" in mem else ""))
    return "\n".join(lines) + "\n\nMemory shut, adapter as served; 95% Wilson intervals.\n\n" + "\n".join(notes) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, s in results["settings"].items():
        x = [r["facts"] for r in s["rounds"]]
        for key, style in (("fresh_recall", "o-"), ("paraphrase_recall", "s--"), ("locality", "^:")):
            y = [figure(r[key]) for r in s["rounds"]]
            if all(v is not None for v in y):
                ax.plot(x, y, style, label=f"{name}: {key.replace('_', ' ')}")
    ax.set_xlabel("facts consolidated (domain cf)")
    ax.set_ylabel("rate, memory shut")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    ax.set_title("Consolidation: recall and locality against facts")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def tuned(pairs: list[str]) -> dict:
    """`--set KEY=VALUE` pairs as [consolidation] overrides, each value parsed as the setting's type."""
    from kupdate.config import ConsolidationConfig

    defaults, out = ConsolidationConfig(), {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not hasattr(defaults, key):
            raise ValueError(f"{pair!r} is not KEY=VALUE with KEY a [consolidation] setting")
        kind = type(getattr(defaults, key))
        if kind is bool and value.lower() not in ("true", "false"):
            raise ValueError(f"{pair!r}: {key} is true or false")
        out[key] = value.lower() == "true" if kind is bool else kind(value)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.n < args.rounds or args.rounds < 1:
        print("error: --n must be at least --rounds, and --rounds at least 1", file=sys.stderr)
        return 1
    try:
        changes = tuned(args.set)
    except ValueError as e:
        print(f"error: --set: {e}", file=sys.stderr)
        return 1
    settings = {"before": BEFORE} if args.compare else {}
    settings["default"] = {}
    if args.set:
        settings["tuned"] = changes
    if args.only:
        settings = {k: v for k, v in settings.items() if k in args.only.split(",")}
        if not settings:
            print(f"error: --only {args.only}: no such setting in this run (before needs --compare, tuned --set)",
                  file=sys.stderr)
            return 1
    from kupdate import KnowledgeBase

    out = Path(args.out or ROOT / "benchmarks" / "results" / "consolidate_scale" / time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    data = json.loads(Path(args.data).read_text(encoding="utf-8"))[: args.n]
    per = len(data) // args.rounds
    rounds = [data[i * per : (i + 1) * per if i < args.rounds - 1 else len(data)] for i in range(args.rounds)]
    template = out / "kb-template"
    earlier = None
    if args.resume:
        try:
            earlier = json.loads((out / "results.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            print(f"error: --resume: no readable results.json in {out} ({e}); run without --resume", file=sys.stderr)
            return 1
        if (earlier["config"]["n"], earlier["config"]["rounds"]) != (args.n, args.rounds):
            print(f"error: --resume: {out} holds a run of --n {earlier['config']['n']} --rounds "
                  f"{earlier['config']['rounds']}; resume it with those", file=sys.stderr)
            return 1
    if earlier is None or not template.is_dir():
        shutil.rmtree(template, ignore_errors=True)
        KnowledgeBase.init(template, device=args.device, progress=True).close()
    results = {"config": vars(args), "environment": environment(), "settings": dict(earlier["settings"]) if earlier else {}}

    def write(name: str, got: dict) -> str:
        results["settings"][name] = got
        results["peak_memory"] = peak_memory(earlier["peak_memory"] if earlier else None)
        (out / "results.json").write_text(json.dumps(results, indent=2))
        text = table(results)
        (out / "table.md").write_text(text)
        plot(results, out / "consolidate_scale.png")
        return text

    for name, overrides in settings.items():
        done_rows, done_wall = None, 0.0
        if earlier and name in earlier["settings"] and (out / f"kb-{name}").is_dir():
            done_rows, done_wall = earlier["settings"][name]["rounds"], earlier["settings"][name]["wall_seconds"]
            print(f"[consolidate_scale] {name}: resuming after round {len(done_rows)}", file=sys.stderr)
        text = write(name, run_setting(name, template, out, rounds, overrides, args.device,
                                       on_round=lambda got, name=name: write(name, got), done_rows=done_rows,
                                       done_wall=done_wall))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
