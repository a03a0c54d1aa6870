"""The SMTP transport: a pool of connections, one throttle for the pool, and the ledger's commit points.

One recipient per message, over `[delivery] concurrency` connections reused across messages
(reopened after a 421 or a drop), all driven by one thread (pool.py), which records, in one
transaction per round (a group commit):

1. `data_sent` for every message whose recipient the server accepted; its body goes out
   meanwhile, but its final "." waits for that commit, so the end of a message never leaves
   unrecorded (RELIABILITY.md);
2. the results that came back meanwhile: 250 → sent; 4xx → retry with backoff (seconds for a
   4.7.x rate limit, minutes for greylisting and the rest); 5xx → by whom it blames
   (replies.classify): this recipient's mailbox (5.1.1, 5.1.2, 5.1.10, or a bare 550/551/553
   saying so, at RCPT) → failed and the subscriber bounced; this message (content, spam, policy,
   a full mailbox) → failed; our side (the sender, the relay, our login, the server, the
   protocol) → the breaker. A drop before the final "." → retry (a server that closed the
   connection before we wrote it cannot have the message: checked just before writing it); a drop
   or a timeout after the final "." → in doubt (RFC 1047), which the in-doubt policy settles.

Permanent refusals are held back while they may be one refusal of us: the same reply for
SAME_REFUSAL_IN_A_ROW recipients in a row at SAME_REFUSAL_DOMAINS domains (replies.RefusalStreak)
trips the breaker, and those rows are retried after the resume instead of failed.

Errors that are not about one recipient (authentication, TLS, a refused connection, a sender or
relay the server refuses, repeated drops, the same refusal across domains) trip the circuit
breaker: the issue is paused, no subscriber is marked failed, and DeliveryError names the host
and the reply.

This module holds the transport and its pacing (`SmtpTransport`, `Throttle`, `RetryPolicy`); the
loop is `pool.py`, one session's transactions `session.py`, opening a connection `connection.py`,
the wire bytes `wire.py`, reading a refusal `replies.py`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.delivery import ledger
from newsletter.delivery.connection import (
    Attempt, AttemptKind, ConnectionTrouble, Reply, SmtpConfig, SmtpConnection, send_message, send_one,
    smtp_config,
)
from newsletter.delivery.pool import PoolRun, iso_ms
from newsletter.delivery.replies import Blame
from newsletter.delivery.session import Message, send_now, single_session
from newsletter.delivery.states import InDoubt
from newsletter.delivery.transport import Claims, Copy, Options, ProofReport, Recovery, Totals, TransportName
from newsletter.delivery.wire import WireMessages, stuff
from newsletter.errors import DeliveryError
from newsletter.settings import DeliverySettings, Settings
from newsletter.variants import IssueTemplates

if TYPE_CHECKING:
    from newsletter.messages import MessageTemplate

logger = logging.getLogger(__name__)


# --- retries, the throttle ------------------------------------------------------------------------

@dataclass(frozen=True)
class RetryPolicy:
    """How long a row waits after a temporary failure, and when the breaker trips."""

    rate_limit_first: float = 2.0  # a 4.7.x "slow down": seconds, doubled per attempt
    rate_limit_max: float = 60.0
    greylist_first: float = 300.0  # greylisting (451/452) and other 4xx: minutes
    greylist_max: float = 3600.0
    drop_first: float = 0.0  # a drop or a timeout: the first retry at once,
    drop_next: float = 2.0  # then after 2 s, doubling
    drop_max: float = 60.0
    wait_in_run: float = 90.0  # a run waits for retries due within this many seconds
    drops_in_a_row: int = 8  # dropped or timed-out messages in a row across the pool: the breaker
    connect_tries: int = 3  # transient failures to open one connection in a row: the breaker

    def delay(self, attempt: Attempt, number: int) -> float:
        """Seconds before retrying after ATTEMPT, the row's NUMBER-th."""
        if attempt.kind in (AttemptKind.DROPPED, AttemptKind.IN_DOUBT):
            if number <= 1:
                return self.drop_first
            return min(self.drop_next * 2 ** (number - 2), self.drop_max)
        if is_rate_limit(attempt):
            return min(self.rate_limit_first * 2 ** max(number - 1, 0), self.rate_limit_max)
        return min(self.greylist_first * 2 ** max(number - 1, 0), self.greylist_max)


