"""The database: the SQLite connection (WAL, synchronous=FULL, BEGIN IMMEDIATE), the schema and its
migrations; PostgreSQL (postgres.py) behind the same interface when `[database] url` names one."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import typing
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

from newsletter.errors import NewsletterError, StoreError
from newsletter.files import PRIVATE_FILE, private_dir

if typing.TYPE_CHECKING:
    from newsletter.settings import Settings

BUSY_TIMEOUT_MS = 30_000
FULL_BELOW_BYTES = 64 * 1024  # a write failed and less than this is free: say the disk is full

# Each entry moves the schema from version N to N+1; never edit one that has shipped, add another.
MIGRATIONS: tuple[str, ...] = (
    # 1: the subscriber list. `topics` was unused until migration 8 renamed it `sections`.
    """
    CREATE TABLE subscribers (
        id          INTEGER PRIMARY KEY,
        email       TEXT NOT NULL,
        email_key   TEXT NOT NULL UNIQUE,
        name        TEXT NOT NULL DEFAULT '',
        status      TEXT NOT NULL CHECK (status IN ('active', 'unsubscribed', 'bounced')),
        topics      TEXT NOT NULL DEFAULT '',
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    );
    CREATE INDEX subscribers_status ON subscribers (status, id);
    """,
    # 2: the delivery ledger (RELIABILITY.md)
    """
    CREATE TABLE issues (
        day         TEXT PRIMARY KEY,
        number      INTEGER NOT NULL,
        status      TEXT NOT NULL CHECK (status IN ('sending', 'paused', 'done')),
        subject     TEXT NOT NULL,
        html        TEXT NOT NULL,
        text        TEXT NOT NULL,
        sha256      TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    );
    CREATE TABLE deliveries (
        issue_day        TEXT NOT NULL REFERENCES issues (day),
        subscriber_id    INTEGER NOT NULL,
        state            TEXT NOT NULL CHECK (state IN (
                             'pending', 'claimed', 'data_sent', 'sent', 'retry',
                             'failed', 'in_doubt', 'skipped')),
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_at  TEXT,
        last_reply       TEXT NOT NULL DEFAULT '',
        message_id       TEXT NOT NULL UNIQUE,
        email            TEXT NOT NULL,
        sha256           TEXT NOT NULL DEFAULT '',
        updated_at       TEXT NOT NULL,
        PRIMARY KEY (issue_day, subscriber_id)
    );
    CREATE INDEX deliveries_state ON deliveries (issue_day, state);
    """,
    # 3: web sign-up: the `pending` status (SQLite cannot change a CHECK: rebuild the table, ids
    # kept), and the log of sign-up requests that bounds confirmation messages per address and IP
    """
    CREATE TABLE subscribers_v3 (
        id          INTEGER PRIMARY KEY,
        email       TEXT NOT NULL,
        email_key   TEXT NOT NULL UNIQUE,
        name        TEXT NOT NULL DEFAULT '',
        status      TEXT NOT NULL CHECK (status IN ('active', 'unsubscribed', 'bounced', 'pending')),
        topics      TEXT NOT NULL DEFAULT '',
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    );
    INSERT INTO subscribers_v3 (id, email, email_key, name, status, topics, created_at, updated_at)
        SELECT id, email, email_key, name, status, topics, created_at, updated_at FROM subscribers;
    DROP TABLE subscribers;
    ALTER TABLE subscribers_v3 RENAME TO subscribers;
    CREATE INDEX subscribers_status ON subscribers (status, id);
    CREATE TABLE signup_requests (
        id          INTEGER PRIMARY KEY,
        kind        TEXT NOT NULL CHECK (kind IN ('address', 'ip')),
        key         TEXT NOT NULL,
        at          TEXT NOT NULL
    );
    CREATE INDEX signup_requests_key ON signup_requests (kind, key, at);
    """,
    # 4: SMTP delivery: how many times a row's outcome was in doubt (a drop after the final "."; a
    # row retried after that may have reached its reader twice), and why a row failed (bounced,
    # rejected, expired)
    """
    ALTER TABLE deliveries ADD COLUMN doubted INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE deliveries ADD COLUMN reason TEXT NOT NULL DEFAULT ''
    """,
    # 5: the structured issue (structure.py's JSON: sections, articles, headlines, preheader) beside
    # the frozen HTML and text, so the archive and the feed need not read markup back; issues
    # frozen before this table existed have no row here
    """
    CREATE TABLE issue_structures (
        day        TEXT PRIMARY KEY REFERENCES issues (day) ON DELETE CASCADE,
        structure  TEXT NOT NULL
    )
    """,
    # 6: the web's outgoing mail, one row per sign-up request until its mail is sent (web/outgoing.py):
    # the request only adds a row, so its answer takes the same time whoever is on the list, and a
    # row survives a restart. `raw` is empty until the worker has decided what the request becomes.
    """
    CREATE TABLE outgoing_mail (
        id               INTEGER PRIMARY KEY,
        email            TEXT NOT NULL,
        requested_at     TEXT NOT NULL,
        recipient        TEXT NOT NULL DEFAULT '',
        raw              BLOB,
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_at  TEXT NOT NULL,
        last_error       TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX outgoing_mail_due ON outgoing_mail (next_attempt_at, id)
    """,
    # 7: what happened to each subscriber and why (events.py): sign-ups, confirmations, imports,
    # unsubscribes and the bounces and complaints that come back after a send. `dedupe_key` (the
    # report's Message-ID and VERP tag, or a webhook's event id) makes a report processed twice
    # change nothing; `status` is a DSN status code such as 5.1.1, `detail` its diagnostic text.
    """
    CREATE TABLE subscriber_events (
        id             INTEGER PRIMARY KEY,
        subscriber_id  INTEGER,
        at             TEXT NOT NULL,
        kind           TEXT NOT NULL,
        source         TEXT NOT NULL DEFAULT '',
        status         TEXT NOT NULL DEFAULT '',
        detail         TEXT NOT NULL DEFAULT '',
        issue_day      TEXT,
        dedupe_key     TEXT UNIQUE
    );
    CREATE INDEX subscriber_events_subscriber ON subscriber_events (subscriber_id, kind, at);
    CREATE INDEX subscriber_events_issue ON subscriber_events (issue_day, kind)
    """,
    # 8: what each reader chose (issue 14): `sections` (the old, never-used `topics`) holds their
    # section names one per line, sorted, '' meaning all; `frequency` is daily or weekly (the
    # digest); `preferences_at` says when they last changed either ('' never)
    """
    ALTER TABLE subscribers RENAME COLUMN topics TO sections;
    ALTER TABLE subscribers ADD COLUMN frequency TEXT NOT NULL DEFAULT 'daily'
        CHECK (frequency IN ('daily', 'weekly'));
    ALTER TABLE subscribers ADD COLUMN preferences_at TEXT NOT NULL DEFAULT ''
    """,
    # 9: articles from feeds (feeds/): each feed's HTTP validators for conditional GET; each entry
    # taken, by its id or link, with the file written and its SHA-256 (a file whose hash differs was
    # edited by someone, and is left alone); and each fetch's warnings for `newsletter check`
    """
    CREATE TABLE feed_state (
        url            TEXT PRIMARY KEY,
        etag           TEXT NOT NULL DEFAULT '',
        last_modified  TEXT NOT NULL DEFAULT '',
        fetched_at     TEXT NOT NULL
    );
    CREATE TABLE feed_entries (
        feed_url    TEXT NOT NULL,
        entry_key   TEXT NOT NULL,
        link        TEXT NOT NULL DEFAULT '',
        day         TEXT NOT NULL,
        path        TEXT NOT NULL,
        sha256      TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        PRIMARY KEY (feed_url, entry_key)
    );
    CREATE INDEX feed_entries_link ON feed_entries (link);
    CREATE TABLE feed_warnings (
        id        INTEGER PRIMARY KEY,
        day       TEXT NOT NULL,
        feed_url  TEXT NOT NULL,
        message   TEXT NOT NULL
    );
    CREATE INDEX feed_warnings_day ON feed_warnings (day, feed_url)
    """,
    # 10: variants of a day's issue (variants.py): readers who chose sections get only those. Each
    # distinct set with readers is frozen once per day here, beside the full issue (the `issues` row
    # is the variant ''); each delivery row names the variant it gets, and keeps it if its reader
    # changes sections while the issue is going out
    """
    CREATE TABLE issue_variants (
        day      TEXT NOT NULL REFERENCES issues (day) ON DELETE CASCADE,
        variant  TEXT NOT NULL,
        subject  TEXT NOT NULL,
        html     TEXT NOT NULL,
        text     TEXT NOT NULL,
        sha256   TEXT NOT NULL,
        PRIMARY KEY (day, variant)
    );
    ALTER TABLE deliveries ADD COLUMN variant TEXT NOT NULL DEFAULT ''
    """,
    # 11: what SQLite's rowid told, said in columns PostgreSQL has too: the ledger's claims read
    # pending rows in subscriber order (the index gives it, as it gave rowid order), and `started`
    # numbers the issues in the order they were frozen (an issue started later supersedes an older
    # day's; existing issues are numbered by when they were frozen)
    """
    DROP INDEX deliveries_state;
    CREATE INDEX deliveries_state ON deliveries (issue_day, state, subscriber_id);
    ALTER TABLE issues ADD COLUMN started INTEGER NOT NULL DEFAULT 0;
    UPDATE issues SET started = (SELECT count(*) FROM issues j
        WHERE j.created_at < issues.created_at OR (j.created_at = issues.created_at AND j.day <= issues.day))
    """,
    # 12: several senders on one database (PostgreSQL): who claimed a row (a number each `send` run
    # draws) and until when the claim is theirs without a word from them (README "Several hosts");
    # which `serve` is sending a queued mail (a number each server draws)
    """
    ALTER TABLE deliveries ADD COLUMN claimed_by TEXT NOT NULL DEFAULT '';
    ALTER TABLE deliveries ADD COLUMN lease_until TEXT NOT NULL DEFAULT '';
    ALTER TABLE outgoing_mail ADD COLUMN claimed_by TEXT NOT NULL DEFAULT ''
    """,
    # 13: PostgreSQL only (postgres.OWN_MIGRATIONS): the ledger's `state` becomes an enum type in
    # place of its CHECK. Nothing changes in SQLite, where the CHECK stays.
    "",
)


def now_iso() -> str:
    """Return the current UTC time as ISO 8601 with seconds, for created/updated columns."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def open_database(settings: Settings) -> typing.Any:
    """Open the project's database: PostgreSQL when `[database] url` names one, else the SQLite file."""
    url = settings.database_url()
    if url:
        return connect_url(url)
    return connect(settings.database_path)


def connect_url(url: str) -> typing.Any:
    """Open the PostgreSQL database at URL (password included), migrated to the latest schema."""
    from newsletter import postgres  # psycopg loads only for a project that uses it

    return postgres.connect(url, MIGRATIONS)


def where(settings: Settings) -> Path | str:
    """Return what errors name as the project's database: the SQLite file, or the URL without its password."""
    try:
        url = settings.database_url()
    except NewsletterError:
        url = ""
    if url:
        from newsletter.postgres import shown

        return shown(url)
    return settings.database_path


def is_postgres(conn: object) -> bool:
    """Tell whether CONN is a PostgreSQL connection."""
    return not isinstance(conn, sqlite3.Connection)


def errors(*others: type[Exception]) -> tuple[type[Exception], ...]:
    """Return the exception types a database call raises (psycopg's only once psycopg is loaded), and OTHERS."""
    if "psycopg" in sys.modules:
        return (sqlite3.Error, sys.modules["psycopg"].Error, *others)
    return (sqlite3.Error, *others)


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating on first use) the database at PATH, migrated to the latest schema."""
    try:
        _make_private(path)
        conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn)
    except StoreError:
        raise
    except NewsletterError as err:
        raise NewsletterError(f"{path}: {err}") from err
    except (sqlite3.DatabaseError, OSError) as err:
        raise StoreError(f"{path}: cannot open the subscriber database: {describe(path, err)}") from err
    return conn


def _make_private(path: Path) -> None:
    """Create the database file 0600 (SQLite gives its -wal and -shm files the same mode) in a 0700 folder."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE)
    except FileExistsError:
        pass
    else:
        os.fchmod(fd, PRIVATE_FILE)  # whatever the umask
        os.close(fd)
    for name in (str(path), f"{path}-wal", f"{path}-shm"):
        with contextlib.suppress(FileNotFoundError):
            mode = os.stat(name).st_mode
            if mode & 0o077:  # made by an older version, or under a loose umask
                with contextlib.suppress(OSError):  # a read-only file system: tightened next time
                    os.chmod(name, mode & 0o700)


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations this database has not seen yet; return the schema version."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise NewsletterError(
            f"database schema version {version} is newer than this tool knows ({len(MIGRATIONS)}); "
            "upgrade newsletter"
        )
    for number in range(version, len(MIGRATIONS)):
        with write(conn):
            # re-read inside the write lock: another process may have migrated meanwhile
            if conn.execute("PRAGMA user_version").fetchone()[0] != number:
                continue
            for statement in MIGRATIONS[number].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number + 1}")
    return len(MIGRATIONS)


