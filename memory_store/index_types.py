"""The three dense index types and how one is chosen: exact `flat`, graph `hnsw`, clustered `ivf`.

All three score by inner product over normalised vectors (cosine) and key vectors by SQLite id:

- flat: `IndexIDMap2(IndexFlatIP)`, exact; search is O(n), fine up to ~100k vectors.
- hnsw: `IndexIDMap2(IndexHNSWFlat)`, approximate, no training, fast at any size. faiss cannot
  remove from HNSW, so a deleted vector's id is overwritten with -1 and skipped at search time.
- ivf: `IndexIVFFlat` with ~4*sqrt(n) lists trained on a sample; needs enough vectors to train.

`IndexOptions.wanted` says which type a kind's index should be for its number of vectors; the
search-time knobs (efSearch, nprobe) are set so recall@10 stays >= 0.95 at 1M vectors
(see benchmarks/memory_bench.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import faiss
import numpy as np

FLAT, HNSW, IVF = "flat", "hnsw", "ivf"
#: What `open_store(index=...)` accepts: one of the types, or "auto" (flat, then HNSW).
INDEX_CHOICES = ("auto", FLAT, HNSW, IVF)

HNSW_M = 32  # graph degree: memory per vector is ~2*M ids on top of the vector itself
HNSW_EF_CONSTRUCTION = 80
#: Candidate list length at search time (raised to k when k is larger). Measured on 1M clustered
#: 384-d vectors (benchmarks/memory_bench.py, 2 cores): recall@10 0.914 at 96, 0.942 at 128,
#: 0.964 at 192 with p50 0.68 ms; so 192.
HNSW_EF_SEARCH = 192
#: Lists scanned per query. Same benchmark, 4000 lists: recall@10 1.0 at p50 1.3 ms (8: 0.9997).
IVF_NPROBE = 32
IVF_TRAIN_PER_LIST = 32  # training sample = this many vectors per list (faiss caps k-means at 256)
#: k-means needs this many points per centroid; fewer vectors than that cannot train an IVF.
IVF_MIN_PER_LIST = 39
#: An HNSW index whose deleted (skipped) share exceeds this is rebuilt from SQLite.
HNSW_MAX_DEAD = 0.2


@dataclass(frozen=True)
class IndexOptions:
    """Which index a store builds: `type` (auto|flat|hnsw|ivf) and auto's switch point."""

    type: str = "auto"
    approximate_above: int = 100_000

    def __post_init__(self) -> None:
        if self.type not in INDEX_CHOICES:
            raise ValueError(f"index must be one of {', '.join(INDEX_CHOICES)}, got {self.type!r}")
        if self.approximate_above < 1:
            raise ValueError(f"approximate_above must be >= 1, got {self.approximate_above}")

    def wanted(self, n: int, current: str | None = None) -> str:
        """The type an index of `n` vectors should be, given the type it is now (`current`)."""
        if self.type == IVF:
            return IVF if ivf_lists(n) >= 1 else FLAT  # too few vectors to train: exact meanwhile
        if self.type != "auto":
            return self.type
        # Hysteresis: once approximate, go back to exact only well below the threshold, so a
        # store hovering around it (adds and deletes) is not rebuilt on every write.
        if current == HNSW:
            return HNSW if n > self.approximate_above // 2 else FLAT
        return HNSW if n > self.approximate_above else FLAT


def ivf_lists(n: int) -> int:
    """Number of IVF lists for n vectors: ~4*sqrt(n), but never fewer than 39 vectors per list."""
    return min(int(4 * math.sqrt(n)), n // IVF_MIN_PER_LIST)


def new_index(kind: str, dim: int, nlist: int = 0) -> faiss.Index:
    """An empty index of type `kind` (an IVF one still needs `train`)."""
    if kind == FLAT:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if kind == HNSW:
        graph = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        graph.hnsw.efSearch = HNSW_EF_SEARCH
        return faiss.IndexIDMap2(graph)
    if kind == IVF:
        if nlist < 1:
            raise ValueError(f"an IVF index needs at least one list, got nlist={nlist}")
        # IVF keeps ids itself and removes natively, so it is not wrapped in an IDMap2.
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.niter = 10  # k-means converges well enough for search in 10 rounds; 25 is slow at 1M
        ivf.nprobe = IVF_NPROBE
        return ivf
    raise ValueError(f"unknown index type {kind!r}; use one of {FLAT}, {HNSW}, {IVF}")


def type_of(index: faiss.Index) -> str:
    """The type of a loaded index; ValueError for anything this module does not build."""
    if isinstance(index, faiss.IndexIVFFlat):
        index.nprobe = IVF_NPROBE  # the knob is ours, not whatever the file was written with
        return IVF
    if isinstance(index, faiss.IndexIDMap2):
        inner = faiss.downcast_index(index.index)
        if isinstance(inner, faiss.IndexHNSWFlat):
            inner.hnsw.efSearch = HNSW_EF_SEARCH
            return HNSW
        if isinstance(inner, faiss.IndexFlatIP):
            return FLAT
        raise ValueError(f"expected a flat or HNSW index inside IndexIDMap2, found {type(inner).__name__}")
    raise ValueError(f"expected IndexIDMap2 or IndexIVFFlat, found {type(index).__name__}")


def stored_ids(index: faiss.Index) -> np.ndarray:
    """Every id the index holds (int64), -1 for HNSW entries marked deleted."""
    if isinstance(index, faiss.IndexIVFFlat):
        lists = index.invlists
        parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                 for i in range(index.nlist) if lists.list_size(i)]
        return np.concatenate(parts) if parts else np.empty(0, np.int64)
    return faiss.vector_to_array(index.id_map) if index.ntotal else np.empty(0, np.int64)


#: Keeps ids >= 0, i.e. skips HNSW entries whose id was overwritten with -1 on delete.
_LIVE = faiss.IDSelectorRange(0, 2**62)


def search_params(index: faiss.Index, kind: str, k: int, live: int,
                  skip_dead: bool) -> faiss.SearchParameters | None:
    """Per-query parameters (thread-safe, unlike setting attributes on the shared index).

    The search effort grows with k: HNSW's candidate list is at least k long, and IVF probes
    lists in proportion to the share of the `live` vectors asked for, all of them when k is all
    of them (the store widens filtered searches that way).
    """
    if kind == HNSW:
        return faiss.SearchParametersHNSW(efSearch=max(HNSW_EF_SEARCH, k), sel=_LIVE if skip_dead else None)
    if kind == IVF and 2 * k * IVF_NPROBE > live:  # only when k is a large share of the index
        nprobe = max(IVF_NPROBE, math.ceil(2 * k * index.nlist / live))
        return faiss.SearchParametersIVF(nprobe=min(index.nlist, nprobe))
    return None
