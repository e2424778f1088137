"""`POST /v1/ingest`: records sent over HTTP go through the same path as `kupdate ingest` of a JSONL file."""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from pathlib import Path
from typing import Any

from kupdate.errors import InputError
from kupdate.serve.schemas import IngestRecord

SOURCE_PREFIX = "api/"


def default_source(record: IngestRecord) -> str:
    """A source for a record sent without one: named by its content.

    Ingest treats a source as a document and retires the chunks a new version of it no longer
    holds, so records sent without a source must not share one: each would replace the last.
    """
    key = record.text or f"{record.subject}\x1f{record.relation}\x1f{record.object}"
    return SOURCE_PREFIX + hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def ingest_records(kb: Any, records: list[IngestRecord]) -> dict[str, Any]:
    """Ingest `records` into `kb` (under its store's write lock) and return the `IngestReport` as a dict."""
    lines = []
    for r in records:
        item = r.model_dump(exclude_none=True)
        item.setdefault("source", default_source(r))
        lines.append(json.dumps(item, ensure_ascii=False))
    with tempfile.TemporaryDirectory(prefix="kupdate-serve-") as tmp:
        path = Path(tmp) / "request.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        try:
            report = kb.ingest([path])
        except InputError as exc:  # name the record, not the temporary file
            raise InputError(re.sub(re.escape(str(path)) + r":(\d+):", r"record \1:", str(exc))) from None
    return report.to_dict()
