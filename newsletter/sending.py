"""Check, then send: the one way a day's issue goes out, for the CLI, the scheduler and proofs.

`send_day` reads, builds and renders the day's issue (pipeline.py), runs the pre-send check
(check.py) and stops on its errors unless `force`, then sends the issue through the ledger
(delivery.send_issue) or, with `test_to`, sends proofs. `stop_on_signals` is the one place that
turns SIGTERM and Ctrl-C into a stop at a clean point.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date

from newsletter.check import CheckReport
from newsletter.delivery.states import InDoubt
from newsletter.delivery.send import ProofReport, SendReport
from newsletter.errors import NewsletterError
from newsletter.pipeline import PreparedIssue
from newsletter.models import RenderedIssue
from newsletter.settings import Settings, secret_key
from newsletter.weeks import IsoWeek

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


class NotSentError(NewsletterError):
    """The issue could not be prepared or checked: nothing was sent (the cause is chained)."""


class CheckFailedError(NotSentError):
    """The pre-send check found errors; nothing was sent."""

    def __init__(self, prepared: PreparedIssue, report: CheckReport) -> None:
        count = len(report.errors)
        super().__init__(f"{prepared.day}: the check found {count} error(s); nothing was sent "
                         "(fix them, or send anyway with --force)")
        self.prepared = prepared
        self.report = report


@dataclass(frozen=True)
class DaySend:
    """What `send_day` did: the prepared issue, its check, and the send or the proofs."""

    prepared: PreparedIssue
    check: CheckReport | None = None  # None: no issue today (the empty policy)
    sent: SendReport | None = None
    proofs: ProofReport | None = None

    @property
    def forced(self) -> int:
        """Check errors the issue was sent despite (--force)."""
        return len(self.check.errors) if self.check else 0


def send_day(
    settings: Settings,
    day: date,
    *,
    transport: str | None = None,
    force: bool = False,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
    conn: sqlite3.Connection | None = None,
    rebuild: bool = False,
    in_doubt: str = InDoubt.RETRY,
    retry_now: bool = False,
    retry_failed: bool = False,
    test_to: Sequence[str] = (),
    lock_wait: float = 0.0,
    on_checked: Callable[[PreparedIssue, CheckReport], None] | None = None,
) -> DaySend:
    """Prepare DAY's issue, check it, then send it to every subscriber (or proofs to TEST_TO).

    A check error stops everything (CheckFailedError) unless FORCE; an issue that cannot be
    prepared or checked raises NotSentError. ON_CHECKED runs once the issue may go, before the
    send (the CLI prints the warnings there). The send is `delivery.send_issue` with the other
    options; CONN defaults to the project's database, opened here.
    """
    from newsletter import store
    from newsletter.delivery.recipients import VariantsChangedError
    from newsletter.delivery.send import send_issue, send_proofs

    with contextlib.ExitStack() as stack:
        if conn is None and not test_to:
            conn = store.open_database(settings)
            stack.callback(conn.close)
        for attempt in range(_PREPARE_ATTEMPTS):
            prepared, report = _prepare_and_check(settings, day, force, conn)
            if prepared.rendered is None:
                return DaySend(prepared)
            if on_checked is not None and attempt == 0:
                on_checked(prepared, report)
            if test_to:
                proofs = send_proofs(settings, prepared.rendered, list(test_to), transport=transport)
                return DaySend(prepared, report, proofs=proofs)
            assert conn is not None
            try:
                sent = send_issue(conn, settings, prepared.rendered, rebuild=rebuild, progress=progress, stop=stop,
                                  transport=transport, in_doubt=in_doubt, retry_now=retry_now,
                                  retry_failed=retry_failed, lock_wait=lock_wait, checked=report, force=force,
                                  variants=prepared.variants)
            except VariantsChangedError as err:
                if attempt + 1 == _PREPARE_ATTEMPTS:
                    raise
                logger.info("%s; preparing it again", err)
                continue
            return DaySend(prepared, report, sent=sent)
    raise AssertionError("unreachable")


# a reader choosing new sections between the rendering and the snapshot makes the send prepare again
_PREPARE_ATTEMPTS = 3


def _prepare_and_check(settings: Settings, day: date, force: bool,
                       conn: sqlite3.Connection | None) -> tuple[PreparedIssue, CheckReport]:
    """Return DAY's prepared issue (with a variant per set of sections its readers chose) and its
    check; raise NotSentError when it may not go."""
    from newsletter.check import check_rendered
    from newsletter.delivery.recipients import variant_keys
    from newsletter.pipeline import prepare_issue

    try:
        keys = variant_keys(conn, day, settings.issue.sections) if conn is not None else []
        prepared = prepare_issue(settings, day, keys)
        report = check_rendered(prepared, settings)
    except NewsletterError as err:
        raise NotSentError(str(err), findings=err.findings) from err
    if report.errors:
        if not force:
            raise CheckFailedError(prepared, report)
        logger.warning("%s: sending despite %d check error(s) (--force)", day, len(report.errors))
    return prepared, report


@dataclass(frozen=True)
class DigestSend:
    """What `send_digest` did: each variant's check and send, and who was owed nothing to read."""

    week: IsoWeek
    checks: tuple[CheckReport, ...] = ()
    sent: tuple[SendReport, ...] = ()
    froze: bool = False  # this run froze the week's variants and readers (the first run of the week)
    nothing: int = 0  # readers owed issues but no article in their sections (when this run froze it)

    @property
    def written(self) -> int:
        return sum(report.written for report in self.sent)

    @property
    def total(self) -> int:
        return sum(report.total for report in self.sent)

    @property
    def forced(self) -> int:
        return sum(len(report.errors) for report in self.checks)


