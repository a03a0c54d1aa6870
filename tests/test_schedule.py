"""The daily clock: one send per day's issue through DST, restarts, two schedulers and SIGTERM.

The clock is set by passing `now`; APScheduler's own trigger says when it fires, and the tests
show what it does on the DST days. Sends are real: a project on disk, real SQLite, the outbox.
"""

from __future__ import annotations

import email
import email.policy
import logging
import os
import re
import shutil
import signal
import threading
import time
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from newsletter import delivery, schedule, store
from newsletter.cli import NOTHING_DUE, app
from newsletter.delivery import send_lock
from newsletter.errors import LockedError
from newsletter.settings import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent
SOURCE_DAY = REPO / "articles" / "2026-11-21"  # five articles, no cross-references: fine on any day
UTC = timezone.utc


# --- helpers (the end-to-end test uses them too) ----------------------------------------------------

def make_project(folder: Path, *, zone: str, send_time: str, catch_up_hours: float = 6.0,
                 days: tuple[date, ...] = (), batch_size: int | None = None,
                 smtp_port: int | None = None) -> Settings:
    """Write a project with the sample's settings in ZONE at SEND_TIME, the sample articles on DAYS,
    and the sample subscribers imported with the CLI."""
    (folder / "articles").mkdir(parents=True)
    (folder / "subscribers").mkdir()
    text = (REPO / "newsletter.toml").read_text(encoding="utf-8")
    text = re.sub(r'(?m)^timezone = .*$', f'timezone = "{zone}"', text)
    text = re.sub(r'(?m)^send_time = .*$', f'send_time = "{send_time}"', text)
    text = re.sub(r'(?m)^catch_up_hours = .*$', f'catch_up_hours = {catch_up_hours}', text)
    if batch_size is not None:
        text += f"batch_size = {batch_size}\n"  # the file ends with the [delivery] table
    if smtp_port is not None:
        text = text.replace('transport = "outbox"', 'transport = "smtp"')
        text += f'\n[smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\nsecurity = "none"\ntimeout = 5.0\n'
    (folder / "newsletter.toml").write_text(text, encoding="utf-8")
    shutil.copytree(REPO / "feeds", folder / "feeds")  # the sample's [[feeds]] (its entries are older than DAYS)
    for day in days:
        shutil.copytree(SOURCE_DAY, folder / "articles" / day.isoformat())
    shutil.copy(REPO / "subscribers" / "sample.csv", folder / "subscribers" / "sample.csv")
    result = CliRunner().invoke(app, ["--project", str(folder), "subscribers", "import",
                                      str(folder / "subscribers" / "sample.csv")])
    assert result.exit_code == 0, result.output
    return load_settings(folder)


def active_emails(settings: Settings) -> set[str]:
    conn = store.connect(settings.database_path)
    try:
        return {row[0] for row in conn.execute("SELECT email FROM subscribers WHERE status = 'active'")}
    finally:
        conn.close()


def messages_per_subscriber(settings: Settings, day: date) -> Counter:
    """Count the messages in DAY's outbox by their To address."""
    counts: Counter = Counter()
    new = settings.outbox_dir / day.isoformat() / "mail" / "new"
    for path in new.glob("*.eml") if new.is_dir() else ():
        with path.open("rb") as f:
            message = email.message_from_binary_file(f, policy=email.policy.default)
        counts[message["To"].addresses[0].addr_spec] += 1
    return counts


# the sample's daily readers who get an issue of SOURCE_DAY's articles: all 29 active ones but the one
# who chose only Policy, a section SOURCE_DAY has no article in (their ledger row is skipped, saying why)
READERS = 28
POLICY_ONLY = "k.remmer@example.net"


def assert_each_active_subscriber_got_one(settings: Settings, day: date) -> None:
    counts = messages_per_subscriber(settings, day)
    active = active_emails(settings)
    assert len(active) == 29
    assert set(counts) == active - {POLICY_ONLY}
    assert set(counts.values()) == {1}, {a: n for a, n in counts.items() if n != 1}


def issue_state(settings: Settings, day: date) -> delivery.IssueStatus:
    conn = store.connect(settings.database_path)
    try:
        return delivery.issue_status(conn, day)
    finally:
        conn.close()


