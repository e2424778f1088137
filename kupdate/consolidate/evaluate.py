"""Judging a candidate adapter against what serves now (DESIGN.md section 7, step 4).

Every figure is measured the way `kupdate ask --no-memory` answers: memory shut, each question
routed to the adapters whose keys it matches, greedy decoding. Questions that route nowhere are
answered by the base model with every adapter off.

- fresh recall: the domain's probes (a record's own held-out `checks`, else the cloze of each
  statement) whose answer contains the fresh value;
- consolidated recall: fresh recall on the probes of the records already consolidated into a
  serving version (what a new version must not forget);
- paraphrase recall: the same on the records' `checks.paraphrases` (never trained on);
- locality: exemplars (and the records' `checks.unrelated` prompts) answered exactly as the base
  model answers them;
- forced locality (candidate only): exemplars answered with the domain's adapter forced on, i.e.
  what the adapter alone does to unrelated questions, without routing's protection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kupdate.answering.decoding import GENERATION_BATCH
from kupdate.metrics import locality, rate
from kupdate.text import hits

FORCED_LOCALITY_N = 32


def answers(kb: Any, questions: Sequence[str], *, forced: Sequence[Any] | None = None,
            routed_only: bool = False, first_line: bool = False, batch_size: int = GENERATION_BATCH) -> tuple[list[str | None], list[bool]]:
    """Memory-shut answers to `questions` as served (or with `forced` routes for all); also
    whether each question was routed to any adapter. `routed_only`: questions routed nowhere are
    not generated (None): the base model answers them, unchanged by construction."""
    from kupdate.answering.decoding import generate, length_batches
    from kupdate.answering.prompt import base_prompt

    if not questions:
        return [], []
    vecs = kb.embedder.encode(list(questions))
    routes = [list(forced) if forced is not None else kb.adapters.route(q, v) for q, v in zip(questions, vecs)]
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, r in enumerate(routes):
        if r or not routed_only:
            groups.setdefault(tuple(x.name for x in r), []).append(i)
    out: list[str | None] = [None] * len(questions)
    max_new = kb.config.generation.max_new_tokens
    for idx in groups.values():
        with kb.adapters.active(routes[idx[0]]):
            for rows in length_batches([len(questions[i]) for i in idx], batch_size):
                part = [idx[j] for j in rows]
                prompts = [base_prompt(kb.llm.tokenizer, questions[i]) for i in part]
                for i, a in zip(part, generate(kb.llm, prompts, max_new_tokens=max_new, first_line=first_line)):
                    out[i] = a
    return out, [bool(r) for r in routes]


def measure(kb: Any, probes: Sequence[Any], records: Sequence[Any], exemplars: Sequence[Any], *,
            forced: Sequence[Any] | None = None) -> dict[str, Any]:
    """The figures of the current serving state (see the module docstring)."""
    metrics: dict[str, Any] = {}
    got, routed = answers(kb, [p.question for p in probes], first_line=True)
    right = [hits(a, p.answer) for a, p in zip(got, probes)]
    metrics["fresh_recall"] = rate(right).to_dict()
    metrics["routed"] = sum(routed)
    older = {r.id for r in records if r.adapter_version}
    if older:
        metrics["consolidated_recall"] = rate([ok for ok, p in zip(right, probes) if p.record_id in older]).to_dict()
    para = [(q, c["answer"]) for r in records for c in [(r.meta or {}).get("checks") or {}]
            for q in c.get("paraphrases", []) if c.get("answer")]
    if para:
        got, routed = answers(kb, [q for q, _ in para], first_line=True)
        metrics["paraphrase_recall"] = rate([hits(a, want) for a, (_, want) in zip(got, para)]).to_dict()
        metrics["paraphrases_routed"] = sum(routed)
    metrics["locality"] = _locality(kb, exemplars, records).to_dict()
    if forced is not None:
        sample = [e for e in exemplars if (e.meta or {}).get("base_answer") is not None][:FORCED_LOCALITY_N]
        got, _ = answers(kb, [e.text for e in sample], forced=forced)
        metrics["locality_forced"] = locality(got, [e.meta["base_answer"] for e in sample]).to_dict()
    return metrics


def route_threshold(kb: Any, router: Any, exemplars: Sequence[Any]) -> Any:
    """Calibrate the score a question needs to be routed to `router`'s adapter, the way the gate's
    threshold is calibrated against the memory (`kupdate.answering.gate.calibrated_threshold`):
    every exemplar is scored against the adapter's keys; those that would raise the threshold above
    the floor are asked with the adapter on, and one that keeps its base answer exactly is harmless;
    the threshold goes `margin` above the best binding one. On the adapter's keys alone, not the
    whole memory's, so the threshold does not climb as other records arrive."""
    from kupdate.answering.gate import calibrated_threshold

    gate = kb.config.gate
    items = [e for e in exemplars if (e.meta or {}).get("base_answer") is not None]
    vecs = kb.embedder.encode([e.text for e in items]) if items else []
    scores = [kb.adapters.scores(e.text, v, [router])[0] for e, v in zip(items, vecs)]
    ask = [i for i, s in enumerate(scores) if s + gate.margin > gate.floor]
    got, _ = answers(kb, [items[i].text for i in ask], forced=kb.adapters.route_to(router.domain))
    harmless = {i for i, a in zip(ask, got) if a.strip() == items[i].meta["base_answer"].strip()}
    return calibrated_threshold(scores, gate, len(router.keys), harmless, len(ask))


