"""Re-embedding a knowledge base: every record gets a vector from a (new) embedder.

`KnowledgeBase.reindex` is the entry point. The store swaps all vectors and its embedder name in
one transaction (see `FaissStore.reembed`); kupdate.toml is switched right after. A crash between
the two leaves a store that names the new embedder and a config that names the old one: opening
the KB then says so, and `KUPDATE_EMBEDDER=<new>` (or editing `embedder`) opens it.
"""

from __future__ import annotations

import json
import os
import re
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kupdate.errors import ConfigError

# A top-level `embedder = ...` line (commented-out lines start with '#', so they never match).
_EMBEDDER_LINE = re.compile(r"^embedder[ \t]*=.*$", re.MULTILINE)


@dataclass
class ReindexReport:
    """What `kupdate reindex` prints (and returns with --json)."""

    records: int
    embedder_before: str
    dim_before: int
    embedder: str
    dim: int
    seconds: float
    gate: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reembed(store: Any, embedder: Any, spec: str, *, batch_size: int, progress: bool = False) -> ReindexReport:
    """Re-embed every record of `store` with `embedder` (named `spec` in the store), showing a
    tqdm bar on stderr when `progress`."""
    from tqdm import tqdm  # plain tqdm on stderr: no widget warning in notebooks

    start = time.perf_counter()
    before, dim_before = store.embedder, store.dim
    with tqdm(total=store.count(), unit="record", desc="re-embedding", disable=not progress, leave=False) as bar:
        n = store.reembed(lambda texts: embedder.encode(texts, batch_size=batch_size), embedder=spec,
                          dim=embedder.dim, batch_size=batch_size, progress=bar.update)
    return ReindexReport(n, before, dim_before, spec, embedder.dim, round(time.perf_counter() - start, 3))


def set_config_embedder(path: Path, spec: str) -> None:
    """Point `embedder` in kupdate.toml at `spec`, keeping the rest of the file as it is (atomic)."""
    text = path.read_text(encoding="utf-8")
    line = f"embedder = {json.dumps(spec)}"  # a JSON string is a valid TOML basic string
    table = re.search(r"^\[", text, re.MULTILINE)  # top-level keys must come before any [table]
    head, tail = (text[: table.start()], text[table.start() :]) if table else (text, "")
    head, replaced = _EMBEDDER_LINE.subn(lambda _: line, head, count=1)
    if not replaced:
        head = f"{line}\n{head}"
    new = head + tail
    if tomllib.loads(new).get("embedder") != spec:
        raise ConfigError(f"{path}: could not set embedder = {spec!r}; edit the file by hand")
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(new, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
