"""`newsletter inbox`: read the mail that comes back after a send and update the list.

sources.py says where the mail is read from, reading.py what each message means, feedback.py
what that does to the list. `run` ties them together and counts what happened in a `Summary`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from newsletter import feedback as feedback_module
from newsletter.feedback import FeedbackKind, Outcome, Why
from newsletter.inbox.reading import Category, Reader, Verdict
from newsletter.errors import InboxError
from newsletter.inbox.sources import ImapSource, MaildirSource, MboxSource, Source, StdinSource
from newsletter.settings import Settings, inbox_password

logger = logging.getLogger(__name__)


@dataclass
class Summary:
    """What one run read and did."""

    source: str
    read: int = 0
    permanent: int = 0
    temporary: int = 0
    complaints: int = 0
    unsubscribes: int = 0
    ignored: int = 0
    human: int = 0
    changed: int = 0
    unchanged: Counter[str] = field(default_factory=Counter)  # why nothing changed, and how often
    notes: list[str] = field(default_factory=list)  # one line per message left for a human or refused

    def add(self, label: str, verdict: Verdict, outcomes: list[Outcome]) -> None:
        """Count one message: its VERDICT and what applying its feedback did."""
        self.read += 1
        for outcome in outcomes:
            kind = outcome.feedback.kind
            self.permanent += kind is FeedbackKind.HARD_BOUNCE
            self.temporary += kind is FeedbackKind.SOFT_BOUNCE
            self.complaints += kind is FeedbackKind.COMPLAINT
            self.unsubscribes += kind is FeedbackKind.UNSUBSCRIBE
            if outcome.changed:
                self.changed += 1
            elif outcome.why is not Why.COUNTED:
                self.unchanged[str(outcome.why)] += 1
        if verdict.category is Category.IGNORED:
            self.ignored += 1
        elif verdict.category in (Category.HUMAN, Category.REFUSED):
            self.human += 1
            self.notes.append(f"{label}: left for a human: {verdict.why}")
            if verdict.category is Category.REFUSED:
                self.unchanged[verdict.why.split(" (")[0]] += 1

    def line(self) -> str:
        """Return the one-line summary the CLI prints."""
        def n(count: int, one: str, many: str = "") -> str:
            return f"{count} {one if count == 1 else many or one + 's'}"

        parts = [
            f"{n(self.permanent + self.temporary, 'bounce')} ({self.permanent} permanent, {self.temporary} temporary)",
            n(self.complaints, "complaint"),
            n(self.unsubscribes, "unsubscribe"),
            f"{n(self.ignored, 'auto-reply', 'auto-replies')} ignored",
            f"{self.human} left for a human",
        ]
        text = f"{self.source}: read {n(self.read, 'message')}: " + ", ".join(parts)
        text += f"; {n(self.changed, 'subscriber')} changed"
        if self.unchanged:
            reasons = ", ".join(f"{count} {why}" for why, count in sorted(self.unchanged.items()))
            text += f"; nothing changed for {sum(self.unchanged.values())} ({reasons})"
        return text


def run(conn: sqlite3.Connection, settings: Settings, key: bytes, source: Source, now: datetime) -> Summary:
    """Read every new message of SOURCE, apply what it means to the list, settle it; return the summary.

    Each message is applied before it is settled (moved, flagged): a run stopped half-way reads the
    message again next time, and its dedupe key makes the second reading change nothing.
    """
    reader = Reader(settings, key)
    summary = Summary(source.name)
    for incoming in source.messages():
        if incoming.size is not None and incoming.size > reader.max_bytes:
            verdict = Verdict(Category.REFUSED, why=f"larger than {reader.max_bytes} bytes: not read")
        else:
            verdict = reader.read(incoming.load())
        outcomes = [feedback_module.apply(conn, settings, item, now) for item in verdict.feedback]
        for outcome in outcomes:
            logger.info("%s: %s", incoming.label, outcome)
        summary.add(incoming.label, verdict, outcomes)
        incoming.settle(verdict.category in (Category.HUMAN, Category.REFUSED))
    return summary


def open_source(settings: Settings, *, maildir: Path | None = None, mbox: Path | None = None,
                stdin: BinaryIO | None = None, environ: Mapping[str, str] = os.environ) -> Source:
    """Return the one source asked for: MAILDIR, MBOX, STDIN, else the [inbox] IMAP mailbox."""
    if sum(x is not None for x in (maildir, mbox, stdin)) > 1:
        raise InboxError("--maildir, --mbox and --stdin: give one of them")
    if maildir is not None:
        return MaildirSource(maildir)
    if mbox is not None:
        return MboxSource(mbox)
    if stdin is not None:
        return StdinSource(settings, stdin)
    if not settings.inbox.host:
        raise InboxError(f"{settings.root / 'newsletter.toml'}: [inbox] host is empty; set it to read an IMAP "
                         "mailbox, or give --maildir, --mbox or --stdin")
    return ImapSource(settings, inbox_password(environ))


def read_mailbox(settings: Settings, now: datetime, environ: Mapping[str, str] = os.environ) -> Summary:
    """Read the [inbox] IMAP mailbox once (the scheduler's job): open, run, close; return the summary."""
    from newsletter import store
    from newsletter.settings import secret_key

    conn = store.open_database(settings)
    try:
        source = open_source(settings, environ=environ)
        try:
            return run(conn, settings, secret_key(settings, environ), source, now)
        finally:
            source.close()
    finally:
        conn.close()


__all__ = ["Summary", "open_source", "read_mailbox", "run"]
