"""Edit cases and the loaders of the public knowledge-editing formats.

An `EditCase` is one updated fact: the statement that teaches it and the probes that test it
(DESIGN.md section 8). Three file formats load into it; every problem is one `InputError` line
naming the file and the record:

- CounterFact-edit (`counterfact-edit.json`): `prompt`, `target_new`, `ground_truth` (stale),
  `rephrase_prompt`, `locality_prompt`;
- QAEdit (`QAEdit_inter_1k.json`): `prompt` (a question), `target` (a trailing " *" is a marker),
  `rephrase`, `locality` [{`loc`, `loc_ans`}]; no old value;
- zsRE in the MEND split: `src` (question), `alt` (new answer), `answers` (old answers), `rephrase`,
  `loc` ("nq question: ..."), `loc_ans`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kupdate.errors import InputError


@dataclass
class EditCase:
    """One updated fact: a statement of the new value and the questions that probe it.

    `stale` is the value the fact had just before (None: a new fact), `previous` every earlier
    value, oldest first (the stale rate counts an answer giving any of them). `key` names the fact
    across rounds and `round` is the round whose statement set the current value.
    """

    statement: str
    prompt: str
    fresh: str
    stale: str | None = None
    rephrase: str | None = None
    locality_prompt: str | None = None
    key: str = ""
    round: int = 0
    previous: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.stale and not self.previous:
            self.previous = [self.stale]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_records(path: str | Path, what: str) -> list[Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read {what} data ({exc}); check the path") from None
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of {what} records, got {type(data).__name__}")
    return data


def _load(path: str | Path, n: int | None, what: str, fields: str,
          make: Callable[[dict[str, Any], int], EditCase]) -> list[EditCase]:
    records = _read_records(path, what)
    cases = []
    for i, rec in enumerate(records[:n] if n else records):
        try:
            case = make(rec, i)
        except (KeyError, TypeError, IndexError, AttributeError):
            raise InputError(f"{path}: record {i} lacks {fields}; is this {what}?") from None
        if not case.prompt.strip() or not case.fresh.strip():
            raise InputError(f"{path}: record {i} has an empty question or new value; fix or drop it")
        cases.append(case)
    return cases


def _sentence(question: str, answer: str) -> str:
    """A question with its answer as one statement: "Who wrote X? Jane Doe." (see answer._statements)."""
    q = question.strip()
    return f"{q[:1].upper()}{q[1:]} {answer.strip()}."


def load_counterfact(path: str | Path, n: int | None = None) -> list[EditCase]:
    """CounterFact-edit records (see ../shared/data/README.md): the first `n` as EditCases."""

    def make(rec: dict[str, Any], i: int) -> EditCase:
        return EditCase(statement=f"{rec['prompt']} {rec['target_new']}.", prompt=rec["prompt"],
                        fresh=rec["target_new"], stale=rec.get("ground_truth"),
                        rephrase=rec.get("rephrase_prompt"), locality_prompt=rec.get("locality_prompt"),
                        key=f"cf-{rec.get('case_id', i)}")

    return _load(path, n, "CounterFact-edit", "prompt/target_new", make)


def load_qaedit(path: str | Path, n: int | None = None) -> list[EditCase]:
    """QAEdit records: a question and its answer (no old value); the first locality question."""

    def make(rec: dict[str, Any], i: int) -> EditCase:
        target = rec["target"].strip().removesuffix("*").strip()  # " *" marks some targets
        loc = rec.get("locality") or []
        return EditCase(statement=_sentence(rec["prompt"], target), prompt=rec["prompt"], fresh=target,
                        rephrase=rec.get("rephrase"), locality_prompt=loc[0]["loc"] if loc else None,
                        key=f"qa-{rec.get('id', i)}")

    return _load(path, n, "QAEdit", "prompt/target", make)


def load_zsre(path: str | Path, n: int | None = None) -> list[EditCase]:
    """zsRE records in the MEND split: `alt` is the new answer, `answers` the old ones."""

    def make(rec: dict[str, Any], i: int) -> EditCase:
        new = rec["alt"]
        old = [a for a in rec.get("answers") or [] if isinstance(a, str) and a.strip() and a.strip() != new.strip()]
        loc = rec.get("loc")
        if isinstance(loc, str):
            loc = loc.removeprefix("nq question:").strip()
        return EditCase(statement=_sentence(rec["src"], new), prompt=rec["src"], fresh=new,
                        stale=old[0] if old else None, previous=old, rephrase=rec.get("rephrase"),
                        locality_prompt=loc or None, key=f"zsre-{i}")

    return _load(path, n, "zsRE (MEND split)", "src/alt", make)


LOADERS: dict[str, Callable[..., list[EditCase]]] = {
    "counterfact": load_counterfact,
    "qaedit": load_qaedit,
    "zsre": load_zsre,
}
