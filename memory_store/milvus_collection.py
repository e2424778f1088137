"""One Milvus collection of `(id, vector)` pairs: its schema, the index Milvus searches it with,
its raw writes and its rebuild from SQLite.

`MilvusCollection` is the base of `milvus_index.MilvusIndex`, which adds the dense index
interface (add, catch_up, remove_ids, search).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .errors import StoreError
from .index_types import (
    FLAT,
    HNSW,
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    IVF,
    IVF_NPROBE,
    ivf_lists,
)
from .milvus_connection import MilvusConnection

log = logging.getLogger("memory_store")

#: Bytes of vectors per upsert call (Milvus limits the size of one gRPC message).
UPSERT_BYTES = 8 << 20

#: Yields (ids int64 [n], normalised vectors float32 [n, dim]) of one kind with id > the argument.
VectorSource = Callable[[int], Iterable[tuple[np.ndarray, np.ndarray]]]


#: Our index types (index_types) as Milvus names them, and back.
MILVUS_TYPES = {FLAT: "FLAT", HNSW: "HNSW", IVF: "IVF_FLAT"}
OUR_TYPES = {v: k for k, v in MILVUS_TYPES.items()}


def _build_params(kind: str, count: int) -> dict[str, Any]:
    """Milvus build parameters of an index of type `kind` (flat, hnsw, ivf) for `count` vectors."""
    if kind == HNSW:
        return {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}
    if kind == IVF:
        return {"nlist": min(65536, max(1, ivf_lists(count)))}
    return {}


class MilvusCollection:
    """One kind's Milvus collection: created, re-indexed or rebuilt from SQLite, and written to."""

    def __init__(self, backend: MilvusConnection, name: str, dim: int, source: VectorSource) -> None:
        self.backend = backend
        self.name = name
        self.dim = dim
        self.path = f"milvus collection {name} at {backend.shown_uri}"  # for log messages
        self.max_id = 0  # highest SQLite id known to be in the collection
        self.ntotal = 0  # vectors in the collection, as far as this process knows
        self._source = source
        self.type = FLAT  # flat, hnsw or ivf: the index Milvus searches the collection with
        self._nprobe = IVF_NPROBE
        self._rows_per_call = max(1, UPSERT_BYTES // (4 * max(dim, 1)))

    @property
    def _client(self) -> Any:
        if self.backend.client is None:
            raise StoreError(f"{self.path} is closed; open the store again")
        return self.backend.client

    # -- opening ---------------------------------------------------------------------------

    def check(self, count: int, max_id: int) -> str | None:
        """None if the collection matches SQLite (`count` vectors, highest id `max_id`), else why not."""
        client = self._client
        with self.backend.calls(f"checking collection {self.name}"):
            if not client.has_collection(self.name):
                return "is missing"
            described = client.describe_collection(self.name)
            dims = [f.get("params", {}).get("dim") for f in described.get("fields", []) if f.get("name") == "vector"]
            if not dims or int(dims[0]) != self.dim:
                return f"has {dims[0] if dims else 'no'}-dim vectors but the store has {self.dim}"
            self._load()
            stored = self._count()
            if stored != count:
                return f"is out of sync with SQLite ({stored} vectors, SQLite has {count})"
            if max_id and not client.get(self.name, ids=[max_id], output_fields=["id"]):
                return f"is out of sync with SQLite (it lacks record {max_id})"
        self.ntotal, self.max_id = count, max_id
        return None

    def create(self, count: int) -> None:
        """Create the (empty) collection with the index the store's options ask for at `count` vectors."""
        from pymilvus import DataType, MilvusClient

        client = self._client
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                            description="kupdate memory store vectors, derived from SQLite")
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        with self.backend.calls(f"creating collection {self.name}"):
            # Strong consistency: a search sees every add that returned before it, in any process.
            client.create_collection(self.name, schema=schema, consistency_level="Strong")
            self._create_index(count)
            client.load_collection(self.name)
        self.ntotal = self.max_id = 0

    def rebuild(self, count: int) -> None:
        """Drop the collection and fill a new one from SQLite."""
        with self.backend.calls(f"dropping collection {self.name}"):
            if self._client.has_collection(self.name):
                self._client.drop_collection(self.name)
        self.create(count)
        with self.backend.calls(f"filling collection {self.name} from SQLite"):
            for ids, vectors in self._source(0):
                self._upsert(ids, vectors)
                self.max_id = max(self.max_id, int(ids.max()))
                self.ntotal += len(ids)
            self._settle()

    def ensure_index(self, count: int) -> None:
        """Re-index if the options now ask for another type (e.g. auto past approximate_above)."""
        client = self._client
        with self.backend.calls(f"checking the index of {self.name}"):
            names = client.list_indexes(self.name, field_name="vector")
            described = client.describe_index(self.name, names[0]) if names else {}
            current = OUR_TYPES.get(str(described.get("index_type", "")))
            wanted = self.backend.options.wanted(count, current)
            if current == wanted:
                self._set_type(wanted, described)
                return
            log.info("dense index %s: switching from %s to %s at %d vectors", self.path, current or "no index",
                     wanted, count)
            client.release_collection(self.name)
            for name in names:
                client.drop_index(self.name, name)
            self._create_index(count, wanted)
            client.load_collection(self.name)

    def _create_index(self, count: int, kind: str | None = None) -> None:
        kind = kind or self.backend.options.wanted(count)
        params = _build_params(kind, count)
        index_params = self._client.prepare_index_params()
        index_params.add_index(field_name="vector", index_name="vector", index_type=MILVUS_TYPES[kind],
                               metric_type="IP", params=params)
        # sync=False: pymilvus would otherwise poll the build state every 0.5 s; load waits for it.
        self._client.create_index(self.name, index_params, sync=False)
        self._set_type(kind, params)

    def _set_type(self, kind: str, params: dict[str, Any]) -> None:
        self.type = kind
        if kind == IVF:
            self._nprobe = min(int(params.get("nlist", IVF_NPROBE)), IVF_NPROBE)

    def _load(self) -> None:
        state = self._client.get_load_state(self.name).get("state")
        if getattr(state, "name", str(state)) != "Loaded":
            self._client.load_collection(self.name)

    def _count(self) -> int:
        rows = self._client.query(self.name, filter="", output_fields=["count(*)"], consistency_level="Strong")
        return int(rows[0]["count(*)"])

    # -- writes ----------------------------------------------------------------------------

    def _upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        # Upsert, not insert: Milvus does not enforce unique primary keys, and two processes may
        # both catch up the same rows.
        step = self._rows_per_call
        for start in range(0, len(ids), step):
            rows = [{"id": int(i), "vector": v} for i, v in zip(ids[start:start + step], vectors[start:start + step])]
            self._client.upsert(self.name, rows)

    def _settle(self) -> None:
        """milvus-lite searches rows still in its memtable row by row (seconds at 20k rows), so
        lite writes are flushed into an indexed segment at once. A server indexes growing
        segments itself and rate-limits flush: there, nothing to do."""
        if self.backend.local:
            self._client.flush(self.name)
