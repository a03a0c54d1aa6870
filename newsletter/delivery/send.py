"""Send one day's issue through the ledger: freeze, snapshot, recover, claim, deliver, record.

`send_issue` is the same for every transport: it takes the ledger from its start (freeze and
snapshot, expiry, the in-doubt and retry policies) to its end (done or not), and hands the claims
to a `Transport` (transport.py) in between. `send_proofs` sends [TEST] copies through the same
transports without the ledger. The issue is checked first by `sending.send_day`, the way in for
the CLI and the scheduler.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter import store, structure
from newsletter.delivery import ledger, recipients
from newsletter.delivery.ledger import FrozenIssue, InDoubt, IssueState
from newsletter.delivery.lock import send_lock
from newsletter.delivery.transport import (
    Claims, Copy, Options, ProofReport, Recovery, Totals, Transport, TransportName, open_transport,
    transport_name,
)
from newsletter.errors import DeliveryError, LockedError, NewsletterError, NotCheckedError, SettingsError
from newsletter.files import PUBLIC_DIR, make_dirs
from newsletter.models import RenderedIssue, Subscriber
from newsletter.settings import Settings, secret_key
from newsletter.variants import ALL, IssueTemplates, Variant

if TYPE_CHECKING:
    from newsletter.check.report import CheckReport
    from newsletter.delivery.smtp import RetryPolicy

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
_LOCK_POLL_SECONDS = 0.5


class IssueChangedError(NewsletterError):
    """The issue's content differs from the version frozen when its sending started."""


@dataclass(frozen=True)
class Start:
    """What a run did to the ledger before its first message."""

    already_sent: int = 0  # rows sent by earlier runs (recovered rows included)
    total: int = 0  # rows in the snapshot
    nothing_to_do: bool = False  # the issue was already done
    changed: bool = False  # the content differs from the frozen version (a done issue, or a rebuild)
    rebuilt: bool = False  # the new version was frozen for the rows not yet written
    earlier_version: int = 0  # after a rebuild: rows that had the earlier version already
    expired: int = 0  # rows of older issues failed as expired by this run
    retried_failed: int = 0  # failed rows sent again because of --retry-failed
    in_doubt_retried: int = 0  # rows in doubt from an earlier run sent again at the start of this one


@dataclass(frozen=True)
class SendReport:
    """What one run of `send_issue` did, and where the issue stands after it."""

    day: date
    status: IssueState  # after this run: sending, paused or done
    transport: TransportName
    destination: Path | str  # the Maildir's new/ folder, or "host:port by SMTP"
    start: Start = Start()
    recovery: Recovery = Recovery()
    totals: Totals = field(default_factory=Totals)
    next_retry_at: str | None = None
    failed_means: str = ""  # what a failed row means with this transport
    hint: str = ""  # what to tell the user after this transport's send

    @property
    def outbox(self) -> Path | None:
        """The Maildir's new/ folder (None for SMTP)."""
        return self.destination if isinstance(self.destination, Path) else None

    @property
    def written(self) -> int:
        """Messages written (outbox) or accepted by the server (SMTP) in this run."""
        return self.totals.written

    @property
    def sent(self) -> int:
        """Rows sent so far, by this run and earlier ones."""
        return self.start.already_sent + self.totals.written

    @property
    def rate(self) -> float:
        """Messages written per second."""
        return self.totals.written / self.totals.seconds if self.totals.seconds > 0 else 0.0

    # the figures the summary and the tests read most, by name
    skipped = property(lambda self: self.totals.skipped)
    failed = property(lambda self: self.totals.failed)
    bounced = property(lambda self: self.totals.bounced)
    deferred = property(lambda self: self.totals.deferred)
    in_doubt = property(lambda self: self.totals.in_doubt)
    nbytes = property(lambda self: self.totals.nbytes)
    seconds = property(lambda self: self.totals.seconds)
    stopped = property(lambda self: self.totals.stopped)
    waiting_retries = property(lambda self: self.totals.waiting_retries)
    total = property(lambda self: self.start.total)
    nothing_to_do = property(lambda self: self.start.nothing_to_do)
    changed = property(lambda self: self.start.changed)
    rebuilt = property(lambda self: self.start.rebuilt)
    earlier_version = property(lambda self: self.start.earlier_version)
    expired = property(lambda self: self.start.expired)
    retried_failed = property(lambda self: self.start.retried_failed)
    in_doubt_retried = property(lambda self: self.start.in_doubt_retried)
    recovered_in_doubt = property(lambda self: self.recovery.in_doubt)


