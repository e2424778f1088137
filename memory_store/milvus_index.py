"""The dense index of backend "milvus": one Milvus collection per record kind, keyed by SQLite id.

SQLite stays the source of truth (records, metadata, vectors, FTS); each collection
`kupdate_<store_id>_<kind>_<embedder fingerprint>` only holds `(id, vector)` pairs for
inner-product search on normalised vectors (= cosine). Like the FAISS files it is derived: when a
collection is missing, has the wrong width or disagrees with SQLite on open, it is rebuilt from
SQLite. Domain and as_of filters are applied in SQLite after an over-fetch, as with FAISS.

`uri` is a milvus-lite file (a local path ending in `.db`; default `<store>/milvus.db`, served
in-process and usable by one process at a time) or a server URL (`http://host:19530`), with the
token, if any, in the environment variable KUPDATE_MILVUS_TOKEN.

pymilvus is imported only when a store with this backend is opened.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from .errors import StoreError, StoreLocked
from .index_types import (
    FLAT,
    HNSW,
    HNSW_EF_CONSTRUCTION,
    HNSW_EF_SEARCH,
    HNSW_M,
    IVF,
    IVF_NPROBE,
    IndexOptions,
    ivf_lists,
)

log = logging.getLogger("memory_store")

#: Environment variable holding the Milvus token ("user:password" or an API key).
TOKEN_ENV = "KUPDATE_MILVUS_TOKEN"
#: The milvus-lite file inside the store directory when no uri is given.
DEFAULT_LITE_FILE = "milvus.db"
INSTALL_HINT = "pip install pymilvus milvus-lite"
#: Milvus refuses a search limit above this; larger searches scan the SQLite vectors instead.
MAX_TOPK = 16384
#: Bytes of vectors per upsert call (Milvus limits the size of one gRPC message).
UPSERT_BYTES = 8 << 20
SERVER_SCHEMES = ("http", "https", "tcp", "unix")

#: Yields (ids int64 [n], normalised vectors float32 [n, dim]) of one kind with id > the argument.
VectorSource = Callable[[int], Iterable[tuple[np.ndarray, np.ndarray]]]
#: () -> (number of records, highest id) of one kind in SQLite.
Stats = Callable[[], tuple[int, int]]

# milvus-lite runs one in-process server per file; it is stopped when the last store using it closes.
_lite_users: dict[str, int] = {}
_lite_mutex = threading.Lock()


def resolve_uri(store_path: Path, uri: str | None) -> tuple[str, bool]:
    """(uri to connect to, whether it is a local milvus-lite file); relative files are store-relative."""
    if not uri:
        return os.path.abspath(store_path / DEFAULT_LITE_FILE), True
    if urlsplit(uri).scheme.lower() in SERVER_SCHEMES:
        return uri, False
    path = Path(uri).expanduser()
    if path.suffix != ".db":
        raise StoreError(
            f"Milvus uri {uri!r} is neither a server URL (like http://host:19530) nor a milvus-lite "
            "file ending in .db; fix [memory] uri"
        )
    return os.path.abspath(path if path.is_absolute() else store_path / path), True


def display_uri(uri: str) -> str:
    """The uri without credentials, for messages and logs."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    return parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host).geturl()


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


