"""The send lock: one sender per project at a time (fcntl.flock on subscribers/send.lock)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from newsletter.errors import LockedError
from newsletter.settings import Settings

LOCK_NAME = "send.lock"


def lock_path(settings: Settings) -> Path:
    """Return the project's send lock file, next to the database."""
    return settings.database_path.parent / LOCK_NAME


@contextlib.contextmanager
def send_lock(settings: Settings) -> Iterator[Path]:
    """Hold the project's send lock for the block; raise LockedError when another send holds it.

    The kernel drops a flock when its holder dies, so a killed send never leaves a stale lock.
    """
    path = lock_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise LockedError(
                f"{path}: another send is running (pid {holder}); try again when it ends"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
