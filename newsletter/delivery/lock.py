"""Project locks: one sender (subscribers/send.lock) and one scheduler (schedule.lock) at a time.

On PostgreSQL the locks are the database's (advisory locks), so they hold across hosts: one
scheduler, one outbox send; SMTP senders share a day instead (the ledger's claims keep them apart).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from newsletter.errors import LockedError
from newsletter.settings import Settings

LOCK_NAME = "send.lock"
SEND_KEY = 0x6E6C_0010  # PostgreSQL advisory lock keys
SCHEDULE_KEY = 0x6E6C_0011


def lock_path(settings: Settings) -> Path:
    """Return the project's send lock file, next to the database."""
    return settings.database_path.parent / LOCK_NAME


@contextlib.contextmanager
def held_lock(path: Path, busy: str) -> Iterator[Path]:
    """Hold an exclusive flock on PATH for the block; raise LockedError(BUSY) when another holds it.

    BUSY may name `{pid}`, the holder's process id, which the holder writes into the file. The
    kernel drops a flock when its holder dies, so a killed process never leaves a stale lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockedError(f"{path}: " + busy.format(pid=_holder(fd))) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    """Return the pid the lock's holder wrote, waiting a moment for one that has just taken it."""
    pause = threading.Event()
    for _ in range(40):
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if holder:
            return holder
        pause.wait(0.005)
    return "unknown"


def send_lock(settings: Settings, transport: str = "") -> contextlib.AbstractContextManager[object]:
    """Hold the project's send lock for the block; raise LockedError when another send holds it.

    On PostgreSQL several SMTP senders (TRANSPORT, default [delivery] transport) share a day, so
    they take no lock; an outbox send is one at a time across every host."""
    busy = "another send is running (pid {pid}); try again when it ends"
    if settings.database_url():
        if (transport or settings.delivery.transport) == "smtp":
            return contextlib.nullcontext()
        return database_lock(settings, SEND_KEY, busy.replace(" (pid {pid})", " on one of the hosts"))
    return held_lock(lock_path(settings), busy)


@contextlib.contextmanager
def database_lock(settings: Settings, key: int, busy: str) -> Iterator[object]:
    """Hold the PostgreSQL advisory lock KEY on a connection of its own for the block; LockedError(BUSY)
    when another session (on any host) holds it. A holder that dies lets go with its connection."""
    from newsletter import store

    conn = store.open_database(settings)
    try:
        with conn.advisory_lock(key) as got:
            if not got:
                raise LockedError(f"{store.where(settings)}: {busy}")
            yield conn
    finally:
        conn.close()
