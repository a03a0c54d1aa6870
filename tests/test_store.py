"""The SQLite store: connection settings, migrations, and one-transaction writes."""

from __future__ import annotations

import sqlite3

import pytest

from newsletter import store
from newsletter.errors import NewsletterError, StoreError


def tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_connect_creates_the_folder_and_a_current_schema(tmp_path):
    conn = store.connect(tmp_path / "new" / "folder" / "newsletter.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(store.MIGRATIONS)
    assert {"subscribers", "issues", "deliveries"} <= tables(conn)
    conn.close()


def test_connect_sets_wal_full_sync_and_a_busy_timeout(tmp_path):
    conn = store.connect(tmp_path / "newsletter.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == store.BUSY_TIMEOUT_MS
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    conn.close()


def test_a_version_0_database_is_migrated(tmp_path):
    path = tmp_path / "newsletter.db"
    sqlite3.connect(path).close()  # an empty file at user_version 0
    conn = store.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(store.MIGRATIONS)
    assert {"subscribers", "issues", "deliveries"} <= tables(conn)
    conn.close()


def test_a_version_1_database_is_migrated_and_keeps_its_subscribers(tmp_path):
    path = tmp_path / "newsletter.db"
    old = sqlite3.connect(path)
    old.executescript(store.MIGRATIONS[0])
    old.execute(
        "INSERT INTO subscribers (email, email_key, name, status, created_at, updated_at)"
        " VALUES ('ada@example.com', 'ada@example.com', 'Ada', 'active', 't', 't')"
    )
    old.execute("PRAGMA user_version = 1")
    old.commit()
    old.close()
    conn = store.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(store.MIGRATIONS)
    assert "deliveries" in tables(conn)
    assert [tuple(r) for r in conn.execute("SELECT email, name FROM subscribers")] == [("ada@example.com", "Ada")]
    conn.close()


def test_connecting_again_changes_nothing(tmp_path):
    path = tmp_path / "newsletter.db"
    store.connect(path).close()
    conn = store.connect(path)
    assert store.migrate(conn) == len(store.MIGRATIONS)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(store.MIGRATIONS)
    conn.close()


def test_a_database_newer_than_the_code_is_a_clear_error(tmp_path):
    path = tmp_path / "newsletter.db"
    future = sqlite3.connect(path)
    future.execute("PRAGMA user_version = 99")
    future.close()
    with pytest.raises(NewsletterError) as caught:
        store.connect(path)
    assert str(caught.value) == (
        f"{path}: database schema version 99 is newer than this tool knows "
        f"({len(store.MIGRATIONS)}); upgrade newsletter"
    )


def test_a_file_that_is_not_a_database_is_named(tmp_path):
    path = tmp_path / "newsletter.db"
    path.write_bytes(b"this is not sqlite, just some text that happens to be long enough" * 20)
    with pytest.raises(NewsletterError, match=f"^{path}: cannot open the subscriber database: "):
        store.connect(path)


def test_write_commits_on_success_and_rolls_back_on_error(tmp_path):
    conn = store.connect(tmp_path / "newsletter.db")
    insert = (
        "INSERT INTO subscribers (email, email_key, status, created_at, updated_at)"
        " VALUES (?, ?, 'active', 't', 't')"
    )
    with store.write(conn):
        conn.execute(insert, ("kept@example.com", "kept@example.com"))
    with pytest.raises(RuntimeError):
        with store.write(conn):
            conn.execute(insert, ("lost@example.com", "lost@example.com"))
            raise RuntimeError("stop")
    assert [r[0] for r in conn.execute("SELECT email FROM subscribers")] == ["kept@example.com"]
    assert not conn.in_transaction
    conn.close()


def test_write_takes_the_write_lock_at_begin(tmp_path):
    path = tmp_path / "newsletter.db"
    holder = store.connect(path)
    other = store.connect(path)
    other.execute("PRAGMA busy_timeout = 0")
    with store.write(holder):
        # BEGIN IMMEDIATE: a second writer is refused at BEGIN, not half-way through its changes
        with pytest.raises(StoreError, match=f"^{path}: cannot write the subscriber database: database is locked"):
            with store.write(other):
                pass
        # readers are not blocked (WAL)
        assert other.execute("SELECT count(*) FROM subscribers").fetchone()[0] == 0
    with store.write(other):
        pass
    holder.close()
    other.close()


def test_backup_copies_the_live_database(tmp_path):
    conn = store.connect(tmp_path / "newsletter.db")
    with store.write(conn):
        conn.execute(
            "INSERT INTO subscribers (email, email_key, status, created_at, updated_at)"
            " VALUES ('ada@example.com', 'ada@example.com', 'active', 't', 't')"
        )
    store.backup(conn, tmp_path / "copy.db")
    copy = sqlite3.connect(tmp_path / "copy.db")
    assert copy.execute("SELECT email FROM subscribers").fetchall() == [("ada@example.com",)]
    assert copy.execute("PRAGMA user_version").fetchone()[0] == len(store.MIGRATIONS)
    copy.close()
    conn.close()


def test_now_iso_is_utc_with_seconds():
    stamp = store.now_iso()
    assert stamp.endswith("+00:00") and len(stamp) == len("2026-11-26T06:00:00+00:00")


def test_the_code_opens_the_projects_database_only_through_open_database():
    """`store.open_database(settings)` picks SQLite or PostgreSQL ([database] url); a direct connect to
    the SQLite file would leave a project on PostgreSQL reading an empty file."""
    import re
    from pathlib import Path

    import newsletter

    direct = re.compile(r"(store|store_module)\.connect\([^)]*database_path|sqlite3\.connect\(")
    found = [f"{path.name}:{number}" for path in Path(newsletter.__file__).parent.rglob("*.py")
             if path.name not in ("store.py", "reputation.py", "settings.py")  # their SQLite-only read paths
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if direct.search(line)]
    assert found == []
