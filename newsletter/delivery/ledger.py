"""The delivery ledger: one frozen issue per day and one row per (issue, subscriber).

Every change below is its own short `store.write` transaction (BEGIN IMMEDIATE), so a kill at any
moment leaves the ledger at a commit point that `recover` in a transport can resolve
(RELIABILITY.md). No function here loads the whole list: rows are claimed in batches.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime

from newsletter import store
from newsletter.models import Subscriber

# The delivery states (RELIABILITY.md): pending → claimed → data_sent → sent | retry | failed |
# in_doubt | skipped. The outbox transport only needs pending, claimed, sent and skipped.
PENDING, CLAIMED, DATA_SENT, SENT = "pending", "claimed", "data_sent", "sent"
RETRY, FAILED, IN_DOUBT, SKIPPED = "retry", "failed", "in_doubt", "skipped"
STATES: tuple[str, ...] = (PENDING, CLAIMED, DATA_SENT, SENT, RETRY, FAILED, IN_DOUBT, SKIPPED)
# Rows in these states still owe the subscriber a message: while any remain the issue is not done.
UNFINISHED: tuple[str, ...] = (PENDING, CLAIMED, DATA_SENT, RETRY)

# Which state may follow which; `set_state` refuses anything else.
TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING: frozenset({CLAIMED, SKIPPED}),
    CLAIMED: frozenset({DATA_SENT, SENT, RETRY, FAILED, PENDING, SKIPPED}),
    DATA_SENT: frozenset({SENT, RETRY, FAILED, IN_DOUBT}),
    RETRY: frozenset({CLAIMED, SKIPPED, FAILED}),
    IN_DOUBT: frozenset({CLAIMED, SKIPPED, SENT}),
    SENT: frozenset(),
    FAILED: frozenset(),
    SKIPPED: frozenset(),
}

ISSUE_SENDING, ISSUE_PAUSED, ISSUE_DONE = "sending", "paused", "done"
NOT_STARTED = "not started"


@dataclass(frozen=True)
class FrozenIssue:
    """The version of a day's issue that its subscribers get, as stored at the first send."""

    day: date
    number: int
    status: str
    subject: str
    html: str
    text: str
    sha256: str
    created_at: str

    @property
    def date_header(self) -> datetime:
        """The Date of every message of this issue: the moment it was frozen, so rewrites match."""
        return datetime.fromisoformat(self.created_at)


@dataclass(frozen=True)
class Claimed:
    """A claimed row: who gets the message and the Message-ID it carries."""

    subscriber: Subscriber
    message_id: str


@dataclass(frozen=True)
class Claim:
    """One batch: the rows now `claimed`, and how many were `skipped` (no longer active)."""

    rows: tuple[Claimed, ...]
    skipped: int


@dataclass(frozen=True)
class IssueStatus:
    """A day's issue as the ledger sees it: its state and the number of rows in each state."""

    day: date
    state: str
    subject: str = ""
    number: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, object]:
        """Return the status as plain JSON-ready values."""
        return {
            "day": self.day.isoformat(),
            "state": self.state,
            "subject": self.subject,
            "number": self.number,
            "total": self.total,
            "deliveries": {state: self.counts.get(state, 0) for state in STATES},
        }


def content_sha256(html: str, text: str) -> str:
    """Return the fingerprint of an issue's content: the HTML and the text part."""
    digest = hashlib.sha256()
    digest.update(html.encode("utf-8"))
    digest.update(b"\0")
    digest.update(text.encode("utf-8"))
    return digest.hexdigest()


def frozen_issue(conn: sqlite3.Connection, day: date) -> FrozenIssue | None:
    """Return DAY's frozen issue, or None when its sending has not started."""
    row = conn.execute(
        "SELECT number, status, subject, html, text, sha256, created_at FROM issues WHERE day = ?",
        (day.isoformat(),),
    ).fetchone()
    if row is None:
        return None
    return FrozenIssue(day, row["number"], row["status"], row["subject"], row["html"], row["text"],
                       row["sha256"], row["created_at"])


