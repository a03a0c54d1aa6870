"""Send one day's issue through the ledger: freeze, snapshot, recover, claim, write, record."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from newsletter import store, structure
from newsletter.delivery import ledger
from newsletter.delivery.lock import send_lock
from newsletter.delivery.outbox import OutboxTransport, Recovery, Staged
from newsletter.errors import DeliveryError, NewsletterError, SettingsError
from newsletter.models import RenderedIssue, Subscriber
from newsletter.settings import Settings, secret_key

if TYPE_CHECKING:  # smtp is imported only when a send uses it
    from newsletter.delivery import smtp

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


class IssueChangedError(NewsletterError):
    """The issue's content differs from the version frozen when its sending started."""


@dataclass(frozen=True)
class SendReport:
    """What one run of `send_issue` did, and where the issue stands after it."""

    day: date
    status: str  # the issue's state after this run: sending, paused or done
    outbox: Path | None  # the Maildir's new/ folder (None for SMTP)
    written: int = 0  # messages written (outbox) or accepted by the server (SMTP) in this run
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
    # SMTP only
    transport: str = "outbox"
    server: str = ""  # host:port
    deferred: int = 0  # attempts that ended in a retry (4xx, a drop before the end of the body)
    bounced: int = 0  # rows failed with a 5.1.x at RCPT: the subscriber is now bounced
    in_doubt: int = 0  # drops after the final ".": in doubt (retried once under the retry policy)
    in_doubt_retried: int = 0  # rows in doubt from an earlier run sent again at the start of this one
    recovered_in_doubt: int = 0  # rows a killed run left after DATA: now in doubt
    retried_failed: int = 0  # failed rows sent again because of --retry-failed
    waiting_retries: int = 0  # rows left in retry for a later send (greylisting, long backoff)
    next_retry_at: str | None = None
    expired: int = 0  # rows of older issues failed as expired by this run

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
    transport: str | None = None,
    in_doubt: str = "retry",
    retry_now: bool = False,
    policy: "smtp.RetryPolicy | None" = None,
    retry_failed: bool = False,
) -> SendReport:
    """Send RENDERED to every subscriber of its day exactly once, resuming where a send stopped.

    The first send of a day freezes the content and snapshots the active subscribers; later sends
    carry on with the frozen version. A changed issue is refused (IssueChangedError) unless
    REBUILD, and then only the rows not yet written get the new version. STOP, when set, ends the
    run after the messages in flight are recorded. TRANSPORT (default: [delivery] transport) is
    "outbox" (a Maildir) or "smtp"; IN_DOUBT ("retry" or "skip") settles rows whose message may or
    may not have arrived; RETRY_NOW makes every retry row due at once; RETRY_FAILED sends the day
    again to its failed rows (not bounced or expired ones, nor subscribers no longer active).
    Starting a day's issue expires the retries of older ones. The SMTP breaker pauses the issue and
    raises DeliveryError.
    """
    from newsletter import messages

    kind = transport or settings.delivery.transport
    if kind not in ("outbox", "smtp"):
        raise SettingsError(f"{settings.root / 'newsletter.toml'}: [delivery] transport must be 'outbox' or "
                            f"'smtp', not {kind!r}")
    if in_doubt not in ledger.IN_DOUBT_POLICIES:
        raise SettingsError(f"--in-doubt must be 'retry' or 'skip', not {in_doubt!r}")
    # every setting is checked before the lock, the snapshot or any claim
    signer = messages.dkim_signer(settings)
    key = secret_key(settings)  # before the freeze: a missing key is made only while nothing was sent
    smtp_config = None
    if kind == "smtp":
        from newsletter.delivery import smtp

        smtp_config = smtp.smtp_config(settings)
    day = rendered.issue.day
    stamp: Callable[[], str] = (lambda: now.isoformat(timespec="seconds")) if now else store.now_iso
    outbox = OutboxTransport(settings.outbox_dir, day, sync=sync)
    with send_lock(settings):
        outbox.open()  # the public copy lives there whatever the transport
        recovered_in_doubt = 0
        if kind == "outbox":
            recovery = outbox.recover(conn, now=stamp())
        else:
            retried, recovered_in_doubt = ledger.recover_interrupted(conn, day, now=stamp())
            recovery = Recovery(released=retried)
        frozen = ledger.frozen_issue(conn, day)
        if retry_failed and frozen is None:
            raise DeliveryError(f"{day}: --retry-failed: this issue has not been sent yet; "
                                f"`newsletter send --date {day}` sends it to everyone")
        sha = ledger.content_sha256(rendered.html, rendered.text)
        structured = structure.to_json(structure.from_issue(rendered.issue))
        changed = rebuilt = False
        earlier = 0
        if frozen is None:
            frozen = ledger.freeze_and_snapshot(
                conn, day, number=rendered.issue.number, subject=rendered.issue.subject,
                html=rendered.html, text=rendered.text, now=stamp(), structure=structured,
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
                    html=rendered.html, text=rendered.text, now=stamp(), structure=structured,
                )
        # a daily issue is not retried once the next one has started (this one included)
        expired = ledger.expire_superseded(conn, now=stamp())
        for old_day, count in expired.items():
            logger.info("%s: %d unsent row(s) expired: the issue of a later day has started", old_day, count)
        # after the expiry, so that an older day asked for by name is sent, not expired again
        retried_failed = ledger.retry_failed(conn, day, now=stamp()) if retry_failed else 0
        frozen = ledger.frozen_issue(conn, day) or frozen
        counts = ledger.counts(conn, day)
        report = SendReport(
            day, frozen.status, outbox.new if kind == "outbox" else None, already_sent=counts[ledger.SENT],
            total=sum(counts.values()), changed=changed, rebuilt=rebuilt,
            earlier_version=earlier, recovery=recovery, transport=kind,
            server=smtp_config.where if smtp_config else "", recovered_in_doubt=recovered_in_doubt,
            expired=sum(expired.values()), retried_failed=retried_failed,
        )
        if frozen.status == ledger.ISSUE_DONE:
            return dataclasses.replace(report, nothing_to_do=True)
        if frozen.status == ledger.ISSUE_PAUSED:
            ledger.set_issue_state(conn, day, ledger.ISSUE_SENDING, now=stamp())
            logger.info("%s: resuming a paused issue", day)
        doubt_retried = ledger.apply_in_doubt_policy(conn, day, in_doubt, now=stamp())
        if retry_now:
            ledger.retry_now(conn, day, now=stamp())

        # the messages are made from the frozen version, so a resumed send writes the same bytes
        issue = dataclasses.replace(rendered.issue, subject=frozen.subject, number=frozen.number)
        frozen_rendered = RenderedIssue(issue, frozen.html, frozen.text)
        outbox.write_public(
            messages.public_html(frozen_rendered, settings), messages.public_text(frozen_rendered, settings)
        )
        template = messages.MessageTemplate.build(
            frozen_rendered, settings, key, frozen.date_header.astimezone(settings.tz),
            signer=signer,
        )
        counts = ledger.counts(conn, day)
        todo = sum(counts[s] for s in (ledger.PENDING, ledger.RETRY))
        if kind == "outbox":
            result = _send_batches(conn, outbox, template.personalize, day, frozen.sha256,
                                   settings.delivery.batch_size, stamp, progress, stop, todo=todo)
        else:
            from newsletter.delivery.smtp import WireMessages

            result = _send_smtp(conn, settings, smtp_config, WireMessages(template).data, day, frozen.sha256,
                                now=now, progress=progress, stop=stop, todo=todo, in_doubt=in_doubt,
                                policy=policy)
        done = ledger.finish_if_done(conn, day, now=stamp())
        status = ledger.ISSUE_DONE if done else frozen.status
        if status == ledger.ISSUE_PAUSED:
            status = ledger.ISSUE_SENDING
        return dataclasses.replace(report, status=status, in_doubt_retried=doubt_retried,
                                   next_retry_at=None if done else ledger.next_retry_at(conn, day), **result)


