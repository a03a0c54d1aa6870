"""The daily clock: each day's issue goes out at `[schedule] send_time`, exactly once.

APScheduler 3 is only the clock here: an in-memory job store, `coalesce`, `max_instances=1` and a
generous `misfire_grace_time`. Durability is the ledger's: `run_due_issue` is idempotent, so a
restart, a second scheduler or a manual send never mails anyone twice (RELIABILITY.md,
"Scheduling"). The issue of a run is the local date of its slot, never "today".

The job's trigger is `DailyTrigger`, one slot per local day computed here, not APScheduler's
`CronTrigger`: in 3.11 the CronTrigger skips whole days around a DST change for send times near
midnight (agronholm/apscheduler#606: a 00:30 slot in Europe/Berlin never fires on the Monday
after the spring change) and fires twice on a fall-back day. A slot whose time the clocks skip
runs as late as they skipped (02:30 becomes 03:30), as CronTrigger does; a time they repeat runs
at its first occurrence.

The clock arithmetic (`slot_on`, `slots_between`, `last_slot`, `due_slot`, `next_runs`) takes
`now`, so it is tested with any clock; `run_slot` is what the scheduler, its catch-up and
`--once` all run.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from datetime import time as time_of_day
from enum import StrEnum
from pathlib import Path
from typing import Any

from newsletter.delivery.ledger import IssueState, State, issue_status
from newsletter.delivery.lock import SCHEDULE_KEY, database_lock, held_lock
from newsletter.errors import LockedError, NewsletterError
from newsletter.sending import stop_on_signals  # noqa: F401 - the scheduler's name for it too
from newsletter.settings import Settings
from newsletter.weeks import WEEKDAYS, IsoWeek

logger = logging.getLogger(__name__)

SCHEDULE_LOCK_NAME = "schedule.lock"
# A run that starts this close to its slot is on time even with catch_up_hours = 0.
ON_TIME = timedelta(minutes=10)
# After a failed or unfinished run, the scheduler tries the same issue again this much later,
# as long as the slot is still within the catch-up window.
RETRY_AFTER = timedelta(minutes=15)
# How long a scheduled run waits for another send (a manual `newsletter send`) to end.
LOCK_WAIT_SECONDS = 3600.0

class Outcome(StrEnum):
    """What a run did. The first four are fine (`--once` exits 0); the others are failures."""

    SENT = "sent"
    ALREADY_SENT = "already sent"
    STOPPED = "stopped"
    SKIPPED = "skipped"
    NOT_SENT = "not sent"
    INCOMPLETE = "incomplete"
    FAILED = "failed"


SENT, ALREADY_SENT, STOPPED, SKIPPED = Outcome.SENT, Outcome.ALREADY_SENT, Outcome.STOPPED, Outcome.SKIPPED
NOT_SENT, INCOMPLETE, FAILED = Outcome.NOT_SENT, Outcome.INCOMPLETE, Outcome.FAILED
_FINE = (SENT, ALREADY_SENT, STOPPED, SKIPPED)


@dataclass(frozen=True)
class Slot:
    """One day's slot: the issue it sends (the local date) and when it runs, in local time."""

    day: date
    at: datetime  # aware, in the newsletter's zone
    shifted: bool = False  # send_time does not exist that day (clocks go forward): it runs later
    repeated: bool = False  # send_time comes twice that day (clocks go back): it runs at the first

    @property
    def note(self) -> str:
        """Say what is special about this slot, or nothing."""
        if self.shifted:
            return f"clocks go forward: the send time does not exist this day, so it runs at {self.at:%H:%M}"
        if self.repeated:
            return f"clocks go back: {self.at:%H:%M} comes twice this day; it runs at the first, {self.at:%Z}"
        return ""