def freeze_and_snapshot(
    conn: sqlite3.Connection,
    day: date,
    *,
    number: int,
    subject: str,
    html: str,
    text: str,
    message_id: Callable[[int], str],
    now: str,
) -> FrozenIssue:
    """Store DAY's issue and a `pending` row for every active subscriber, in one transaction.

    A subscriber who joins after this moment gets the next issue, not this one: the snapshot is
    taken only here, when the issue row is created.
    """
    sha = content_sha256(html, text)
    # message_id runs inside SQLite so the snapshot is one INSERT … SELECT that streams the list
    conn.create_function("newsletter_message_id", 1, message_id, deterministic=True)
    try:
        with store.write(conn):
            conn.execute(
                "INSERT INTO issues (day, number, status, subject, html, text, sha256, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (day.isoformat(), number, ISSUE_SENDING, subject, html, text, sha, now, now),
            )
            conn.execute(
                "INSERT OR IGNORE INTO deliveries (issue_day, subscriber_id, state, attempts, message_id,"
                " email, updated_at)"
                " SELECT ?, id, 'pending', 0, newsletter_message_id(id), email, ? FROM subscribers"
                " WHERE status = 'active' ORDER BY id",
                (day.isoformat(), now),
            )
    finally:
        conn.create_function("newsletter_message_id", 1, None)
    return FrozenIssue(day, number, ISSUE_SENDING, subject, html, text, sha, now)


def refreeze(
    conn: sqlite3.Connection, day: date, *, number: int, subject: str, html: str, text: str, now: str
) -> FrozenIssue:
    """Replace DAY's frozen content (a `--rebuild`): rows not yet written get the new version.

    The Date of the issue (created_at) stays, and nobody is added to or removed from the snapshot.
    """
    sha = content_sha256(html, text)
    with store.write(conn):
        conn.execute(
            "UPDATE issues SET number = ?, subject = ?, html = ?, text = ?, sha256 = ?, updated_at = ?"
            " WHERE day = ?",
            (number, subject, html, text, sha, now, day.isoformat()),
        )
    issue = frozen_issue(conn, day)
    assert issue is not None
    return issue


def claim_batch(
    conn: sqlite3.Connection, day: date, limit: int, *, sha256: str, now: str
) -> Claim:
    """Claim up to LIMIT rows that are pending (or due for a retry) in one transaction.

    A row whose subscriber is no longer active (unsubscribed or bounced after the snapshot, or
    removed) becomes `skipped`; the others become `claimed` with the content fingerprint they get.
    """
    key = day.isoformat()
    columns = (
        "d.subscriber_id AS delivery_id, d.message_id, s.id, s.email, s.email_key, s.name, s.status,"
        " s.created_at, s.updated_at"
    )
    claimed: list[Claimed] = []
    skipped: list[int] = []
    with store.write(conn):
        # due retries first, then pending rows in snapshot order (the index on (issue_day, state)
        # yields them in rowid order, so no sort over the remaining list per batch)
        rows = conn.execute(
            f"SELECT {columns} FROM deliveries d LEFT JOIN subscribers s ON s.id = d.subscriber_id"
            " WHERE d.issue_day = ? AND d.state = 'retry' AND coalesce(d.next_attempt_at, '') <= ?"
            " ORDER BY d.next_attempt_at LIMIT ?",
            (key, now, limit),
        ).fetchall()
        if len(rows) < limit:
            rows += conn.execute(
                f"SELECT {columns} FROM deliveries d LEFT JOIN subscribers s ON s.id = d.subscriber_id"
                " WHERE d.issue_day = ? AND d.state = 'pending' ORDER BY d.rowid LIMIT ?",
                (key, limit - len(rows)),
            ).fetchall()
        for row in rows:
            if row["id"] is None or row["status"] != "active":
                skipped.append(row["delivery_id"])
                continue
            subscriber = Subscriber(row["id"], row["email"], row["email_key"], row["name"],
                                    row["status"], row["created_at"], row["updated_at"])
            claimed.append(Claimed(subscriber, row["message_id"]))
        conn.executemany(
            "UPDATE deliveries SET state = 'skipped', updated_at = ? WHERE issue_day = ? AND subscriber_id = ?",
            [(now, key, sid) for sid in skipped],
        )
        # the address used is recorded: it is the subscriber's current one, which may have changed
        conn.executemany(
            "UPDATE deliveries SET state = 'claimed', attempts = attempts + 1, sha256 = ?, email = ?,"
            " updated_at = ? WHERE issue_day = ? AND subscriber_id = ?",
            [(sha256, c.subscriber.email, now, key, c.subscriber.id) for c in claimed],
        )
    return Claim(tuple(claimed), len(skipped))


