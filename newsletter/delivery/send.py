"""Send one day's issue through the ledger: freeze, snapshot, recover, claim, write, record."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from newsletter import store
from newsletter.delivery import ledger
from newsletter.delivery.lock import send_lock
from newsletter.delivery.outbox import OutboxTransport, Recovery, Staged
from newsletter.errors import NewsletterError
from newsletter.models import RenderedIssue
from newsletter.settings import Settings, secret_key

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


class IssueChangedError(NewsletterError):
    """The issue's content differs from the version frozen when its sending started."""


@dataclass(frozen=True)
class SendReport:
    """What one run of `send_issue` did, and where the issue stands after it."""

    day: date
    status: str  # the issue's state after this run: sending, paused or done
    outbox: Path  # the Maildir's new/ folder
    written: int = 0  # messages written by this run
    skipped: int = 0  # rows skipped because the subscriber left after the snapshot
    failed: int = 0  # rows whose message could not be made
    already_sent: int = 0  # rows sent by earlier runs (recovered rows included)
    total: int = 0  # rows in the snapshot
    seconds: float = 0.0
    nbytes: int = 0
    stopped: bool = False  # a stop was asked for (SIGTERM): the run ended at a clean point
    nothing_to_do: bool = False  # the issue was already done
    changed: bool = False  # the content differs from the frozen version (a done issue, or a rebuild)
    rebuilt: bool = False  # the new version was frozen for the rows not yet written
    earlier_version: int = 0  # after a rebuild: rows that had the earlier version already
    recovery: Recovery = Recovery()

    @property
    def rate(self) -> float:
        """Messages written per second."""
        return self.written / self.seconds if self.seconds > 0 else 0.0

    @property
    def sent(self) -> int:
        """Rows sent so far, by this run and earlier ones."""
        return self.already_sent + self.written


def send_issue(
    conn: sqlite3.Connection,
    settings: Settings,
    rendered: RenderedIssue,
    *,
    rebuild: bool = False,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    now: datetime | None = None,
    sync: str = "auto",
) -> SendReport:
    """Write RENDERED to every subscriber of its day exactly once, resuming where a send stopped.

    The first send of a day freezes the content and snapshots the active subscribers; later sends
    carry on with the frozen version. A changed issue is refused (IssueChangedError) unless
    REBUILD, and then only the rows not yet written get the new version. STOP, when set, ends the
    run after the batch in flight is durable and recorded.
    """
    from newsletter import messages

    day = rendered.issue.day
    stamp: Callable[[], str] = (lambda: now.isoformat(timespec="seconds")) if now else store.now_iso
    transport = OutboxTransport(settings.outbox_dir, day, sync=sync)
    with send_lock(settings):
        transport.open()
        recovery = transport.recover(conn, now=stamp())
        frozen = ledger.frozen_issue(conn, day)
        sha = ledger.content_sha256(rendered.html, rendered.text)
        changed = rebuilt = False
        earlier = 0
        if frozen is None:
            frozen = ledger.freeze_and_snapshot(
                conn, day, number=rendered.issue.number, subject=rendered.issue.subject,
                html=rendered.html, text=rendered.text, now=stamp(),
                message_id=lambda sid: messages.message_id(day, sid, settings.sender_domain),
            )
        elif frozen.sha256 != sha:
            changed = True
            counts = ledger.counts(conn, day)
            if frozen.status != ledger.ISSUE_DONE:
                written, total = counts[ledger.SENT], sum(counts.values())
                left = sum(counts[s] for s in ledger.UNFINISHED)
                if not rebuild:
                    raise IssueChangedError(
                        f"{day}: the issue changed since sending started ({written} of {total} "
                        f"written); rerun with --rebuild to send the new version to the {left} "
                        "not yet written"
                    )
                earlier, rebuilt = written, True
                frozen = ledger.refreeze(
                    conn, day, number=rendered.issue.number, subject=rendered.issue.subject,
                    html=rendered.html, text=rendered.text, now=stamp(),
                )
        counts = ledger.counts(conn, day)
        report = SendReport(
            day, frozen.status, transport.new, already_sent=counts[ledger.SENT],
            total=sum(counts.values()), changed=changed, rebuilt=rebuilt,
            earlier_version=earlier, recovery=recovery,
        )
        if frozen.status == ledger.ISSUE_DONE:
            return dataclasses.replace(report, nothing_to_do=True)

        # the messages are made from the frozen version, so a resumed send writes the same bytes
        issue = dataclasses.replace(rendered.issue, subject=frozen.subject, number=frozen.number)
        frozen_rendered = RenderedIssue(issue, frozen.html, frozen.text)
        transport.write_public(
            messages.public_html(frozen_rendered, settings), messages.public_text(frozen_rendered, settings)
        )
        template = messages.MessageTemplate.build(
            frozen_rendered, settings, secret_key(settings), frozen.date_header.astimezone(settings.tz)
        )
        result = _send_batches(conn, transport, template.personalize, day, frozen.sha256,
                               settings.delivery.batch_size, stamp, progress, stop,
                               todo=sum(counts[s] for s in (ledger.PENDING, ledger.RETRY)))
        done = ledger.finish_if_done(conn, day, now=stamp())
        status = ledger.ISSUE_DONE if done else frozen.status
        return dataclasses.replace(report, status=status, **result)


