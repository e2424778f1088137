"""The derived dense index of one record kind: exact or approximate FAISS, chosen by size.

Each kind's vectors live in `index-<kind>.faiss`, keyed by SQLite record id; its type (flat,
hnsw, ivf: see `index_types`) is whatever the file holds. The file is only a cache of the vectors
in SQLite: whenever it is missing, unreadable or disagrees with SQLite it is rebuilt from there,
so losing it never loses data.

Switching type is a rebuild from SQLite, done in the call that makes the current type wrong for
the kind's size: the `add` that crosses `approximate_above` (index="auto"), the open that finds a
file of another type than the options ask for, the delete that leaves an HNSW index with too many
skipped entries. It is logged at INFO and runs synchronously under the caller's write lock, so the
index is never half switched. Building HNSW is the slow part: about a minute per 100k vectors
on 2 cores (benchmarks/memory_bench.py), so a store crossing the default threshold of 100k
pauses that long once.

Files are written atomically (temp file, fsync, rename). A large index is not rewritten after
every add (see SAVE_GROWTH); the next open catches up the few newest vectors from SQLite.
With a GPU (faiss-gpu), flat and IVF indexes are searched on a GPU copy; HNSW stays on the CPU.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import faiss
import numpy as np

from .errors import EmbedderMismatch
from .index_types import (
    FLAT,
    HNSW,
    HNSW_MAX_DEAD,
    IVF,
    IVF_TRAIN_PER_LIST,
    IndexOptions,
    ivf_lists,
    new_index,
    search_params,
    stored_ids,
    type_of,
)

log = logging.getLogger("memory_store")

#: faiss GPU flat search caps k at this; larger searches go to the CPU copy.
GPU_MAX_K = 2048

#: Up to this many vectors every save writes the file. Above it, a save after adds is skipped
#: until SAVE_GROWTH more of the index is unsaved: rewriting 1.8 GB of HNSW after every 64-chunk
#: ingest batch would dominate ingest, and a file that lacks only its newest vectors is caught up
#: from SQLite on open (by whoever opens it next, who then saves it) instead of rebuilt.
SAVE_ALWAYS_UP_TO = 50_000
SAVE_GROWTH = 0.02

#: Yields (ids int64 [n], vectors float32 [n, dim]) batches of one kind with id > the argument.
VectorSource = Callable[[int], Iterable[tuple[np.ndarray, np.ndarray]]]


def index_path(directory: Path, kind: str) -> Path:
    return directory / f"index-{kind}.faiss"


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Float32 copy with unit rows; zero rows stay zero instead of becoming NaN."""
    out = np.array(vectors, dtype=np.float32, copy=True, order="C")
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


def as_matrix(vectors: np.ndarray, dim: int, what: str, identity: str) -> np.ndarray:
    """Validate `vectors` as finite float32 rows of width `dim` (a 1-D vector is one row).

    `identity` ("the store at X was built with ...") makes a width mismatch say what to embed with.
    """
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array (one row per item), got shape {matrix.shape}")
    if matrix.shape[1] != dim:
        raise EmbedderMismatch(f"{what} have {matrix.shape[1]} dims but {identity}; embed with that embedder")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{what} contain NaN or infinite values; check the embedder's output")
    return matrix


