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
from newsletter.settings import Settings

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
    from newsletter.delivery.send import send_issue, send_proofs

    prepared, report = _prepare_and_check(settings, day, force)
    if prepared.rendered is None:
        return DaySend(prepared)
    if on_checked is not None:
        on_checked(prepared, report)
    if test_to:
        proofs = send_proofs(settings, prepared.rendered, list(test_to), transport=transport)
        return DaySend(prepared, report, proofs=proofs)
    with contextlib.ExitStack() as stack:
        if conn is None:
            conn = store.connect(settings.database_path)
            stack.callback(conn.close)
        sent = send_issue(conn, settings, prepared.rendered, rebuild=rebuild, progress=progress, stop=stop,
                          transport=transport, in_doubt=in_doubt, retry_now=retry_now, retry_failed=retry_failed,
                          lock_wait=lock_wait, checked=report, force=force)
    return DaySend(prepared, report, sent=sent)


def _prepare_and_check(settings: Settings, day: date, force: bool) -> tuple[PreparedIssue, CheckReport]:
    """Return DAY's prepared issue and its check; raise NotSentError when it may not go."""
    from newsletter.check import check_rendered
    from newsletter.pipeline import prepare_issue

    try:
        prepared = prepare_issue(settings, day)
        report = check_rendered(prepared, settings)
    except NewsletterError as err:
        raise NotSentError(str(err), findings=err.findings) from err
    if report.errors:
        if not force:
            raise CheckFailedError(prepared, report)
        logger.warning("%s: sending despite %d check error(s) (--force)", day, len(report.errors))
    return prepared, report


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


__all__ = ["CheckFailedError", "DaySend", "NotSentError", "send_day", "stop_on_signals"]