class MilvusBackend:
    """One store's connection to Milvus; hands out a MilvusIndex per record kind."""

    def __init__(self, store_path: Path, *, uri: str | None = None, options: IndexOptions | None = None) -> None:
        self.uri, self.local = resolve_uri(store_path, uri)
        self.shown_uri = display_uri(self.uri)
        self.options = options or IndexOptions()
        self.client: Any = None
        self.prefix = ""
        self.lock: Callable[[float | None], AbstractContextManager[None]] | None = None
        self._exceptions: tuple[type[BaseException], ...] = ()
        self._lite_key: str | None = None

    # -- connection ------------------------------------------------------------------------

    def connect(self, store_id: str, lock: Callable[[float | None], AbstractContextManager[None]]) -> None:
        """Connect (starting milvus-lite for a local file); `lock` is the store's write lock."""
        try:
            from pymilvus import MilvusClient, MilvusException
        except ImportError as exc:
            raise StoreError(f"the 'milvus' memory backend needs pymilvus: {INSTALL_HINT}") from exc
        self._exceptions = (MilvusException,)
        if not store_id:
            raise StoreError("the store has no store_id to name its Milvus collections; run "
                             "`python -m memory_store.backends STORE_DIR milvus` once")
        self.prefix = f"kupdate_{store_id}"
        self.lock = lock
        token = ""
        if self.local:
            if importlib.util.find_spec("milvus_lite") is None:
                raise StoreError(
                    f"a local Milvus file ({self.uri}) needs milvus-lite: {INSTALL_HINT}, or set "
                    "[memory] uri to a Milvus server"
                )
            self._check_lite_free()
        else:
            token = os.environ.get(TOKEN_ENV, "")
        try:
            self.client = MilvusClient(uri=self.uri, token=token, dedicated=True)
        except self._exceptions as exc:
            raise StoreError(
                f"cannot connect to Milvus at {self.shown_uri} ({_message(exc)}); check the server is "
                f"running, [memory] uri and {TOKEN_ENV}"
            ) from exc
        if self.local:
            with _lite_mutex:
                _lite_users[self.uri] = _lite_users.get(self.uri, 0) + 1
            self._lite_key = self.uri

    def _check_lite_free(self) -> None:
        """StoreLocked if another process serves this milvus-lite file (it allows only one)."""
        from milvus_lite.server_manager import server_manager_instance

        if self.uri in _lite_users or self.uri in getattr(server_manager_instance, "_servers", {}):
            return  # served by this process already
        lock_file = Path(self.uri) / "LOCK"
        if not lock_file.exists():
            return
        fd = os.open(lock_file, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise StoreLocked(
                f"milvus-lite file {self.uri} is open in another process and milvus-lite serves one "
                "process at a time; close that process, or run a Milvus server and set [memory] uri "
                "= \"http://host:19530\""
            ) from None
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Close the connection; stop the in-process milvus-lite server once no store uses it."""
        if self.client is not None:
            try:
                self.client.close()
            except self._exceptions as exc:
                log.debug("closing the Milvus client of %s failed: %s", self.shown_uri, exc)
            self.client = None
        key, self._lite_key = self._lite_key, None
        if key is None:
            return
        with _lite_mutex:
            users = _lite_users.get(key, 1) - 1
            if users > 0:
                _lite_users[key] = users
                return
            _lite_users.pop(key, None)
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(key)

    # -- indexes ---------------------------------------------------------------------------

    def collection(self, kind: str, embedder: str, dim: int) -> str:
        """`kupdate_<store id>_<kind>_<embedder fingerprint>`: after a re-embed (or a crash in
        one) the old vectors' collection is not taken for the new ones, it is rebuilt."""
        fingerprint = hashlib.sha1(f"{embedder}\0{dim}".encode()).hexdigest()[:8]
        return f"{self.prefix}_{kind}_{fingerprint}"

    def open_index(self, kind: str, *, dim: int, embedder: str, stats: Stats, source: VectorSource) -> MilvusIndex:
        """The kind's index, its collection created, re-indexed or rebuilt from SQLite as needed.

        Changing the collection is done under the store's write lock, as it is shared with other
        processes. If a writer holds the lock, a collection that is only out of sync is used as it
        is: that writer keeps it in line with SQLite itself (its own open reconciled it).
        """
        assert self.lock is not None
        index = MilvusIndex(self, self.collection(kind, embedder, dim), dim, source)
        count, max_id = stats()
        reason = index.check(count, max_id)
        with ExitStack() as held:
            try:
                held.enter_context(self.lock(0))
            except StoreLocked:
                if reason is None:
                    return index  # usable as it is; a type change waits for a later open
                if reason.startswith("is out of sync"):
                    log.info("dense index %s %s; the busy writer brings it in line", index.path, reason)
                    index.ntotal, index.max_id = count, max_id
                    return index
                held.enter_context(self.lock(None))  # missing or malformed: wait for the writer
            if reason is not None:
                count, max_id = stats()  # look again: another process may have fixed it meanwhile
                reason = index.check(count, max_id)
            if reason is None:
                index.ensure_index(count)
            elif reason == "is missing" and count == 0:
                index.create(count)  # a new store: nothing to rebuild
            elif reason == "is missing" and self._stale(kind, index.name):
                # Expected after a re-embed: the old embedder's collection is replaced.
                log.info("dense index %s is new for embedder %r; building it from SQLite (%d vectors)",
                         index.path, embedder, count)
                index.rebuild(count)
            else:
                log.warning("dense index %s %s; rebuilding it from SQLite (%d vectors)", index.path, reason, count)
                index.rebuild(count)
            for name in self._stale(kind, index.name):
                log.info("dropping Milvus collection %s: its vectors are from another embedder", name)
                with self.calls(f"dropping collection {name}"):
                    self.client.drop_collection(name)
        return index

    def _stale(self, kind: str, current: str) -> list[str]:
        """This store's collections of `kind` other than `current`: built for another embedder."""
        with self.calls("listing collections"):
            names = self.client.list_collections()
        return [n for n in names if n.startswith(f"{self.prefix}_{kind}_") and n != current]

    @contextmanager
    def calls(self, what: str) -> Iterator[None]:
        """Turn pymilvus errors into one-line StoreErrors."""
        try:
            yield
        except self._exceptions as exc:
            raise StoreError(
                f"Milvus at {self.shown_uri}: {what} failed ({_message(exc)}); check the server and "
                "[memory] uri (SQLite still holds every record)"
            ) from exc


def _message(exc: BaseException) -> str:
    text = getattr(exc, "message", "") or str(exc)
    return text.splitlines()[0][:200] if text else type(exc).__name__


class MilvusIndex:
    """The vectors of one kind in a Milvus collection; the interface of faiss_index.DenseIndex."""

    def __init__(self, backend: MilvusBackend, name: str, dim: int, source: VectorSource) -> None:
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

    # -- updates ---------------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add (upsert) normalised vectors under their record ids; may re-index (logged).

        On failure max_id stays put, so the store's next search or add catches the ids up from SQLite.
        """
        if len(ids) == 0:
            return
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self.backend.calls(f"adding {len(ids)} vectors to {self.name}"):
            self._upsert(ids, vectors)
            self._settle()
        self.max_id = max(self.max_id, int(ids.max()))
        self.ntotal += len(ids)
        if self.backend.options.wanted(self.ntotal, self.type) != self.type:
            self.ensure_index(self.ntotal)  # e.g. auto crossing approximate_above (the caller holds the lock)

    def _upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        # Upsert, not insert: Milvus does not enforce unique primary keys, and two processes may
        # both catch up the same rows.
        step = self._rows_per_call
        for start in range(0, len(ids), step):
            rows = [{"id": int(i), "vector": v} for i, v in zip(ids[start:start + step], vectors[start:start + step])]
            self._client.upsert(self.name, rows)

    def catch_up(self, source: VectorSource | None = None) -> int:
        """Index SQLite's vectors beyond max_id that the collection lacks; returns how many were beyond."""
        source = source or self._source
        seen = 0
        with self.backend.calls(f"catching {self.name} up with SQLite"):
            for ids, vectors in source(self.max_id):
                present = {int(row["id"]) for row in self._client.get(self.name, ids=ids.tolist(), output_fields=["id"])}
                missing = np.fromiter((int(i) not in present for i in ids), dtype=bool, count=len(ids))
                if missing.any():
                    self._upsert(ids[missing], vectors[missing])
                self.max_id = max(self.max_id, int(ids.max()))
                self.ntotal += len(ids)
                seen += len(ids)
            self._settle()
        return seen

    def remove_ids(self, ids: Iterable[int]) -> int:
        """Delete the vectors of these record ids; returns how many were indexed."""
        wanted = sorted({int(i) for i in ids})
        if not wanted:
            return 0
        removed = 0
        with self.backend.calls(f"deleting {len(wanted)} vectors from {self.name}"):
            for start in range(0, len(wanted), 4096):
                chunk = wanted[start:start + 4096]
                present = [int(row["id"]) for row in self._client.get(self.name, ids=chunk, output_fields=["id"])]
                if present:
                    self._client.delete(self.name, ids=present)
                    removed += len(present)
            if removed:
                self._settle()
        self.ntotal = max(0, self.ntotal - removed)
        return removed

    def _settle(self) -> None:
        """milvus-lite searches rows still in its memtable row by row (seconds at 20k rows), so
        lite writes are flushed into an indexed segment at once. A server indexes growing
        segments itself and rate-limits flush: there, nothing to do."""
        if self.backend.local:
            self._client.flush(self.name)

    def save(self) -> None:
        """Nothing to do: Milvus persists each upsert itself."""

    # -- search ----------------------------------------------------------------------------

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) for one normalised query row, best first."""
        if k <= 0:
            return np.empty(0, np.float32), np.empty(0, np.int64)
        if k > MAX_TOPK:
            return self._scan(query, k)
        params: dict[str, Any] = {"metric_type": "IP"}
        if self.type == HNSW:
            params["params"] = {"ef": max(k, HNSW_EF_SEARCH)}  # Milvus needs ef >= k
        elif self.type == IVF:
            params["params"] = {"nprobe": self._nprobe}
        with self.backend.calls(f"searching {self.name}"):
            result = self._client.search(
                self.name, data=[np.asarray(query, dtype=np.float32).reshape(-1).tolist()], limit=k,
                output_fields=["id"], search_params=params, consistency_level="Strong",
            )
        hits = result[0] if result else []
        ids = np.fromiter((int(h["id"]) for h in hits), dtype=np.int64, count=len(hits))
        scores = np.fromiter((float(h["distance"]) for h in hits), dtype=np.float32, count=len(hits))
        return scores, ids

    def _scan(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over the SQLite vectors: for the rare filtered search past Milvus's limit."""
        log.info("search of %s asks for %d > %d results; scanning the SQLite vectors", self.path, k, MAX_TOPK)
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        best_ids, best_scores = np.empty(0, np.int64), np.empty(0, np.float32)
        for ids, vectors in self._source(0):
            best_ids = np.concatenate([best_ids, ids])
            best_scores = np.concatenate([best_scores, vectors @ q])
            if len(best_ids) > k:
                keep = np.argpartition(-best_scores, k - 1)[:k]
                best_ids, best_scores = best_ids[keep], best_scores[keep]
        order = np.argsort(-best_scores, kind="stable")
        return best_scores[order], best_ids[order]
