"""PostgreSQL as the shared database: the schema and its version, writers on several connections and
processes taking turns, faults named by host, and `db copy` moving a SQLite list with its history.

The rest of the suite runs on PostgreSQL too (NEWSLETTER_TEST_DATABASE=postgresql, `make test`);
these tests are about what only PostgreSQL has."""

from __future__ import annotations

import contextlib
import shutil
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter import postgres, store, subscribers
from newsletter.delivery import ledger
from newsletter.cli import app
from newsletter.errors import NewsletterError, StoreError
from newsletter.settings import DATABASE_URL_ENV
from list_helpers import change_at_once
from pg_server import sqlite_connect
from sent_project import make_sent_project

pytestmark = pytest.mark.postgres_only


@pytest.fixture
def url(database_backend) -> str:
    return database_backend


@pytest.fixture
def pg(url):
    with contextlib.closing(store.connect_url(url)) as conn:
        yield conn


def test_a_new_database_gets_the_whole_schema_and_its_version(pg):
    assert postgres.schema_version(pg) == len(store.MIGRATIONS)
    tables = {row[0] for row in pg.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
    assert {"subscribers", "issues", "deliveries", "subscriber_events", "outgoing_mail"} <= tables
    # SQLite's types, said in PostgreSQL's words
    kinds = dict(pg.execute("SELECT column_name, data_type FROM information_schema.columns"
                            " WHERE table_name = 'outgoing_mail'").fetchall())
    assert kinds["raw"] == "bytea" and kinds["id"] == "bigint"


def _delivery(pg, subscriber_id: int, state: str) -> None:
    pg.execute("INSERT INTO deliveries (issue_day, subscriber_id, state, message_id, email, updated_at)"
               " VALUES ('2026-03-02', ?, ?, ?, 'a@example.org', 't')", (subscriber_id, state, f"<{subscriber_id}@x>"))


def test_the_ledger_holds_only_its_states_and_a_list_from_before_keeps_its_rows(url, pg):
    labels = [row[0] for row in pg.execute(
        "SELECT enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid"
        " WHERE t.typname = 'delivery_state' ORDER BY e.enumsortorder")]
    assert labels == list(ledger.STATES)  # an enum in place of SQLite's CHECK (postgres.OWN_MIGRATIONS)
    with store.write(pg):
        pg.execute("INSERT INTO issues (day, number, status, subject, html, text, sha256, created_at, updated_at)"
                   " VALUES ('2026-03-02', 1, 'sending', 's', 'h', 't', 'x', 't', 't')")
        _delivery(pg, 1, "pending")
    with pytest.raises(StoreError, match="delivery_state"), store.write(pg, batched=True):
        _delivery(pg, 2, "data_sent")
        pg.execute("UPDATE deliveries SET state = ? WHERE subscriber_id = 1", ("half_sent",))
    assert [tuple(row) for row in pg.execute("SELECT subscriber_id, state FROM deliveries")] == [(1, "pending")]

    # a database made before migration 13: its text column and CHECK become the enum, rows kept
    with store.write(pg):
        pg.execute("ALTER TABLE deliveries ALTER COLUMN state TYPE TEXT")
        pg.execute("DROP TYPE delivery_state")
        pg.execute("ALTER TABLE deliveries ADD CONSTRAINT deliveries_state_check CHECK (state IN ('pending', 'sent'))")
        pg.execute(f"DELETE FROM {postgres.SCHEMA_TABLE} WHERE version = 13")
        _delivery(pg, 3, "sent")
    postgres.close_pools()  # the next connection of this process migrates
    with contextlib.closing(store.connect_url(url)) as again:
        assert postgres.schema_version(again) == len(store.MIGRATIONS)
        assert [tuple(row) for row in again.execute(
            "SELECT subscriber_id, state, pg_typeof(state)::text FROM deliveries ORDER BY subscriber_id")] == [
            (1, "pending", "delivery_state"), (3, "sent", "delivery_state")]


def test_a_database_newer_than_the_code_is_a_clear_error_naming_the_host(url, pg):
    pg.execute(f"INSERT INTO {postgres.SCHEMA_TABLE} (version) VALUES (?)", (len(store.MIGRATIONS) + 1,))
    postgres.close_pools()  # the next connection of this process checks the version again
    with pytest.raises(NewsletterError, match=rf"^{postgres.shown(url)}: database schema version \d+ is newer"):
        store.connect_url(url)


def test_rows_are_read_by_name_and_position_and_blobs_come_back_as_bytes(pg):
    with store.write(pg):
        pg.execute("INSERT INTO outgoing_mail (email, requested_at, raw, next_attempt_at) VALUES (?, ?, ?, ?)",
                   ("a@example.org", "t", b"\x00\xffbytes", "t"))
    row = pg.execute("SELECT id, raw FROM outgoing_mail WHERE email LIKE ?", ("A@%",)).fetchone()
    assert row["raw"] == row[1] == b"\x00\xffbytes" and row["id"] == 1
    assert dict(row) == {"id": 1, "raw": b"\x00\xffbytes"}


def test_write_commits_on_success_and_rolls_back_on_error(pg):
    subscribers.add(pg, "kept@example.com")
    with pytest.raises(RuntimeError):
        with store.write(pg):
            pg.execute("UPDATE subscribers SET name = 'changed'")
            raise RuntimeError("stop")
    assert subscribers.get(pg, "kept@example.com").name == ""


def test_a_write_interrupted_mid_command_records_nothing_and_the_connection_works_again(pg):
    """A Ctrl-C between sending a command and reading its result (where psycopg cannot cancel it)
    left the session mid-command: every later statement on the connection failed ("another command
    is already in progress"). Its transaction is dropped, and the next write goes through."""
    subscribers.add(pg, "kept@example.com")
    with pytest.raises(KeyboardInterrupt):
        with store.write(pg):
            pg.execute("UPDATE subscribers SET name = 'changed'")
            pg.raw.pgconn.send_query(b"SELECT pg_sleep(0.05)")  # sent; its result is never read
            raise KeyboardInterrupt
    assert subscribers.get(pg, "kept@example.com").name == ""
    subscribers.add(pg, "next@example.com")
    assert subscribers.get(pg, "next@example.com") is not None


def test_rows_copied_in_a_write_are_stored_as_given_and_roll_back_with_it(pg):
    columns = ("email", "requested_at", "raw", "attempts", "next_attempt_at")
    rows = [("tab\there@example.org", "t", b"\x00\\N\n", 0, "line\nbreak \\N %s ?"), ("b@example.org", "t", None, 3, "")]
    with store.write(pg):
        store.insert_rows(pg, "outgoing_mail", columns, rows)
    assert [tuple(row) for row in pg.execute(f"SELECT {', '.join(columns)} FROM outgoing_mail ORDER BY id")] == rows

    with pytest.raises(StoreError, match="null value"), store.write(pg):
        store.insert_rows(pg, "outgoing_mail", columns, [("c@example.org", "t", None, 0, "")])
        store.insert_rows(pg, "outgoing_mail", columns, [("d@example.org", None, None, 0, "")])
    assert pg.execute("SELECT count(*) FROM outgoing_mail").fetchone()[0] == 2


def test_writers_take_turns_like_sqlite_begin_immediate(url):
    """A second writer waits for the first at its start, on another connection or host."""
    first, second = store.connect_url(url), store.connect_url(url)
    holding, second_in = threading.Event(), threading.Event()
    order: list[str] = []

    def other() -> None:
        holding.wait(10)
        with store.write(second):
            second_in.set()
            order.append("second")

    thread = threading.Thread(target=other)
    thread.start()
    with store.write(first):
        holding.set()
        # the other writer is blocked on the lock while this one holds it
        assert not second_in.wait(0.5)
        order.append("first")
    thread.join(10)
    assert order == ["first", "second"]
    first.close()
    second.close()


def test_a_connection_lost_in_a_write_is_an_error_naming_the_host_and_records_nothing(url, pg):
    subscribers.add(pg, "ann@example.com")
    with pytest.raises(StoreError) as err:
        with store.write(pg):
            pg.execute("UPDATE subscribers SET name = 'lost'")
            pg.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    assert str(err.value).startswith(f"{postgres.shown(url)}: cannot write the subscriber database: ")
    assert str(err.value).endswith("nothing of this change was recorded")
    with contextlib.closing(store.connect_url(url)) as again:  # the pool replaces the dead connection
        assert subscribers.get(again, "ann@example.com").name == ""


def test_an_unreachable_server_is_one_error_line_naming_it(project, runner, monkeypatch):
    monkeypatch.setenv(DATABASE_URL_ENV, "postgresql://news:secret@127.0.0.1:1/news")
    result = runner.invoke(app, ["--project", str(project), "subscribers", "count"])
    assert result.exit_code == 1
    assert result.output.startswith(
        "Error: postgresql://news@127.0.0.1:1/news: cannot open the subscriber database: ")
    assert "secret" not in result.output



def test_three_processes_change_the_list_at_once_without_losing_updates(url, pg, tmp_path):
    subscribers.add(pg, "shared@example.com")
    prefixes = ("a", "b", "c")
    change_at_once(url, prefixes, 40, tmp_path)
    for prefix in prefixes:
        for i in range(40):
            person = subscribers.get(pg, f"{prefix}{i}@example.com")
            assert person.status == ("unsubscribed" if i % 3 == 0 else "active"), person
    assert subscribers.count_by_status(pg)["active"] == 1 + 3 * (40 - 14) + 3 * 4 * 25
    assert subscribers.get(pg, "shared@example.com").status == "active"


# ----------------------------------------------------------------------------- db copy


@pytest.fixture(scope="module")
def sqlite_project(tmp_path_factory) -> Path:
    """A project on SQLite with two sent issues (made before the test's PostgreSQL URL is set)."""
    return make_sent_project(tmp_path_factory.mktemp("copy") / "project", days=("2026-11-25", "2026-11-26"))


@pytest.fixture
def on_sqlite(monkeypatch):
    """Run the CLI on the project's SQLite file (the PostgreSQL pass sends every project to PostgreSQL)."""
    monkeypatch.delenv(DATABASE_URL_ENV)
    monkeypatch.setattr(store, "connect", sqlite_connect)


def _outputs(runner: CliRunner, project: Path, *commands: list[str]) -> list[str]:
    outputs = []
    for command in commands:
        result = runner.invoke(app, ["--project", str(project), *command])
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    return outputs


def test_db_copy_moves_the_list_with_its_history_and_checks_the_counts(sqlite_project, url, runner, monkeypatch,
                                                                      on_sqlite):
    looks = (["subscribers", "count"], ["status", "--date", "2026-11-26"], ["subscribers", "list", "--format", "csv"],
             ["subscribers", "show", "mara.ilves@example.org"])
    before = _outputs(runner, sqlite_project, *looks)
    result = runner.invoke(app, ["--project", str(sqlite_project), "db", "copy", "--to", url])
    assert result.exit_code == 0, result.output
    assert "the counts match" in result.output
    assert "deliveries" in result.output and "subscriber_events" in result.output
    monkeypatch.setenv(DATABASE_URL_ENV, url)
    assert _outputs(runner, sqlite_project, *looks) == before
    # new rows get new ids after the copied ones
    added = runner.invoke(app, ["--project", str(sqlite_project), "subscribers", "add", "new@example.org"])
    assert added.exit_code == 0, added.output


def test_db_copy_into_a_database_that_holds_a_list_refuses_and_changes_nothing(sqlite_project, url, pg, runner,
                                                                               on_sqlite):
    subscribers.add(pg, "already@example.org")
    result = runner.invoke(app, ["--project", str(sqlite_project), "db", "copy", "--to", url])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {postgres.shown(url)}: table subscribers already holds 1 rows; "
                                    "copy only into an empty database")
    assert subscribers.count_by_status(pg)["active"] == 1
    assert pg.execute("SELECT count(*) FROM issues").fetchone()[0] == 0


