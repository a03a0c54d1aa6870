"""The web's outgoing mail: one worker thread that sends what sign-up requests queued in `outgoing_mail`.

A request only adds a row (signup.request_sign_up), so the page answers at once whatever the
address and however slow the relay. The worker decides what each row becomes (signup.resolve),
sends it by the configured transport and deletes the row. A row outlives a crash or a restart: it
is sent when `newsletter serve` starts again (at least once: a crash between the send and the
delete sends it twice). A failed send is retried after a pause that doubles, up to MAX_ATTEMPTS,
then dropped with an error in the log.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import sqlite3
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jinja2

from newsletter import store
from newsletter.errors import NewsletterError
from newsletter.settings import Settings
from newsletter.web import signup

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
RETRY_FIRST = timedelta(seconds=30)
RETRY_MAX = timedelta(hours=1)
IDLE_WAKE = 5.0  # seconds between looks at the queue when nobody wakes the worker (retries come due)

Send = Callable[[Settings, bytes, str], "Path | None"]


def _stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def claim_due(conn: sqlite3.Connection, now: datetime, owner: str = "") -> sqlite3.Row | None:
    """Take the next due mail for the server OWNER (several `serve` on PostgreSQL): a row another
    living server took is passed over; one whose server is gone (its advisory lock free) is taken."""
    with store.write(conn):
        taken = [""]
        if owner:
            others = [row[0] for row in conn.execute(
                "SELECT DISTINCT claimed_by FROM outgoing_mail WHERE claimed_by NOT IN ('', ?)", (owner,))]
            gone = [o for o in others if not o.isdigit() or conn.holder_gone(int(o))]  # type: ignore[attr-defined]
            taken += gone
        row = conn.execute("SELECT id, email, recipient, raw, attempts FROM outgoing_mail WHERE next_attempt_at <= ?"
                           f" AND claimed_by IN ({', '.join('?' * len(taken))}) ORDER BY id LIMIT 1",
                           (_stamp(now), *taken)).fetchone()
        if row is not None and owner:
            conn.execute("UPDATE outgoing_mail SET claimed_by = ? WHERE id = ?", (owner, row["id"]))
    return row


def _failed(conn: sqlite3.Connection, row: sqlite3.Row, err: Exception, now: datetime) -> None:
    attempts = row["attempts"] + 1
    if attempts >= MAX_ATTEMPTS:
        logger.error("outgoing mail %s: dropped after %s attempts: %s", row["id"], attempts, err)
        with store.write(conn):
            conn.execute("DELETE FROM outgoing_mail WHERE id = ?", (row["id"],))
        return
    pause = min(RETRY_FIRST * 2 ** (attempts - 1), RETRY_MAX)
    logger.warning("outgoing mail %s: not sent (attempt %s, next in %s): %s", row["id"], attempts, pause, err)
    with store.write(conn):
        conn.execute("UPDATE outgoing_mail SET attempts = ?, next_attempt_at = ?, last_error = ?, claimed_by = ''"
                     " WHERE id = ?",
                     (attempts, _stamp(now + pause), str(err)[:500], row["id"]))


def process_due(conn: sqlite3.Connection, settings: Settings, env: jinja2.Environment, key: bytes,
                now: Callable[[], datetime], send: Send, stop: threading.Event | None = None, owner: str = "") -> int:
    """Resolve and send every queued mail that is due (and no other server's); return how many were sent."""
    sent = 0
    while (stop is None or not stop.is_set()) and (row := claim_due(conn, now(), owner)) is not None:
        try:
            if row["raw"] is None:
                if not signup.resolve(conn, settings, env, key, row["id"], row["email"], now()):
                    continue
                row = conn.execute("SELECT id, email, recipient, raw, attempts FROM outgoing_mail WHERE id = ?",
                                   (row["id"],)).fetchone()
            send(settings, bytes(row["raw"]), row["recipient"])
        except (NewsletterError, OSError) as err:
            _failed(conn, row, err, now())
            continue
        with store.write(conn):
            conn.execute("DELETE FROM outgoing_mail WHERE id = ?", (row["id"],))
        sent += 1
    return sent


class MailWorker:
    """The thread that runs process_due whenever woken, and every IDLE_WAKE seconds."""

    def __init__(self, settings: Settings, env: jinja2.Environment, key: bytes,
                 now: Callable[[], datetime], send: Send) -> None:
        self.args = (settings, env, key, now, send)
        self.settings = settings
        self.wakeup = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="newsletter-mail", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def wake(self) -> None:
        self.wakeup.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the mail in flight (a daemon thread: a relay that hangs does not hold the exit)."""
        self.stopping.set()
        self.wakeup.set()
        self.thread.join(timeout)

    def _run(self) -> None:
        with contextlib.ExitStack() as alive:
            owner = ""
            while not self.stopping.is_set():
                self.wakeup.clear()
                try:
                    if not owner and self.settings.database_url():
                        # several servers on PostgreSQL: this one's number, held while it lives
                        number = secrets.randbits(62)
                        holder = alive.enter_context(contextlib.closing(store.open_database(self.settings)))
                        alive.enter_context(holder.advisory_lock(number))
                        owner = str(number)
                    conn = store.open_database(self.settings)
                    try:
                        process_due(conn, *self.args, stop=self.stopping, owner=owner)
                    finally:
                        conn.close()
                except store.errors(NewsletterError) as err:
                    logger.error("outgoing mail: %s (tried again in %s s)", err, IDLE_WAKE)
                self.wakeup.wait(IDLE_WAKE)


__all__ = ["MAX_ATTEMPTS", "MailWorker", "claim_due", "process_due"]
