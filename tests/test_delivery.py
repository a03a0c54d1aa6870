"""The delivery ledger and the outbox: exactly once, resumable, honest about what changed."""

from __future__ import annotations

import email
import email.policy
import json
import sqlite3
import threading
from dataclasses import replace
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter import store
from newsletter.cli import app
from newsletter.delivery import IssueChangedError, issue_status, send_lock
from factories import send_unchecked as send_issue
from newsletter.delivery import ledger
from newsletter.delivery.outbox import file_name
from newsletter.errors import LockedError
from newsletter.models import (
    GREETING_PLACEHOLDER, NAME_PLACEHOLDER, TOKEN_PLACEHOLDER,
)
from newsletter.settings import Settings, load_settings

from factories import DAY, make_rendered


# ----------------------------------------------------------------------------- helpers


def add_subscribers(conn: sqlite3.Connection, count: int, *, status: str = "active", start: int = 0) -> list[str]:
    now = store.now_iso()
    emails = [f"reader{n}@example.org" for n in range(start, start + count)]
    with store.write(conn):
        conn.executemany(
            "INSERT INTO subscribers (email, email_key, name, status, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(e, e, f"Reader {n}", status, now, now) for n, e in zip(range(start, start + count), emails)],
        )
    return emails


def set_subscriber_status(conn: sqlite3.Connection, address: str, status: str) -> None:
    with store.write(conn):
        conn.execute("UPDATE subscribers SET status = ? WHERE email = ?", (status, address))


def parsed_outbox(settings: Settings, day: date = DAY) -> dict[str, email.message.EmailMessage]:
    """Every .eml in the day's Maildir, parsed back, by its To address (asserting each To is unique)."""
    messages: dict[str, email.message.EmailMessage] = {}
    for path in sorted((settings.outbox_dir / day.isoformat() / "mail" / "new").iterdir()):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        to = message["To"].addresses[0].addr_spec
        assert to not in messages, f"{to} got two messages"
        messages[to] = message
    return messages


