"""Scores of one benchmark stage, the curve over rounds and forgetting (DESIGN.md section 8).

A stage is the state after one round: its probes are the questions about the facts current then
(`prompt`, and `rephrase` at the final stage), the locality question of each fact and the stream's
control questions. Metrics per mode, each a `Rate` dict with its 95% Wilson interval:
- fresh recall: prompts answered with the current value;
- stale rate: prompts of facts that had an earlier value answered with one of the earlier values
  and not the current one;
- generalisation: fresh recall on the paraphrases;
- locality: locality and control questions answered exactly as the base model answers them;
- forgetting (backward transfer): for the facts set in round i and still current at the end,
  recall at the end minus recall right after round i; `bwt` is the mean over rounds (GEM's BWT).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kupdate.bench.datasets import EditCase
from kupdate.metrics import locality, percentile, rate
from kupdate.text import hits


@dataclass
class Probe:
    """One question asked at a stage: `kind` is prompt, rephrase, locality or control."""

    kind: str
    question: str
    case: EditCase | None = None


GATED = ("gated_rag", "adapter+gated_rag")  # the modes whose memory goes through the gate
Answers = dict[str, dict[str, dict[str, Any]]]  # mode -> question -> reply dict (answer, ms, ...)


def fresh_hit(answer: str, case: EditCase) -> bool:
    return hits(answer, case.fresh)


def stale_hit(answer: str, case: EditCase) -> bool:
    """The answer gives an earlier value of the fact and not the current one."""
    return not hits(answer, case.fresh) and any(hits(answer, old) for old in case.previous)


def stage_metrics(probes: Sequence[Probe], answers: Answers, modes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Fresh recall, stale rate, generalisation, locality and latency per mode for one stage."""
    out: dict[str, dict[str, Any]] = {}
    base = answers.get("base", {})
    for mode in modes:
        got = answers[mode]
        by_kind: dict[str, list[Probe]] = {}
        for p in probes:
            by_kind.setdefault(p.kind, []).append(p)
        prompts = by_kind.get("prompt", [])
        m: dict[str, Any] = {"fresh_recall": rate([fresh_hit(got[p.question]["answer"], p.case) for p in prompts])}
        with_old = [p for p in prompts if p.case.previous]
        if with_old:
            m["stale_rate"] = rate([stale_hit(got[p.question]["answer"], p.case) for p in with_old])
        reph = by_kind.get("rephrase", [])
        if reph:
            m["generalisation"] = rate([fresh_hit(got[p.question]["answer"], p.case) for p in reph])
        unrelated = by_kind.get("locality", []) + by_kind.get("control", [])
        if unrelated and base:
            m["locality"] = locality([got[p.question]["answer"] for p in unrelated],
                                     [base[p.question]["answer"] for p in unrelated])
        ms = [got[q]["ms"] for q in dict.fromkeys(p.question for p in probes)]
        m["ask_ms_p50"] = round(percentile(ms, 50), 1)
        m["ask_ms_p95"] = round(percentile(ms, 95), 1)
        out[mode] = {k: v.to_dict() if hasattr(v, "to_dict") else v for k, v in m.items()}
    return out


def forgetting(stages: Sequence[Sequence[Probe]], answers: Sequence[Answers], modes: Sequence[str]) -> dict:
    """Per mode: for each round i before the last, the facts set in round i and still current at the
    end, their recall right after round i and at the end, and the mean difference (`bwt`)."""
    last = len(stages) - 1
    final = {p.case.key: p for p in stages[last] if p.kind == "prompt"}
    out: dict[str, Any] = {}
    for mode in modes:
        rows = []
        for i in range(last):
            after = {p.case.key: p for p in stages[i] if p.kind == "prompt" and p.case.round == i}
            keys = [k for k, p in final.items() if p.case.round == i and k in after]
            if not keys:
                continue
            then = rate([fresh_hit(answers[i][mode][after[k].question]["answer"], after[k].case) for k in keys])
            end = rate([fresh_hit(answers[last][mode][final[k].question]["answer"], final[k].case) for k in keys])
            rows.append({"round": i, "n": len(keys), "after": then.to_dict(), "end": end.to_dict(),
                         "delta": round(end.value - then.value, 4)})
        bwt = round(sum(r["delta"] for r in rows) / len(rows), 4) if rows else None
        out[mode] = {"rounds": rows, "bwt": bwt}
    return out


def diagnose(probes: Sequence[Probe], answers: Answers, modes: Sequence[str]) -> dict[str, dict[str, int]]:
    """Why the gated modes missed the fresh value, from what they were given: the gate stayed shut;
    the fresh statement was not among the quoted memories; an earlier value was quoted as current
    beside it; or it was quoted and the answer still missed it."""
    out: dict[str, dict[str, int]] = {}
    for mode in (m for m in modes if m in GATED):
        counts = {"gate shut": 0, "fresh not quoted": 0, "stale quoted as current": 0, "quoted, not answered": 0}
        for p in probes:
            reply = answers[mode][p.question]
            if p.kind != "prompt" or "gate" not in reply or fresh_hit(reply["answer"], p.case):
                continue
            quoted = [m[3] for m in reply.get("memories", []) if not m[1]]
            if not reply["gate"]["open"]:
                counts["gate shut"] += 1
            elif not any(hits(t, p.case.fresh) for t in quoted):
                counts["fresh not quoted"] += 1
            elif any(hits(t, old) for t in quoted for old in p.case.previous):
                counts["stale quoted as current"] += 1
            else:
                counts["quoted, not answered"] += 1
        out[mode] = counts
    return out


def case_rows(probes: Sequence[Probe], answers: Answers, modes: Sequence[str]) -> list[dict[str, Any]]:
    """One row per fact of the final stage: its values and each mode's answers to its probes."""
    rows: dict[str, dict[str, Any]] = {}
    for p in probes:
        if p.case is None:
            continue
        c = p.case
        row = rows.setdefault(c.key, {"key": c.key, "prompt": c.prompt, "fresh": c.fresh, "stale": c.stale,
                                      "round": c.round, **{m: {} for m in modes}})
        for mode in modes:
            reply = answers[mode][p.question]
            row[mode][p.kind] = reply["answer"]
            if p.kind == "prompt" and "gate" in reply:
                row[mode]["gate"] = reply["gate"]
                row[mode]["memories"] = reply.get("memories", [])
    return list(rows.values())
