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
import re
import secrets
import socket
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.delivery import ledger
from newsletter.delivery.transport import Claims, Copy, Options, ProofReport, Recovery, Totals, TransportName
from newsletter.errors import DeliveryError, NewsletterError
from newsletter.files import PRIVATE_DIR, PRIVATE_FILE, PUBLIC_DIR, fsync_dir, make_dirs, write_atomic
from newsletter.settings import Settings
from newsletter.variants import IssueTemplates

if TYPE_CHECKING:
    from newsletter.messages import MessageTemplate

logger = logging.getLogger(__name__)

_FSYNC_THREADS = 8
_FADVISE = hasattr(os, "posix_fadvise") and hasattr(os, "POSIX_FADV_DONTNEED")  # concurrent fsyncs let the file system commit them as a group


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


class DayMaildir:
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

    # ------------------------------------------------------------------ one batch

    def stage(
        self,
        batch: Sequence[ledger.Claimed],
        personalize: Callable[[ledger.Claimed], bytes],
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
                    data = personalize(item)
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


# --- the transport ---------------------------------------------------------------------------------

CONFIRMATIONS_FOLDER = "_confirmations"


class OutboxTransport:
    """The outbox transport: each message a file in OUTBOX_DIR (a Maildir per issue, one for the rest)."""

    name = TransportName.OUTBOX
    failed_means = "could not be made"
    hint = 'To deliver by SMTP instead, set [delivery] transport = "smtp" in newsletter.toml'

    def __init__(self, outbox_dir: Path, *, sync: str = "auto", batch_size: int = 500) -> None:
        self.outbox_dir = outbox_dir
        self.sync = sync
        self.batch_size = batch_size
        self._maildirs: dict[date, DayMaildir] = {}

    def maildir(self, day: date) -> DayMaildir:
        """Return DAY's Maildir, created (and its folders made durable) on first use."""
        if day not in self._maildirs:
            maildir = DayMaildir(self.outbox_dir, day, sync=self.sync)
            maildir.open()
            self._maildirs[day] = maildir
        return self._maildirs[day]

    def destination(self, day: date) -> Path:
        return DayMaildir(self.outbox_dir, day, sync="fsync").new

    def recover(self, conn: sqlite3.Connection, day: date, *, now: str) -> Recovery:
        return self.maildir(day).recover(conn, now=now)

    def deliver(self, claims: Claims, template: MessageTemplate | IssueTemplates) -> Totals:
        """Claim, stage, commit and record batches until none is left or the stop is set.

        Batch k+1 is personalized and written into tmp/ while a second thread makes batch k durable,
        so the CPU and the disk work at the same time. Batch k's rows are recorded `sent` (in this
        thread, which owns the connection) only after its commit has returned.
        """
        templates = IssueTemplates.of(template)
        maildir = self.maildir(claims.day)
        totals = Totals()
        started = time.perf_counter()
        claims.done(0)
        in_flight: tuple[Staged, Future] | None = None
        staged: Staged | None = None

        def settle(flight: tuple[Staged, Future]) -> None:
            flight[1].result()
            _record(claims, flight[0].delivered, totals)
            claims.done(totals.written + totals.skipped + totals.failed)

        # signing (OpenSSL, hashlib: the GIL released) runs ahead in two threads while this one writes
        signers = ThreadPoolExecutor(2, thread_name_prefix="outbox-sign") if templates.signs_spliced else None
        with ThreadPoolExecutor(1, thread_name_prefix="outbox-commit") as committer, signers or contextlib.nullcontext():
            try:
                while not claims.stop.is_set():
                    claim = claims.take(self.batch_size)
                    if not claim.rows and not claim.skipped:
                        break
                    totals.skipped += claim.skipped
                    staged = maildir.stage(claim.rows, templates.made_ahead(claim.rows, signers))
                    if in_flight is not None:
                        previous, in_flight = in_flight, None  # a failure here is not recorded twice
                        settle(previous)
                    in_flight, staged = (staged, committer.submit(maildir.commit, staged)), None
                totals.stopped = claims.stop.is_set()
            finally:
                # a batch written to tmp/ but never committed (the database failed meanwhile) is
                # removed: its rows stay claimed, and the next send finds no file and writes them again
                if staged is not None:
                    maildir.discard(staged)
                # the batch in flight is finished and recorded before leaving, even on an error
                # elsewhere, so a stop or a failure never leaves a durable file unrecorded needlessly
                if in_flight is not None:
                    settle(in_flight)
        totals.seconds = time.perf_counter() - started
        return totals

    def deliver_copies(self, copies: Sequence[Copy], *, day: date, moment: datetime) -> ProofReport:
        """Write each copy into outbox/DAY/proofs/ as an .eml file."""
        folder = self.outbox_dir / day.isoformat() / "proofs"
        files = []
        for n, copy in enumerate(copies):
            safe = re.sub(r"[^A-Za-z0-9@._+-]", "_", copy.recipient)
            files.append(write_atomic(folder, f"{moment:%Y%m%dT%H%M%S}-{n}-{safe}.eml", copy.raw))
        return ProofReport(self.name, tuple(copy.recipient for copy in copies), files=tuple(files))

    def deliver_one(self, raw: bytes, recipient: str) -> Path:
        """Write RAW into outbox/_confirmations/mail/new/ (tmp/, made durable, renamed into new/)."""
        maildir = self.outbox_dir / CONFIRMATIONS_FOLDER / "mail"
        try:
            for folder in ("tmp", "new", "cur"):
                (maildir / folder).mkdir(parents=True, exist_ok=True)
            name = _unique_name()
            staged = write_atomic(maildir, f"tmp/{name}", raw)  # fsynced, inside the Maildir
            target = maildir / "new" / name
            os.rename(staged, target)
            fsync_dir(target.parent)
        except OSError as err:
            raise DeliveryError(f"{maildir}: cannot write the message: {err}") from err
        logger.info("wrote a message to %s into %s", recipient, target)
        return target

    def close(self) -> None:
        self._maildirs.clear()


def from_settings(settings: Settings, options: Options) -> OutboxTransport:
    """Return the outbox transport of SETTINGS."""
    return OutboxTransport(settings.outbox_dir, sync=options.sync, batch_size=settings.delivery.batch_size)


def _record(claims: Claims, delivered: Delivered, totals: Totals) -> None:
    """Record a committed batch: its files are durable in new/, so its rows are sent."""
    claims.record_sent(delivered.written)
    for subscriber_id, reason in delivered.failed:
        claims.record_failed(subscriber_id, reason)
    totals.written += len(delivered.written)
    totals.failed += len(delivered.failed)
    totals.nbytes += delivered.nbytes


def _unique_name() -> str:
    # the Maildir convention: time, something unique on this host, the host name
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "localhost"
    return f"{time.time_ns()}.P{os.getpid()}R{secrets.token_hex(6)}.{host}.eml"
