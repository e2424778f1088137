"""The connection of one store to Milvus: which uri (a milvus-lite file or a server), the
milvus-lite server this process shares among its stores, and pymilvus errors as StoreErrors.

`MilvusConnection` is the base of `milvus_index.MilvusBackend`, which adds the collections.
pymilvus and milvus-lite are imported only when connecting.
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import StoreError, StoreLocked
from .index_types import IndexOptions

log = logging.getLogger("memory_store")

#: Environment variable holding the Milvus token ("user:password" or an API key).
TOKEN_ENV = "KUPDATE_MILVUS_TOKEN"
#: The milvus-lite file inside the store directory when no uri is given.
DEFAULT_LITE_FILE = "milvus.db"
INSTALL_HINT = "pip install pymilvus milvus-lite"
SERVER_SCHEMES = ("http", "https", "tcp", "unix")

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


class MilvusConnection:
    """One store's connection to Milvus, and the in-process milvus-lite server it may use."""

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