def test_db_copy_back_from_postgresql_to_a_sqlite_file_keeps_the_list_and_says_where_it_goes(
        sqlite_project, url, runner, monkeypatch, on_sqlite, tmp_path):
    looks = (["status", "--date", "2026-11-26"], ["subscribers", "list", "--format", "csv"])
    before = _outputs(runner, sqlite_project, *looks)
    assert runner.invoke(app, ["--project", str(sqlite_project), "db", "copy", "--to", url]).exit_code == 0
    monkeypatch.setenv(DATABASE_URL_ENV, url)
    back = tmp_path / "back.db"
    result = runner.invoke(app, ["--project", str(sqlite_project), "db", "copy", "--to", str(back)])
    assert result.exit_code == 0, result.output
    assert result.output.endswith(f"Next: to use it, put it at {sqlite_project / 'subscribers' / 'newsletter.db'} "
                                  f"and leave [database] url empty (and {DATABASE_URL_ENV} unset).\n")
    # the ledger's states come back as the text SQLite's CHECK takes (PostgreSQL holds them as an enum)
    moved = tmp_path / "moved"
    shutil.copytree(sqlite_project, moved, ignore=shutil.ignore_patterns("newsletter.db*"))  # the old list's WAL too
    shutil.copy(back, moved / "subscribers" / "newsletter.db")
    monkeypatch.delenv(DATABASE_URL_ENV)
    assert _outputs(runner, moved, *looks) == before


