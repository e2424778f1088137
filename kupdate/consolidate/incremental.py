"""Incremental rounds: a domain's next version continues its serving version.

Retraining every record from a fresh adapter makes round k of a growing domain cost k rounds of
training. With `incremental` (default), when the domain has a serving version and new records have
arrived since, the new version starts from the serving version's weights and mask and trains on
the new records' examples, with `rehearse` x as many examples of the records already consolidated
and at least one per consolidated fact (each fact's own cloze first, then its other forms, in an
order that changes from round to round). Evaluation and promotion are unchanged: every current
record's probes are measured, so older facts lost count against a round as much as new facts
learnt count for it. A domain that `forget` marked for rebuilding, a serving version trained with
another rank or alpha, or a run with nothing new trains from scratch (docs/consolidation.md,
"Incremental rounds").
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Start:
    """Where an incremental round starts: the serving version, and the records new since."""

    version: str
    folder: Path
    new: set[int]  # ids of the current records not consolidated into `version`

    def to_dict(self, rehearsed: int, trained: int) -> dict[str, Any]:
        return {"from": self.version, "new_records": len(self.new), "examples": trained,
                "rehearsed_examples": rehearsed}


def start_for(kb: Any, domain: str, records: Sequence[Any], *, rebuild: bool) -> Start | None:
    """The serving version to continue from, or None when this consolidation trains from scratch."""
    cfg = kb.config.consolidation
    serving = kb.adapters.registry.serving(domain)
    if not cfg.incremental or rebuild or serving is None:
        return None
    report = serving.report or {}
    trained = report.get("config") or {}
    if trained.get("rank") != cfg.rank or trained.get("alpha") != cfg.alpha:
        return None
    covered = set(report.get("records") or [])
    new = {r.id for r in records if r.id not in covered}
    if not new or len(new) == len(records):
        return None
    return Start(serving.version, Path(serving.path), new)


def examples_for(examples: Sequence[Any], records: Sequence[Any], start: Start, rehearse: float,
                 seed: int) -> tuple[list[Any], int]:
    """The round's training examples: every example of the new records, `rehearse` x as many of
    the consolidated ones but at least one per consolidated fact (none when `rehearse` is 0), and
    the replayed exemplars. Returns them and the rehearsed count.

    Rehearsal goes round the consolidated facts (in an order drawn for this round) one example
    each, then again: a fact's own cloze first, then its other forms (the cloze after unrelated
    text, written questions, the statement) in an order drawn anew each round, so that rounds
    after rounds rehearse every form of an older fact, not its cloze alone."""
    from kupdate.consolidate.dataset import statements

    fresh_facts = {s for r in records if r.id in start.new for s in statements(r)}
    fresh = [x for x in examples if x.kind != "replay" and x.fact in fresh_facts]
    replay = [x for x in examples if x.kind == "replay"]
    by_fact: dict[str, list[Any]] = {}
    for x in examples:
        if x.kind != "replay" and x.fact not in fresh_facts:
            by_fact.setdefault(x.fact, []).append(x)
    old = sum(len(v) for v in by_fact.values())
    budget = min(old, max(round(rehearse * len(fresh)), len(by_fact))) if rehearse > 0 else 0
    rng = random.Random(f"{seed}:{start.version}")
    queues = []
    for own in by_fact.values():
        first = [x for x in own if x.check is not None]
        rest = [x for x in own if x.check is None]
        rng.shuffle(rest)
        queues.append(first + rest)
    rng.shuffle(queues)
    rehearsed: list[Any] = []
    turn = 0
    while len(rehearsed) < budget:
        rehearsed += [q[turn] for q in queues if turn < len(q)][: budget - len(rehearsed)]
        turn += 1
    return fresh + rehearsed + replay, len(rehearsed)


def read_start(start: Start) -> tuple[dict[str, Any], dict[str, Any]]:
    """The serving version's adapter weights (a peft state dict) and mask, read from its folder
    (here, so a Ray worker that does not see this disk gets them as values)."""
    from safetensors.torch import load_file

    from kupdate.consolidate import masks

    return load_file(str(start.folder / "adapter_model.safetensors")), masks.load(start.folder)


def load_start(llm: Any, name: str, state: dict[str, Any], mask: dict[str, Any]) -> dict[str, Any]:
    """Put the serving version's weights into the (freshly attached) adapter `name`; returns its
    mask on the adapter's device: the entries this domain already owns, trained again."""
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(llm.model, state, adapter_name=name)
    device = next(llm.model.parameters()).device
    return {n: m.to(device) for n, m in mask.items()}


def begin(llm: Any, name: str, tset: Any, records: Sequence[Any], start: Start, weights: tuple[Any, Any],
          cfg: Any) -> tuple[list[Any], dict[str, Any]]:
    """An incremental round set up in adapter `name` (attached): the serving `weights` (`read_start`)
    loaded, the round's examples chosen and recorded in `tset.stats["incremental"]`. Returns the
    examples and the mask to train under."""
    examples, rehearsed = examples_for(tset.examples, records, start, cfg.rehearse, cfg.seed)
    tset.stats["incremental"] = start.to_dict(rehearsed, len(examples))
    return examples, load_start(llm, name, *weights)