def _locality(kb: Any, exemplars: Sequence[Any], records: Sequence[Any]) -> Any:
    """Exemplars are compared with their stored base answers, `checks.unrelated` prompts with the
    base model's answers now. A prompt routed to no adapter is answered by the base model itself
    (every adapter off), so only routed prompts are generated and compared."""
    from kupdate.answering.decoding import generate
    from kupdate.answering.prompt import base_prompt

    items = [(e.text, e.meta["base_answer"]) for e in exemplars if (e.meta or {}).get("base_answer") is not None]
    unrelated = [q for r in records for q in ((r.meta or {}).get("checks") or {}).get("unrelated", [])]
    got, _ = answers(kb, [q for q, _ in items] + unrelated, routed_only=True)
    same = [a is None or a.strip() == b.strip() for a, (_, b) in zip(got, items)]
    moved = [i for i, a in enumerate(got[len(items):]) if a is not None]
    if moved:
        with kb.adapters.active([]):
            base = generate(kb.llm, [base_prompt(kb.llm.tokenizer, unrelated[i]) for i in moved],
                            max_new_tokens=kb.config.generation.max_new_tokens)
        for i, b in zip(moved, base):
            same.append(got[len(items) + i].strip() == b.strip())
    same += [True] * (len(unrelated) - len(moved))
    return rate(same)


def decide(before: dict[str, Any], after: dict[str, Any], min_locality: float,
           max_forgetting: float = 1.0) -> tuple[bool, str]:
    """Promote only a candidate that recalls more (paraphrases break a tie), keeps locality and
    keeps the facts already consolidated (their recall falls by at most `max_forgetting`)."""
    loc = after["locality"]["value"]
    if loc < min_locality:
        return False, f"locality {loc:.2f} below {min_locality:.2f}"
    old_before, old_after = before.get("consolidated_recall"), after.get("consolidated_recall")
    if old_before and old_after and old_after["value"] < old_before["value"] - max_forgetting:
        return False, (f"forgets consolidated facts: their recall {old_before['value']:.2f} -> "
                       f"{old_after['value']:.2f} (falls by more than max_forgetting {max_forgetting:.2f})")
    b, a = before["fresh_recall"]["value"], after["fresh_recall"]["value"]
    bp = (before.get("paraphrase_recall") or {}).get("value", 0.0)
    ap = (after.get("paraphrase_recall") or {}).get("value", 0.0)
    if (a, ap) <= (b, bp):
        return False, f"not better than what serves: no-memory recall {b:.2f} -> {a:.2f}"
    return True, f"no-memory recall {b:.2f} -> {a:.2f}, locality {loc:.2f}"
