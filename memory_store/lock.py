"""Inter-process write lock on a store directory.

`fcntl.flock` rather than a pid file: the kernel drops the lock when its holder dies, so a
crashed writer never leaves a stale lock behind. The holder writes its pid into the file only
so that a waiting process can say who it is waiting for.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import StoreLocked

#: How often a waiting process retries the lock.
POLL_INTERVAL_S = 0.05


class WriteLock:
    """An exclusive lock on `path`, reentrant within a process.

    Reentrancy is by a depth counter: flock locks belong to an open file description, so a
    second open+flock of the same file in this process would block on ourselves.
    """

    def __init__(self, path: str | Path, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._thread_lock = threading.RLock()  # serialises threads of this process
        self._fd: int | None = None
        self._depth = 0

    @property
    def held(self) -> bool:
        """Whether this process currently holds the lock."""
        return self._depth > 0

    def acquire(self, timeout: float | None = None) -> None:
        """Take the lock, waiting up to `timeout` seconds (default: self.timeout); StoreLocked after that."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + max(timeout, 0.0)
        if not self._thread_lock.acquire(timeout=max(timeout, 0.0)):
            raise StoreLocked(
                f"store at {self.path.parent} is being written by another thread of this process "
                f"(pid {os.getpid()}); wait for it to finish or retry"
            )
        try:
            if self._depth == 0:
                self._fd = self._lock_file(deadline)
            self._depth += 1
        except BaseException:
            self._thread_lock.release()
            raise

    def release(self) -> None:
        """Release one level of the lock; the file lock goes when the outermost level does."""
        if self._depth == 0:
            raise RuntimeError(f"write lock {self.path} released but not held")
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.ftruncate(fd, 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        self._thread_lock.release()

    @contextmanager
    def hold(self, timeout: float | None = None) -> Iterator[None]:
        """Context manager form of acquire/release."""
        self.acquire(timeout)
        try:
            yield
        finally:
            self.release()

    def _lock_file(self, deadline: float) -> int:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StoreLocked(
                            f"store at {self.path.parent} is being written by another process "
                            f"(pid {self._holder_pid()}); wait for it to finish or retry"
                        ) from None
                    time.sleep(POLL_INTERVAL_S)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _holder_pid(self) -> str:
        # Read without the lock: the holder may be between truncate and write, hence "unknown".
        try:
            text = self.path.read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            return "unknown"
        return text if text.isdigit() else "unknown"
