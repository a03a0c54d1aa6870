"""A week's digest in the ledger: each variant is an issue row keyed `2026-W48.N` (weeks.DigestKey)
with one `pending` row per reader, all frozen in one transaction, so a reader is in one variant of
a week at most and a killed send resumes with the same variants, readers and bytes.

From there a variant is an issue like any other: `send.send_issue` recovers, claims, delivers and
records it through the same transports.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable

from newsletter import store
from newsletter.delivery import ledger
from newsletter.errors import NewsletterError
from newsletter.models import Issue, RenderedIssue
from newsletter.settings import Settings
from newsletter.weeks import DigestKey, IsoWeek, ledger_key


def frozen_keys(conn: sqlite3.Connection, week: IsoWeek) -> list[DigestKey]:
    """Return the keys of WEEK's frozen variants, in variant order (none: its digest has not started)."""
    rows = conn.execute("SELECT day FROM issues WHERE day LIKE ?", (week.like(),)).fetchall()
    keys = [ledger_key(row[0]) for row in rows]
    return sorted((k for k in keys if isinstance(k, DigestKey)), key=lambda k: k.variant)


def freeze_week(
    conn: sqlite3.Connection, settings: Settings, week: IsoWeek,
    variants: Iterable[tuple[RenderedIssue, str, tuple[int, ...]]], *, now: str,
) -> bool:
    """Store WEEK's variants (rendered, their JSON, their readers) and a pending row per active reader.

    One transaction, and only when no variant of WEEK is frozen yet (another run may have frozen it
    meanwhile): returns whether this call froze it.
    """
    from newsletter import messages

    with store.write(conn):
        if conn.execute("SELECT 1 FROM issues WHERE day LIKE ? LIMIT 1", (week.like(),)).fetchone():
            return False
        for rendered, described, readers in variants:
            key = rendered.issue.day
            text = key.isoformat()
            conn.execute(
                "INSERT INTO issues (day, number, status, subject, html, text, sha256, created_at, updated_at, started)"
                " VALUES (?, 0, 'sending', ?, ?, ?, ?, ?, ?, (SELECT coalesce(max(started), 0) + 1 FROM issues))",
                (text, rendered.issue.subject, rendered.html, rendered.text,
                 ledger.content_sha256(rendered.html, rendered.text), now, now))
            conn.execute("INSERT INTO issue_structures (day, structure) VALUES (?, ?)", (text, described))
            conn.executemany(
                "INSERT INTO deliveries (issue_day, subscriber_id, state, attempts, message_id, email, updated_at)"
                " SELECT ?, id, 'pending', 0, ?, email, ? FROM subscribers WHERE id = ? AND status = 'active'",
                [(text, messages.message_id(key, sid, settings.sender_domain), now, sid) for sid in readers])
    return True


def frozen_variant(conn: sqlite3.Connection, settings: Settings, key: DigestKey) -> RenderedIssue:
    """Return the frozen variant KEY as the RenderedIssue its readers get (a resumed send sends the same)."""
    frozen = ledger.frozen_issue(conn, key)
    if frozen is None or not frozen.structure:
        raise NewsletterError(f"{settings.database_path}: the digest {key} is not in the ledger")
    try:
        preheader = json.loads(frozen.structure)["preheader"]
    except (ValueError, KeyError, TypeError) as err:
        raise NewsletterError(f"{settings.database_path}: the digest {key}'s description is damaged ({err!r})") from err
    issue = Issue(day=key, number=0, subject=frozen.subject, preheader=preheader, sections=(),
                  archive_url=settings.newsletter.base_url.rstrip("/") + "/")
    return RenderedIssue(issue, frozen.html, frozen.text)


__all__ = ["freeze_week", "frozen_keys", "frozen_variant"]