def wait_for(condition, what: str, timeout: float = 20.0) -> None:
    """Poll CONDITION until it holds; fail naming WHAT after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        pause.wait(0.05)


def apscheduler_fires(settings: Settings, start: datetime, end: datetime) -> list[datetime]:
    """Ask APScheduler's own CronTrigger when it would fire between START and END, in UTC."""
    from apscheduler.triggers.cron import CronTrigger

    hour, minute = settings.schedule.send_time.split(":")
    return trigger_fires(CronTrigger(hour=hour, minute=minute, timezone=settings.tz), start, end)


def trigger_fires(trigger, start: datetime, end: datetime) -> list[datetime]:
    """Chain TRIGGER's fire times from START to END the way the scheduler does, in UTC."""
    fires, previous, now = [], None, start
    while (fire := trigger.get_next_fire_time(previous, now)).astimezone(UTC) < end.astimezone(UTC):
        fires.append(fire.astimezone(UTC))
        previous = now = fire
    return fires


def local(zone: str, *parts: int, fold: int = 0) -> datetime:
    return datetime(*parts, tzinfo=ZoneInfo(zone), fold=fold)


# --- DST -----------------------------------------------------------------------------------------

FALL_BACK = [
    # zone, the repeated wall time, the day, when it comes in UTC: first, second
    ("Europe/Berlin", "02:30", date(2026, 10, 25), ["2026-10-25T00:30", "2026-10-25T01:30"]),
    ("America/New_York", "01:30", date(2026, 11, 1), ["2026-11-01T05:30", "2026-11-01T06:30"]),
]


@pytest.mark.parametrize("zone, send_time, day, fires", FALL_BACK, ids=[z for z, *_ in FALL_BACK])
def test_fall_back_day_sends_once_though_the_time_comes_twice(tmp_path, zone, send_time, day, fires):
    settings = make_project(tmp_path / "p", zone=zone, send_time=send_time, days=(day,))
    start, end = local(zone, day.year, day.month, day.day), local(zone, day.year, day.month, day.day + 1)
    expected = [f"{f}+00:00" for f in fires]

    # what APScheduler's CronTrigger does: it fires at both
    assert [f.isoformat(timespec="minutes") for f in apscheduler_fires(settings, start, end)] == expected
    # ours fires once, at the first
    assert [f.isoformat(timespec="minutes") for f in trigger_fires(schedule.daily_trigger(settings), start, end)] \
        == expected[:1]
    (slot,) = schedule.slots_between(start, end, settings)
    assert slot.day == day and slot.repeated and f"{slot.at:%H:%M}" == send_time
    assert "comes twice" in slot.note

    # a run at each (ours, then a CronTrigger's second fire or a restart an hour later): one send
    first, second = (datetime.fromisoformat(f"{f}+00:00") for f in fires)
    assert schedule.run_slot(settings, first + timedelta(seconds=1)).outcome == schedule.SENT
    assert schedule.run_slot(settings, second + timedelta(seconds=1)).outcome == schedule.ALREADY_SENT
    assert_each_active_subscriber_got_one(settings, day)


SPRING_FORWARD = [
    # zone, the missing wall time, the day, the one fire in UTC, the local time it fires at
    ("Europe/Berlin", "02:30", date(2026, 3, 29), "2026-03-29T01:30", "03:30 CEST"),
    ("America/New_York", "02:30", date(2026, 3, 8), "2026-03-08T07:30", "03:30 EDT"),
]


