"""Versioned per-domain adapters on disk (DESIGN.md sections 4 and 7).

    <kb>/adapters/.consolidate.lock        held (flock) while a consolidation runs
    <kb>/adapters/<domain>/v0001/          adapter files written by the trainer + report.json
    <kb>/adapters/<domain>/serving.json    {"version": "v0002", "since": ..., "history": ["v0001"]}

A version folder is complete once its `report.json` exists: the trainer writes its files first and
the report last (through `finish`), so a killed attempt leaves a folder without a report, which
every listing ignores. Version numbers only grow and are never reused, incomplete attempts included.
Which version serves is a pointer, not a status: a promoted version keeps its report when a later
one replaces it or a rollback moves the pointer away. Every write is atomic (temporary file in
the same folder, fsync, rename), so a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kupdate.errors import KBNotFound, KupdateError

REPORT_NAME = "report.json"
POINTER_NAME = "serving.json"
LOCK_NAME = ".consolidate.lock"
_VERSION = re.compile(r"v(\d{4,})")
_DOMAIN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")


def registry_for(kb: str | Path | None) -> AdapterRegistry:
    """The registry of the KB chosen like `--kb` (path, else $KUPDATE_KB, else the default),
    without opening its memory or loading a model."""
    from kupdate import paths
    from kupdate.config import CONFIG_NAME

    path = paths.resolve_kb(kb)
    if not (path / CONFIG_NAME).exists():
        raise KBNotFound(f"no knowledge base at {path}; create one with `kupdate init --kb {path}`")
    return AdapterRegistry(path / "adapters")


@dataclass
class AdapterVersion:
    """One complete version of a domain's adapter."""

    domain: str
    version: str
    path: Path
    status: str  # "promoted" | "rejected"; which version serves is the pointer's business
    report: dict[str, Any] = field(default_factory=dict)
    serving: bool = False

    @property
    def finished_at(self) -> str | None:
        return self.report.get("finished_at")

    def to_dict(self) -> dict[str, Any]:
        return {"domain": self.domain, "version": self.version, "path": str(self.path), "status": self.status,
                "serving": self.serving, "finished_at": self.finished_at, "report": self.report}