@dataclass(frozen=True)
class RunResult:
    """What one run of a day's issue did: the summary line of the scheduler's log."""

    day: date
    outcome: Outcome
    kind: str = "issue"  # or "digest": then DAY is the week (weeks.DigestKey, variant 0)
    articles: int = 0
    messages: int = 0  # messages written by this run
    failures: int = 0  # messages that could not be made in this run
    seconds: float = 0.0
    number: int = 0
    detail: str = ""  # the empty policy's reason, the check's errors, or the cause of a failure
    retry_at: datetime | None = None  # when the rows left (greylisted, deferred) are due again

    @property
    def ok(self) -> bool:
        """True when nothing is wrong: sent, already sent, stopped cleanly, or nothing to send today."""
        return self.outcome in _FINE

    def summary(self) -> str:
        """Return the one line the scheduler logs for this run."""
        issue = f"{self.kind} of {self.day}" + (f" (No. {self.number})" if self.number else "")
        line = (f"{issue}: {self.outcome}; {self.articles} article{'' if self.articles == 1 else 's'}, "
                f"{self.messages:,} message{'' if self.messages == 1 else 's'}, "
                f"{self.failures:,} failure{'' if self.failures == 1 else 's'}, {self.seconds:.2f} s")
        return f"{line}; {self.detail}" if self.detail else line


# --- the clock -----------------------------------------------------------------------------------

def _send_time(settings: Settings) -> time_of_day:
    hour, minute = (int(part) for part in settings.schedule.send_time.split(":"))
    return time_of_day(hour, minute)


def slot_on(day: date, settings: Settings) -> Slot:
    """Return DAY's slot: send_time on DAY in the newsletter's zone."""
    tz = settings.tz
    wall = datetime.combine(day, _send_time(settings), tzinfo=tz)
    # fold=0 is the first of a repeated time, and reads a skipped time with the offset from
    # before the gap, so 02:30 on a spring-forward day is the instant the clocks show 03:30
    at = _utc(wall).astimezone(tz)
    shifted = at.replace(tzinfo=None) != wall.replace(tzinfo=None)
    repeated = not shifted and wall.replace(fold=1).utcoffset() != wall.utcoffset()
    return Slot(day, at, shifted=shifted, repeated=repeated)


def _slots_from(start: datetime, settings: Settings) -> Iterator[Slot]:
    """Yield every slot at or after START, in order."""
    _require_aware(start)
    day = _utc(start).astimezone(settings.tz).date() - timedelta(days=1)
    while True:
        slot = slot_on(day, settings)
        if _utc(slot.at) >= _utc(start):
            yield slot
        day += timedelta(days=1)


def slots_between(start: datetime, end: datetime, settings: Settings) -> list[Slot]:
    """Return the slots in [START, END), one per local day."""
    _require_aware(end)
    found = []
    for slot in _slots_from(start, settings):
        if _utc(slot.at) >= _utc(end):
            break
        found.append(slot)
    return found


def last_slot(now: datetime, settings: Settings) -> Slot:
    """Return the latest slot at or before NOW."""
    _require_aware(now)
    today = _utc(now).astimezone(settings.tz).date()
    for back in range(-1, 3):  # a slot pushed past midnight by a gap can belong to the day before
        slot = slot_on(today - timedelta(days=back), settings)
        if _utc(slot.at) <= _utc(now):
            return slot
    raise AssertionError("unreachable: one of the last two days has a slot before now")  # pragma: no cover


def catch_up_window(settings: Settings) -> timedelta:
    """Return how long after its slot a day's issue may still go out."""
    return max(timedelta(hours=settings.schedule.catch_up_hours), ON_TIME)


def due_slot(now: datetime, settings: Settings) -> date | None:
    """Return the day whose issue is due at NOW: the latest slot's, if within the catch-up window."""
    slot = last_slot(now, settings)
    if _utc(now) - _utc(slot.at) <= catch_up_window(settings):
        return slot.day
    return None


def next_runs(now: datetime, n: int, settings: Settings) -> list[Slot]:
    """Return the next N slots after NOW (those the clocks shift or repeat say so in their note)."""
    found: list[Slot] = []
    if n <= 0:
        return found
    for slot in _slots_from(_utc(now) + timedelta(microseconds=1), settings):
        found.append(slot)
        if len(found) == n:
            break
    return found


