"""The subscriber event log: what happened to each subscriber, when, and what said so.

Every path that changes the list records here, inside its own write transaction, through `record`:
sign-ups, confirmations, imports, unsubscribes (link, mailto, CLI, complaint) and the bounces and
complaints that come back after a send (feedback.py). An event names its subscriber by id; events
about an address the list does not hold are not kept (an erased person stays erased), and erasing
a subscriber erases their events (subscribers.remove).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from newsletter.weeks import DIGEST_KEY_LIKE


class Kind(StrEnum):
    """What happened."""

    SUBSCRIBED = "subscribed"      # added by the editors, or signed up on the web (pending)
    CONFIRMED = "confirmed"        # a web sign-up's confirmation link was followed
    IMPORTED = "imported"          # came in with an import file
    RESUBSCRIBED = "resubscribed"  # asked to rejoin
    UNSUBSCRIBED = "unsubscribed"  # left: source says how (link, mailto, cli, import)
    BOUNCED = "bounced"            # a permanent bounce (5.x.x)
    BOUNCE_SOFT = "bounce_soft"    # a temporary bounce (4.x.x); enough of them make a bounce
    COMPLAINT = "complaint"        # marked an issue as spam (a feedback-loop report)
    PREFERENCES = "preferences"    # changed sections or frequency; detail says to what


# Sources the tool's own paths use; webhooks use "webhook:<service>".
LINK, MAILTO, CLI, WEB, IMPORT, INBOX = "link", "mailto", "cli", "web", "import", "inbox"


@dataclass(frozen=True)
class Event:
    """One line of a subscriber's history."""

    subscriber_id: int
    kind: Kind
    source: str
    at: str
    status: str = ""            # a DSN status code such as "5.1.1"
    detail: str = ""            # the diagnostic text, or what else explains the event
    issue_day: str | None = None
    dedupe_key: str | None = None


_INSERT = (
    "INSERT INTO subscriber_events (subscriber_id, at, kind, source, status, detail, issue_day, dedupe_key)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe_key) DO NOTHING"
)
MAX_DETAIL = 1000  # a diagnostic text is cut here: a hostile report cannot grow the database


def _values(event: Event) -> tuple:
    return (event.subscriber_id, event.at, str(event.kind), event.source, event.status[:32],
            event.detail[:MAX_DETAIL], event.issue_day, event.dedupe_key)


def record(conn: sqlite3.Connection, event: Event) -> bool:
    """Add EVENT (inside the caller's write transaction); False if its dedupe_key was already there."""
    return conn.execute(_INSERT, _values(event)).rowcount == 1


def record_many(conn: sqlite3.Connection, events: Iterable[Event]) -> None:
    """Add many EVENTS at once (an import), inside the caller's write transaction."""
    conn.executemany(_INSERT, map(_values, events))


def history(conn: sqlite3.Connection, subscriber_id: int) -> list[Event]:
    """Return the events of SUBSCRIBER_ID in the order they were recorded."""
    rows = conn.execute(
        "SELECT subscriber_id, at, kind, source, status, detail, issue_day, dedupe_key"
        " FROM subscriber_events WHERE subscriber_id = ? ORDER BY id",
        (subscriber_id,),
    )
    return [Event(**{**dict(row), "kind": Kind(row["kind"])}) for row in rows]


def soft_bounce_days(conn: sqlite3.Connection, subscriber_id: int, since: str) -> int:
    """Return on how many different days SUBSCRIBER_ID bounced temporarily since the day SINCE.

    A bounce counts for the issue it names, else for the day it arrived: a backlog of reports
    read in one run still counts one day per issue.
    """
    # a digest's key (2026-W48.1) is no day: its bounces are in the window by the day they arrived
    row = conn.execute(
        "SELECT count(DISTINCT coalesce(issue_day, substr(at, 1, 10))) FROM subscriber_events"
        " WHERE subscriber_id = ? AND kind = ? AND CASE WHEN issue_day LIKE ? THEN substr(at, 1, 10)"
        " ELSE coalesce(issue_day, substr(at, 1, 10)) END >= ?",
        (subscriber_id, str(Kind.BOUNCE_SOFT), DIGEST_KEY_LIKE, since),
    ).fetchone()
    return row[0]


def erase(conn: sqlite3.Connection, subscriber_id: int) -> None:
    """Delete the events of SUBSCRIBER_ID (they were erased), inside the caller's write transaction."""
    conn.execute("DELETE FROM subscriber_events WHERE subscriber_id = ?", (subscriber_id,))


__all__ = ["Event", "Kind", "erase", "history", "record", "record_many", "soft_bounce_days"]