def _send_batches(
    conn: sqlite3.Connection,
    transport: OutboxTransport,
    personalize: Callable,
    day: date,
    sha: str,
    batch_size: int,
    stamp: Callable[[], str],
    progress: Progress | None,
    stop: threading.Event | None,
    todo: int,
) -> dict[str, object]:
    """Claim, stage, commit and record batches until none is left or STOP is set.

    Batch k+1 is personalized and written into tmp/ while a second thread makes batch k durable,
    so the CPU and the disk work at the same time. Batch k's rows are recorded `sent` (in this
    thread, which owns the connection) only after its commit has returned.
    """
    totals = {"written": 0, "skipped": 0, "failed": 0, "nbytes": 0}
    started = time.perf_counter()
    stopped = False

    def record(staged: Staged) -> None:
        delivered = staged.delivered
        ledger.set_state(conn, day, delivered.written, ledger.SENT, now=stamp(), expected=ledger.CLAIMED)
        for subscriber_id, reason in delivered.failed:
            ledger.set_state(conn, day, [subscriber_id], ledger.FAILED, now=stamp(),
                             expected=ledger.CLAIMED, reply=reason)
        totals["written"] += len(delivered.written)
        totals["failed"] += len(delivered.failed)
        totals["nbytes"] += delivered.nbytes
        if progress:
            done = totals["written"] + totals["skipped"] + totals["failed"]
            progress(done, max(todo, done))

    if progress:
        progress(0, todo)
    in_flight: tuple[Staged, Future] | None = None
    with ThreadPoolExecutor(1, thread_name_prefix="outbox-commit") as committer:
        try:
            while True:
                if stop is not None and stop.is_set():
                    stopped = True
                    break
                claim = ledger.claim_batch(conn, day, batch_size, sha256=sha, now=stamp())
                if not claim.rows and not claim.skipped:
                    break
                totals["skipped"] += claim.skipped
                staged = transport.stage(claim.rows, personalize)
                if in_flight is not None:
                    in_flight[1].result()
                    record(in_flight[0])
                in_flight = staged, committer.submit(transport.commit, staged)
        finally:
            # the batch in flight is finished and recorded before leaving, even on an error
            # elsewhere, so a stop or a failure never leaves a durable file unrecorded needlessly
            if in_flight is not None:
                in_flight[1].result()
                record(in_flight[0])
    seconds = time.perf_counter() - started
    return {**totals, "seconds": seconds, "stopped": stopped}


def issue_status(conn: sqlite3.Connection, day: date) -> ledger.IssueStatus:
    """Return DAY's issue state and the number of its deliveries in each state."""
    return ledger.issue_status(conn, day)