def _require_checked(rendered: RenderedIssue, checked: CheckReport | None, force: bool) -> None:
    """Refuse an issue that has not passed the check (NotCheckedError), unless FORCE."""
    day = rendered.issue.day
    if force:
        return
    if checked is None or checked.day != day:
        raise NotCheckedError(f"{day}: the issue was not checked; send it with sending.send_day (or the "
                              "`send` command), which checks it first")
    if checked.errors:
        raise NotCheckedError(f"{day}: the check found {len(checked.errors)} error(s); nothing was sent")


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
    transport: str | Transport | None = None,
    in_doubt: str = InDoubt.RETRY,
    retry_now: bool = False,
    policy: "RetryPolicy | None" = None,
    retry_failed: bool = False,
    lock_wait: float = 0.0,
    checked: CheckReport | None = None,
    force: bool = False,
    variants: Sequence[Variant] = (),
) -> SendReport:
    """Send RENDERED to every subscriber of its day exactly once, resuming where a send stopped.

    Only a checked issue goes out: CHECKED is `check`'s report for RENDERED's day with no error
    (`sending.send_day` runs the check and passes it), or FORCE says to send without one (the
    delivery tests' hand-made issues, benchmarks); anything else is refused before the lock,
    so calling the library directly cannot skip the check. The first send of a day freezes the content and snapshots the active
    subscribers; later sends carry on with the frozen version. A changed issue is refused
    (IssueChangedError) unless REBUILD, and then only the rows not yet written get the new version.
    STOP, when set, ends the run after the messages in flight are recorded. TRANSPORT (default:
    [delivery] transport) is "outbox" (a Maildir), "smtp", or a Transport object; IN_DOUBT ("retry" or "skip") settles
    rows whose message may or may not have arrived; RETRY_NOW makes every retry row due at once;
    RETRY_FAILED sends the day again to its failed rows (not bounced or expired ones, nor
    subscribers no longer active). Starting a day's issue expires the retries of older ones. The
    SMTP breaker pauses the issue and raises DeliveryError. Another send holding the lock is
    waited for up to LOCK_WAIT seconds (LockedError after that, or at once on a stop).
    VARIANTS are the copies for readers who chose sections (pipeline.prepare_issue renders them
    for the keys recipients.variant_keys lists); each is frozen with the issue, and each row gets
    the variant it was frozen with.
    """
    from newsletter import messages

    _require_checked(rendered, checked, force)
    if transport is None or isinstance(transport, str):
        transport_name(settings, transport)
    try:
        policy_in_doubt = InDoubt(in_doubt)
    except ValueError:
        raise SettingsError(f"--in-doubt must be 'retry' or 'skip', not {in_doubt!r}") from None
    # every setting is checked before the lock, the snapshot or any claim
    signer = messages.dkim_signer(settings)
    key = secret_key(settings)  # before the freeze: a missing key is made only while nothing was sent
    carrier = (open_transport(settings, transport, Options(sync=sync, in_doubt=policy_in_doubt, policy=policy))
               if transport is None or isinstance(transport, str) else transport)
    day = rendered.issue.day
    stamp: Callable[[], str] = (lambda: now.isoformat(timespec="seconds")) if now else store.now_iso
    # several senders share a day on PostgreSQL (SMTP): each run draws a number its claims carry, and
    # holds it as an advisory lock while it lives, so the others know when its claims are abandoned
    owner = str(secrets.randbits(62)) if store.is_postgres(conn) and carrier.name == TransportName.SMTP else ""
    try:
        with _lock_when_free(settings, lock_wait, stop, carrier.name), _alive(conn, owner):
            recovery = carrier.recover(conn, day, now=stamp())
            frozen, start = _start(conn, settings, rendered, variants, day, stamp, rebuild=rebuild,
                                   retry_failed=retry_failed)
            report = SendReport(day, frozen.status, carrier.name, carrier.destination(day), start, recovery,
                                failed_means=carrier.failed_means, hint=carrier.hint)
            if frozen.status == ledger.ISSUE_DONE:
                return dataclasses.replace(report, start=dataclasses.replace(start, nothing_to_do=True))
            if frozen.status == ledger.ISSUE_PAUSED:
                ledger.set_issue_state(conn, day, ledger.ISSUE_SENDING, now=stamp())
                logger.info("%s: resuming a paused issue", day)
            start = dataclasses.replace(
                start, in_doubt_retried=ledger.apply_in_doubt_policy(conn, day, policy_in_doubt, now=stamp()))
            if retry_now:
                ledger.retry_now(conn, day, now=stamp())
            template = _templates(conn, settings, rendered, frozen, key, signer)
            counts = ledger.counts(conn, day)
            claims = Claims(conn, day, frozen.sha256, settings.delivery.batch_size, stop or threading.Event(),
                            todo=counts[ledger.PENDING] + counts[ledger.RETRY], progress=progress,
                            clock=(lambda: now) if now else None, owner=owner,
                            lease_seconds=settings.delivery.lease_seconds,
                            variant_sha256={k: v.sha256 for k, v in recipients.frozen_variants(conn, day).items()})
            totals = carrier.deliver(claims, template)
            if owner:
                totals = _take_over(carrier, claims, template, totals, stamp)
            done = ledger.finish_if_done(conn, day, now=stamp())
    finally:
        carrier.close()
    status = ledger.ISSUE_DONE if done else frozen.status
    if status == ledger.ISSUE_PAUSED:
        status = ledger.ISSUE_SENDING
    return dataclasses.replace(report, status=status, start=start, totals=totals,
                               next_retry_at=None if done else ledger.next_retry_at(conn, day))