class AdapterRegistry:
    """The adapters of one KB, under `root` (`<kb>/adapters`, created on the first write)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # -- reading ---------------------------------------------------------------------------------
    def domains(self) -> list[str]:
        """Domains with at least one complete version, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and _DOMAIN.fullmatch(p.name) and self._numbers(p.name, complete=True))

    def versions(self, domain: str) -> list[AdapterVersion]:
        """The complete versions of `domain`, oldest first (none for an unknown domain)."""
        serving = self._pointer(domain).get("version")
        return [self._load(domain, _name(n), serving) for n in self._numbers(domain, complete=True)]

    def get(self, domain: str, version: str) -> AdapterVersion:
        """One complete version; `version` may be written "v0002", "v2" or "2"."""
        name = self._version_name(version)
        if not (self._domain_dir(domain) / name / REPORT_NAME).is_file():
            known = ", ".join(_name(n) for n in self._numbers(domain, complete=True)) or "none"
            raise KupdateError(f"no complete adapter version {name} for domain {domain!r} "
                               f"(complete versions: {known}); see `kupdate adapters show {domain}`")
        return self._load(domain, name, self._pointer(domain).get("version"))

    def serving(self, domain: str) -> AdapterVersion | None:
        """The version the pointer names, or None (also when it names a version no longer complete)."""
        name = self._pointer(domain).get("version")
        if not name or not (self._domain_dir(domain) / name / REPORT_NAME).is_file():
            return None
        return self._load(domain, name, name)

    def serving_all(self) -> dict[str, AdapterVersion]:
        """{domain: serving version} for every domain that serves one."""
        return {d: v for d in self.domains() if (v := self.serving(d)) is not None}

    def last_attempt_at(self, domain: str) -> str | None:
        """When the newest complete version (promoted or rejected) finished, or None if never."""
        numbers = self._numbers(domain, complete=True)
        return self._load(domain, _name(numbers[-1]), None).finished_at if numbers else None

    # -- writing ---------------------------------------------------------------------------------
    def allocate(self, domain: str) -> tuple[str, Path]:
        """Create the folder of the next version (exclusively) and return (version, folder).

        Numbers follow every folder ever made and every version the pointer remembers, so a
        killed attempt's number is not given out again.
        """
        folder = self._domain_dir(domain)
        folder.mkdir(parents=True, exist_ok=True)
        pointer = self._pointer(domain)
        named = [pointer.get("version"), *pointer.get("history", [])]
        taken = self._numbers(domain, complete=False) + [int(m.group(1)) for v in named
                                                          if v and (m := _VERSION.fullmatch(v))]
        n = max(taken, default=0) + 1
        while True:  # another process may allocate at the same moment: mkdir is the arbiter
            try:
                (folder / _name(n)).mkdir()
                return _name(n), folder / _name(n)
            except FileExistsError:
                n += 1

    def finish(self, domain: str, version: str, report: dict[str, Any], *, promote: bool) -> AdapterVersion:
        """Complete an allocated version: write its report.json (adding status, domain, version and
        finished_at); with `promote`, point serving.json at it (the previous one goes to history).

        The report is written before the pointer: a kill in between leaves a promoted version
        that does not serve, never a pointer to an incomplete folder.
        """
        name = self._version_name(version)
        path = self._domain_dir(domain) / name
        if not path.is_dir():
            raise KupdateError(f"adapter version {domain}/{name} was never allocated (no folder {path})")
        if (path / REPORT_NAME).exists():
            raise KupdateError(f"adapter version {domain}/{name} is already finished ({path / REPORT_NAME})")
        full = {**report, "domain": domain, "version": name, "status": "promoted" if promote else "rejected",
                "finished_at": _now()}
        _write_json(path / REPORT_NAME, full)
        if promote:
            pointer = self._pointer(domain)
            current = pointer.get("version")
            history = [v for v in pointer.get("history", []) if v != name]
            self._set_pointer(domain, name, history + ([current] if current and current != name else []))
        return self._load(domain, name, self._pointer(domain).get("version"))

    def rollback(self, domain: str, version: str | None = None, *,
                 check: Callable[[AdapterVersion], None] | None = None) -> AdapterVersion | None:
        """Move the serving pointer back, and return what serves now.

        Without `version`: to the version that served before the current one; when there is none
        the domain serves no adapter (None) and the memory alone answers. With `version`: to that
        promoted version (a rejected one is refused); the current one goes to history, so a plain
        rollback undoes this. `check(candidate)` runs before the switch and may raise to prevent
        it (the pointer is then left as it was).
        """
        if not self._numbers(domain, complete=True):
            known = ", ".join(self.domains()) or "none yet"
            raise KupdateError(f"domain {domain!r} has no adapter versions (domains with adapters: {known})")
        pointer = self._pointer(domain)
        current = pointer.get("version")
        history = list(pointer.get("history", []))
        if version is None:
            if current is None and not history:
                raise KupdateError(f"domain {domain!r} serves no adapter; nothing to roll back "
                                   f"(to serve one, name it: kupdate adapters rollback {domain} VERSION)")
            target = None
            while history and target is None:  # skip versions removed from disk since
                name = history.pop()
                if (self._domain_dir(domain) / name / REPORT_NAME).is_file():
                    target = self._load(domain, name, current)
        else:
            target = self.get(domain, version)
            if target.version == current:
                return target
            if target.status != "promoted":
                reason = target.report.get("decision", {}).get("reason")
                raise KupdateError(f"{domain} {target.version} was {target.status}"
                                   f"{f' ({reason})' if reason else ''}; only a promoted version can serve")
            history = [v for v in history if v != target.version] + ([current] if current else [])
        if target is not None and check is not None:
            check(target)
        self._set_pointer(domain, target.version if target else None, history)
        if target is not None:
            target.serving = True
        return target

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the consolidation lock of this KB, or fail at once if someone else holds it.

        flock rather than a pid file: the kernel drops the lock when its holder dies, so a killed
        consolidation never blocks the next one. Reentrant within a thread of one process.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        path = (self.root / LOCK_NAME).resolve()
        with _HELD_GUARD:  # keyed by pid too: a forked child does not inherit the parent's hold
            holder = _HELD.setdefault((os.getpid(), path), _Holder())
        if not holder.rlock.acquire(blocking=False):
            raise KupdateError(f"another consolidation is running on {self.root.parent} (pid {os.getpid()}, "
                               "another thread of this process); wait for it to finish")
        try:
            if holder.depth == 0:
                holder.fd = _flock(path, self.root.parent)
            holder.depth += 1
        except BaseException:
            holder.rlock.release()
            raise
        try:
            yield
        finally:
            holder.depth -= 1
            if holder.depth == 0 and holder.fd is not None:
                fd, holder.fd = holder.fd, None
                os.ftruncate(fd, 0)
                os.close(fd)  # closing the only descriptor releases the flock
            holder.rlock.release()

    def folder(self, domain: str) -> Path:
        """The folder holding `domain`'s versions (the name is checked first)."""
        return self._domain_dir(domain)

    # -- internals -------------------------------------------------------------------------------
    def _domain_dir(self, domain: str) -> Path:
        if not isinstance(domain, str) or not _DOMAIN.fullmatch(domain):
            raise KupdateError(f"invalid domain name {domain!r}: use up to 100 letters, digits, '-', '_' "
                               "or '.', not starting with '.'")
        return self.root / domain

    @staticmethod
    def _version_name(version: str) -> str:
        m = re.fullmatch(r"v?(\d+)", str(version).strip())
        if not m or int(m.group(1)) < 1:
            raise KupdateError(f"invalid adapter version {version!r}; write it like v0002 (or 2)")
        return _name(int(m.group(1)))

    def _numbers(self, domain: str, *, complete: bool) -> list[int]:
        folder = self._domain_dir(domain)
        if not folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in folder.iterdir()
                      if (m := _VERSION.fullmatch(p.name)) and p.is_dir()
                      and (not complete or (p / REPORT_NAME).is_file()))

    def _load(self, domain: str, name: str, serving: str | None) -> AdapterVersion:
        path = self._domain_dir(domain) / name
        report = _read_json(path / REPORT_NAME)
        return AdapterVersion(domain, name, path, str(report.get("status", "unknown")), report, name == serving)

    def _pointer(self, domain: str) -> dict[str, Any]:
        path = self._domain_dir(domain) / POINTER_NAME
        return _read_json(path) if path.is_file() else {"version": None, "history": []}

    def _set_pointer(self, domain: str, version: str | None, history: list[str]) -> None:
        _write_json(self._domain_dir(domain) / POINTER_NAME, {"version": version, "since": _now(),
                                                               "history": history})