def daily_trigger(settings: Settings):
    """Return the APScheduler trigger that fires at each day's slot (why not CronTrigger: see above)."""
    from apscheduler.triggers.base import BaseTrigger

    class DailyTrigger(BaseTrigger):
        def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime:
            if previous_fire_time is None:
                start = now
            else:
                start = _utc(previous_fire_time) + timedelta(microseconds=1)
            return next(_slots_from(start, settings)).at

        def __str__(self) -> str:
            return f"daily at {settings.schedule.send_time} {settings.newsletter.timezone}"

    return DailyTrigger()


def _utc(moment: datetime) -> datetime:
    """Return MOMENT in UTC: aware datetimes sharing a zone compare and subtract by wall time, so
    the two 02:30s of a fall-back day would look equal; in UTC they are an hour apart."""
    return moment.astimezone(timezone.utc)


def _require_aware(moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment!r}: the schedule needs an aware datetime (with a time zone)")


# --- one run ---------------------------------------------------------------------------------------

def run_due_issue(
    settings: Settings,
    day: date,
    *,
    stop: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
    lock_wait: float = 0.0,
) -> RunResult:
    """Build, check and send DAY's issue; a done issue is a no-op, an interrupted one resumes.

    Problems of the issue (bad articles, check errors) and of the send (another sender holding
    the lock for longer than LOCK_WAIT seconds, a transport failure) become the result's outcome
    and detail: this never raises a NewsletterError, so a scheduler that calls it keeps running.
    """
    from newsletter import store
    from newsletter.sending import CheckFailedError, NotSentError, send_day

    started = time.perf_counter()
    issue: dict[str, int] = {}  # the articles and the number, once the issue is prepared

    def result(outcome: Outcome, **fields: Any) -> RunResult:
        return RunResult(day, outcome, seconds=time.perf_counter() - started, **{**issue, **fields})

    def checked(prepared, report) -> None:
        issue.update(articles=prepared.article_count, number=prepared.rendered.issue.number)
        if report.warnings:
            logger.info("%s: the check found %d warning(s); see `newsletter check --date %s`",
                        day, len(report.warnings), day)
        if prepared.skipped_reason:
            logger.info("%s", prepared.skipped_reason)

    try:
        conn = store.open_database(settings)
    except NewsletterError as err:
        return result(FAILED, detail=_cause(err))
    try:
        state = issue_status(conn, day)
        if state.state is IssueState.DONE:
            return result(ALREADY_SENT, number=state.number,
                          detail=f"{state.counts.get(State.SENT, 0):,} written earlier; nothing to do")
        if settings.feeds and state.state is IssueState.NOT_STARTED:
            _fetch_feeds(settings, conn, day)
        try:
            done = send_day(settings, day, conn=conn, stop=stop, progress=progress, lock_wait=lock_wait,
                            on_checked=checked)
        except CheckFailedError as err:
            return _check_failed(result, err)
        except NotSentError as err:
            return result(NOT_SENT, detail=_cause(err))
        except LockedError as err:
            if stop is not None and stop.is_set():
                return result(STOPPED, detail="stopped while waiting for the other send to end")
            return result(FAILED, detail=_cause(err))
        except NewsletterError as err:
            return result(FAILED, detail=_cause(err))
    finally:
        conn.close()
    sent = done.sent
    if sent is None:
        return result(SKIPPED, articles=done.prepared.article_count, detail=done.prepared.skipped_reason)
    fields = dict(messages=sent.written, failures=sent.failed)
    if sent.nothing_to_do:
        return result(ALREADY_SENT, **fields, detail=f"{sent.sent:,} written earlier; nothing to do")
    if sent.stopped:
        return result(STOPPED, **fields, detail=f"{sent.sent:,} of {sent.total:,} written; the next start resumes")
    if sent.status is not IssueState.DONE:
        waiting = f", {sent.waiting_retries:,} waiting to be retried" if sent.waiting_retries else ""
        return result(INCOMPLETE, **fields, retry_at=_parse_time(sent.next_retry_at),
                      detail=f"{sent.sent:,} of {sent.total:,} written{waiting}, the issue is {sent.status}; "
                             "the next run resumes")
    return result(SENT, **fields, detail=f"{sent.sent:,} of {sent.total:,} written")