def _start(conn: sqlite3.Connection, settings: Settings, rendered: RenderedIssue, variants: Sequence[Variant],
           day: date, stamp: Callable[[], str], *, rebuild: bool, retry_failed: bool) -> tuple[FrozenIssue, Start]:
    """Freeze and snapshot (or compare with the frozen version), expire older issues, reopen failures."""
    from newsletter import messages

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
            message_id=messages.message_ids(day, settings.sender_domain),
            variants=variants, all_sections=settings.issue.sections,
        )
    elif frozen.sha256 != sha or _variants_changed(conn, day, variants):
        changed = True
        if frozen.status != ledger.ISSUE_DONE:
            counts = ledger.counts(conn, day)
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
                html=rendered.html, text=rendered.text, now=stamp(), structure=structured, variants=variants,
            )
    # a daily issue is not retried once the next one has started (this one included)
    expired = ledger.expire_superseded(conn, now=stamp())
    for old_day, count in expired.items():
        logger.info("%s: %d unsent row(s) expired: the issue of a later day has started", old_day, count)
    # after the expiry, so that an older day asked for by name is sent, not expired again
    retried_failed = ledger.retry_failed(conn, day, now=stamp()) if retry_failed else 0
    frozen = ledger.frozen_issue(conn, day) or frozen
    counts = ledger.counts(conn, day)
    return frozen, Start(counts[ledger.SENT], sum(counts.values()), changed=changed, rebuilt=rebuilt,
                         earlier_version=earlier, expired=sum(expired.values()), retried_failed=retried_failed)


def _variants_changed(conn: sqlite3.Connection, day: date, variants: Sequence[Variant]) -> bool:
    """Whether a variant frozen for DAY differs from its copy in VARIANTS."""
    frozen = recipients.frozen_variants(conn, day)
    for variant in variants:
        old = frozen.get(variant.key)
        if old is not None and variant.rendered is not None and old.sha256 != ledger.content_sha256(
                variant.rendered.html, variant.rendered.text):
            return True
    return False


def _templates(conn: sqlite3.Connection, settings: Settings, rendered: RenderedIssue, frozen: FrozenIssue,
               key: bytes, signer) -> IssueTemplates:
    """Return the issue's MessageTemplate per variant, made from the frozen versions (a resumed send writes
    the same bytes), after writing the public copy (outbox/DAY/issue.html and issue.txt) whatever the transport."""
    from newsletter import messages
    from newsletter.pipeline import write_public_copy

    issue = dataclasses.replace(rendered.issue, subject=frozen.subject, number=frozen.number)
    frozen_rendered = RenderedIssue(issue, frozen.html, frozen.text)
    try:
        make_dirs(settings.outbox_dir, PUBLIC_DIR)  # outbox/ also holds the public site/
        write_public_copy(settings, frozen_rendered)
    except OSError as err:
        folder = settings.outbox_dir / issue.day.isoformat()
        raise DeliveryError(f"{folder}: cannot write the issue files: {err}") from err
    when = frozen.date_header.astimezone(settings.tz)
    copies = {ALL: frozen_rendered}
    for variant in recipients.frozen_variants(conn, issue.day).values():
        copies[variant.key] = RenderedIssue(dataclasses.replace(issue, subject=variant.subject),
                                            variant.html, variant.text)
    return IssueTemplates({k: messages.MessageTemplate.build(copy, settings, key, when, signer=signer)
                           for k, copy in copies.items()})


