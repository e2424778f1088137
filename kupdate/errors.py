"""The one error family. The library raises these; the CLI turns them into `Error: ...` and exit 1.

Each subclass also inherits the matching built-in so callers can catch it either way.
`memory_store` cannot import this module (imports flow cli -> kupdate -> memory_store), so its
own `StoreError` is re-exported here and `USER_ERRORS` names everything the CLI reports.
"""

from __future__ import annotations

from memory_store.errors import (  # noqa: F401  (re-exported)
    EmbedderMismatch,
    FormatVersionError,
    StoreError,
    StoreLocked,
)


class KupdateError(Exception):
    """Base class of every error kupdate reports to a user."""


class ConfigError(KupdateError, ValueError):
    """kupdate.toml or an option is invalid (unknown key, wrong type, bad value)."""


class KBNotFound(KupdateError, FileNotFoundError):
    """No knowledge base at the chosen path."""


class InputError(KupdateError, ValueError):
    """A file given to ingest cannot be used (missing, empty, binary, bad UTF-8, malformed line)."""


class ModelNotFound(KupdateError, FileNotFoundError):
    """A model or embedder named in config cannot be found or loaded."""


class EngineUnavailable(KupdateError, ImportError):
    """The compute engine asked for cannot run here (Ray not installed, or no cluster to join)."""


USER_ERRORS: tuple[type[Exception], ...] = (KupdateError, StoreError)
