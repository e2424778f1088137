"""Reading a FaissStore: dense and lexical search, records by id, filter or fact, and meta.

`StoreReads` is a mixin of `store.FaissStore`. Readers never take the write lock, only the
in-process mutex; a dense search first catches the kind's index up with SQLite.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from . import sqlite as db
from .faiss_index import as_matrix, normalise
from .records import Hit, Record


def valid_at(record: Record, as_of: str) -> bool:
    """Whether the record was valid at `as_of`, comparing dates at as_of's precision."""
    n = len(as_of)
    if record.valid_from[:n] > as_of:
        return False
    return not record.valid_to or record.valid_to[:n] > as_of


class StoreReads:
    """FaissStore's reads: searches, lookups and meta."""

    # -- reading ---------------------------------------------------------------------------

    def search(
        self,
        vector: np.ndarray,
        k: int = 10,
        *,
        kind: str = "knowledge",
        domain: str | None = None,
        as_of: str | None = None,
    ) -> list[Hit]:
        """Up to k records of `kind` by cosine similarity, optionally in `domain` / valid at `as_of`."""
        self._check_open()
        query = as_matrix(vector, self.dim, "query vector", self._identity)
        if len(query) != 1:
            raise ValueError(f"search takes one query vector, got {len(query)}; search them one at a time")
        query = normalise(query)
        if k <= 0:
            return []
        with self._mutex:
            self._index(kind)  # validates kind
            self._sync(kind)  # may reload the index: take it afterwards
            index = self._indexes[kind]
            filtered = domain is not None or as_of is not None
            # Filters are applied after the search, so fetch more and widen until k survive.
            fetch = max(4 * k, k + 32) if filtered else k
            cache: dict[int, Record] = {}
            while True:
                scores, ids = index.search(query, fetch)
                cache.update(db.fetch_records(self._conn, (int(i) for i in ids if int(i) not in cache)))
                hits = []
                for score, record_id in zip(scores, ids):
                    record = cache.get(int(record_id))
                    if record is None or (domain is not None and record.domain != domain):
                        continue
                    if as_of is not None and not valid_at(record, as_of):
                        continue
                    hits.append(Hit(record, float(score)))
                    if len(hits) == k:
                        return hits
                if fetch >= index.ntotal:
                    return hits
                fetch *= 4

    def lexical_search(self, query: str, k: int = 10, *, domain: str | None = None) -> list[Hit]:
        """Up to k knowledge records matching any word of `query`, best BM25 first (score = -bm25)."""
        self._check_open()
        match = db.fts_query(query)
        if match is None or k <= 0:
            return []
        with self._mutex:
            return [Hit(record, -bm25) for record, bm25 in db.lexical(self._conn, match, k, domain)]

    def document_frequencies(self, terms: Iterable[str]) -> dict[str, int]:
        """Knowledge records containing each term, keyed by the lower-cased term (0 if none)."""
        self._check_open()
        wanted = list(dict.fromkeys(term.lower() for term in terms))
        with self._mutex:
            return db.document_frequencies(self._conn, wanted)

    def count(self, kind: str | None = None) -> int:
        """Number of records, of `kind` or of all kinds."""
        self._check_open()
        sql, params = ("SELECT COUNT(*) FROM records", ()) if kind is None else (
            "SELECT COUNT(*) FROM records WHERE kind = ?", (kind,))
        with self._mutex:
            return int(self._conn.execute(sql, params).fetchone()[0])

    def get(self, ids: Sequence[int]) -> list[Record]:
        """Records by id in the order given; ids not in the store are skipped."""
        self._check_open()
        with self._mutex:
            found = db.fetch_records(self._conn, (int(i) for i in ids))
        return [found[int(i)] for i in ids if int(i) in found]

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """The stored (normalised) vectors of `ids` as float32 rows in the order given.

        Unlike `get`, an unknown id is an error: callers zip the rows with their records.
        """
        self._check_open()
        with self._mutex:
            found = db.fetch_vectors(self._conn, [int(i) for i in ids], self.dim, self.path)
        missing = [int(i) for i in ids if int(i) not in found]
        if missing:
            raise ValueError(f"no records with ids {missing[:10]} in the store at {self.path}; check the ids")
        if not found:
            return np.empty((0, self.dim), dtype=np.float32)
        return np.stack([found[int(i)] for i in ids]).astype(np.float32, copy=False)

    def records(self, kind: str | None = None, domain: str | None = None) -> Iterator[Record]:
        """All records (optionally of one kind / domain) in id order, read a page at a time."""
        self._check_open()
        last = 0
        # Paging by id keeps no read transaction open while the caller works between pages.
        while True:
            with self._mutex:
                page = db.records_page(self._conn, last, kind, domain)
            if not page:
                return
            yield from page
            last = page[-1].id

    def existing_hashes(self, hashes: Iterable[str], kind: str = "knowledge") -> set[str]:
        """The subset of `hashes` already stored as content hashes of `kind` records."""
        self._check_open()
        with self._mutex:
            return db.existing_hashes(self._conn, hashes, kind)

    def find(self, *, kind: str | None = "knowledge", sources: Sequence[str] | None = None,
             under: str | None = None, hashes: Sequence[str] | None = None,
             superseded_by: Sequence[int] | None = None, subject: str | None = None,
             relation: str | None = None) -> list[Record]:
        """Records, current and historical, matching every filter given, in id order.

        `sources`, `hashes`, `superseded_by`: any of the values; `under`: sources below this
        directory; `subject`/`relation`: case- and whitespace-insensitive; `kind=None`: all kinds.
        """
        self._check_open()
        with self._mutex:
            return db.find_records(
                self._conn, kind=kind, sources=None if sources is None else list(sources), under=under,
                hashes=None if hashes is None else list(hashes),
                superseded_by=None if superseded_by is None else [int(i) for i in superseded_by],
                subject=subject, relation=relation)

    def find_facts(self, subject: str, relation: str) -> list[Record]:
        """Current knowledge records with this subject and relation (case/whitespace-insensitive)."""
        self._check_open()
        with self._mutex:
            return db.current_facts(self._conn, subject, relation)

    def index_type(self, kind: str = "knowledge") -> str:
        """The dense index type `kind` is searched with now: 'flat', 'hnsw' or 'ivf'."""
        self._check_open()
        return self._index(kind).type

    def get_meta(self, key: str, default: Any = None) -> Any:
        """The JSON value stored under `key`, or `default`."""
        self._check_open()
        with self._mutex:
            value = db.read_meta(self._conn, key)
        return default if value is None else value
