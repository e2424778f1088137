"""Where a knowledge base lives and how it is laid out on disk (DESIGN.md section 4)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_KB = "KUPDATE_KB"
ENV_CACHE = "KUPDATE_CACHE_DIR"


def default_kb() -> Path:
    """`$XDG_DATA_HOME/kupdate/kb`, i.e. `~/.local/share/kupdate/kb` on most systems."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "kupdate" / "kb"


def resolve_kb(path: str | Path | None = None) -> Path:
    """The KB chosen by `--kb PATH`, else `KUPDATE_KB`, else `default_kb()`."""
    if path:
        return Path(path).expanduser()
    if os.environ.get(ENV_KB):
        return Path(os.environ[ENV_KB]).expanduser()
    return default_kb()


def memory_dir(kb: Path) -> Path:
    return kb / "memory"


def cache_dir(kb: Path) -> Path:
    """Converted base models. `KUPDATE_CACHE_DIR` lets several KBs share one conversion."""
    return Path(os.environ[ENV_CACHE]).expanduser() if os.environ.get(ENV_CACHE) else kb / "cache"