class DenseIndex:
    """The vectors of one kind: a CPU index (persisted) plus, with a GPU, a mirror used to search.

    `source` reads the kind's vectors back from SQLite; without one (an index built from arrays,
    as the benchmark does) the index never rebuilds itself.
    """

    def __init__(self, path: Path, dim: int, cpu: faiss.Index | None = None, *,
                 options: IndexOptions | None = None, source: VectorSource | None = None) -> None:
        self.path = path
        self.dim = dim
        self.options = options or IndexOptions()
        self.source = source
        self._gpu: faiss.Index | None = None
        self._gpu_resources = None
        self._set(cpu if cpu is not None else new_index(self.options.wanted(0), dim))
        self._unsaved = 0  # vectors added since the file was written or read
        self._must_save = False  # a rebuild or removal, which a catch-up on open cannot redo

    def _set(self, cpu: faiss.Index) -> None:
        self.cpu = cpu
        self.type = type_of(cpu)
        ids = stored_ids(cpu)
        # Tracked here because reading the ids is O(n) and freshness checks run on every call.
        self.max_id = int(ids.max()) if ids.size else 0
        self.dead = int((ids < 0).sum())  # HNSW entries deleted but still in the graph
        self._mirror_to_gpu()

    @property
    def ntotal(self) -> int:
        """Number of live (searchable) vectors."""
        return int(self.cpu.ntotal) - self.dead

    # -- loading and building --------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, dim: int, *, count: int, max_id: int, source: VectorSource,
             options: IndexOptions | None = None) -> tuple[DenseIndex, bool]:
        """Load `path` if it matches SQLite (`count` vectors, highest id `max_id`), else rebuild.

        A file that only lacks the newest rows (its last save was skipped) is caught up instead.
        Returns the index and whether it changed from the file (the caller then persists it).
        """
        options = options or IndexOptions()
        if not path.exists():
            if count == 0:  # nothing stored yet: an empty index is in sync
                return cls(path, dim, options=options, source=source), False
            reason = "is missing"
        else:
            try:
                loaded = cls._read(path, dim)
            except (RuntimeError, OSError, ValueError) as exc:
                reason = f"is unreadable ({str(exc).splitlines()[0][:160]})"
            else:
                index = cls(path, dim, loaded, options=options, source=source)
                added = index._catch_up()
                if index.ntotal == count and index.max_id == max_id:
                    if added:  # expected of a large index (see SAVE_GROWTH), a sign of a crash otherwise
                        level = logging.INFO if index.ntotal > SAVE_ALWAYS_UP_TO else logging.WARNING
                        log.log(level, "dense index %s is out of sync with SQLite (lacks its %d newest "
                                "vectors); caught up from SQLite", path, added)
                    return index, index._maintain() or added > 0
                reason = (
                    f"is out of sync with SQLite ({index.ntotal} vectors up to id {index.max_id}, "
                    f"SQLite has {count} up to id {max_id})"
                )
        log.warning("dense index %s %s; rebuilding it from SQLite (%d vectors)", path, reason, count)
        return cls.from_source(path, dim, count=count, source=source, options=options), True

    @classmethod
    def from_source(cls, path: Path, dim: int, *, count: int, source: VectorSource,
                    options: IndexOptions | None = None) -> DenseIndex:
        """A new index of the `count` vectors `source` yields, of the type `options` want for them."""
        index = cls(path, dim, options=options, source=source)
        index._rebuild(count, current=None)
        return index

    @staticmethod
    def _read(path: Path, dim: int) -> faiss.Index:
        index = faiss.read_index(str(path))
        type_of(index)  # raises ValueError for a type we do not build
        if index.d != dim or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError(f"index has {index.d} dims / metric {index.metric_type}, expected {dim} / IP")
        return index

    @classmethod
    def build(cls, path: Path, dim: int, kind: str, count: int, source: VectorSource) -> DenseIndex:
        """A `kind` index of the `count` vectors `source(0)` yields (benchmarks, tests)."""
        return cls(path, dim, build_index(kind, dim, count, source), options=IndexOptions(kind))

    def _rebuild(self, count: int, current: str | None) -> None:
        assert self.source is not None
        kind = self.options.wanted(count, current)
        start = time.perf_counter()
        self._set(build_index(kind, self.dim, count, self.source))
        self._must_save = True
        log.info("dense index %s rebuilt as %s with %d vectors in %.1f s", self.path, kind, self.ntotal,
                 time.perf_counter() - start)

    def _maintain(self) -> bool:
        """Rebuild if the type no longer fits the size (switch, HNSW compaction, IVF retraining)."""
        if self.source is None:
            return False
        n = self.ntotal
        wanted = self.options.wanted(n, self.type)
        if wanted != self.type:
            reason = f"switching from {self.type} to {wanted} at {n} vectors"
        elif self.type == HNSW and self.dead > HNSW_MAX_DEAD * self.cpu.ntotal:
            reason = f"compacting {self.dead} deleted vectors out of the HNSW graph"
        elif self.type == IVF and 2 * self.cpu.nlist < ivf_lists(n):
            reason = f"retraining: {self.cpu.nlist} IVF lists are too few for {n} vectors"
        else:
            return False
        log.info("dense index %s: %s", self.path, reason)
        self._rebuild(n, self.type)
        return True

    # -- updates ---------------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors (already normalised) under the given record ids; may switch type (logged)."""
        self._add(ids, vectors)
        self._maintain()

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.cpu.add_with_ids(vectors, ids)
        if self._gpu is not None:
            self._gpu.add_with_ids(vectors, ids)
        self.max_id = max(self.max_id, int(ids.max()))
        self._unsaved += len(ids)

    def catch_up(self, source: VectorSource | None = None) -> int:
        """Add the vectors SQLite has beyond max_id (written by another process); returns how many."""
        added = self._catch_up(source)
        if added:
            self._maintain()  # after the loop: a rebuild inside it would add the rest twice
        return added

    def _catch_up(self, source: VectorSource | None = None) -> int:
        source = source or self.source
        added = 0
        if source is not None:
            for ids, vectors in source(self.max_id):
                self._add(ids, vectors)
                added += len(ids)
        return added

    def remove_ids(self, ids: Iterable[int]) -> int:
        """Drop these record ids from search; returns how many were indexed.

        Flat and IVF remove natively. HNSW cannot, so a deleted entry's id becomes -1 (persisted
        with the file) and searches skip it; past HNSW_MAX_DEAD of the graph it is rebuilt.
        max_id stays a high-water mark: SQLite never reuses ids.
        """
        wanted = np.unique(np.fromiter((int(i) for i in ids), dtype=np.int64))
        if wanted.size == 0 or self.cpu.ntotal == 0:
            return 0
        if self.type == HNSW:
            id_map = faiss.vector_to_array(self.cpu.id_map)
            hit = np.isin(id_map, wanted) & (id_map >= 0)
            removed = int(hit.sum())
            if removed:
                id_map[hit] = -1
                faiss.copy_array_to_vector(id_map, self.cpu.id_map)
                self.cpu.construct_rev_map()
                self.dead += removed
        else:
            removed = int(self.cpu.remove_ids(faiss.IDSelectorBatch(wanted)))
        self._must_save |= removed > 0
        if removed and not self._maintain():
            self._mirror_to_gpu()  # GPU indexes cannot remove: copy the CPU one again
        return removed

    def save(self, force: bool = False) -> bool:
        """Persist the CPU index atomically (temp file in the same directory, fsync, rename).

        Above SAVE_ALWAYS_UP_TO vectors, plain additions are written only once they amount to
        SAVE_GROWTH of the index (see there), unless `force`. Returns whether the file was written.
        """
        lagging_by_design = self.ntotal > SAVE_ALWAYS_UP_TO and self._unsaved < SAVE_GROWTH * self.ntotal
        if lagging_by_design and not (force or self._must_save):
            return False
        self._write()
        self._unsaved, self._must_save = 0, False
        return True

    def _write(self) -> None:
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        try:
            faiss.write_index(self.cpu, str(tmp))
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        # Make the rename itself durable; not every platform can fsync a directory.
        try:
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)

    # -- search ----------------------------------------------------------------------------

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) for one normalised query row; padding (-1 ids) removed."""
        k = min(k, self.ntotal)
        if k <= 0:
            return np.empty(0, np.float32), np.empty(0, np.int64)
        query = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        if self._gpu is not None and k <= GPU_MAX_K:
            scores, ids = self._gpu.search(query, k)
        else:
            # faiss parallelises over queries, so one query gains nothing from OpenMP threads, and
            # on a busy machine waiting for them to wake costs milliseconds (measured: p95 4-12 ms
            # instead of 0.2 ms on 2 loaded cores). The setting is per calling thread.
            threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)
            try:
                params = search_params(self.cpu, self.type, k, self.ntotal, self.dead > 0)
                scores, ids = self.cpu.search(query, k, params=params)
            finally:
                faiss.omp_set_num_threads(threads)
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]

    def _mirror_to_gpu(self) -> None:
        # faiss-cpu builds have neither GPUs nor StandardGpuResources; then the CPU index serves.
        # HNSW has no GPU version in faiss: it always searches on the CPU.
        self._gpu = None
        if self.type == HNSW or not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() <= 0:
            return
        try:
            if self._gpu_resources is None:
                self._gpu_resources = faiss.StandardGpuResources()
            self._gpu = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self.cpu)
        except RuntimeError as exc:
            log.warning("could not put dense index %s on the GPU (%s); searching on the CPU", self.path, exc)
            self._gpu = None


def build_index(kind: str, dim: int, count: int, source: VectorSource) -> faiss.Index:
    """A `kind` index holding the vectors of `source(0)` (`count` of them, sized IVF lists by it)."""
    if kind != IVF:
        index = new_index(kind, dim)
    else:
        nlist = max(1, ivf_lists(count))
        index = new_index(IVF, dim, nlist)
        index.train(_sample(source, count, nlist * IVF_TRAIN_PER_LIST, dim))
    for ids, vectors in source(0):
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, np.int64))
    return index


def _sample(source: VectorSource, count: int, size: int, dim: int) -> np.ndarray:
    """About `size` vectors spread evenly over the source (every step-th row), for IVF training."""
    step = max(1, count // max(size, 1))
    parts, seen = [], 0
    for _, vectors in source(0):
        first = (-seen) % step  # keep global rows 0, step, 2*step... across batch boundaries
        parts.append(np.asarray(vectors[first::step], dtype=np.float32))
        seen += len(vectors)
    return np.ascontiguousarray(np.concatenate(parts)) if parts else np.empty((0, dim), np.float32)


__all__ = ["FLAT", "HNSW", "IVF", "DenseIndex", "IndexOptions", "build_index", "index_path"]