def body_text(message: email.message.EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()


def stop_after_first_batch() -> tuple[threading.Event, callable]:
    """A stop asked for once the first batch is recorded; the batch already staged is finished too."""
    stop = threading.Event()

    def progress(done: int, total: int) -> None:
        if done:
            stop.set()

    return stop, progress


@pytest.fixture
def settings(project: Path) -> Settings:
    loaded = load_settings(project)
    return loaded.replace("delivery", batch_size=2)


@pytest.fixture
def conn(settings: Settings) -> sqlite3.Connection:
    connection = store.connect(settings.database_path)
    yield connection
    connection.close()


def tmp_files(settings: Settings, day: date = DAY) -> list[Path]:
    return list((settings.outbox_dir / day.isoformat() / "mail" / "tmp").iterdir())


# ----------------------------------------------------------------------------- sending


@pytest.mark.parametrize("sync", ["auto", "fsync"])
def test_send_writes_one_parseable_message_per_active_subscriber(settings, conn, sync) -> None:
    active = add_subscribers(conn, 5)
    gone = add_subscribers(conn, 2, status="unsubscribed", start=100)

    report = send_issue(conn, settings, make_rendered(), sync=sync)

    messages = parsed_outbox(settings)
    assert sorted(messages) == sorted(active)
    assert not set(gone) & set(messages)
    for message in messages.values():
        assert message["Subject"] == "MDB November 26: Talks resume"
        assert message["Message-ID"]
        assert "The interceptor talks resumed." in body_text(message)
        assert GREETING_PLACEHOLDER not in message.as_string()
    assert report.written == 5 and report.status == "done" and not report.stopped
    assert report.outbox == settings.outbox_dir / "2026-11-26" / "mail" / "new"
    maildir = settings.outbox_dir / "2026-11-26" / "mail"
    assert all((maildir / d).is_dir() for d in ("tmp", "new", "cur"))
    assert tmp_files(settings) == []
    public = (settings.outbox_dir / "2026-11-26" / "issue.html").read_text()
    assert "The interceptor talks resumed." in public and TOKEN_PLACEHOLDER not in public
    assert NAME_PLACEHOLDER not in (settings.outbox_dir / "2026-11-26" / "issue.txt").read_text()
    assert issue_status(conn, DAY).counts["sent"] == 5


def test_a_done_issue_sent_again_writes_nobody_twice_and_adds_nobody(settings, conn) -> None:
    add_subscribers(conn, 3)
    send_issue(conn, settings, make_rendered())
    before = {p.name: p.read_bytes() for p in report_dir(settings).iterdir()}
    add_subscribers(conn, 2, start=50)

    again = send_issue(conn, settings, make_rendered())

    assert again.nothing_to_do and again.written == 0 and again.sent == 3
    assert {p.name: p.read_bytes() for p in report_dir(settings).iterdir()} == before
    assert issue_status(conn, DAY).total == 3


def test_subscriber_added_after_the_snapshot_gets_the_next_issue_not_this_one(settings, conn) -> None:
    first = add_subscribers(conn, 5)
    stop, progress = stop_after_first_batch()
    stopped = send_issue(conn, settings, make_rendered(), stop=stop, progress=progress)
    assert stopped.stopped and stopped.written == 4 and stopped.status == "sending"
    late = add_subscribers(conn, 1, start=99)

    send_issue(conn, settings, make_rendered())
    send_issue(conn, settings, make_rendered(DAY.replace(day=27)))

    assert sorted(parsed_outbox(settings)) == sorted(first)
    assert sorted(parsed_outbox(settings, DAY.replace(day=27))) == sorted(first + late)


def test_unsubscribing_between_snapshot_and_claim_is_honoured(settings, conn) -> None:
    active = add_subscribers(conn, 7)
    stop, progress = stop_after_first_batch()
    send_issue(conn, settings, make_rendered(), stop=stop, progress=progress)
    set_subscriber_status(conn, active[6], "unsubscribed")

    report = send_issue(conn, settings, make_rendered())

    assert sorted(parsed_outbox(settings)) == sorted(active[:6])
    assert report.skipped == 1 and report.written == 2 and report.status == "done"
    assert issue_status(conn, DAY).counts == {**{s: 0 for s in ledger.STATES}, "sent": 6, "skipped": 1}


def test_recording_with_a_claim_is_one_transaction_that_fails_whole(settings, conn) -> None:
    add_subscribers(conn, 6)
    frozen = ledger.freeze_and_snapshot(conn, DAY, number=1, subject="s", html="h", text="t",
                                        message_id=str, now=store.now_iso())
    first = ledger.claim_batch(conn, DAY, 2, sha256=frozen.sha256, now=store.now_iso()).rows
    before = issue_status(conn, DAY).counts
    bad = ledger.Outcome(first[1].subscriber.id, ledger.PENDING)  # no attempt ends in pending

    with pytest.raises(ValueError):
        ledger.record(conn, DAY, data_sent=[first[0].subscriber.id], outcomes=[bad], now=store.now_iso(),
                      claim=3, sha256=frozen.sha256)
    assert issue_status(conn, DAY).counts == before  # nothing recorded, nothing claimed

    claim = ledger.record(conn, DAY, data_sent=[first[0].subscriber.id], now=store.now_iso(), claim=3,
                          sha256=frozen.sha256)
    assert len(claim.rows) == 3 and issue_status(conn, DAY).counts == {
        **{s: 0 for s in ledger.STATES}, "pending": 1, "claimed": 4, "data_sent": 1}


def test_every_message_of_an_issue_carries_the_date_it_was_frozen_with(settings, conn) -> None:
    add_subscribers(conn, 6)
    stop, progress = stop_after_first_batch()
    send_issue(conn, settings, make_rendered(), stop=stop, progress=progress,
               now=datetime(2026, 11, 26, 5, 0, tzinfo=timezone.utc))
    send_issue(conn, settings, make_rendered(), now=datetime(2026, 11, 26, 9, 30, tzinfo=timezone.utc))

    dates = {m["Date"].datetime for m in parsed_outbox(settings).values()}
    assert dates == {datetime(2026, 11, 26, 5, 0, tzinfo=timezone.utc)}


def report_dir(settings: Settings, day: date = DAY) -> Path:
    return settings.outbox_dir / day.isoformat() / "mail" / "new"


# ----------------------------------------------------------------------------- recovery


def interrupted_batch(settings: Settings, conn: sqlite3.Connection) -> tuple[list[str], list[ledger.Claimed]]:
    """Leave the ledger as a send killed mid-batch would: some rows sent, the next batch claimed."""
    active = add_subscribers(conn, 9)
    stop, progress = stop_after_first_batch()
    send_issue(conn, settings, make_rendered(), stop=stop, progress=progress)  # 4 written
    frozen = ledger.frozen_issue(conn, DAY)
    claim = ledger.claim_batch(conn, DAY, 3, sha256=frozen.sha256, now=store.now_iso())
    return active, list(claim.rows)


def maildir_path(settings: Settings, folder: str, row: ledger.Claimed) -> Path:
    return settings.outbox_dir / DAY.isoformat() / "mail" / folder / file_name(row.subscriber.id, row.message_id)


def test_recovery_counts_a_claimed_row_whose_file_is_in_new_as_sent_and_does_not_rewrite_it(settings, conn) -> None:
    active, (written, *_) = interrupted_batch(settings, conn)
    marker = b"written by the killed run"
    maildir_path(settings, "new", written).write_bytes(marker)

    report = send_issue(conn, settings, make_rendered())

    assert maildir_path(settings, "new", written).read_bytes() == marker
    assert report.recovery.sent == 1 and report.recovery.released == 2
    assert report.written == 9 - 4 - 1  # all but the two batches before the stop and the recovered row
    files = list(report_dir(settings).iterdir())
    assert len(files) == 9
    assert issue_status(conn, DAY).counts["sent"] == 9


def test_recovery_removes_a_file_left_only_in_tmp_and_writes_that_row_again(settings, conn) -> None:
    active, (half_written, *_) = interrupted_batch(settings, conn)
    maildir_path(settings, "tmp", half_written).write_bytes(b"half a mess")

    report = send_issue(conn, settings, make_rendered())

    assert tmp_files(settings) == []
    assert report.recovery.removed == 1
    again = email.message_from_bytes(maildir_path(settings, "new", half_written).read_bytes(),
                                     policy=email.policy.default)
    assert again["To"].addresses[0].addr_spec == half_written.subscriber.email
    assert sorted(parsed_outbox(settings)) == sorted(active)


def test_recovery_writes_claimed_rows_that_have_no_file(settings, conn) -> None:
    active, claimed = interrupted_batch(settings, conn)

    report = send_issue(conn, settings, make_rendered())

    assert report.recovery.released == 3
    for row in claimed:
        assert maildir_path(settings, "new", row).is_file()
    assert sorted(parsed_outbox(settings)) == sorted(active)
    assert issue_status(conn, DAY).state == "done"


# ----------------------------------------------------------------------------- changed content


def test_a_changed_issue_is_refused_mid_send_and_rebuild_sends_it_only_to_the_rest(settings, conn) -> None:
    active = add_subscribers(conn, 7)
    stop, progress = stop_after_first_batch()
    send_issue(conn, settings, make_rendered(), stop=stop, progress=progress)
    changed = make_rendered(words="Correction: the talks were postponed.")

    with pytest.raises(IssueChangedError) as refused:
        send_issue(conn, settings, changed)
    assert str(refused.value) == (
        "2026-11-26: the issue changed since sending started (4 of 7 written); "
        "rerun with --rebuild to send the new version to the 3 not yet written"
    )
    assert len(list(report_dir(settings).iterdir())) == 4

    report = send_issue(conn, settings, changed, rebuild=True)

    assert report.rebuilt and report.earlier_version == 4 and report.written == 3
    bodies = {to: body_text(m) for to, m in parsed_outbox(settings).items()}
    assert sorted(bodies) == sorted(active)
    assert sum("Correction" in b for b in bodies.values()) == 3
    assert sum("talks resumed" in b for b in bodies.values()) == 4


def test_the_same_content_carries_on_with_the_frozen_version(settings, conn) -> None:
    add_subscribers(conn, 6)
    stop, progress = stop_after_first_batch()
    send_issue(conn, settings, make_rendered(), stop=stop, progress=progress)
    # same html and text, a different subject string: the frozen subject is kept
    rendered = make_rendered()
    rendered = replace(rendered, issue=replace(rendered.issue, subject="Another subject"))

    send_issue(conn, settings, rendered)

    assert {m["Subject"] for m in parsed_outbox(settings).values()} == {"MDB November 26: Talks resume"}


# ----------------------------------------------------------------------------- lock


def test_a_second_sender_is_refused_while_one_runs(settings, conn) -> None:
    add_subscribers(conn, 2)
    with send_lock(settings):
        with pytest.raises(LockedError, match=r"another send is running (\(pid \d+\)|on one of the hosts); try again"):
            send_issue(conn, settings, make_rendered())
    assert issue_status(conn, DAY).state == "not started"
    send_issue(conn, settings, make_rendered())
    assert issue_status(conn, DAY).state == "done"


def test_the_state_machine_refuses_to_unsend(settings, conn) -> None:
    add_subscribers(conn, 1)
    send_issue(conn, settings, make_rendered())
    with pytest.raises(ValueError, match="cannot go from 'sent' to 'pending'"):
        ledger.set_state(conn, DAY, [1], "pending", now=store.now_iso(), expected="sent")


# ----------------------------------------------------------------------------- the commands


def article_day(project: Path) -> str:
    return next((project / "articles").iterdir()).name


def test_send_command_writes_the_outbox_and_says_how_to_send_for_real(project, runner: CliRunner) -> None:
    conn = store.connect(project / "subscribers" / "newsletter.db")
    add_subscribers(conn, 3)
    day = article_day(project)

    result = runner.invoke(app, ["--project", str(project), "send", "--date", day])

    assert result.exit_code == 0, result.output
    assert "Sent 3 messages in " in result.output
    assert f"outbox/{day}/mail/new/" in result.output
    assert 'set [delivery] transport = "smtp" in newsletter.toml' in result.output
    assert len(list((project / "outbox" / day / "mail" / "new").iterdir())) == 3

    again = runner.invoke(app, ["--project", str(project), "send", "--date", day])
    assert again.exit_code == 0, again.output
    assert f"{day}: already sent to 3; nothing to do" in again.output


def test_send_command_refuses_a_changed_issue_until_rebuild(project, runner: CliRunner) -> None:
    conn = store.connect(project / "subscribers" / "newsletter.db")
    add_subscribers(conn, 3)
    day = article_day(project)
    settings = load_settings(project).replace("delivery", batch_size=1)
    from newsletter.pipeline import prepare_issue

    stop, progress = stop_after_first_batch()
    send_issue(conn, settings, prepare_issue(settings, date.fromisoformat(day)).rendered, stop=stop, progress=progress)
    article = next((project / "articles" / day).glob("*.md"))
    article.write_text(article.read_text() + "\nA correction added after the send began.\n")

    refused = runner.invoke(app, ["--project", str(project), "send", "--date", day])
    assert refused.exit_code == 1
    assert (f"Error: {day}: the issue changed since sending started (2 of 3 written); "
            "rerun with --rebuild to send the new version to the 1 not yet written") in refused.output

    rebuilt = runner.invoke(app, ["--project", str(project), "send", "--date", day, "--rebuild"])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "2 already had the earlier version; the new version went to the 1 written now" in rebuilt.output
    assert len(list((project / "outbox" / day / "mail" / "new").iterdir())) == 3


def test_send_command_on_an_empty_day_sends_nothing(project, runner: CliRunner) -> None:
    conn = store.connect(project / "subscribers" / "newsletter.db")
    add_subscribers(conn, 2)

    result = runner.invoke(app, ["--project", str(project), "send", "--date", "2030-01-01"])

    assert result.exit_code == 0, result.output
    assert "nothing sent (empty_policy = skip)" in result.output
    assert not (project / "outbox" / "2030-01-01").exists()


def test_status_command_counts_deliveries_per_state_as_text_and_json(settings, conn, runner) -> None:
    active = add_subscribers(conn, 7)
    project = str(settings.root)
    not_started = runner.invoke(app, ["--project", project, "status", "--date", "2026-11-26"])
    assert not_started.exit_code == 0
    assert "2026-11-26: not started" in not_started.output

    stop, progress = stop_after_first_batch()
    send_issue(conn, settings, make_rendered(), stop=stop, progress=progress)

    text = runner.invoke(app, ["--project", project, "status", "--date", "2026-11-26"])
    assert text.exit_code == 0, text.output
    lines = [line.split() for line in text.output.splitlines()]
    assert text.output.startswith("2026-11-26: sending, issue No. 7: MDB November 26: Talks resume")
    assert ["sent", "4"] in lines and ["pending", "3"] in lines and ["total", "7"] in lines

    set_subscriber_status(conn, active[6], "unsubscribed")
    send_issue(conn, settings, make_rendered())
    as_json = runner.invoke(app, ["--project", project, "status", "--date", "2026-11-26", "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert data["state"] == "done" and data["number"] == 7 and data["total"] == 7
    assert data["deliveries"]["sent"] == 6 and data["deliveries"]["skipped"] == 1
    assert data["deliveries"]["pending"] == 0


def test_retry_failed_writes_the_outbox_rows_whose_message_could_not_be_made_once_fixed(settings, conn):
    everyone = add_subscribers(conn, 4)
    with store.write(conn):
        conn.execute("UPDATE subscribers SET name = ? WHERE email = ?", ("Broken\r\nBcc: x@example.net", everyone[1]))

    first = send_issue(conn, settings, make_rendered())
    with store.write(conn):  # the operator fixes the name
        conn.execute("UPDATE subscribers SET name = 'Reader 1' WHERE email = ?", (everyone[1],))
    again = send_issue(conn, settings, make_rendered(), retry_failed=True)

    assert first.failed == 1 and first.status == "done"
    assert again.retried_failed == 1 and again.written == 1 and again.status == "done"
    assert sorted(parsed_outbox(settings)) == sorted(everyone)