def set_state(
    conn: sqlite3.Connection,
    day: date,
    subscriber_ids: Iterable[int],
    state: str,
    *,
    now: str,
    expected: str | None = None,
    reply: str | None = None,
    next_attempt_at: str | None = None,
) -> int:
    """Move rows of DAY to STATE in one transaction; with EXPECTED, only rows now in that state.

    Returns the number of rows changed. Refuses transitions the state machine does not allow.
    """
    if state not in STATES:
        raise ValueError(f"unknown delivery state {state!r}")
    if expected is not None and state not in TRANSITIONS[expected]:
        raise ValueError(f"a delivery cannot go from {expected!r} to {state!r}")
    sql = "UPDATE deliveries SET state = ?, updated_at = ?"
    extra: list[object] = []
    if reply is not None:
        sql += ", last_reply = ?"
        extra.append(reply)
    if state == RETRY:
        sql += ", next_attempt_at = ?"
        extra.append(next_attempt_at)
    sql += " WHERE issue_day = ? AND subscriber_id = ?"
    if expected is not None:
        sql += " AND state = ?"
    key = day.isoformat()
    params = [
        (state, now, *extra, key, sid, *((expected,) if expected is not None else ()))
        for sid in subscriber_ids
    ]
    with store.write(conn):
        before = conn.total_changes
        conn.executemany(sql, params)
        return conn.total_changes - before


def rows_in_state(conn: sqlite3.Connection, day: date, state: str, batch: int = 1000):
    """Yield (subscriber_id, message_id) of DAY's rows in STATE, reading BATCH rows at a time."""
    last = -1
    while True:
        rows = conn.execute(
            "SELECT subscriber_id, message_id FROM deliveries"
            " WHERE issue_day = ? AND state = ? AND subscriber_id > ? ORDER BY subscriber_id LIMIT ?",
            (day.isoformat(), state, last, batch),
        ).fetchall()
        if not rows:
            return
        for row in rows:
            yield row["subscriber_id"], row["message_id"]
        last = rows[-1]["subscriber_id"]


def counts(conn: sqlite3.Connection, day: date) -> dict[str, int]:
    """Return the number of DAY's rows in each state (zero for states no row is in)."""
    found = dict(conn.execute(
        "SELECT state, count(*) FROM deliveries WHERE issue_day = ? GROUP BY state", (day.isoformat(),)
    ).fetchall())
    return {state: found.get(state, 0) for state in STATES}


def finish_if_done(conn: sqlite3.Connection, day: date, *, now: str) -> bool:
    """Mark DAY's issue `done` when no row still owes a message; return whether it is done."""
    placeholders = ", ".join("?" for _ in UNFINISHED)
    with store.write(conn):
        left = conn.execute(
            f"SELECT count(*) FROM deliveries WHERE issue_day = ? AND state IN ({placeholders})",
            (day.isoformat(), *UNFINISHED),
        ).fetchone()[0]
        if left == 0:
            conn.execute(
                "UPDATE issues SET status = 'done', updated_at = ? WHERE day = ? AND status != 'done'",
                (now, day.isoformat()),
            )
    return left == 0


def issue_status(conn: sqlite3.Connection, day: date) -> IssueStatus:
    """Return DAY's issue state (not started, sending, paused, done) and its count per delivery state."""
    issue = frozen_issue(conn, day)
    if issue is None:
        return IssueStatus(day, NOT_STARTED, counts={state: 0 for state in STATES})
    return IssueStatus(day, issue.status, issue.subject, issue.number, counts(conn, day))
