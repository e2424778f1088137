"""The store API as a Protocol, so that other backends (e.g. Milvus) can stand in for FaissStore."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .records import Hit, Record


@runtime_checkable
class MemoryStore(Protocol):
    """A persistent memory of Records with dense and lexical search.

    Vectors are float32, one row per record, `dim` wide and L2-normalised (stores normalise
    again). Dates are ISO-8601 strings compared lexicographically.
    """

    path: Path
    dim: int
    embedder: str

    def add(self, records: Sequence[Record], vectors: np.ndarray) -> list[int]:
        """Store the records not already present (by kind and content hash); return their new ids.

        Sets `id` on the added Record objects. Raises EmbedderMismatch for vectors of the wrong
        width and ValueError when the number of records and vectors differ.
        """
        ...

    def set_adapter_version(self, ids: Sequence[int], version: str | None) -> None:
        """Record that `ids` are distilled into adapter `version` of their domain (None: not any more)."""
        ...

    def search(
        self,
        vector: np.ndarray,
        k: int = 10,
        *,
        kind: str = "knowledge",
        domain: str | None = None,
        as_of: str | None = None,
    ) -> list[Hit]:
        """Up to k records of `kind` nearest to `vector` (score: cosine), optionally only those in
        `domain` and those valid at date `as_of`."""
        ...

    def lexical_search(self, query: str, k: int = 10, *, domain: str | None = None) -> list[Hit]:
        """Up to k knowledge records matching any word of `query` (score: -BM25, higher is better)."""
        ...

    def document_frequencies(self, terms: Iterable[str]) -> dict[str, int]:
        """Number of knowledge records containing each (lower-cased) term."""
        ...

    def count(self, kind: str | None = None) -> int:
        """Number of records, of one kind or all."""
        ...

    def get(self, ids: Sequence[int]) -> list[Record]:
        """Records by id in the order given; unknown ids are skipped."""
        ...

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """Stored vectors of `ids`, float32 [len(ids), dim] in the order given; unknown ids raise."""
        ...

    def records(self, kind: str | None = None, domain: str | None = None) -> Iterator[Record]:
        """All records (optionally of one kind / domain) in id order."""
        ...

    def existing_hashes(self, hashes: Iterable[str], kind: str = "knowledge") -> set[str]:
        """The subset of `hashes` already stored for `kind`."""
        ...

    def find_facts(self, subject: str, relation: str) -> list[Record]:
        """Current (not superseded) knowledge records with this subject and relation."""
        ...

    def supersede(self, old_ids: Sequence[int], new_id: int, valid_to: str) -> None:
        """Mark old records as replaced by `new_id` and valid until `valid_to`; nothing is deleted."""
        ...

    def find(self, *, kind: str | None = "knowledge", sources: Sequence[str] | None = None,
             under: str | None = None, hashes: Sequence[str] | None = None,
             superseded_by: Sequence[int] | None = None, subject: str | None = None,
             relation: str | None = None) -> list[Record]:
        """Records, current and historical, matching every filter given (lists: any value), in id order."""
        ...

    def retire(self, successors: Mapping[int, int | None], valid_to: str) -> None:
        """Set `valid_to` and `superseded_by` (None: no successor) on records; nothing is deleted."""
        ...

    def restore(self, ids: Sequence[int], moves: Mapping[int, tuple[str, str, int]] | None = None) -> None:
        """Make retired records current again, optionally moving some to (source, doc_id, position)."""
        ...

    def delete(self, ids: Sequence[int]) -> list[int]:
        """Remove records for real (metadata, text index, vectors); return the ids that existed."""
        ...

    def get_meta(self, key: str, default: Any = None) -> Any:
        """A JSON value stored under `key`, or `default`."""
        ...

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value under `key`."""
        ...

    def write_lock(self, timeout: float | None = None) -> AbstractContextManager[None]:
        """Hold the store's inter-process write lock; StoreLocked after `timeout` seconds."""
        ...

    def close(self) -> None:
        """Release the store's resources; further calls raise StoreError."""
        ...

    def __enter__(self) -> MemoryStore: ...

    def __exit__(self, *exc_info: object) -> None: ...
