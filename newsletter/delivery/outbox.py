"""The outbox transport: one .eml file per subscriber in a Maildir, written exactly once.

The order that makes it exactly once (RELIABILITY.md): a batch's files are written into
`mail/tmp/`, made durable together, linked into `mail/new/` (whose directory is then made
durable), and only then are the batch's rows marked `sent` in one transaction. A file's name
is derived from its row, so recovery can tell, after a kill at any point, which rows already
have their file in `new/`.
"""

from __future__ import annotations

import ctypes
import contextlib
import errno
import hashlib
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from newsletter.delivery import ledger
from newsletter.errors import DeliveryError, NewsletterError
from newsletter.files import PRIVATE_DIR, PRIVATE_FILE, PUBLIC_DIR, fsync_dir, make_dirs, write_atomic
from newsletter.models import Subscriber

logger = logging.getLogger(__name__)

_FSYNC_THREADS = 8
_FADVISE = hasattr(os, "posix_fadvise") and hasattr(os, "POSIX_FADV_DONTNEED")  # concurrent fsyncs let the file system commit them as a group


@dataclass(frozen=True)
class Recovery:
    """What recovery found: rows whose file was already in new/, rows to write again, stray files."""

    sent: int = 0
    released: int = 0
    removed: int = 0


@dataclass(frozen=True)
class Delivered:
    """One batch's result: the rows whose file is now durable in new/, rows that failed, bytes."""

    written: tuple[int, ...]
    failed: tuple[tuple[int, str], ...]
    nbytes: int


@dataclass(frozen=True)
class Staged:
    """A batch written into tmp/: each row's file name, and what `commit` will have delivered."""

    names: tuple[tuple[int, str], ...]
    delivered: Delivered


def file_name(subscriber_id: int, message_id: str) -> str:
    """Return the deterministic Maildir file name of a row: `<subscriber id>.<Message-ID hash>.eml`."""
    digest = hashlib.sha256(message_id.encode("utf-8")).hexdigest()[:16]
    return f"{subscriber_id}.{digest}.eml"