def send_digest(
    settings: Settings,
    week: IsoWeek,
    *,
    today: date,
    transport: str | None = None,
    force: bool = False,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
    conn: sqlite3.Connection | None = None,
    in_doubt: str = InDoubt.RETRY,
    retry_now: bool = False,
    lock_wait: float = 0.0,
) -> DigestSend:
    """Send WEEK's digest to the readers owed it (digest.py), once each: check every variant, freeze
    them and their readers at the first run, then send each variant through `delivery.send_issue`.

    A week not over by TODAY is refused (its last issues would be missing); a check error stops
    everything before anything is frozen (CheckFailedError) unless FORCE. A later run resumes the
    frozen variants, whoever changed their preferences meanwhile.
    """
    from newsletter import store
    from newsletter.delivery import digests
    from newsletter.delivery.send import send_issue

    if today <= week.sunday:
        raise NotSentError(f"{week}: the week is not over until the end of Sunday {week.sunday}; its digest can "
                           f"go out from Monday {week.following().monday} (`newsletter preview --digest --week "
                           f"{week}` shows it so far)")
    with contextlib.ExitStack() as stack:
        if conn is None:
            conn = store.open_database(settings)
            stack.callback(conn.close)
        secret_key(settings)  # made (if ever) before the freeze: a key is never made once something is frozen
        variants, plan = _digest_variants(conn, settings, week)
        checks = tuple(_check_variant(settings, rendered, force) for rendered in variants)
        froze = False
        if plan is not None and plan.variants:
            described = [(r, d.to_json(), plan.recipients[d.key]) for r, d in zip(variants, plan.variants)]
            froze = digests.freeze_week(conn, settings, week, described, now=store.now_iso())
            if not froze:  # another run froze the week meanwhile: send what it froze
                return send_digest(settings, week, today=today, transport=transport, force=force, stop=stop,
                                   progress=progress, conn=conn, in_doubt=in_doubt, retry_now=retry_now,
                                   lock_wait=lock_wait)
        sent = []
        for rendered, report in zip(variants, checks):
            if stop is not None and stop.is_set():
                break
            sent.append(send_issue(conn, settings, rendered, checked=report, force=force, stop=stop,
                                   progress=progress, transport=transport, in_doubt=in_doubt,
                                   retry_now=retry_now, lock_wait=lock_wait))
    return DigestSend(week, checks, tuple(sent), froze, plan.nothing if plan else 0)


def _digest_variants(conn: sqlite3.Connection, settings: Settings, week: IsoWeek):
    """Return WEEK's variants as frozen (and no plan), or as planned and rendered now (and the plan)."""
    from newsletter import digest
    from newsletter.delivery import digests
    from newsletter.renderer import make_environment

    try:
        keys = digests.frozen_keys(conn, week)
        if keys:
            return [digests.frozen_variant(conn, settings, key) for key in keys], None
        plan = digest.plan(conn, settings, week)
        env = make_environment(settings)
        return [digest.render(variant, settings, env) for variant in plan.variants], plan
    except NewsletterError as err:
        raise NotSentError(f"{week}: the digest cannot be made: {err}", findings=err.findings) from err


def check_digest(settings: Settings, conn: sqlite3.Connection, week: IsoWeek) -> list[CheckReport]:
    """Return the check of each variant of WEEK's digest, as frozen or as it would be sent now."""
    from newsletter.check import check_rendered

    variants, _ = _digest_variants(conn, settings, week)
    return [check_rendered(PreparedIssue(r.issue.day, r, 0), settings) for r in variants]


def _check_variant(settings: Settings, rendered: RenderedIssue, force: bool) -> CheckReport:
    """Check one variant as a daily issue is checked; raise CheckFailedError on an error unless FORCE."""
    from newsletter.check import check_rendered

    prepared = PreparedIssue(rendered.issue.day, rendered, 0)
    report = check_rendered(prepared, settings)
    if report.errors:
        if not force:
            raise CheckFailedError(prepared, report)
        logger.warning("%s: sending despite %d check error(s) (--force)", rendered.issue.day, len(report.errors))
    return report


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[threading.Event]:
    """Set STOP on SIGTERM or SIGINT for the block (the run in flight then ends at a clean point)."""
    def handler(signum: int, _frame: object) -> None:
        if not stop.is_set():
            logger.info("%s: finishing the message in flight, then stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


__all__ = ["CheckFailedError", "DaySend", "DigestSend", "NotSentError", "check_digest", "send_day", "send_digest",
           "stop_on_signals"]
