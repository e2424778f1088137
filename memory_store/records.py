"""The record: one remembered piece of text with its provenance, validity in time and vector."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = ("knowledge", "exemplar")


def content_hash(text: str) -> str:
    """Hash of the text with whitespace collapsed: the de-duplication key."""
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()


@dataclass
class Record:
    """A memory. `id` is assigned by the store on add (0 before that).

    Dates are ISO-8601 strings (`2025-03-01` or `2025-03-01T12:00:00+00:00`); they sort
    lexicographically, which is what freshness comparisons rely on.
    """

    text: str
    source: str = ""
    kind: str = "knowledge"
    domain: str = "default"
    doc_id: str = ""
    position: int = 0
    observed_at: str = ""
    valid_from: str = ""
    valid_to: str | None = None
    superseded_by: int | None = None
    adapter_version: str | None = None
    subject: str | None = None
    relation: str | None = None
    object: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    id: int = 0
    content_hash: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"record kind must be one of {KINDS}, got {self.kind!r}")
        if not self.content_hash:
            self.content_hash = content_hash(self.text)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Hit:
    """A search result: the record and its score (cosine for dense, BM25-derived for lexical)."""

    record: Record
    score: float
