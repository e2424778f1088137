"""Reports of a benchmark: the Markdown table and the plots (matplotlib, imported when plotting)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kupdate.bench.modes import BATCHED

METRICS = ("fresh_recall", "stale_rate", "generalisation", "locality")
LABELS = {"fresh_recall": "fresh recall", "stale_rate": "stale rate", "generalisation": "generalisation",
          "locality": "locality"}


def fmt_rate(r: dict[str, Any] | None) -> str:
    return "-" if r is None else f"{r['value']:.2f} [{r['low']:.2f}, {r['high']:.2f}]"


def table(result: Any) -> str:
    """The final-state table of one stream's result, with the per-round curve when it has rounds."""
    rounds = f" over {result.rounds} rounds" if result.rounds > 1 else ""
    lines = [f"### {result.dataset}: {result.n} facts{rounds} (final state)", "",
             "| mode | fresh recall | stale rate | generalisation | locality | forgetting (BWT) | ask p50 ms | ask p95 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for mode in result.modes:
        m = result.metrics[mode]
        bwt = (result.forgetting.get(mode) or {}).get("bwt")
        mark = "†" if mode in BATCHED else ""
        cells = [fmt_rate(m.get(k)) for k in METRICS]
        cells.append("-" if bwt is None else f"{bwt:+.2f}")
        cells += [f"{m['ask_ms_p50']:,.0f}{mark}", f"{m['ask_ms_p95']:,.0f}{mark}"]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    lines += ["", f"{result.n} cases; 95% Wilson intervals in brackets. " + _notes(result)]
    for mode, counts in result.misses.items():
        if sum(counts.values()):
            lines += ["", f"{mode} missed the fresh value {sum(counts.values())} times: "
                      + ", ".join(f"{k} {v}" for k, v in counts.items() if v) + "."]
    if len(result.curve) > 1:
        lines += ["", "Per round, fresh recall / locality of the facts current then:", "",
                  "| round | date | updates | facts | " + " | ".join(result.modes) + " |",
                  "|---" * (4 + len(result.modes)) + "|"]
        for point in result.curve:
            cells = [f"{_value(point['metrics'][m].get('fresh_recall'))} / "
                     f"{_value(point['metrics'][m].get('locality'))}" for m in result.modes]
            lines.append(f"| {point['round']} | {point['date']} | {point['updates']} | {point['facts']} | "
                         + " | ".join(cells) + " |")
    if result.teacher_forced:
        tf = result.teacher_forced
        lines += ["", f"Teacher-forced token accuracy of the new value ({tf['format']}); not comparable with the "
                  "free-generation metrics above:", "", "| mode | token accuracy | n |", "|---|---|---|"]
        lines += [f"| {m} | {tf[m]['value']:.3f} | {tf[m]['n']} |" for m in tf if m != "format"]
    return "\n".join(lines) + "\n"


def _value(r: dict[str, Any] | None) -> str:
    return "-" if r is None else f"{r['value']:.2f}"


def _notes(result: Any) -> str:
    notes = []
    if any(m in BATCHED for m in result.modes):
        notes.append("† batched: time per answer, the batch's time shared among its answers")
        for mode, check in result.batch_check.items():
            notes.append(f"{mode} one at a time: p50 {check['single_ms_p50']:,.0f} ms, "
                         f"{len(check['mismatches'])} of {check['n']} answers differ from the batched ones")
    ingest = sum(r.get("seconds", 0.0) for r in result.ingest)
    notes.append(f"ingest {ingest:.1f} s")
    if result.consolidate:
        notes.append(f"consolidation {sum(r.get('seconds', 0.0) for r in result.consolidate):.1f} s")
    if result.gate_threshold is not None:
        notes.append(f"gate threshold {result.gate_threshold:.2f}")
    return "; ".join(notes) + "."


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(result: Any, path: str | Path) -> Path:
    """Bar chart of the four metrics per mode, with confidence intervals, saved as PNG."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(result.modes), 1)
    for i, mode in enumerate(result.modes):
        vals, errs = [], [[], []]
        for name in METRICS:
            r = result.metrics[mode].get(name) or {"value": 0.0, "low": 0.0, "high": 0.0}
            vals.append(r["value"])
            errs[0].append(r["value"] - r["low"])
            errs[1].append(r["high"] - r["value"])
        xs = [j + i * width for j in range(len(METRICS))]
        ax.bar(xs, vals, width, yerr=errs, capsize=3, label=mode)
    ax.set_xticks([j + width * (len(result.modes) - 1) / 2 for j in range(len(METRICS))],
                  [LABELS[m] for m in METRICS])
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Stale vs fresh, {result.dataset}: {result.n} facts (final state)")
    ax.legend()
    return save_figure(fig, plt, path)


def plot_curve(result: Any, path: str | Path) -> Path:
    """Fresh recall and locality (95% intervals) against the number of updates ingested, per mode."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    xs = [p["updates"] for p in result.curve]
    for ax, name in zip(axes, ("fresh_recall", "locality")):
        for mode in result.modes:
            rates = [p["metrics"][mode].get(name) for p in result.curve]
            if any(r is None for r in rates):
                continue
            vals = [r["value"] for r in rates]
            err = [[v - r["low"] for v, r in zip(vals, rates)], [r["high"] - v for v, r in zip(vals, rates)]]
            ax.errorbar(xs, vals, yerr=err, marker="o", capsize=3, label=mode)
        ax.set_xlabel("updates ingested")
        ax.set_title(LABELS[name])
        ax.set_ylim(0, 1.05)
    axes[0].legend()
    fig.suptitle(f"{result.dataset}: after each round")
    return save_figure(fig, plt, path)


def save_figure(fig: Any, plt: Any, path: str | Path) -> Path:
    """Lay out, write (120 dpi) and close `fig`; returns the path."""
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(out: str | Path, data: dict[str, Any], table_md: str, draw: Any, figure: str) -> Path:
    """A benchmark script's outputs in `out`: results.json (`data`), table.md (`table_md`) and the
    plot `draw(path)` makes as `figure`; the table is also printed. Returns the results file."""
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "table.md").write_text(table_md, encoding="utf-8")
    draw(out / figure)
    print(table_md)
    return path