def test_db_copy_onto_the_database_the_list_is_in_refuses(sqlite_project, url, pg, runner, monkeypatch, on_sqlite):
    database = sqlite_project / "subscribers" / "newsletter.db"
    before = database.read_bytes()
    result = runner.invoke(app, ["--project", str(sqlite_project), "db", "copy", "--to", str(database)])
    assert result.exit_code == 1
    assert result.output == f"Error: --to: {database} is the database this list is in already; name another, empty one\n"
    assert database.read_bytes() == before
    monkeypatch.setenv(DATABASE_URL_ENV, url)  # the list on PostgreSQL, its database named again
    result = runner.invoke(app, ["--project", str(sqlite_project), "db", "copy", "--to", url])
    assert result.exit_code == 1 and "is the database this list is in already" in result.output
    assert pg.execute("SELECT count(*) FROM subscribers").fetchone()[0] == 0


def test_db_copy_refuses_a_password_on_the_command_line(sqlite_project, runner, on_sqlite):
    result = runner.invoke(app, ["--project", str(sqlite_project), "db", "copy", "--to",
                                 "postgresql://news:secret@db.example.org/news"])
    assert result.exit_code == 1
    assert result.output == "Error: --to: put the password in NEWSLETTER_DATABASE_PASSWORD, not on the command line\n"