@pytest.mark.parametrize("zone, send_time, day, fire, shown", SPRING_FORWARD, ids=[z for z, *_ in SPRING_FORWARD])
def test_spring_forward_day_sends_once_at_the_shifted_time(tmp_path, zone, send_time, day, fire, shown):
    settings = make_project(tmp_path / "p", zone=zone, send_time=send_time, days=(day,))
    start, end = local(zone, day.year, day.month, day.day), local(zone, day.year, day.month, day.day + 1)

    # 02:30 does not exist: APScheduler's CronTrigger and ours both fire once, when the clocks show 03:30
    assert [f.isoformat(timespec="minutes") for f in apscheduler_fires(settings, start, end)] == [f"{fire}+00:00"]
    assert [f.isoformat(timespec="minutes") for f in trigger_fires(schedule.daily_trigger(settings), start, end)] \
        == [f"{fire}+00:00"]
    (slot,) = schedule.slots_between(start, end, settings)
    assert slot.day == day and slot.shifted
    assert f"{slot.at:%H:%M %Z}" == shown
    assert "runs at 03:30" in slot.note

    # a minute before the shifted slot nothing is due (the day before is past its window)
    assert schedule.due_slot(slot.at - timedelta(minutes=1), settings) is None
    assert schedule.run_slot(settings, slot.at + timedelta(seconds=1)).outcome == schedule.SENT
    assert schedule.run_slot(settings, slot.at + timedelta(hours=2)).outcome == schedule.ALREADY_SENT
    assert_each_active_subscriber_got_one(settings, day)


@pytest.mark.parametrize("zone, send_time, gap_day", [
    ("Europe/Berlin", "00:30", date(2025, 3, 30)),
    ("America/New_York", "00:00", date(2025, 3, 9)),
    ("America/Havana", "00:30", date(2025, 3, 9)),  # the clocks jump at midnight itself
])
def test_a_slot_near_midnight_fires_every_day_around_the_spring_change(tmp_path, zone, send_time, gap_day):
    (tmp_path / "newsletter.toml").write_text(
        f'[newsletter]\ntimezone = "{zone}"\n[schedule]\nsend_time = "{send_time}"\n', encoding="utf-8")
    settings = load_settings(tmp_path)
    start = datetime.combine(gap_day - timedelta(days=2), datetime.min.time(), tzinfo=settings.tz)
    end = start + timedelta(days=5)
    days = [gap_day + timedelta(days=n) for n in range(-2, 3)]

    ours = trigger_fires(schedule.daily_trigger(settings), start, end)
    assert [f.astimezone(settings.tz).date() for f in ours] == days
    assert [s.day for s in schedule.slots_between(start, end, settings)] == days
    # APScheduler 3.11's CronTrigger drops a day here (agronholm/apscheduler#606): the reason
    # the job has its own trigger; if this starts to pass, CronTrigger could come back
    cron_days = {f.astimezone(settings.tz).date() for f in apscheduler_fires(settings, start, end)}
    assert cron_days < set(days), "CronTrigger no longer skips a day: consider using it again"


@pytest.mark.parametrize("zone, send_time, utc_now, day", [
    ("Pacific/Auckland", "06:00", datetime(2026, 11, 26, 17, 1, tzinfo=UTC), date(2026, 11, 27)),
    ("America/Los_Angeles", "23:30", datetime(2026, 11, 27, 7, 31, tzinfo=UTC), date(2026, 11, 26)),
    ("America/Los_Angeles", "23:30", datetime(2026, 11, 27, 12, 0, tzinfo=UTC), date(2026, 11, 26)),
])
def test_issue_of_a_run_is_the_local_date_of_its_slot(tmp_path, zone, send_time, utc_now, day):
    (tmp_path / "newsletter.toml").write_text(
        f'[newsletter]\ntimezone = "{zone}"\n[schedule]\nsend_time = "{send_time}"\n', encoding="utf-8")
    settings = load_settings(tmp_path)
    assert utc_now.date() != day  # the UTC date, or a date.today() on a UTC server, would be wrong
    assert schedule.due_slot(utc_now, settings) == day


def test_next_runs_show_local_time_and_utc_across_the_fall_back(tmp_path):
    (tmp_path / "newsletter.toml").write_text(
        '[newsletter]\ntimezone = "Europe/Berlin"\n[schedule]\nsend_time = "02:30"\n', encoding="utf-8")
    settings = load_settings(tmp_path)
    runs = schedule.next_runs(local("Europe/Berlin", 2026, 10, 24, 12), 3, settings)
    assert [schedule.format_slot(s) for s in runs] == [
        "Sun 2026-10-25 02:30 CEST (+0200)  =  2026-10-25 00:30 UTC  "
        "(clocks go back: 02:30 comes twice this day; it runs at the first, CEST)",
        "Mon 2026-10-26 02:30 CET (+0100)  =  2026-10-26 01:30 UTC",
        "Tue 2026-10-27 02:30 CET (+0100)  =  2026-10-27 01:30 UTC",
    ]