def is_rate_limit(attempt: Attempt) -> bool:
    """A 4.7.x reply that is not greylisting: the provider asks to slow down."""
    enhanced = attempt.enhanced
    text = attempt.reply.lower()
    return bool(enhanced and enhanced[0] == 4 and enhanced[1] == 7) and "grey" not in text and "gray" not in text


def is_bounce(attempt: Attempt) -> bool:
    """A refusal at RCPT that says this recipient's mailbox does not exist (replies.Blame.MAILBOX)."""
    return attempt.kind is AttemptKind.REJECTED and attempt.at_rcpt and attempt.blame is Blame.MAILBOX


class Throttle:
    """Space sends across the whole pool: RATE per second at most, and HOURLY_CAP per rolling hour."""

    def __init__(self, rate: float, hourly_cap: int, recent: Sequence[float] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        """RECENT: clock times of sends in the last hour (earlier runs), so a restart keeps the cap."""
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.cap = hourly_cap
        self.clock = clock
        self._lock = threading.Lock()
        self._next = 0.0
        self._window: deque[float] = deque(sorted(recent)[-hourly_cap:] if hourly_cap else (), maxlen=hourly_cap or None)

    @property
    def paces(self) -> bool:
        """Whether sends are spaced at all (a rate or an hourly cap)."""
        return bool(self.interval or self.cap)

    def reserve(self) -> float:
        """Take the next send slot; return how many seconds from now it is (0: at once)."""
        if not self.interval and not self.cap:
            return 0.0
        with self._lock:
            now = self.clock()
            slot = max(now, self._next)
            if self.cap and len(self._window) >= self.cap:
                slot = max(slot, self._window[0] + 3600.0)
            self._next = slot + self.interval
            if self.cap:
                self._window.append(slot)
        delay = slot - now
        if delay > 5:
            logger.info("throttle: waiting %.0f s for the next send slot ([delivery] rate/hourly_cap)", delay)
        return max(delay, 0.0)



def recent_sends(conn, day: date, hourly_cap: int) -> list[float]:
    """Return the monotonic-clock times of the sends of the last hour, so a restart keeps the cap."""
    if not hourly_cap:
        return []
    wall = datetime.now(timezone.utc)
    mono = time.monotonic()
    since = (wall - timedelta(hours=1)).isoformat(timespec="seconds")
    return [mono - (wall - datetime.fromisoformat(stamp)).total_seconds()
            for stamp in ledger.sent_since(conn, since, from_day=day - timedelta(days=2), limit=hourly_cap)]


# --- the pool -------------------------------------------------------------------------------------

class SmtpTransport:
    """Send one issue's claimed rows through a pool of connections, recording each commit point."""

    name = TransportName.SMTP
    failed_means = "were refused by the server"
    hint = ""

    def __init__(self, config: SmtpConfig, *, concurrency: int, throttle: Throttle | None = None,
                 policy: RetryPolicy = RetryPolicy(), in_doubt: InDoubt = InDoubt.RETRY,
                 delivery: DeliverySettings | None = None) -> None:
        """THROTTLE: the pool's pacing; without one, each `deliver` makes it from DELIVERY's rate and cap."""
        self.config = config
        self.concurrency = max(1, concurrency)
        self.throttle = throttle
        self.policy = policy
        self.in_doubt = in_doubt
        self.delivery = delivery or DeliverySettings()

    def destination(self, day: date) -> str:
        return f"{self.config.where} by SMTP"

    def recover(self, conn, day: date, *, now: str) -> Recovery:
        """A claimed row never had the end of its message sent: retried; a data_sent one is in doubt."""
        retried, in_doubt = ledger.recover_interrupted(conn, day, now=now)
        return Recovery(released=retried, in_doubt=in_doubt)

    def deliver(self, claims: Claims, template: MessageTemplate | IssueTemplates) -> Totals:
        """Claim and send until nothing is due; raise DeliveryError when the breaker trips.

        On a stop, messages in flight are finished and recorded, rows not yet attempted go back to
        `pending`. On a trip, the same, then the issue is `paused` and DeliveryError names the cause.
        """
        throttle = self.throttle or Throttle(self.delivery.rate, self.delivery.hourly_cap,
                                             recent_sends(claims.conn, claims.day, self.delivery.hourly_cap))
        templates = IssueTemplates.of(template)
        wires = {key: WireMessages(one).data for key, one in templates.items()}

        def make_data(row: ledger.Claimed) -> bytes:
            wire = wires.get(row.variant)
            return wire(row.subscriber) if wire else templates[row.variant].personalize(row.subscriber)  # names it

        run = PoolRun(self, claims, make_data, throttle, templates.envelope_sender, sign_ahead=templates.signs_spliced)
        totals = run.run()
        if run.halt is not None:
            ledger.set_issue_state(claims.conn, claims.day, ledger.ISSUE_PAUSED, now=claims.now())
            raise DeliveryError(
                f"{run.halt}; the issue of {claims.day} is paused with {totals.written:,} sent in this run and "
                f"no subscriber marked failed; fix the cause and run `newsletter send --date {claims.day}` to resume"
            ) from run.halt
        return totals

    def deliver_copies(self, copies: Sequence[Copy], *, day: date, moment: datetime) -> ProofReport:
        """Send each copy over one connection; a refusal is reported with the server's reply."""
        session = single_session(self.config)
        delivered, refused = [], []
        try:
            for copy in copies:
                attempt = send_now(session, Message(copy.recipient, copy.recipient, stuff(copy.raw)))
                if attempt.kind is AttemptKind.SENT:
                    delivered.append(copy.recipient)
                else:
                    refused.append((copy.recipient, attempt.reply))
        except ConnectionTrouble as err:
            raise DeliveryError(str(err)) from err
        finally:
            session.close()
        return ProofReport(self.name, tuple(delivered), tuple(refused), server=self.config.where)

    def deliver_one(self, raw: bytes, recipient: str) -> Path | None:
        """Send RAW to RECIPIENT over one connection; DeliveryError names the host and the cause."""
        send_message(self.config, raw, recipient)
        logger.info("sent a message to %s by SMTP", recipient)
        return None

    def close(self) -> None:
        """Nothing is held between sends: each `deliver` closes its connections."""

    def outcome(self, row: ledger.Claimed, attempt: Attempt, now: datetime) -> ledger.Outcome:
        """Return how the ledger records ATTEMPT of ROW."""
        sid = row.subscriber.id
        if attempt.kind is AttemptKind.SENT:
            return ledger.Outcome(sid, ledger.SENT, attempt.reply)
        if attempt.kind is AttemptKind.UNBUILDABLE:
            return ledger.Outcome(sid, ledger.FAILED, attempt.reply, reason=ledger.Reason.UNBUILDABLE)
        if attempt.kind is AttemptKind.REJECTED:
            bounce = is_bounce(attempt)
            return ledger.Outcome(sid, ledger.FAILED, attempt.reply,
                                  reason=ledger.REASON_BOUNCED if bounce else ledger.REASON_REJECTED, bounce=bounce)
        retry_at = iso_ms(now + timedelta(seconds=self.policy.delay(attempt, row.attempts)))
        if attempt.kind is AttemptKind.IN_DOUBT:
            return ledger.Outcome(sid, ledger.IN_DOUBT, attempt.reply, retry_at=retry_at)
        return ledger.Outcome(sid, ledger.RETRY, attempt.reply, retry_at=retry_at)


def from_settings(settings: Settings, options: Options) -> SmtpTransport:
    """Return the SMTP transport of SETTINGS; SettingsError names a bad [smtp] setting."""
    policy = options.policy or RetryPolicy()
    return SmtpTransport(smtp_config(settings), concurrency=settings.delivery.concurrency, policy=policy,
                         in_doubt=options.in_doubt, delivery=settings.delivery)


__all__ = [
    "Attempt", "AttemptKind", "ConnectionTrouble", "Reply", "RetryPolicy", "SmtpConfig", "SmtpConnection",
    "SmtpTransport", "Throttle", "WireMessages", "from_settings", "is_bounce", "is_rate_limit", "send_one",
    "smtp_config", "stuff",
]