def _fetch_feeds(settings: Settings, conn: Any, day: date) -> None:
    """Fetch the [[feeds]] for DAY before its issue is built; a failure is logged, and the day is built from what is there."""
    from newsletter import feeds

    try:
        report = feeds.fetch_feeds(settings, conn, day)
    except Exception as err:  # a feed must never stop the day's issue
        logger.error("%s: fetching the feeds failed; building from the articles there: %s", day, err)
        return
    logger.info("%s: %d new article(s) from %d feed(s), %d warning(s); see `newsletter check --date %s`",
                day, len(report.written), len(report.results), len(report.warnings), day)


def _check_failed(result: Callable[..., RunResult], err) -> RunResult:
    """Log each check error and return the run's result: not sent."""
    report, day = err.report, err.prepared.day
    for finding in report.errors:
        logger.error("%s: %s", finding.where or f"issue of {day}", finding.message)
    first = report.errors[0]
    rendered = err.prepared.rendered
    return result(
        NOT_SENT, articles=err.prepared.article_count, number=rendered.issue.number if rendered else 0,
        detail=(f"the check found {len(report.errors)} error(s), first {first.where or day}: "
                f"{first.message}; see `newsletter check --date {day}`"),
    )


def _parse_time(text: str | None) -> datetime | None:
    """Return the ledger's ISO timestamp as an aware datetime, or None."""
    try:
        moment = datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _cause(err: BaseException) -> str:
    """Return ERR's message followed by the causes it chains, when they add something."""
    text = str(err)
    cause = err.__cause__
    while cause is not None:
        if str(cause) and str(cause) not in text:
            text += f" (cause: {cause})"
        cause = cause.__cause__
    return text


def run_slot(settings: Settings, now: datetime, *, stop: threading.Event | None = None,
             lock_wait: float = 0.0) -> RunResult | None:
    """Run the issue due at NOW, then the digest due (if any), and log their summaries; return the
    issue's result (the digest's when only it failed), or None (and log why) when no slot is due."""
    day = due_slot(now, settings)
    if day is None:
        _log_nothing_due(settings, now)
        return None
    result = run_due_issue(settings, day, stop=stop, lock_wait=lock_wait)
    log_result(result)
    week = digest_week_due(day, settings)
    if week is None or (stop is not None and stop.is_set()):
        return result
    digest = run_due_digest(settings, week, today=day, stop=stop, lock_wait=lock_wait)
    # due at every slot from [digest] weekday to Sunday: said on the weekday, later only when it does something
    if digest.outcome not in (ALREADY_SENT, SKIPPED) or day.weekday() == WEEKDAYS.index(settings.digest.weekday):
        log_result(digest)
    return digest if result.ok and not digest.ok else result


def digest_week_due(day: date, settings: Settings) -> IsoWeek | None:
    """Return the week whose digest is due at DAY's slot: the week before DAY's, from [digest] weekday on."""
    if day.weekday() < WEEKDAYS.index(settings.digest.weekday):
        return None
    return IsoWeek.of(day).previous()


