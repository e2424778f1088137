"""memory_store: a persistent external memory of text records with dense and lexical search.

SQLite holds every record and vector (the source of truth), FAISS (or, with backend "milvus",
Milvus) holds a derived dense index per record kind, and FTS5 indexes knowledge text. This
package knows nothing of models: it is handed float32 vectors by its caller.
"""

from .base import MemoryStore
from .errors import EmbedderMismatch, FormatVersionError, StoreError, StoreLocked
from .records import Hit, Record, content_hash
from .sqlite import FORMAT_VERSION

# The FAISS-backed store is imported on first use, so importing the errors or records (as the CLI
# does at start-up) does not load faiss.
_LAZY = {"FaissStore", "open_store"}


def __getattr__(name: str):  # noqa: ANN202
    if name in _LAZY:
        from . import store

        return getattr(store, name)
    raise AttributeError(f"module 'memory_store' has no attribute {name!r}")


__all__ = [
    "FORMAT_VERSION",
    "EmbedderMismatch",
    "FaissStore",
    "FormatVersionError",
    "Hit",
    "MemoryStore",
    "Record",
    "StoreError",
    "StoreLocked",
    "content_hash",
    "open_store",
]