def test_schedule_next_prints_the_coming_runs_in_local_time_and_utc(tmp_path, runner):
    (tmp_path / "newsletter.toml").write_text(
        '[newsletter]\ntimezone = "Asia/Kathmandu"\n[schedule]\nsend_time = "07:15"\n', encoding="utf-8")
    result = runner.invoke(app, ["--project", str(tmp_path), "schedule", "--next", "3"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "The daily send runs at 07:15 Asia/Kathmandu:"
    assert len(lines) == 4
    for line in lines[1:]:
        # Kathmandu is 5:45 ahead of UTC all year
        assert re.fullmatch(r"  \w{3} \d{4}-\d\d-\d\d 07:15 \+0545  =  \d{4}-\d\d-\d\d 01:30 UTC", line), line


# --- restarts and the catch-up ---------------------------------------------------------------------

def test_restart_within_the_catch_up_window_sends_the_slot_it_missed(tmp_path):
    day = date(2026, 11, 27)
    settings = make_project(tmp_path / "p", zone="Europe/Vienna", send_time="06:00", catch_up_hours=6, days=(day,))
    result = schedule.run_slot(settings, local("Europe/Vienna", 2026, 11, 27, 11, 59))
    assert result.outcome == schedule.SENT and result.messages == READERS and result.articles == 5
    assert_each_active_subscriber_got_one(settings, day)
    # a second restart the same morning changes nothing
    again = schedule.run_slot(settings, local("Europe/Vienna", 2026, 11, 27, 12, 0))
    assert again.outcome == schedule.ALREADY_SENT and again.messages == 0
    assert_each_active_subscriber_got_one(settings, day)


def test_restart_outside_the_catch_up_window_logs_the_missed_issue_and_sends_nothing(tmp_path, caplog):
    day = date(2026, 11, 27)
    settings = make_project(tmp_path / "p", zone="Europe/Vienna", send_time="06:00", catch_up_hours=6, days=(day,))
    caplog.set_level(logging.INFO, logger="newsletter")
    assert schedule.run_slot(settings, local("Europe/Vienna", 2026, 11, 27, 12, 1)) is None
    assert messages_per_subscriber(settings, day) == Counter()
    assert issue_state(settings, day).state == "not started"
    (missed,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert missed.getMessage().startswith("missed: the 06:00 slot of 2026-11-27 passed 6.0 h ago")
    assert "`newsletter send --date 2026-11-27`" in missed.getMessage()


def test_a_done_issue_is_not_reported_missed(tmp_path, caplog):
    day = date(2026, 11, 27)
    settings = make_project(tmp_path / "p", zone="Europe/Vienna", send_time="06:00", catch_up_hours=1, days=(day,))
    assert schedule.run_slot(settings, local("Europe/Vienna", 2026, 11, 27, 6, 0, 5)).outcome == schedule.SENT
    caplog.set_level(logging.INFO, logger="newsletter")
    assert schedule.run_slot(settings, local("Europe/Vienna", 2026, 11, 27, 20)) is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "nothing due" in caplog.text and "issue sent" in caplog.text


def test_manual_send_after_the_scheduled_run_sends_nobody_a_second_copy(tmp_path, runner):
    day = date(2026, 11, 27)
    settings = make_project(tmp_path / "p", zone="Europe/Vienna", send_time="06:00", days=(day,))
    assert schedule.run_due_issue(settings, day).outcome == schedule.SENT
    result = runner.invoke(app, ["--project", str(settings.root), "send", "--date", day.isoformat()])
    assert result.exit_code == 0, result.output
    assert "nothing to do" in result.output
    assert_each_active_subscriber_got_one(settings, day)


# --- one sender at a time --------------------------------------------------------------------------

def _due_now(tmp_path: Path, **options) -> tuple[Settings, date]:
    """A project whose slot passed three minutes ago in its own zone, with articles for that slot's day."""
    zone = "Asia/Kathmandu"
    slot = (datetime.now(ZoneInfo(zone)) - timedelta(minutes=3)).replace(second=0, microsecond=0)
    settings = make_project(tmp_path / "p", zone=zone, send_time=f"{slot:%H:%M}", days=(slot.date(),), **options)
    return settings, slot.date()


def test_two_schedulers_started_at_once_send_each_subscriber_one_message(tmp_path):
    settings, day = _due_now(tmp_path)
    stop = threading.Event()
    barrier = threading.Barrier(2)
    refused: list[LockedError] = []

    def scheduler() -> None:
        barrier.wait()
        try:
            schedule.run_scheduler(settings, stop)
        except LockedError as err:
            refused.append(err)

    threads = [threading.Thread(target=scheduler) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: refused, "the second scheduler to give up")
        wait_for(lambda: issue_state(settings, day).state == "done", "the catch-up send")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=20)
    assert not any(thread.is_alive() for thread in threads)
    (err,) = refused
    # a lock file on SQLite, the database's advisory lock on PostgreSQL (one scheduler across hosts)
    where, who = ((store.where(settings), "on one of the hosts") if settings.database_url() else
                  (settings.root / "subscribers" / "schedule.lock", f"(pid {os.getpid()})"))
    assert str(err).startswith(f"{where}: another `newsletter schedule` is running for this project {who}")
    assert_each_active_subscriber_got_one(settings, day)


def test_second_scheduler_from_the_command_line_exits_with_a_clear_error(tmp_path, runner):
    settings, day = _due_now(tmp_path)
    with schedule.schedule_lock(settings):
        result = runner.invoke(app, ["--project", str(settings.root), "schedule", "--once"])
    assert result.exit_code == 1
    assert re.fullmatch(r"Error: \S+(/schedule\.lock|/test_\w+): another `newsletter schedule` is running for this "
                        r"project (\(pid \d+\)|on one of the hosts); it sends the issues, so this one stops\n",
                        result.stderr)
    assert messages_per_subscriber(settings, day) == Counter()


def test_scheduled_run_waits_for_a_manual_send_holding_the_lock(tmp_path, caplog):
    settings, day = _due_now(tmp_path)
    caplog.set_level(logging.INFO, logger="newsletter")
    results = []
    with send_lock(settings):
        worker = threading.Thread(target=lambda: results.append(schedule.run_due_issue(settings, day, lock_wait=30)))
        worker.start()
        wait_for(lambda: "waiting for it to end" in caplog.text, "the run to wait for the lock")
        assert issue_state(settings, day).state == "not started"
    worker.join(timeout=20)
    (result,) = results
    assert result.outcome == schedule.SENT
    assert_each_active_subscriber_got_one(settings, day)


def test_run_gives_up_with_a_clear_message_when_another_send_keeps_the_lock(tmp_path):
    settings, day = _due_now(tmp_path)
    with send_lock(settings):
        result = schedule.run_due_issue(settings, day, lock_wait=0)
    assert result.outcome == schedule.FAILED and not result.ok
    assert "another send is running" in result.detail
    assert messages_per_subscriber(settings, day) == Counter()


# --- SIGTERM ---------------------------------------------------------------------------------------

def test_sigterm_in_the_middle_of_a_send_stops_cleanly_and_the_restart_resumes(tmp_path):
    day = date(2026, 11, 27)
    settings = make_project(tmp_path / "p", zone="Europe/Vienna", send_time="06:00", days=(day,), batch_size=4)
    stop = threading.Event()
    seen: list[int] = []

    def progress(done: int, total: int) -> None:
        seen.append(done)
        if done >= 8 and len(seen) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # handled by the scheduler's own handler

    with schedule.stop_on_signals(stop):
        first = schedule.run_due_issue(settings, day, stop=stop, progress=progress)
    assert stop.is_set()
    assert first.outcome == schedule.STOPPED and first.ok
    state = issue_state(settings, day)
    assert state.state == "sending"
    assert 8 <= state.counts["sent"] < READERS and state.counts["pending"] == READERS - state.counts["sent"]
    assert state.counts["claimed"] == 0  # the batch in flight was finished and recorded
    assert sum(messages_per_subscriber(settings, day).values()) == state.counts["sent"] == first.messages

    second = schedule.run_slot(settings, local("Europe/Vienna", 2026, 11, 27, 6, 30))
    assert second.outcome == schedule.SENT
    assert first.messages + second.messages == READERS
    assert_each_active_subscriber_got_one(settings, day)


# --- bad days ------------------------------------------------------------------------------------

def test_day_with_a_bad_article_is_not_sent_and_the_error_names_file_and_field(tmp_path):
    day = date(2026, 11, 27)
    settings = make_project(tmp_path / "p", zone="Europe/Vienna", send_time="06:00", days=(day,))
    article = settings.articles_dir / day.isoformat() / "veska-talks-open.md"
    good = article.read_text(encoding="utf-8")
    article.write_text(re.sub(r"(?m)^title: .*\n", "", good, count=1), encoding="utf-8")

    result = schedule.run_slot(settings, local("Europe/Vienna", 2026, 11, 27, 6, 0, 1))
    assert result.outcome == schedule.NOT_SENT and not result.ok
    assert "veska-talks-open.md" in result.detail and "title" in result.detail
    assert messages_per_subscriber(settings, day) == Counter()
    assert issue_state(settings, day).state == "not started"

    article.write_text(good, encoding="utf-8")  # the editor fixes it within the window
    assert schedule.run_slot(settings, local("Europe/Vienna", 2026, 11, 27, 7)).outcome == schedule.SENT
    assert_each_active_subscriber_got_one(settings, day)


class Recipients:
    """An aiosmtpd handler that accepts every message and counts the copies per recipient."""

    def __init__(self) -> None:
        self.copies: Counter = Counter()

    async def handle_DATA(self, server, session, envelope):
        self.copies.update(envelope.rcpt_tos)
        return "250 2.0.0 queued"


def test_smtp_server_down_fails_the_run_with_its_cause_and_the_next_run_resumes(tmp_path):
    import socket

    from aiosmtpd.controller import Controller

    with socket.socket() as probe:  # a port nothing listens on: the connection is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    day = date(2026, 11, 27)
    settings = make_project(tmp_path / "p", zone="Europe/Vienna", send_time="06:00", days=(day,), smtp_port=port)

    down = schedule.run_slot(settings, local("Europe/Vienna", 2026, 11, 27, 6, 0, 1))
    assert down.outcome == schedule.FAILED and not down.ok
    assert f"127.0.0.1:{port}" in down.detail
    state = issue_state(settings, day)
    assert state.counts["sent"] == 0 and state.counts["failed"] == 0  # nobody is blamed for the server

    recipients = Recipients()
    controller = Controller(recipients, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        up = schedule.run_slot(settings, local("Europe/Vienna", 2026, 11, 27, 6, 15))
    finally:
        controller.stop()
    assert up.outcome == schedule.SENT, up.summary()
    assert up.messages == READERS
    assert recipients.copies == Counter({address: 1 for address in active_emails(settings) - {POLICY_ONLY}})


def test_day_without_articles_follows_the_skip_policy(tmp_path):
    settings = make_project(tmp_path / "p", zone="Europe/Vienna", send_time="06:00")
    result = schedule.run_slot(settings, local("Europe/Vienna", 2026, 11, 27, 6, 1))
    assert result.outcome == schedule.SKIPPED and result.ok
    assert "empty_policy = skip" in result.detail
    assert not settings.outbox_dir.exists()


def test_scheduler_keeps_running_after_a_run_fails(tmp_path, caplog):
    settings, day = _due_now(tmp_path)
    (settings.articles_dir / day.isoformat() / "veska-talks-open.md").write_bytes(b"---\ntitle: [unclosed\n---\nBody\n")
    caplog.set_level(logging.INFO, logger="newsletter")
    stop = threading.Event()
    worker = threading.Thread(target=schedule.run_scheduler, args=(settings, stop))
    worker.start()
    try:
        wait_for(lambda: "trying the issue of" in caplog.text, "the retry after the failed run")
        assert worker.is_alive()
    finally:
        stop.set()
        worker.join(timeout=20)
    assert not worker.is_alive()
    (failure,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert failure.startswith(f"issue of {day}: not sent; 0 articles, 0 messages, 0 failures")
    assert "veska-talks-open.md" in failure
    assert "newsletter schedule stopped" in caplog.text
    assert messages_per_subscriber(settings, day) == Counter()


# --- the command ---------------------------------------------------------------------------------

def test_schedule_once_exit_codes_tell_sent_nothing_due_and_failure(tmp_path, runner):
    settings, day = _due_now(tmp_path)
    once = ["--project", str(settings.root), "schedule", "--once"]
    sent = runner.invoke(app, once)
    assert sent.exit_code == 0, sent.output
    assert re.search(rf"INFO issue of {day} \(No\. 1\): sent; 5 articles, {READERS} messages, 0 failures, [\d.]+ s",
                     sent.stderr)
    assert runner.invoke(app, once).exit_code == 0  # already sent
    assert_each_active_subscriber_got_one(settings, day)

    later = datetime.now(settings.tz) + timedelta(hours=12)
    toml = settings.root / "newsletter.toml"
    text = toml.read_text(encoding="utf-8")
    text = re.sub(r'(?m)^send_time = .*$', f'send_time = "{later:%H:%M}"', text)
    toml.write_text(re.sub(r'(?m)^catch_up_hours = .*$', 'catch_up_hours = 1.0', text), encoding="utf-8")
    nothing = runner.invoke(app, once)
    assert nothing.exit_code == NOTHING_DUE == 3
    assert "nothing due: the" in nothing.stderr


def test_schedule_once_exits_1_when_the_day_cannot_be_sent(tmp_path, runner):
    settings, day = _due_now(tmp_path)
    (settings.articles_dir / day.isoformat() / "veska-talks-open.md").write_bytes(b"---\ntitle: x\n---\n\0\n")
    result = runner.invoke(app, ["--project", str(settings.root), "schedule", "--once"])
    assert result.exit_code == 1
    assert f"ERROR issue of {day}: not sent" in result.stderr and "veska-talks-open.md" in result.stderr



# --- the clock in any zone -----------------------------------------------------------------------

from hypothesis import given, settings as hypothesis_settings, strategies as st  # noqa: E402

from newsletter.settings import NewsletterSettings, ScheduleSettings  # noqa: E402

# zones with DST at 02:00, at midnight (Havana, Santiago), by 30 minutes (Lord Howe), and none
ZONES = ["Europe/Berlin", "America/New_York", "America/Havana", "America/Santiago",
         "Australia/Lord_Howe", "Pacific/Chatham", "Asia/Kathmandu", "UTC"]


@hypothesis_settings(max_examples=150, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    hour=st.sampled_from([0, 1, 2, 3, 6, 23]),
    minute=st.sampled_from([0, 15, 30, 45, 59]),
    now=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)),
)
def test_every_local_day_gets_one_slot_at_its_send_time_and_a_run_there_sends_that_day(zone, hour, minute, now):
    config = Settings(root=Path("."), newsletter=NewsletterSettings(timezone=zone),
                      schedule=ScheduleSettings(send_time=f"{hour:02d}:{minute:02d}"))
    runs = schedule.next_runs(now, 6, config)
    assert runs[0].at.astimezone(UTC) > now
    assert [run.day - runs[0].day for run in runs] == [timedelta(days=n) for n in range(6)]
    # the job's trigger, chained as the scheduler does, fires at exactly these
    fires = trigger_fires(schedule.daily_trigger(config), now + timedelta(microseconds=1),
                          runs[-1].at + timedelta(seconds=1))
    assert fires == [run.at.astimezone(UTC) for run in runs]
    tz = ZoneInfo(zone)
    for run in runs:
        wall = datetime.combine(run.day, datetime.min.time().replace(hour=hour, minute=minute), tzinfo=tz)
        exists = wall.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall.replace(tzinfo=None)
        if exists:  # at send_time that day; at the first of two if the clocks repeat it
            assert not run.shifted and (run.at.hour, run.at.minute) == (hour, minute)
            assert run.at.astimezone(UTC) == min(wall.astimezone(UTC), wall.replace(fold=1).astimezone(UTC))
        else:  # skipped by the clocks: as late as they skipped, within three hours
            assert run.shifted
            assert timedelta(0) < run.at.astimezone(UTC) - wall.replace(fold=1).astimezone(UTC) <= timedelta(hours=3)
        assert schedule.due_slot(run.at + timedelta(seconds=1), config) == run.day
        assert schedule.last_slot(run.at, config) == run