def _send_smtp(
    conn: sqlite3.Connection,
    settings: Settings,
    config,
    make_data: Callable,
    day: date,
    sha: str,
    *,
    now: datetime | None,
    progress: Progress | None,
    stop: threading.Event | None,
    todo: int,
    in_doubt: str,
    policy,
) -> dict[str, object]:
    """Run the SMTP pool over DAY's claimable rows; return the SendReport fields it fills."""
    from datetime import timedelta, timezone

    from newsletter.delivery.smtp import RetryPolicy, SmtpTransport, Throttle

    delivery = settings.delivery
    # retry times are kept to the millisecond, so a claim must compare at that precision too
    stamp_ms: Callable[[], str] = (
        (lambda: now.isoformat(timespec="milliseconds")) if now
        else (lambda: datetime.now(timezone.utc).isoformat(timespec="milliseconds"))
    )
    recent: list[float] = []
    if delivery.hourly_cap:
        wall = datetime.now(timezone.utc)
        mono = time.monotonic()
        since = (wall - timedelta(hours=1)).isoformat(timespec="seconds")
        for stamp_text in ledger.sent_since(conn, since, from_day=day - timedelta(days=2), limit=delivery.hourly_cap):
            recent.append(mono - (wall - datetime.fromisoformat(stamp_text)).total_seconds())
    throttle = Throttle(delivery.rate, delivery.hourly_cap, recent)
    pool = SmtpTransport(config, concurrency=delivery.concurrency, throttle=throttle,
                         policy=policy or RetryPolicy(), in_doubt=in_doubt)
    totals = pool.deliver(conn, day, sha, make_data, stop=stop or threading.Event(), stamp=stamp_ms,
                          progress=progress, todo=todo, wait_for_retries=now is None)
    return {
        "written": totals.sent, "skipped": totals.skipped, "failed": totals.failed, "nbytes": totals.nbytes,
        "seconds": totals.seconds, "stopped": totals.stopped, "deferred": totals.deferred,
        "bounced": totals.bounced, "in_doubt": totals.in_doubt, "waiting_retries": totals.waiting_retries,
    }


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
    staged: Staged | None = None
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
                    previous, in_flight = in_flight, None  # a failure here is not recorded twice
                    previous[1].result()
                    record(previous[0])
                in_flight, staged = (staged, committer.submit(transport.commit, staged)), None
        finally:
            # a batch written to tmp/ but never committed (the database failed meanwhile) is
            # removed: its rows stay claimed, and the next send finds no file and writes them again
            if staged is not None:
                transport.discard(staged)
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