def skip_locked(conn: object, table: str) -> str:
    """Return the clause that makes a SELECT lock the rows of TABLE it returns and pass over rows another
    transaction holds (PostgreSQL's FOR UPDATE SKIP LOCKED); "" on SQLite, where one writer runs at a time."""
    return f" FOR UPDATE OF {table} SKIP LOCKED" if is_postgres(conn) else ""


def insert_rows(conn: object, table: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Add ROWS (values in the order of COLUMNS) to TABLE inside the caller's transaction; a row that breaks a
    constraint fails the transaction. On PostgreSQL by COPY: an INSERT per row cost the server and this
    process about 0.06 ms each (a day's snapshot of 2,000 readers: 0.1-0.2 s, against 0.02 s on SQLite)."""
    if is_postgres(conn):
        conn.copy_rows(table, columns, rows)  # type: ignore[attr-defined]
        return
    conn.executemany(  # type: ignore[attr-defined]
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", rows)


@contextlib.contextmanager
def write(conn: sqlite3.Connection, *, rows_locked: bool = False,
          batched: bool = False) -> Iterator[sqlite3.Connection]:
    """Run the block in one BEGIN IMMEDIATE transaction: commit on success, roll back on any error.

    A database that cannot be written (full disk, read-only, corrupted) raises StoreError naming
    the file and the cause; the transaction is rolled back, so nothing of the block is recorded.
    On PostgreSQL the same, on every host at once (postgres.Connection.write); with ROWS_LOCKED the
    block locks the rows it changes itself (`skip_locked`), and does not wait for other writers.
    BATCHED (PostgreSQL; SQLite has no round trips to save): the block's statements are sent together,
    when a result is read and at COMMIT (postgres.Connection.write); every database error is a StoreError.
    """
    if is_postgres(conn):
        with conn.write(queued=not rows_locked, batched=batched):  # type: ignore[attr-defined]
            yield conn
        return
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as err:
        raise _store_error(conn, err) from err
    try:
        yield conn
    except BaseException as err:
        _rollback(conn)
        if type(err) in _STORAGE_ERRORS:
            raise _store_error(conn, err) from err  # type: ignore[arg-type]  # an exact type of sqlite3.Error
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as err:
        _rollback(conn)
        raise _store_error(conn, err) from err


# what a full disk, a read-only file and a corrupted file raise (IntegrityError and the like are
# about the data, and stay as they are for the caller)
_STORAGE_ERRORS = (sqlite3.OperationalError, sqlite3.DatabaseError)


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:  # SQLite may have rolled back on its own after an I/O error
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _store_error(conn: sqlite3.Connection, err: sqlite3.Error) -> StoreError:
    try:
        path = Path(conn.execute("PRAGMA database_list").fetchone()[2])
    except (sqlite3.Error, TypeError):
        path = Path("the subscriber database")
    return StoreError(f"{path}: cannot write the subscriber database: {describe(path, err)}; nothing of this "
                      "change was recorded")


def describe(path: Path, err: Exception) -> str:
    """Return ERR's text and, when the file system tells, the likely cause."""
    text = getattr(err, "strerror", None) or str(err)
    try:
        stats = os.statvfs(path.parent)
    except OSError:
        stats = None
    if stats is not None and stats.f_flag & os.ST_RDONLY:
        return f"{text} (the file system is read-only)"
    if any(words in text for words in ("I/O error", "disk is full", "File too large", "No space left")):
        if stats is not None and stats.f_bavail * stats.f_frsize < FULL_BELOW_BYTES:
            return f"{text} (the disk is full)"
        return f"{text} (is the disk full, or a file-size limit set?)"
    if "malformed" in text or "not a database" in text:
        return f"{text} (the file is damaged: restore it from a backup)"
    return text


def backup(conn: sqlite3.Connection, target: Path) -> None:
    """Copy the live database to TARGET with VACUUM INTO (never by copying the file)."""
    conn.execute("VACUUM INTO ?", (str(target),))
