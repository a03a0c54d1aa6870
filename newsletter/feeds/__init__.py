"""Articles from feeds: `newsletter fetch` turns the [[feeds]] entries of a day into article files.

Each new entry published since the previous issue's slot becomes `articles/DAY/SLUG.md`, an
ordinary article file editors change or delete before the send. An entry is taken once (by its
id, or its link in any feed); a file is rewritten only while it is exactly as written (its hash)
and its issue has not started, so an editor's change or deletion stands. A feed's fault is a
warning naming it; the other feeds and the day's build go on.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from newsletter import files, store
from newsletter.errors import FeedError
from newsletter.feeds import http, state
from newsletter.feeds.articles import LeftOut, draft_article
from newsletter.feeds.parse import Entry, ParsedFeed, parse_feed
from newsletter.settings import FeedSettings, Settings, feed_file

logger = logging.getLogger(__name__)

FETCH_LOCK_NAME = "fetch.lock"  # beside the database, like the send and scheduler locks
LOOKAHEAD = timedelta(days=2)  # an entry dated further ahead is a wrong clock, not a reason to skip 304s
PARSE_FACTOR, PARSE_EXTRA = 4, 20  # entries parsed per fetch: max_items * 4 + 20, the first in the document


@dataclass
class FeedResult:
    """What one feed gave for a day."""

    url: str
    name: str
    written: list[Path] = field(default_factory=list)
    updated: list[Path] = field(default_factory=list)
    not_modified: bool = False
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FetchReport:
    day: date
    results: tuple[FeedResult, ...]
    started: str = ""  # set: DAY's issue was already sending, paused or done, and nothing was fetched

    @property
    def written(self) -> list[Path]:
        return [path for result in self.results for path in result.written]

    @property
    def warnings(self) -> list[str]:
        return [warning for result in self.results for warning in result.warnings]


def fetch_feeds(settings: Settings, conn: sqlite3.Connection, day: date, *,
                feeds: tuple[FeedSettings, ...] | None = None, local: dict[str, Path] | None = None) -> FetchReport:
    """Fetch FEEDS (default: every [[feeds]] table) and write DAY's new entries as article files.

    LOCAL maps a feed URL to a file read instead (`fetch --file`). Nothing is fetched for an issue
    that has started (the report's `started` says so). Raises LockedError when another fetch
    runs; every feed's own fault is a warning in the report, and the other feeds go on.
    """
    from newsletter.delivery.lock import held_lock

    started = state.issue_started(conn, day)
    if started:  # its articles are frozen: an entry taken now would never go out, and be remembered
        return FetchReport(day, (), started=started)
    busy = "another `newsletter fetch` (or the scheduler's) is running for this project (pid {pid}); try again"
    with held_lock(settings.database_path.parent / FETCH_LOCK_NAME, busy):
        results = [_fetch_logged(settings, conn, day, feed, (local or {}).get(feed.url))
                   for feed in (settings.feeds if feeds is None else feeds)]
    return FetchReport(day, tuple(results))


def _fetch_logged(settings: Settings, conn: sqlite3.Connection, day: date, feed: FeedSettings,
                  local: Path | None) -> FeedResult:
    """Fetch one feed; turn its fault into a warning, log and record its warnings for `check`."""
    result = FeedResult(feed.url, feed.name or feed.url)
    try:
        _fetch_one(settings, conn, day, feed, result, local)
    except FeedError as err:
        result.warnings.append(f"feed {result.name!r} ({feed.url}): {err}")
    except OSError as err:  # the articles folder cannot be written: say which file
        where = files.display(err.filename, settings.root) if err.filename else "articles"
        result.warnings.append(f"feed {result.name!r} ({feed.url}): {where}: {err.strerror or err}")
    for warning in result.warnings:
        logger.warning("%s", warning)
    with store.write(conn):
        state.record_warnings(conn, day, feed.url, result.warnings)
    return result


def _fetch_one(settings: Settings, conn: sqlite3.Connection, day: date, feed: FeedSettings,
               result: FeedResult, local: Path | None) -> None:
    if local is not None or feed.url.lower().startswith("file:"):
        path = local or feed_file(settings.root, feed.url)
        fetched = http.Fetched(feed.url, _read_file(path, feed.max_bytes), http.Validators())
    else:
        agent = http.user_agent(settings.newsletter.base_url)
        fetched = http.fetch(feed.url, state.validators(conn, feed.url), timeout=feed.timeout,
                             max_bytes=feed.max_bytes, agent=agent)
    if fetched.body is None:
        result.not_modified = True
        return
    parsed = parse_feed(fetched.body, feed.max_items * PARSE_FACTOR + PARSE_EXTRA)
    result.name = feed.name or parsed.title or urlsplit(fetched.url).hostname or feed.url
    due, later = _due_entries(parsed, day, settings)
    base = parsed.link or fetched.url
    for entry in due:
        if len(result.written) >= feed.max_items:
            break
        _take(settings, conn, day, feed, entry, base, result)
    with store.write(conn):
        # an entry left for a later day must be seen again: no validators, so the next GET is not a 304
        state.save_validators(conn, feed.url, http.Validators() if later else fetched.validators)


def _read_file(path: Path, max_bytes: int) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as err:
        raise FeedError(f"{path}: cannot be read: {err.strerror or err}") from None
    if len(data) > max_bytes:
        raise FeedError(f"{path}: is over max_bytes = {max_bytes:,} bytes")
    return data


def entry_day(published: datetime | None, day: date, settings: Settings) -> date:
    """Return the day of the first issue after PUBLISHED (its slot in the newsletter's zone); undated: DAY."""
    from newsletter.schedule import slot_on

    if published is None:
        return day
    local = published.astimezone(settings.tz).date()
    return local if slot_on(local, settings).at > published else local + timedelta(days=1)


def _due_entries(parsed: ParsedFeed, day: date, settings: Settings) -> tuple[list[Entry], bool]:
    """Return DAY's entries, newest first, and whether any belongs to a later issue."""
    days = [(entry_day(entry.published, day, settings), entry) for entry in parsed.entries]
    due = [entry for when, entry in days if when == day]
    due.sort(key=lambda e: e.published.timestamp() if e.published else float("inf"), reverse=True)
    return due, any(day < when <= day + LOOKAHEAD for when, _ in days)


def _take(settings: Settings, conn: sqlite3.Connection, day: date, feed: FeedSettings, entry: Entry,
          base: str, result: FeedResult) -> None:
    """Write ENTRY as an article file unless it was taken before (then refresh an untouched file)."""
    label = f"feed {result.name!r} ({feed.url}): entry {entry.title[:80] or entry.key!r}"
    try:
        draft = draft_article(entry, feed, result.name, base, day, settings)
    except LeftOut as why:
        result.warnings.append(f"{label}: left out: {why}")
        return
    link = urljoin(base, entry.link) if entry.link else ""
    data = draft.text.encode("utf-8")
    before = state.taken(conn, feed.url, entry.key, link)
    if before is not None:
        if _refresh(settings, conn, day, before, data):
            _remember(conn, feed, entry, link, before.day, before.path, data)
            result.updated.append(settings.articles_dir / before.path)
        return
    relative = _free_name(settings, conn, day, draft.slug, data)
    target = settings.articles_dir / relative
    if not target.exists():
        files.write_atomic(settings.articles_dir, relative, data, public=True)
    _remember(conn, feed, entry, link, day, relative, data)
    result.written.append(target)
    if draft.notes:
        listed = ", ".join(draft.notes[:3]) + (f" and {len(draft.notes) - 3} more" if len(draft.notes) > 3 else "")
        result.warnings.append(f"{label}: http: link(s) dropped, their text kept: {listed} (articles link only "
                               "to https:; set upgrade_http = true in its [[feeds]] table to make them https:)")


def _remember(conn: sqlite3.Connection, feed: FeedSettings, entry: Entry, link: str, day: date,
              relative: str, data: bytes) -> None:
    with store.write(conn):
        state.remember(conn, feed.url, entry.key, link, day, relative, state.sha256(data))


def _refresh(settings: Settings, conn: sqlite3.Connection, day: date, before: state.Taken, data: bytes) -> bool:
    """Rewrite a taken entry's file with DATA if it is as written, for this unsent day; True if rewritten."""
    target = settings.articles_dir / before.path
    if before.day != day or not target.is_file():
        return False  # another day's issue, or deleted by an editor: never recreated
    current = target.read_bytes()
    if state.sha256(current) != before.sha256 or current == data:
        return False  # changed by an editor (theirs now), or nothing new
    files.write_atomic(settings.articles_dir, before.path, data, public=True)
    return True


def _free_name(settings: Settings, conn: sqlite3.Connection, day: date, slug: str, data: bytes) -> str:
    """Return DAY/SLUG.md, or SLUG-2.md and so on past names in use; a file already holding DATA is reused
    (written by a fetch that stopped before it was recorded)."""
    used = state.paths_taken(conn, day)
    for number in range(1, 1000):
        relative = f"{day.isoformat()}/{slug}{'' if number == 1 else f'-{number}'}.md"
        target = settings.articles_dir / relative
        if relative in used:
            continue
        if not target.exists() or (target.is_file() and state.sha256(target.read_bytes()) == state.sha256(data)):
            return relative
    raise FeedError(f"articles/{day.isoformat()}: no free file name for {slug!r}")


__all__ = ["FeedResult", "FetchReport", "entry_day", "fetch_feeds"]