# --- proof copies -----------------------------------------------------------------------------------

PROOF_PREFIX = "[TEST] "


@dataclass(frozen=True)
class ProofReport:
    """Where the proof copies went: files written (outbox) or addresses the server accepted (SMTP)."""

    transport: str
    delivered: tuple[str, ...] = ()
    refused: tuple[tuple[str, str], ...] = ()  # (address, the server's reply)
    files: tuple[Path, ...] = ()
    server: str = ""


def send_proofs(
    settings: Settings,
    rendered: RenderedIssue,
    addresses: list[str],
    *,
    transport: str | None = None,
    now: datetime | None = None,
) -> ProofReport:
    """Send RENDERED, its subject marked [TEST], to ADDRESSES only, leaving the ledger alone.

    Each copy is personal to nobody (the fallback greeting, an unsubscribe link that matches no
    subscriber) and carries a Message-ID of its own, so a mail client shows every proof.
    With the outbox transport the copies are written into outbox/DAY/proofs/ as .eml files.
    """
    import re
    import secrets

    from newsletter import messages
    from newsletter.files import write_atomic

    kind = transport or settings.delivery.transport
    if kind not in ("outbox", "smtp"):
        raise SettingsError(f"{settings.root / 'newsletter.toml'}: [delivery] transport must be 'outbox' or "
                            f"'smtp', not {kind!r}")
    if not addresses:
        raise DeliveryError("--test-to: name at least one address")
    signer = messages.dkim_signer(settings)
    recipients = [messages.ascii_address(address.strip()) for address in addresses]  # HeaderError names it
    config = None
    if kind == "smtp":
        from newsletter.delivery.smtp import smtp_config

        config = smtp_config(settings)
    day = rendered.issue.day
    subject = messages.check_header_value("subject", PROOF_PREFIX + rendered.issue.subject)
    proof = RenderedIssue(dataclasses.replace(rendered.issue, subject=subject), rendered.html, rendered.text)
    moment = (now or datetime.now(settings.tz)).astimezone(settings.tz)
    template = messages.MessageTemplate.build(proof, settings, secret_key(settings), moment)
    domain = messages.message_id(day, 0, settings.sender_domain).rsplit("@", 1)[1]
    copies = []
    for n, recipient in enumerate(recipients):
        raw = template.personalize(Subscriber(0, recipient, recipient.lower(), "", "active", "", ""))
        unique = f"<proof.{day:%Y%m%d}.{moment:%H%M%S}.{n}.{secrets.token_hex(6)}@{domain}>"
        raw = re.sub(rb"(?m)^Message-ID: <[^>\r\n]*>", f"Message-ID: {unique}".encode("ascii"), raw, count=1)
        copies.append((recipient, signer(raw)))
    if kind == "outbox":
        folder = settings.outbox_dir / day.isoformat() / "proofs"
        files = []
        for n, (recipient, raw) in enumerate(copies):
            safe = re.sub(r"[^A-Za-z0-9@._+-]", "_", recipient)
            files.append(write_atomic(folder, f"{moment:%Y%m%dT%H%M%S}-{n}-{safe}.eml", raw))
        return ProofReport(kind, tuple(r for r, _ in copies), files=tuple(files))
    from newsletter.delivery.smtp import ConnectionTrouble, SmtpConnection, stuff

    connection = SmtpConnection(config)
    delivered, refused = [], []
    try:
        for recipient, raw in copies:
            if not connection.is_open:
                connection.open()
            attempt = connection.send(recipient, stuff(raw))
            if attempt.kind == "sent":
                delivered.append(recipient)
            else:
                refused.append((recipient, attempt.reply))
    except ConnectionTrouble as err:
        raise DeliveryError(str(err)) from err
    finally:
        connection.close()
    return ProofReport(kind, tuple(delivered), tuple(refused), server=config.where)