def run_due_digest(settings: Settings, week: IsoWeek, *, today: date, stop: threading.Event | None = None,
                   lock_wait: float = 0.0) -> RunResult:
    """Send WEEK's digest (sending.send_digest); like `run_due_issue`, this never raises a NewsletterError."""
    from newsletter import store
    from newsletter.delivery.digests import frozen_keys
    from newsletter.sending import CheckFailedError, send_digest

    started = time.perf_counter()

    def result(outcome: Outcome, **fields: Any) -> RunResult:
        return RunResult(week.key(0), outcome, kind="digest", seconds=time.perf_counter() - started, **fields)

    try:
        conn = store.open_database(settings)
        try:
            keys = frozen_keys(conn, week)
            if keys and all(issue_status(conn, key).state is IssueState.DONE for key in keys):
                return result(ALREADY_SENT, detail="sent earlier; nothing to do")
            sent = send_digest(settings, week, today=today, conn=conn, stop=stop, lock_wait=lock_wait)
        finally:
            conn.close()
    except CheckFailedError as err:
        first = err.report.errors[0]
        return result(NOT_SENT, detail=f"the check of {err.prepared.day} found {len(err.report.errors)} error(s), "
                                       f"first {first.where or err.prepared.day}: {first.message}")
    except LockedError as err:
        stopped = stop is not None and stop.is_set()
        return result(STOPPED if stopped else FAILED, detail=_cause(err))
    except NewsletterError as err:
        return result(FAILED, detail=_cause(err))
    fields = dict(articles=0, messages=sent.written, failures=sum(r.failed for r in sent.sent))
    done = sum(r.sent for r in sent.sent)
    if not sent.sent:
        return result(SKIPPED, detail="no reader is owed a digest this week")
    if any(r.stopped for r in sent.sent) or len(sent.sent) < len(sent.checks):
        return result(STOPPED, **fields, detail=f"{done:,} of {sent.total:,} written; the next run resumes")
    if any(r.status is not IssueState.DONE for r in sent.sent):
        return result(INCOMPLETE, **fields, detail=f"{done:,} of {sent.total:,} written; the next run resumes")
    return result(SENT, **fields, detail=f"{done:,} of {sent.total:,} written in {len(sent.sent)} variant(s)")


def log_result(result: RunResult) -> None:
    """Log a run's summary line: info when fine, error when not."""
    logger.log(logging.INFO if result.ok else logging.ERROR, "%s", result.summary())


def _log_nothing_due(settings: Settings, now: datetime) -> None:
    """Say why nothing is due; warn when the last slot's issue was missed (never sent late by surprise)."""
    from newsletter import store

    slot = last_slot(now, settings)
    ago = (_utc(now) - _utc(slot.at)).total_seconds() / 3600
    when = f"the {settings.schedule.send_time} slot of {slot.day} passed {ago:.1f} h ago"
    window = f"[schedule] catch_up_hours = {settings.schedule.catch_up_hours:g}"
    try:
        conn = store.open_database(settings)
        try:
            state = issue_status(conn, slot.day).state
        finally:
            conn.close()
    except NewsletterError as err:
        logger.error("%s", _cause(err))
        return
    has_articles = (settings.articles_dir / slot.day.isoformat()).is_dir()
    if state is IssueState.DONE or (state is IssueState.NOT_STARTED and not has_articles):
        logger.info("nothing due: %s (issue %s)", when, "sent" if state is IssueState.DONE else "without articles")
        return
    logger.warning(
        "missed: %s, beyond %s; its issue is %s and is not sent late on its own; "
        "send it by hand with `newsletter send --date %s` if it should still go out",
        when, window, state, slot.day,
    )


# --- one scheduler per project --------------------------------------------------------------------

def schedule_lock_path(settings: Settings) -> Path:
    """Return the project's scheduler lock file, next to the database."""
    return settings.database_path.parent / SCHEDULE_LOCK_NAME


def schedule_lock(settings: Settings) -> contextlib.AbstractContextManager[object]:
    """Hold the project's scheduler lock; raise LockedError when another scheduler holds it (on
    PostgreSQL, an advisory lock: one scheduler across every host, so each day is sent once)."""
    busy = ("another `newsletter schedule` is running for this project (pid {pid}); it sends the issues, "
            "so this one stops")
    if settings.database_url():
        return database_lock(settings, SCHEDULE_KEY, busy.replace("(pid {pid})", "on one of the hosts"))
    return held_lock(schedule_lock_path(settings), busy)


def run_once(settings: Settings, now: datetime, *, stop: threading.Event | None = None) -> RunResult | None:
    """Run the slot due at NOW under the scheduler lock (for cron); None when nothing is due."""
    with schedule_lock(settings):
        return run_slot(settings, now, stop=stop)


def format_slot(slot: Slot) -> str:
    """Return a slot as one line: local time with zone and offset, then UTC, then any DST note."""
    utc = slot.at.astimezone(timezone.utc)
    zone = slot.at.tzname() or ""
    offset = f"{slot.at:%z}"
    shown = f"{zone} ({offset})" if zone and zone != offset else offset
    line = f"{slot.at:%a %Y-%m-%d %H:%M} {shown}  =  {utc:%Y-%m-%d %H:%M} UTC"
    return f"{line}  ({slot.note})" if slot.note else line