class _Holder:
    """This process's hold on one lock file: threads are serialised here, processes by flock."""

    def __init__(self) -> None:
        self.rlock = threading.RLock()
        self.fd: int | None = None
        self.depth = 0


_HELD: dict[tuple[int, Path], _Holder] = {}
_HELD_GUARD = threading.Lock()


def _flock(path: Path, kb: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        # The holder may be between truncating and writing its pid: hence "unknown".
        pid = path.read_text(encoding="ascii", errors="replace").strip()
        pid = pid if pid.isdigit() else "unknown"
        raise KupdateError(f"another consolidation is running on {kb} (pid {pid}); wait for it to finish, "
                           f"or stop it (kill {pid}: its unfinished version is ignored)") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _name(number: int) -> str:
    return f"v{number:04d}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KupdateError(f"{path}: cannot read ({exc}); fix the file or remove it") from None
    if not isinstance(data, dict):
        raise KupdateError(f"{path}: expected a JSON object; fix the file or remove it")
    return data


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy and torch scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` to `path` atomically: a reader sees the old file or the new one, never a mix."""
    write_atomic(path, (json.dumps(data, indent=2, ensure_ascii=False, default=_jsonable) + "\n").encode("utf-8"))


def write_atomic(path: Path, data: bytes | Callable[[Any], None]) -> None:
    """Write `data` to `path` through a synced temporary file in the same folder and a rename: a
    reader (or a kill) sees the old file or the new one, never a mix. `data` may be a function
    that writes to the open file (`lambda f: torch.save(obj, f)`), so a large object is streamed
    to disk instead of held in memory a second time as bytes."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it private; these files are as readable as the rest
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
