"""Vectors and records for the memory store tests."""

from __future__ import annotations

import numpy as np

from memory_store import Record

EMBEDDER = "test-embedder"


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """`n` random unit vectors."""
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def knowledge(n: int, **kw) -> list[Record]:
    return [Record(text=f"fact number {i} about topic{i}", source="t.txt", **kw) for i in range(n)]