# --- the scheduler -------------------------------------------------------------------------------

def _read_inbox(settings: Settings) -> None:
    """Read the [inbox] mailbox once and log its summary; a failure is logged, and the next run tries again."""
    from newsletter import inbox

    try:
        logger.info("%s", inbox.read_mailbox(settings, datetime.now(timezone.utc)).line())
    except Exception as err:  # the mailbox being down must not end the scheduler (nor the sends)
        logger.error("reading the inbox failed; trying again in %d minutes: %s", settings.inbox.every_minutes, err)


def run_scheduler(settings: Settings, stop: threading.Event, *,
                  lock_wait: float = LOCK_WAIT_SECONDS) -> None:
    """Send each day's issue at its slot until STOP is set; first catch up the slot due now, if any.

    Raises LockedError at once when another scheduler runs for the project. A run's failure is
    logged and retried within the catch-up window; it never stops the scheduler.
    """
    from apscheduler.schedulers import SchedulerNotRunningError
    from apscheduler.schedulers.background import BackgroundScheduler

    def now() -> datetime:
        return datetime.now(timezone.utc)

    with schedule_lock(settings):
        grace = int(max(catch_up_window(settings).total_seconds(), 60))
        scheduler = BackgroundScheduler(
            timezone=settings.tz,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": grace},
        )

        def run(day: date | None = None) -> None:
            moment = now()
            target = day if day is not None else due_slot(moment, settings)
            try:
                if day is None:
                    result = run_slot(settings, moment, stop=stop, lock_wait=lock_wait)
                else:
                    result = run_due_issue(settings, day, stop=stop, lock_wait=lock_wait)
                    log_result(result)
            except Exception:  # a bug or an OS error in one run must not end the scheduler
                logger.exception("the run for the issue of %s failed; the scheduler keeps running", target)
                result = None
            if target is None or stop.is_set() or (result is not None and result.ok):
                return
            again = now() + RETRY_AFTER
            if result is not None and result.retry_at is not None:  # the ledger's backoff knows better
                again = max(now() + timedelta(minutes=1), result.retry_at)
            if due_slot(again, settings) == target:
                try:
                    scheduler.add_job(run, "date", run_date=again, args=[target], id=f"retry-{target}",
                                      replace_existing=True)
                except SchedulerNotRunningError:  # stopping meanwhile: the next start resumes
                    return
                logger.info("trying the issue of %s again at %s", target,
                            again.astimezone(settings.tz).strftime("%H:%M %Z"))
            else:
                logger.warning("the issue of %s is not tried again: its catch-up window closes first; "
                               "`newsletter send --date %s` resumes it by hand", target, target)

        started = now()
        due = due_slot(started, settings)
        # a due slot runs at once (the catch-up) as the daily job itself, so max_instances covers it
        catch_up = {"next_run_time": started} if due is not None else {}
        scheduler.add_job(run, daily_trigger(settings), id="daily-send", name="daily send", **catch_up)
        if settings.inbox.host:  # bounces, complaints and mailto unsubscribes, every few minutes
            scheduler.add_job(_read_inbox, "interval", args=[settings], minutes=settings.inbox.every_minutes,
                              id="inbox", name="read the inbox", next_run_time=started)
        upcoming = next_runs(started, 1, settings)[0]
        logger.info("newsletter schedule for %s: daily at %s %s, last week's digest from %s on; next run %s",
                    settings.root, settings.schedule.send_time, settings.newsletter.timezone,
                    settings.digest.weekday.capitalize(), format_slot(upcoming))
        if due is not None:
            logger.info("catching up: the issue of %s is due (within [schedule] catch_up_hours = %g)",
                        due, settings.schedule.catch_up_hours)
        else:
            _log_nothing_due(settings, started)
        scheduler.start()
        try:
            stop.wait()
        finally:
            # waits for the run in flight, which ends at a clean point now that STOP is set
            scheduler.shutdown(wait=True)
        logger.info("newsletter schedule stopped")
