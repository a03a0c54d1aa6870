"""What came back after a send, counted: bounces and complaints per issue, the complaint rate of a window.

Mailbox providers judge a bulk sender by these numbers: Google asks them to keep the complaint rate
(complaints / messages delivered) under 0.3%, and 0.1% is the level to act on. The counts come from
the subscriber event log (events.py), where `feedback.apply` records every bounce and complaint the
inbox and the webhooks hear of; the messages from the delivery ledger's `sent` rows.
"""

from __future__ import annotations

import contextlib
import sqlite3
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

from newsletter import store
from newsletter.events import Kind
from newsletter.weeks import DIGEST_KEY_LIKE

if typing.TYPE_CHECKING:
    from newsletter.settings import Settings

COMPLAINT_RATE_LIMIT = 0.001  # 0.1%: act before Google's 0.3%
WINDOW_DAYS = 30

_COUNTED = (Kind.BOUNCED, Kind.BOUNCE_SOFT, Kind.COMPLAINT)


def _rate(count: int, sent: int) -> float | None:
    return count / sent if sent else None


@dataclass(frozen=True)
class IssueFeedback:
    """The bounces and complaints that name one issue, against the messages of it delivered."""

    day: date
    sent: int
    hard_bounces: int = 0
    soft_bounces: int = 0
    complaints: int = 0

    @property
    def bounce_rate(self) -> float | None:
        """Permanent bounces per message delivered (None before any was)."""
        return _rate(self.hard_bounces, self.sent)

    @property
    def complaint_rate(self) -> float | None:
        return _rate(self.complaints, self.sent)

    def to_dict(self) -> dict:
        return {"sent": self.sent, "hard_bounces": self.hard_bounces, "soft_bounces": self.soft_bounces,
                "complaints": self.complaints, "bounce_rate": self.bounce_rate, "complaint_rate": self.complaint_rate}


@dataclass(frozen=True)
class WindowRate:
    """Complaints that arrived in FIRST..LAST against the messages of the issues of those days delivered."""

    first: date
    last: date
    complaints: int
    sent: int

    @property
    def rate(self) -> float | None:
        return _rate(self.complaints, self.sent)


def issue_feedback(conn: sqlite3.Connection, day: date) -> IssueFeedback:
    """Count DAY's delivered messages and the bounces and complaints that name DAY's issue."""
    sent = conn.execute("SELECT count(*) FROM deliveries WHERE issue_day = ? AND state = 'sent'",
                        (day.isoformat(),)).fetchone()[0]
    counts = dict(conn.execute(
        f"SELECT kind, count(DISTINCT subscriber_id) FROM subscriber_events WHERE issue_day = ?"
        f" AND kind IN ({', '.join('?' * len(_COUNTED))}) GROUP BY kind",
        (day.isoformat(), *map(str, _COUNTED))).fetchall())
    return IssueFeedback(day, sent, counts.get(Kind.BOUNCED, 0), counts.get(Kind.BOUNCE_SOFT, 0),
                         counts.get(Kind.COMPLAINT, 0))


def complaint_rate(conn: sqlite3.Connection, last: date, days: int = WINDOW_DAYS) -> WindowRate:
    """Return the complaints that arrived in the DAYS days up to LAST against the messages sent then."""
    first = last - timedelta(days=days - 1)
    complaints = conn.execute(
        "SELECT count(*) FROM subscriber_events WHERE kind = ? AND substr(at, 1, 10) BETWEEN ? AND ?",
        (str(Kind.COMPLAINT), first.isoformat(), last.isoformat())).fetchone()[0]
    # a digest's rows (keyed 2026-W48.1, no day) count by the day they were sent
    sent = conn.execute(
        "SELECT count(*) FROM deliveries WHERE state = 'sent' AND (issue_day BETWEEN ? AND ?"
        " OR (issue_day LIKE ? AND substr(updated_at, 1, 10) BETWEEN ? AND ?))",
        (first.isoformat(), last.isoformat(), DIGEST_KEY_LIKE, first.isoformat(), last.isoformat())).fetchone()[0]
    return WindowRate(first, last, complaints, sent)


@contextlib.contextmanager
def reading(settings: Settings) -> Iterator[typing.Any]:
    """Open the project's database read-only (None when there is none yet): a check must not create it."""
    if settings.database_url():
        conn = store.open_database(settings)
        try:
            yield conn
        finally:
            conn.close()
        return
    path = settings.database_path
    if not path.is_file():
        yield None
        return
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row  # rows read by name, as on every connection of the store
    try:
        yield conn
    finally:
        conn.close()


def percent(rate: float | None) -> str:
    """Return RATE as the editor reads it: "0.12%", or "-" when nothing was delivered."""
    return "-" if rate is None else f"{rate:.2%}"


__all__ = ["COMPLAINT_RATE_LIMIT", "IssueFeedback", "WINDOW_DAYS", "WindowRate", "complaint_rate", "issue_feedback",
           "percent", "reading"]
