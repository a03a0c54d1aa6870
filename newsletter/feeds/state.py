"""What fetching remembers between runs, in the project's database (migration 8): each feed's HTTP
validators, each entry taken (the file written and its SHA-256), each day's warnings."""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from datetime import date

from newsletter import store
from newsletter.feeds.http import Validators


@dataclass(frozen=True)
class Taken:
    """An entry already made into an article file."""

    day: date
    path: str  # relative to the articles folder
    sha256: str


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def validators(conn: sqlite3.Connection, url: str) -> Validators:
    row = conn.execute("SELECT etag, last_modified FROM feed_state WHERE url = ?", (url,)).fetchone()
    return Validators(row["etag"], row["last_modified"]) if row else Validators()


def save_validators(conn: sqlite3.Connection, url: str, kept: Validators) -> None:
    """Keep KEPT for URL's next conditional GET (inside the caller's transaction)."""
    conn.execute("DELETE FROM feed_state WHERE url = ?", (url,))
    conn.execute("INSERT INTO feed_state (url, etag, last_modified, fetched_at) VALUES (?, ?, ?, ?)",
                 (url, kept.etag, kept.last_modified, store.now_iso()))


def taken(conn: sqlite3.Connection, feed_url: str, key: str, link: str) -> Taken | None:
    """Return the entry KEY of FEED_URL if it was taken before, or any feed's entry with the same LINK."""
    row = conn.execute("SELECT day, path, sha256 FROM feed_entries WHERE feed_url = ? AND entry_key = ?",
                       (feed_url, key)).fetchone()
    if row is None and link:
        row = conn.execute("SELECT day, path, sha256 FROM feed_entries WHERE link = ? ORDER BY day LIMIT 1",
                           (link,)).fetchone()
    return Taken(date.fromisoformat(row["day"]), row["path"], row["sha256"]) if row else None


def remember(conn: sqlite3.Connection, feed_url: str, key: str, link: str, day: date, path: str, digest: str) -> None:
    """Record (or update) the file written for an entry."""
    conn.execute("DELETE FROM feed_entries WHERE feed_url = ? AND entry_key = ?", (feed_url, key))
    conn.execute("INSERT INTO feed_entries (feed_url, entry_key, link, day, path, sha256, created_at) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)", (feed_url, key, link, day.isoformat(), path, digest, store.now_iso()))


def paths_taken(conn: sqlite3.Connection, day: date) -> set[str]:
    """Return the file names written for DAY, deleted ones too (a name an editor deleted is not reused)."""
    return {row["path"] for row in conn.execute("SELECT path FROM feed_entries WHERE day = ?", (day.isoformat(),))}


def record_warnings(conn: sqlite3.Connection, day: date, feed_url: str, messages: list[str]) -> None:
    """Replace FEED_URL's warnings of DAY with MESSAGES (the latest fetch is what `check` shows)."""
    conn.execute("DELETE FROM feed_warnings WHERE day = ? AND feed_url = ?", (day.isoformat(), feed_url))
    for message in messages:
        conn.execute("INSERT INTO feed_warnings (day, feed_url, message) VALUES (?, ?, ?)",
                     (day.isoformat(), feed_url, message))


def warnings(conn: sqlite3.Connection, day: date) -> list[tuple[str, str]]:
    """Return DAY's (feed URL, message) warnings in the order they were recorded."""
    rows = conn.execute("SELECT feed_url, message FROM feed_warnings WHERE day = ? ORDER BY id", (day.isoformat(),))
    return [(row["feed_url"], row["message"]) for row in rows]


def issue_started(conn: sqlite3.Connection, day: date) -> str:
    """Return DAY's issue status if it was frozen for sending ('sending', 'paused', 'done'), else ''."""
    row = conn.execute("SELECT status FROM issues WHERE day = ?", (day.isoformat(),)).fetchone()
    return row["status"] if row else ""
