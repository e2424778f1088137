"""Ingest on Ray: loading, chunking and embedding run as Ray Data `map_batches` on the workers;
the driver alone reads and writes the store.

Two passes keep the guarantees of a local ingest:
1. chunk: the files are spread over the workers, which load and chunk them (with the embedder's
   tokenizer) and hand back their records in file order. Every file is read before anything is
   written, so in strict mode a bad file still stores nothing; the driver then drops the chunks
   the store already holds, so unchanged files cost no embedding;
2. embed: the new chunks are spread over the workers again, and the driver writes each batch of
   vectors as it comes back, in order, committing batch by batch exactly as a local ingest does
   (a kill loses only what was not acknowledged; a re-run skips what was).

Workers rebuild the embedder from the config (`embedder`, `device`): one per worker, on a GPU
when the cluster has GPUs. A remote cluster needs kupdate, the embedder and the files reachable
on every node (same paths), as for any Ray job.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kupdate.compute.engine import cluster_gpus, connect, worker_count
from kupdate.config import Config
from kupdate.errors import InputError
from memory_store import Record

FILES_PER_BATCH = 8


def _load_embedder(cfg: Config) -> Any:
    from kupdate.models import load_embedder

    return load_embedder(cfg.embedder, device=None if cfg.device == "auto" else cfg.device)


class Chunker:
    """Ray Data UDF: files -> their chunk records (JSON), or the reason a file cannot be used."""

    def __init__(self, cfg: Config, domain: str | None, as_of: str | None, observed_at: str) -> None:
        self.cfg, self.domain, self.as_of, self.observed_at = cfg, domain, as_of, observed_at
        self.embedder = _load_embedder(cfg)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        from kupdate.ingest.pipeline import records_for_file

        out: dict[str, list[Any]] = {"i": [], "documents": [], "records": [], "error": []}
        for i, path in zip(batch["i"], batch["path"]):
            documents = 0
            try:
                documents, records = records_for_file(Path(str(path)), self.cfg, domain=self.domain, as_of=self.as_of,
                                           observed_at=self.observed_at, count_tokens=self.embedder.count_tokens)
                payload, error = json.dumps([r.to_dict() for r in records]), ""
            except InputError as exc:
                payload, error = "[]", str(exc) or type(exc).__name__
            out["i"].append(int(i))
            out["documents"].append(documents)
            out["records"].append(payload)
            out["error"].append(error)
        return out


class Encoder:
    """Ray Data UDF: texts -> unit vectors, with this worker's embedder."""

    def __init__(self, cfg: Config) -> None:
        self.embedder = _load_embedder(cfg)
        self.batch_size = cfg.ingest.batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = self.embedder.encode([str(t) for t in batch["text"]], batch_size=self.batch_size)
        return {"i": np.asarray(batch["i"]), "vector": vectors}


class RayIngest:
    """One ingest on the cluster: `chunk` then `embed` (the `Embed` of `kupdate.ingest.pipeline`)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.ray = connect(cfg.compute)
        self.workers = worker_count(self.ray, cfg.compute)
        self.gpus = 1 if cluster_gpus(self.ray) else 0

    def _map(self, items: list[dict[str, Any]], udf: type, batch_size: int, **kwargs: Any) -> Any:
        """`items` through `udf` on up to `workers` actors, in blocks of about `batch_size` rows."""
        blocks = max(1, min(len(items) // batch_size, 4 * self.workers))
        workers = min(self.workers, blocks)
        if blocks < self.workers:  # smaller blocks, so that every worker gets some
            blocks, batch_size = min(len(items), self.workers), max(1, -(-len(items) // self.workers))
            workers = min(self.workers, blocks)
        ds = self.ray.data.from_items(items, override_num_blocks=blocks)
        return ds.map_batches(udf, fn_constructor_kwargs=kwargs, batch_size=batch_size, batch_format="numpy",
                              compute=self.ray.data.ActorPoolStrategy(size=workers),
                              num_gpus=self.gpus, num_cpus=0 if self.gpus else 1)

    def chunk(self, paths: Sequence[str | Path], *, skip_bad: bool, report: Any, domain: str | None,
              as_of: str | None, observed_at: str) -> list[Record]:
        """Every file's records, in file order; bad files raise (strict) or are listed in `report`."""
        from kupdate.ingest.loaders import expand_paths

        files, skipped = expand_paths(paths)
        report.skipped += [{"path": str(p), "reason": reason} for p, reason in skipped]
        if not files:
            return []
        items = [{"i": i, "path": str(p)} for i, p in enumerate(files)]
        ds = self._map(items, Chunker, FILES_PER_BATCH, cfg=self.cfg, domain=domain, as_of=as_of,
                       observed_at=observed_at)
        records: list[Record] = []
        for n, row in enumerate(ds.iter_rows()):
            if row["i"] != n:  # preserve_order is set by connect(); the writes depend on it
                raise RuntimeError(f"Ray returned file {row['i']} where file {n} was due")
            if row["error"]:
                if not skip_bad:
                    raise InputError(row["error"])
                report.skipped.append({"path": str(files[n]), "reason": row["error"]})
                continue
            report.files += 1
            report.documents += int(row["documents"])
            records += [Record(**d) for d in json.loads(row["records"])]
        return records

    def embed(self, todo: list[Record], batch: int) -> Iterator[tuple[list[Record], np.ndarray]]:
        """The vectors of `todo`, batch by batch in order, as the workers finish them."""
        if not todo:
            return
        from kupdate.ingest.pipeline import EMBED_GROUP_BATCHES

        items = [{"i": i, "text": r.text} for i, r in enumerate(todo)]
        ds = self._map(items, Encoder, batch * EMBED_GROUP_BATCHES, cfg=self.cfg)
        done = 0
        for out in ds.iter_batches(batch_size=batch, batch_format="numpy"):
            n = len(out["i"])
            if int(out["i"][0]) != done:
                raise RuntimeError(f"Ray returned chunk {int(out['i'][0])} where chunk {done} was due")
            yield todo[done : done + n], np.asarray(out["vector"], dtype=np.float32)
            done += n