@contextlib.contextmanager
def _alive(conn, owner: str) -> Iterator[None]:
    """Hold OWNER's advisory lock for the block (PostgreSQL): while it is held, its claims are its own."""
    if not owner:
        yield
        return
    with conn.advisory_lock(int(owner)):
        yield


_TAKE_OVER_POLL = 0.5  # seconds between looks at the rows other senders hold


def _take_over(carrier: Transport, claims: Claims, template, totals: Totals, stamp: Callable[[], str]) -> Totals:
    """Once nothing is left to claim, wait for the rows other senders hold; send again those whose
    sender is gone (its connection closed: killed) or has not claimed for its lease."""
    while not claims.stop.is_set() and ledger.held_elsewhere(claims.conn, claims.day, claims.owner):
        retried, doubted = ledger.recover_interrupted(claims.conn, claims.day, now=stamp(), owner=claims.owner)
        if retried:
            logger.info("%s: %d row(s) of a sender that is gone are sent by this one", claims.day, retried)
            totals = _added(totals, carrier.deliver(claims, template))
        elif not doubted:
            claims.stop.wait(_TAKE_OVER_POLL)
    return totals


def _added(first: Totals, second: Totals) -> Totals:
    """Return the totals of two passes of a run as one."""
    values = {}
    for each in dataclasses.fields(Totals):
        a, b = getattr(first, each.name), getattr(second, each.name)
        values[each.name] = (a or b) if isinstance(a, bool) else a + b
    values["waiting_retries"] = second.waiting_retries
    return Totals(**values)


@contextlib.contextmanager
def _lock_when_free(settings: Settings, wait: float, stop: threading.Event | None, transport: str) -> Iterator[None]:
    """Hold the send lock, waiting up to WAIT seconds (polling) while another send holds it."""
    deadline = time.monotonic() + wait
    pause = stop or threading.Event()
    waiting = False
    with contextlib.ExitStack() as held:
        while True:
            try:
                held.enter_context(send_lock(settings, transport))
                break
            except LockedError as err:
                if pause.is_set() or time.monotonic() >= deadline:
                    raise
                if not waiting:
                    logger.info("%s; waiting for it to end", err)
                    waiting = True
                pause.wait(_LOCK_POLL_SECONDS)
        yield


def issue_status(conn: sqlite3.Connection, day: date) -> ledger.IssueStatus:
    """Return DAY's issue state and the number of its deliveries in each state."""
    return ledger.issue_status(conn, day)


# --- proof copies -----------------------------------------------------------------------------------

PROOF_PREFIX = "[TEST] "


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
    from newsletter import messages
    from newsletter.addresses import ascii_address
    from newsletter.headers import check_header_value

    transport_name(settings, transport)
    if not addresses:
        raise DeliveryError("--test-to: name at least one address")
    signer = messages.dkim_signer(settings)
    recipients = [ascii_address(address.strip()) for address in addresses]  # HeaderError names it
    carrier = open_transport(settings, transport)
    day = rendered.issue.day
    subject = check_header_value("subject", PROOF_PREFIX + rendered.issue.subject)
    proof = RenderedIssue(dataclasses.replace(rendered.issue, subject=subject), rendered.html, rendered.text)
    moment = (now or datetime.now(settings.tz)).astimezone(settings.tz)
    template = messages.MessageTemplate.build(proof, settings, secret_key(settings), moment)
    domain = messages.message_id(day, 0, settings.sender_domain).rsplit("@", 1)[1]
    copies = []
    for n, recipient in enumerate(recipients):
        raw = template.personalize(Subscriber(0, recipient, recipient.lower(), "", "active", "", ""))
        unique = f"<proof.{day:%Y%m%d}.{moment:%H%M%S}.{n}.{secrets.token_hex(6)}@{domain}>"
        raw = re.sub(rb"(?m)^Message-ID: <[^>\r\n]*>", f"Message-ID: {unique}".encode("ascii"), raw, count=1)
        copies.append(Copy(recipient, signer(raw)))
    try:
        return carrier.deliver_copies(copies, day=day, moment=moment)
    finally:
        carrier.close()


__all__ = ["IssueChangedError", "ProofReport", "SendReport", "Start", "Transport", "issue_status", "send_issue",
           "send_proofs"]
