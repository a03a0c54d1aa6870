"""Hearing back: what a bounce, a complaint or an unsubscribe request does to the list.

Every source of such news (the inbox's bounce messages, feedback-loop reports and mailto requests;
the email services' webhooks) turns it into one `Feedback` and calls `apply`, which decides in one
write transaction:

- a permanent bounce marks the subscriber `bounced`;
- a temporary bounce is counted, and temporary bounces on `[bounces] soft_limit` different days
  within `[bounces] window_days` mark them `bounced` too (Mailman's bounce score, simplified);
- a complaint, or an unsubscribe request, unsubscribes them at once;
- news about an address the list does not hold, about another list, or already processed (the
  same `dedupe_key`) changes nothing, and the outcome says why.

Status changes go through subscribers.py (the list's rules live there); the event that explains
each one goes to the subscriber's history (events.py).
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import StrEnum

from newsletter import events, subscribers
from newsletter.events import Event
from newsletter.settings import Settings

logger = logging.getLogger(__name__)


class FeedbackKind(StrEnum):
    HARD_BOUNCE = "hard_bounce"    # permanent failure (DSN status 5.x.x)
    SOFT_BOUNCE = "soft_bounce"    # temporary failure (4.x.x): counted
    COMPLAINT = "complaint"        # the reader marked the message as spam
    UNSUBSCRIBE = "unsubscribe"    # the reader asked to leave (mailto, or a service's own link)


@dataclass(frozen=True)
class Feedback:
    """One piece of news about one recipient, from any source.

    The recipient is SUBSCRIBER_ID when the source names it (a VERP tag), else EMAIL.
    SOURCE says what reported it ("inbox", "mailto", "webhook:ses", …). DEDUPE_KEY (the report's
    Message-ID with the VERP tag, or a webhook's event id) makes the same report applied twice
    change nothing. LIST_ID, when the report names a list, must be ours.
    """

    kind: FeedbackKind
    source: str
    email: str = ""
    subscriber_id: int | None = None
    issue_day: str | None = None
    status: str = ""
    diagnostic: str = ""
    dedupe_key: str | None = None
    list_id: str | None = None


class Why(StrEnum):
    """Why `apply` did what it did."""

    CHANGED = "changed"
    COUNTED = "temporary bounce counted"
    UNKNOWN = "not on the list"
    OTHER_LIST = "about another list"
    DUPLICATE = "already processed"
    ALREADY = "already unsubscribed or bounced"


@dataclass(frozen=True)
class Outcome:
    """What one Feedback did: WHY, and the subscriber's status before and after (empty if unknown)."""

    feedback: Feedback
    why: Why
    subscriber_id: int | None = None
    before: str = ""
    after: str = ""

    @property
    def changed(self) -> bool:
        return self.why is Why.CHANGED

    def __str__(self) -> str:
        who = f"subscriber {self.subscriber_id}" if self.subscriber_id is not None else "an unknown address"
        if self.changed:
            return f"{self.feedback.kind} for {who}: {self.before} -> {self.after}"
        return f"{self.feedback.kind} for {who}: nothing changed ({self.why})"


_EVENT_KIND = {
    FeedbackKind.HARD_BOUNCE: events.Kind.BOUNCED,
    FeedbackKind.SOFT_BOUNCE: events.Kind.BOUNCE_SOFT,
    FeedbackKind.COMPLAINT: events.Kind.COMPLAINT,
    FeedbackKind.UNSUBSCRIBE: events.Kind.UNSUBSCRIBED,
}


def _iso(now: datetime) -> str:
    return now.astimezone(timezone.utc).isoformat(timespec="seconds")


def apply(conn: sqlite3.Connection, settings: Settings, feedback: Feedback, now: datetime) -> Outcome:
    """Apply FEEDBACK (received at NOW) to the list in one transaction; return what it did and why."""
    if feedback.list_id is not None and feedback.list_id.strip("<> ").lower() != settings.sender.list_id.lower():
        return Outcome(feedback, Why.OTHER_LIST)
    at = _iso(now)
    with subscribers.writing(conn, feedback.email or f"subscriber {feedback.subscriber_id}"):
        person = subscribers.find_in(conn, feedback.email, feedback.subscriber_id)
        if person is None:
            return Outcome(feedback, Why.UNKNOWN)
        event = Event(person.id, _EVENT_KIND[feedback.kind], feedback.source, at, status=feedback.status,
                      detail=feedback.diagnostic, issue_day=feedback.issue_day, dedupe_key=feedback.dedupe_key)
        if not events.record(conn, event):
            return Outcome(feedback, Why.DUPLICATE, person.id, person.status, person.status)
        if feedback.kind is FeedbackKind.SOFT_BOUNCE and not _over_soft_limit(conn, settings, person.id, now):
            counted = Why.COUNTED if person.status in (subscribers.ACTIVE, subscribers.PENDING) else Why.ALREADY
            return Outcome(feedback, counted, person.id, person.status, person.status)
        status = subscribers.BOUNCED if feedback.kind in _BOUNCES else subscribers.UNSUBSCRIBED
        change = subscribers.leave_in(conn, person, status, at)
    if not change.changed:
        return Outcome(feedback, Why.ALREADY, person.id, change.before, change.before)
    logger.info("subscriber %s: %s -> %s (%s, %s)", person.id, change.before, status, feedback.kind, feedback.source)
    return Outcome(feedback, Why.CHANGED, person.id, change.before, change.subscriber.status)


_BOUNCES = (FeedbackKind.HARD_BOUNCE, FeedbackKind.SOFT_BOUNCE)


def _over_soft_limit(conn: sqlite3.Connection, settings: Settings, subscriber_id: int, now: datetime) -> bool:
    since = (now.astimezone(timezone.utc).date() - timedelta(days=settings.bounces.window_days - 1)).isoformat()
    return events.soft_bounce_days(conn, subscriber_id, since) >= settings.bounces.soft_limit


__all__ = ["Feedback", "FeedbackKind", "Outcome", "Why", "apply"]
