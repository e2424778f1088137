"""The derived dense index: one exact inner-product FAISS index per record kind.

Each kind has an `IndexIDMap2(IndexFlatIP(dim))` whose ids are SQLite record ids, persisted as
`index-<kind>.faiss`. The file is only a cache of the vectors in SQLite: whenever it is missing,
unreadable or disagrees with SQLite it is rebuilt from there, so losing it never loses data.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import faiss
import numpy as np

from .errors import EmbedderMismatch

log = logging.getLogger("memory_store")

#: faiss GPU flat search caps k at this; larger searches go to the CPU copy.
GPU_MAX_K = 2048

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
    """The vectors of one kind: a CPU index (persisted) plus, with a GPU, a mirror used to search."""

    def __init__(self, path: Path, dim: int, cpu: faiss.Index | None = None) -> None:
        self.path = path
        self.dim = dim
        self.cpu = cpu if cpu is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        ids = faiss.vector_to_array(self.cpu.id_map) if self.cpu.ntotal else np.empty(0, np.int64)
        # Tracked here because reading id_map is O(n) and freshness checks run on every call.
        self.max_id = int(ids.max()) if ids.size else 0
        self._gpu: faiss.Index | None = None
        self._gpu_resources = None
        self._mirror_to_gpu()

    @property
    def ntotal(self) -> int:
        return int(self.cpu.ntotal)

    # -- loading ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls, path: Path, dim: int, *, count: int, max_id: int, source: VectorSource
    ) -> tuple[DenseIndex, bool]:
        """Load `path` if it matches SQLite (`count` vectors, highest id `max_id`), else rebuild.

        Returns the index and whether it was rebuilt (the caller then persists it).
        """
        if not path.exists():
            if count == 0:
                return cls(path, dim), False  # nothing stored yet: an empty index is in sync
            reason = "is missing"
        else:
            try:
                loaded = cls._read(path, dim)
            except (RuntimeError, OSError, ValueError) as exc:
                reason = f"is unreadable ({str(exc).splitlines()[0][:160]})"
            else:
                index = cls(path, dim, loaded)
                if index.ntotal == count and index.max_id == max_id:
                    return index, False
                reason = (
                    f"is out of sync with SQLite ({index.ntotal} vectors up to id {index.max_id}, "
                    f"SQLite has {count} up to id {max_id})"
                )
        log.warning("dense index %s %s; rebuilding it from SQLite (%d vectors)", path, reason, count)
        index = cls(path, dim)
        index.catch_up(source)
        return index, True

    @staticmethod
    def _read(path: Path, dim: int) -> faiss.Index:
        index = faiss.read_index(str(path))
        if not isinstance(index, faiss.IndexIDMap2):
            raise ValueError(f"expected IndexIDMap2, found {type(index).__name__}")
        if index.d != dim or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError(f"index has {index.d} dims / metric {index.metric_type}, expected {dim} / IP")
        return index

    # -- updates ---------------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors (already normalised) under the given record ids."""
        if len(ids) == 0:
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.cpu.add_with_ids(vectors, ids)
        if self._gpu is not None:
            self._gpu.add_with_ids(vectors, ids)
        self.max_id = max(self.max_id, int(ids.max()))

    def catch_up(self, source: VectorSource) -> int:
        """Add the vectors SQLite has beyond max_id (written by another process); returns how many."""
        added = 0
        for ids, vectors in source(self.max_id):
            self.add(ids, vectors)
            added += len(ids)
        return added

    def save(self) -> None:
        """Persist the CPU index atomically: temp file in the same directory, fsync, rename."""
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
        index = self._gpu if self._gpu is not None and k <= GPU_MAX_K else self.cpu
        scores, ids = index.search(np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32), k)
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]

    def _mirror_to_gpu(self) -> None:
        # faiss-cpu builds have neither GPUs nor StandardGpuResources; then the CPU index serves.
        if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() <= 0:
            return
        try:
            self._gpu_resources = faiss.StandardGpuResources()
            self._gpu = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self.cpu)
        except RuntimeError as exc:
            log.warning("could not put dense index %s on the GPU (%s); searching on the CPU", self.path, exc)
            self._gpu = self._gpu_resources = None
