"""What `kupdate serve` runs with, and the rules on binding: loopback by default, a key elsewhere."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from kupdate import paths
from kupdate.errors import ConfigError

DEFAULT_KEY_ENV = "KUPDATE_API_KEY"


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


@dataclass(frozen=True)
class ServeSettings:
    """How the server runs. Build it with `ServeSettings.build`, which checks the rules."""

    kb: Path
    host: str = "127.0.0.1"
    port: int = 8000
    # Held in memory only: it comes from an environment variable and is never written anywhere.
    api_key: str | None = None
    max_body_bytes: int = 2_000_000
    queue_size: int = 32
    retry_after_s: int = 1
    log_level: str = "warning"
    # Micro-batching of answers (docs/serve.md): at most `max_batch` questions per model pass, and a
    # lone request waits at most `batch_window_ms` for others to join it.
    max_batch: int = 8
    batch_window_ms: float = 50.0
    # Torch threads of the ingest worker (docs/serve.md): 1 leaves the cores to answering. A second
    # thread running multi-threaded torch slowed every later batch of answers by about a quarter.
    ingest_threads: int = 1

    def __repr__(self) -> str:  # keep the key out of logs and tracebacks
        key = "set" if self.api_key else "none"
        return (f"ServeSettings(kb={str(self.kb)!r}, host={self.host!r}, port={self.port}, api_key={key}, "
                f"max_body_bytes={self.max_body_bytes}, queue_size={self.queue_size}, max_batch={self.max_batch}, "
                f"batch_window_ms={self.batch_window_ms:g}, ingest_threads={self.ingest_threads})")

    @property
    def model_name(self) -> str:
        """The name `/v1/models` lists: the KB's folder name."""
        return self.kb.resolve().name or "kupdate"

    @classmethod
    def build(cls, kb: str | Path | None = None, *, host: str = "127.0.0.1", port: int = 8000,
              api_key_env: str | None = None, max_body_mb: float = 2.0, queue_size: int = 32,
              log_level: str = "warning", max_batch: int = 8, batch_window_ms: float = 50.0,
              ingest_threads: int = 1) -> ServeSettings:
        """Settings from command-line values; the API key is read from the environment variable
        `api_key_env` (default KUPDATE_API_KEY). Raises ConfigError when binding beyond this machine
        without a key, or when a named variable is unset."""
        env = api_key_env or DEFAULT_KEY_ENV
        key = os.environ.get(env) or None
        if api_key_env and key is None:
            raise ConfigError(f"--api-key-env {api_key_env}: that environment variable is not set or empty; "
                              f"export {api_key_env}=<a long random secret> first")
        if not is_loopback(host) and key is None:
            raise ConfigError(f"binding to {host} exposes the knowledge base beyond this machine, so an API key "
                              f"is required: export {env}=<a long random secret> (or name another variable "
                              "with --api-key-env), or bind to 127.0.0.1")
        if not 0 <= port <= 65535:
            raise ConfigError(f"--port must be between 0 and 65535, got {port}")
        if max_body_mb <= 0 or queue_size < 1:
            raise ConfigError("--max-body-mb must be positive and --queue-size at least 1")
        if max_batch < 1 or not 0 <= batch_window_ms <= 1000:
            raise ConfigError("max_batch must be at least 1 and batch_window_ms between 0 and 1000")
        if ingest_threads < 1:
            raise ConfigError(f"--ingest-threads must be at least 1, got {ingest_threads}")
        return cls(paths.resolve_kb(kb), host, port, key, int(max_body_mb * 1_000_000), queue_size,
                   log_level=log_level, max_batch=max_batch, batch_window_ms=batch_window_ms,
                   ingest_threads=ingest_threads)