def _load_syncfs() -> Callable[[int], None] | None:
    """Return Linux's syncfs(2) (one call makes every dirty file of a file system durable), or None."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int

    def syncfs(fd: int) -> None:
        if function(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return syncfs


class OutboxTransport:
    """Write each message of DAY's issue as a file into OUTBOX/DAY/mail/new/ (a Maildir)."""

    def __init__(self, outbox_dir: Path, day: date, *, sync: str = "auto") -> None:
        """SYNC picks how a batch is made durable: "syncfs" (Linux), "fsync" (each file), "auto"."""
        self.day = day
        self.folder = outbox_dir / day.isoformat()
        self.maildir = self.folder / "mail"
        self.tmp = self.maildir / "tmp"
        self.new = self.maildir / "new"
        self.cur = self.maildir / "cur"
        self._syncfs = _load_syncfs() if sync in ("auto", "syncfs") else None
        if sync == "syncfs" and self._syncfs is None:
            raise DeliveryError("syncfs is not available on this system; use sync='fsync'")
        self._link = True  # hard links refuse to replace a file; some file systems have none

    # ------------------------------------------------------------------ setup and recovery

    def open(self) -> None:
        """Create the Maildir (tmp/, new/, cur/) and make the folders durable."""
        try:
            # outbox/ also holds the public site/; each day's folder holds personal links
            make_dirs(self.folder.parent, PUBLIC_DIR)
            for folder in (self.tmp, self.new, self.cur):
                make_dirs(folder, PRIVATE_DIR)
            for folder in (self.maildir, self.folder, self.folder.parent):
                fsync_dir(folder)
        except OSError as err:
            raise DeliveryError(f"{self.maildir}: cannot create the outbox: {err}") from err

    def recover(self, conn: sqlite3.Connection, *, now: str) -> Recovery:
        """Resolve rows a killed send left `claimed`, and remove files it left in tmp/.

        A claimed row whose file is in new/ was written: it becomes `sent` and is not written again.
        Any other claimed row goes back to `pending` and is written by this send.
        """
        sent: list[int] = []
        released: list[int] = []
        for subscriber_id, message_id in ledger.rows_in_state(conn, self.day, ledger.CLAIMED):
            if (self.new / file_name(subscriber_id, message_id)).exists():
                sent.append(subscriber_id)
            else:
                released.append(subscriber_id)
        removed = 0
        # the send lock is held: nothing else writes into tmp/, so whatever is there is a leftover
        with os.scandir(self.tmp) as entries:
            for entry in entries:
                os.unlink(entry.path)
                removed += 1
        if sent:
            ledger.set_state(conn, self.day, sent, ledger.SENT, now=now, expected=ledger.CLAIMED)
        if released:
            ledger.set_state(conn, self.day, released, ledger.PENDING, now=now, expected=ledger.CLAIMED)
        if sent or released or removed:
            logger.info("%s: recovered %d written, %d to write again, %d stray files removed",
                        self.maildir, len(sent), len(released), removed)
        return Recovery(len(sent), len(released), removed)

    def write_public(self, html: str, text: str) -> None:
        """Write the non-personal issue.html and issue.txt next to the Maildir, atomically."""
        try:
            write_atomic(self.folder, "issue.html", html.encode("utf-8"))
            write_atomic(self.folder, "issue.txt", text.encode("utf-8"))
        except OSError as err:
            raise DeliveryError(f"{self.folder}: cannot write the issue files: {err}") from err

    # ------------------------------------------------------------------ one batch

    def deliver(
        self,
        batch: Sequence[ledger.Claimed],
        personalize: Callable[[Subscriber], bytes],
    ) -> Delivered:
        """Write BATCH's messages and move them durably into new/ (`stage`, then `commit`)."""
        staged = self.stage(batch, personalize)
        self.commit(staged)
        return staged.delivered

    def stage(
        self,
        batch: Sequence[ledger.Claimed],
        personalize: Callable[[Subscriber], bytes],
    ) -> Staged:
        """Write BATCH's messages into tmp/ (not yet durable, not yet visible in new/).

        A subscriber whose message cannot be made (a bad name) is reported as failed.
        """
        tmp = str(self.tmp)
        names: list[tuple[int, str]] = []
        failed: list[tuple[int, str]] = []
        nbytes = 0
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        name = ""
        try:
            for item in batch:
                try:
                    data = personalize(item.subscriber)
                except NewsletterError as err:
                    failed.append((item.subscriber.id, str(err)))
                    continue
                name = file_name(item.subscriber.id, item.message_id)
                fd = os.open(os.path.join(tmp, name), flags, PRIVATE_FILE)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    if _FADVISE:
                        # start writing it to disk now, while the next messages are made: the
                        # commit's sync then finds little left to do and the disk never idles
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
                nbytes += len(data)
                names.append((item.subscriber.id, name))
        except OSError as err:
            # a full disk: remove this batch's files from tmp/; its rows stay claimed, and the next
            # send finds no file for them in new/ and writes them again
            for leftover in {n for _, n in names} | ({name} if name else set()):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(tmp, leftover))
            raise DeliveryError(f"{self.tmp}: cannot write a message: {err.strerror or err}") from err
        return Staged(tuple(names), Delivered(tuple(sid for sid, _ in names), tuple(failed), nbytes))

    def discard(self, staged: Staged) -> None:
        """Remove STAGED's files from tmp/ (written, never committed)."""
        for _, name in staged.names:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.tmp, name))

    def commit(self, staged: Staged) -> None:
        """Make STAGED's files durable, link them into new/ and make new/ durable.

        When this returns, every row in `staged.delivered.written` has its file durably in new/:
        only then may the caller record them `sent`. Safe to run in another thread than `stage`.
        """
        tmp, new = str(self.tmp), str(self.new)
        try:
            self._make_durable([os.path.join(tmp, name) for _, name in staged.names])
            for _, name in staged.names:
                self._move(os.path.join(tmp, name), os.path.join(new, name))
            fsync_dir(self.new)
        except OSError as err:
            raise DeliveryError(f"{self.new}: cannot move a message into the Maildir: {err}") from err

    def _make_durable(self, paths: list[str]) -> None:
        if not paths:
            return
        if self._syncfs is not None:
            fd = os.open(self.tmp, os.O_RDONLY)
            try:
                self._syncfs(fd)
                return
            except OSError as err:
                if err.errno not in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                self._syncfs = None  # not here after all: fall back to one fsync per file
            finally:
                os.close(fd)
        with ThreadPoolExecutor(min(_FSYNC_THREADS, len(paths))) as pool:
            list(pool.map(_fsync_path, paths))

    def _move(self, source: str, target: str) -> None:
        """Put SOURCE at TARGET unless TARGET exists: a file in new/ is never written twice."""
        if self._link:
            try:
                os.link(source, target)
            except FileExistsError:
                logger.warning("%s: already in new/; kept, not written again", target)
            except OSError as err:
                if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                    raise
                self._link = False
            else:
                os.unlink(source)
                return
            if self._link:
                os.unlink(source)
                return
        if os.path.exists(target):
            logger.warning("%s: already in new/; kept, not written again", target)
            os.unlink(source)
        else:
            os.rename(source, target)


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
