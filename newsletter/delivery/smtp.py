"""The SMTP transport: a pool of connections, one throttle for the pool, and the ledger's commit points.

One recipient per message. Each of `[delivery] concurrency` threads owns one connection, reused
across messages (reopened after a 421 or a drop). The thread that owns the SQLite connection
records, in one transaction per round (a group commit):

1. `data_sent` for every message whose recipient the server accepted; the worker that asked writes
   the body meanwhile but waits for that commit before the final ".", so the end of a message
   never leaves unrecorded (RELIABILITY.md);
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

This module holds the pool and its pacing (`SmtpTransport`, `Throttle`, `RetryPolicy`); one
connection is `connection.py`, the wire bytes `wire.py`, reading a refusal `replies.py`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.delivery import ledger
from newsletter.delivery.group_commit import GroupCommit
from newsletter.delivery.connection import (
    Attempt, AttemptKind, ConnectionTrouble, Reply, SmtpConfig, SmtpConnection, send_message, send_one,
    smtp_config,
)
from newsletter.delivery.states import InDoubt
from newsletter.delivery.replies import Blame, RefusalStreak
from newsletter.delivery.transport import Claims, Copy, Options, ProofReport, Recovery, Totals, TransportName
from newsletter.delivery.wire import WireMessages, stuff
from newsletter.errors import DeliveryError, NewsletterError
from newsletter.models import Subscriber
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

    def wait(self, stop: threading.Event) -> bool:
        """Block until this send's slot; return False if STOP was set first (the slot is given up)."""
        if not self.interval and not self.cap:
            return not stop.is_set()
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
        return not stop.wait(delay) if delay > 0 else not stop.is_set()



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

# What the workers tell the recording thread, one event at a time:

@dataclass(frozen=True)
class DataSent:  # the server accepted the recipient: record data_sent, then set RECORDED
    subscriber_id: int
    recorded: threading.Event
    worker: int = 0  # which connection asks
    at: float = 0.0  # when (time.monotonic)


@dataclass(frozen=True)
class Unstarted:  # never attempted (a stop during a throttle wait): back to pending
    row: ledger.Claimed


@dataclass(frozen=True)
class Trouble:  # the connection could not be used (not about this recipient): retried
    row: ledger.Claimed
    trouble: ConnectionTrouble


@dataclass(frozen=True)
class Done:  # one attempt ended: its result, and the bytes sent
    row: ledger.Claimed
    attempt: Attempt
    nbytes: int = 0


Event = DataSent | Unstarted | Trouble | Done

_HOLD_SECONDS = 0.02  # the longest a result waits for a commit to share


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


class _Aborted(Exception):
    """The recording thread gave up: a worker must not send the body."""


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

        run = _PoolRun(self, claims, make_data, throttle, templates.envelope_sender)
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
        connection = SmtpConnection(self.config)
        delivered, refused = [], []
        try:
            for copy in copies:
                if not connection.is_open:
                    connection.open()
                attempt = connection.send(copy.recipient, stuff(copy.raw))
                if attempt.kind is AttemptKind.SENT:
                    delivered.append(copy.recipient)
                else:
                    refused.append((copy.recipient, attempt.reply))
        except ConnectionTrouble as err:
            raise DeliveryError(str(err)) from err
        finally:
            connection.close()
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
        retry_at = _iso(now + timedelta(seconds=self.policy.delay(attempt, row.attempts)))
        if attempt.kind is AttemptKind.IN_DOUBT:
            return ledger.Outcome(sid, ledger.IN_DOUBT, attempt.reply, retry_at=retry_at)
        return ledger.Outcome(sid, ledger.RETRY, attempt.reply, retry_at=retry_at)


def from_settings(settings: Settings, options: Options) -> SmtpTransport:
    """Return the SMTP transport of SETTINGS; SettingsError names a bad [smtp] setting."""
    policy = options.policy or RetryPolicy()
    return SmtpTransport(smtp_config(settings), concurrency=settings.delivery.concurrency, policy=policy,
                         in_doubt=options.in_doubt, delivery=settings.delivery)


class _PoolRun:
    """One `deliver`: the workers, the queues between them and this thread, and what it has recorded.

    This thread owns the SQLite connection. It claims rows ahead of the workers, and records, in
    one transaction per round (a group commit), `data_sent` for the workers waiting to write their
    final ".", and the results that came back meanwhile.
    """

    def __init__(self, pool: SmtpTransport, claims: Claims, make_data: Callable[[ledger.Claimed], bytes],
                 throttle: Throttle, envelope: Callable[[Subscriber], str | None] = lambda subscriber: None) -> None:
        self.pool, self.claims, self.make_data, self.throttle = pool, claims, make_data, throttle
        self.envelope = envelope  # each message's envelope sender (VERP), or None for the From address
        self.totals = Totals()
        self.work: queue.Queue[ledger.Claimed | None] = queue.Queue()
        self.events: queue.Queue[Event] = queue.Queue()
        self.abort = threading.Event()  # nothing more may leave: the recording failed
        self.quit_waits = threading.Event()  # a throttle wait ends early on a stop or a trip
        self.in_flight = 0
        self.halt: ConnectionTrouble | None = None
        self.drops_in_a_row, self.last_drop = 0, ""
        self.claim_pause_until = 0.0
        self.done_count = 0
        self.ahead = max(4 * pool.concurrency, 32)  # rows claimed ahead of the workers
        self.held: list[ledger.Outcome] = []  # results not yet committed
        self.held_since = 0.0
        self.streak: RefusalStreak[ledger.Outcome] = RefusalStreak()  # refusals that may blame us
        self.group = GroupCommit()  # how long to wait for more data_sent requests before a commit
        self.claim_wanted = False  # the next commit also claims rows (one commit instead of two)

    def run(self) -> Totals:
        """Claim, hand out and record until nothing is due, a stop, or a trip."""
        workers = [threading.Thread(target=_Worker(self, n).run, name=f"smtp-{n}", daemon=True)
                   for n in range(self.pool.concurrency)]
        for worker in workers:
            worker.start()
        started = time.perf_counter()
        self.claims.done(0)
        try:
            while self._step():
                pass
        finally:
            self._finish(workers)
        self.totals.seconds = time.perf_counter() - started
        logger.debug("%s: commits of data_sent took %.1f ms, a connection's cycle %.1f ms (running averages)",
                     self.claims.day, self.group.commit_seconds * 1e3, self.group.cycle_seconds * 1e3)
        self.totals.waiting_retries = ledger.counts(self.claims.conn, self.claims.day)[ledger.RETRY]
        return self.totals

    def _step(self) -> bool:
        """Do one round of the loop; return False when the run is over."""
        if self.halt is not None or self.claims.stop.is_set():
            return self._wind_down()
        if self.in_flight <= self.ahead // 2 and time.monotonic() >= self.claim_pause_until:
            if self.in_flight > self.pool.concurrency:
                self.claim_wanted = True  # the workers have rows left: the claim rides with the next commit
            else:
                self.flush()
                self._hand_out(self.claims.take(self.ahead - self.in_flight, now=self.claims.now_ms()))
                if self.in_flight == 0 and self.claim_pause_until > time.monotonic():
                    return self._wait_for_retries()
        self.pump(0.05 if self.in_flight else 0.0)
        return True

    def _hand_out(self, claim: ledger.Claim) -> None:
        """Queue CLAIM's rows for the workers; after an empty claim, claim again only in a while."""
        self.claim_wanted = False
        self.totals.skipped += claim.skipped
        for row in claim.rows:
            self.work.put(row)
        self.in_flight += len(claim.rows)
        if not claim.rows and not claim.skipped:
            self.claim_pause_until = time.monotonic() + 0.05

    def _wind_down(self) -> bool:
        """A stop or a trip: release rows no worker took, then wait for those in flight."""
        self.quit_waits.set()
        self.claim_wanted = False
        drained = []
        while True:
            try:
                item = self.work.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                drained.append(item.subscriber.id)
        if drained:
            self.in_flight -= len(drained)
            self.totals.released += ledger.release(self.claims.conn, self.claims.day, drained,
                                                   now=self.claims.now_ms())
        if self.in_flight <= 0:
            self.flush()
            self.totals.stopped = self.halt is None
            return False
        self.pump(0.1)
        return True

    def _wait_for_retries(self) -> bool:
        """Nothing claimable and nothing in flight: wait for a retry due soon, or end the run."""
        due = ledger.next_retry_at(self.claims.conn, self.claims.day)
        if due is None:
            return False
        wait = (datetime.fromisoformat(due) - datetime.now(timezone.utc)).total_seconds() if due else 0.0
        if not self.claims.waits_for_retries or wait > self.pool.policy.wait_in_run:
            return False
        self.claims.stop.wait(min(max(wait, 0.0) + 0.01, self.pool.policy.wait_in_run))
        return True

    def _finish(self, workers: list[threading.Thread]) -> None:
        """Record what is held and let the workers go, whatever ended the run."""
        self.claim_wanted = False  # nobody would send what a claim now took
        if not self.abort.is_set():
            # a streak too short to blame us: those rows failed; after a trip they wait for the resume
            left = self.streak.release()
            self.held.extend(self.settle(left) if self.halt is None else self._retry(left, self.claims.now_ms()))
            if self.held:
                self.flush()
        if self.in_flight > 0:  # an error in this thread: workers must not send bodies unrecorded
            self.abort.set()
            self.quit_waits.set()
        for _ in workers:
            self.work.put(None)
        for worker in workers:
            worker.join(timeout=self.pool.config.timeout + 5)

    def settle(self, decided: list[ledger.Outcome], nbytes: int = 0) -> list[ledger.Outcome]:
        """Count DECIDED in the totals and return them, to be recorded."""
        totals = self.totals
        for outcome in decided:
            if outcome.state == ledger.SENT:
                totals.written += 1
                totals.nbytes += nbytes
            elif outcome.state == ledger.FAILED:
                totals.failed += 1
                totals.bounced += outcome.bounce
            elif outcome.state == ledger.IN_DOUBT:
                totals.in_doubt += 1
            else:
                totals.deferred += 1
        return decided

    @staticmethod
    def _retry(outcomes: list[ledger.Outcome], when: str) -> list[ledger.Outcome]:
        return [ledger.Outcome(o.subscriber_id, ledger.RETRY, o.reply, retry_at=when) for o in outcomes]

    def flush(self, data_sent: Sequence[int] = (), released: Sequence[int] = ()) -> None:
        """Commit DATA_SENT and the held results in one transaction (with a claim, when one is wanted);
        release RELEASED rows."""
        conn, day = self.claims.conn, self.claims.day
        try:
            if data_sent or self.held:
                wanted = self.claim_wanted and self.halt is None and not self.claims.stop.is_set()
                claim = ledger.record(conn, day, data_sent=data_sent, outcomes=self.held, now=self.claims.now_ms(),
                                      in_doubt=self.pool.in_doubt, sha256=self.claims.sha256,
                                      variant_sha256=self.claims.variant_sha256,
                                      claim=self.ahead - self.in_flight if wanted else 0, lease=self.claims.lease())
                self.held.clear()
                if wanted:
                    self._hand_out(claim)
            if released:
                self.totals.released += ledger.release(conn, day, released, now=self.claims.now_ms())
        except BaseException:
            self.abort.set()  # nothing more leaves: the rows stay claimed/data_sent for recovery
            raise

    def pump(self, timeout: float) -> None:
        """Take the events that came in (waiting up to TIMEOUT for the first) and record them."""
        if self.held:
            timeout = min(timeout, max(0.0, self.held_since + _HOLD_SECONDS - time.monotonic()))
        try:
            batch = [self.events.get(timeout=timeout)]
        except queue.Empty:
            if self.held:
                self.flush()
            return
        while True:
            try:
                batch.append(self.events.get_nowait())
            except queue.Empty:
                break
        self._gather(batch)
        data_sent, outcomes, waiters, released = [], [], [], []
        now = datetime.now(timezone.utc)
        for event in batch:
            if isinstance(event, DataSent):
                data_sent.append(event.subscriber_id)
                waiters.append(event)
                self.group.asked(event.worker, event.at)
            elif isinstance(event, Unstarted):
                released.append(event.row.subscriber.id)
                self.in_flight -= 1
            elif isinstance(event, Trouble):
                self.in_flight -= 1
                outcomes.append(ledger.Outcome(event.row.subscriber.id, ledger.RETRY, str(event.trouble),
                                               retry_at=_iso(now)))
                self._on_trouble(event.trouble)
            else:
                self.in_flight -= 1
                outcomes.extend(self._on_done(event, now))
                self.done_count += 1
        if outcomes and not self.held:
            self.held_since = time.monotonic()
        self.held.extend(outcomes)
        # Results ride along with the next data_sent commit (one fsync for both); alone, they
        # wait at most _HOLD_SECONDS. Only data_sent must be durable before a worker goes on.
        try:
            if data_sent or released or len(self.held) >= self.ahead or (
                    self.held and time.monotonic() - self.held_since >= _HOLD_SECONDS):
                started = time.monotonic()
                self.flush(data_sent, released)
                if data_sent:
                    self.group.committed((event.worker for event in waiters), started, time.monotonic())
        finally:
            for waiter in waiters:
                waiter.recorded.set()
        if self.halt is None and self.drops_in_a_row >= self.pool.policy.drops_in_a_row:
            self.halt = ConnectionTrouble(f"{self.last_drop} ({self.drops_in_a_row} messages in a row failed "
                                          "this way)", fatal=True)
        if outcomes:
            self.claims.done(self.done_count)

    def _gather(self, batch: list[Event]) -> None:
        """Wait a moment for more data_sent requests, so that one commit covers every busy connection.

        BATCH grows with the events that come meanwhile. The wait ends when every worker holding
        a row has asked, or when group_commit says the others are not worth waiting for.
        """
        asking = sum(isinstance(event, DataSent) for event in batch)
        if not asking:
            return
        until = self.group.wait_until(time.monotonic())
        ended = len(batch) - asking  # events that give a row back (not yet counted in in_flight)
        while asking < min(self.pool.concurrency, self.in_flight - ended - self.work.qsize()):
            left = until - time.monotonic()
            if left <= 0:
                return
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                return
            batch.append(event)
            if isinstance(event, DataSent):
                asking += 1
            else:
                ended += 1

    def _on_trouble(self, trouble: ConnectionTrouble) -> None:
        if trouble.fatal:
            self.halt = self.halt or trouble
        else:
            self.drops_in_a_row += 1
            self.last_drop = str(trouble)

    def _on_done(self, event: Done, now: datetime) -> list[ledger.Outcome]:
        """Return the outcomes decided by EVENT (a refusal is held until the streak says whom it blames)."""
        row, attempt = event.row, event.attempt
        outcome = self.pool.outcome(row, attempt, now)
        if attempt.kind in (AttemptKind.DROPPED, AttemptKind.IN_DOUBT):
            self.drops_in_a_row += 1
            self.last_drop = attempt.reply
        elif attempt.kind is not AttemptKind.UNBUILDABLE:
            self.drops_in_a_row = 0
        if attempt.kind is not AttemptKind.REJECTED:
            released = self.settle(self.streak.release()) if attempt.kind is not AttemptKind.UNBUILDABLE else []
            return released + self.settle([outcome], event.nbytes)
        domain = row.subscriber.email.rpartition("@")[2]
        decided = self.settle(self.streak.add(attempt.code, attempt.reply.partition(" ")[2], domain, outcome,
                                              first_try=row.attempts <= 1))
        if self.streak.tripped and self.halt is None:
            count = self.streak.held
            decided += self._retry(self.streak.release(), _iso(now))
            self.halt = ConnectionTrouble(
                f"{self.pool.config.where}: {attempt.reply} (the same refusal for {count} recipients in a row at "
                "different domains: it blames our server, our address or a policy, not each recipient)",
                fatal=True)
        return decided


class _Worker:
    """One connection's thread: take a row, make its bytes, wait for a slot, send, report.

    Unless a throttle spaces the sends, a message's final "." is held until the next message is
    ready and goes out with its first commands (connection.send_holding_end): one round trip less
    per message. With no row waiting, or on a stop, the held message is ended alone first.
    """

    def __init__(self, run: _PoolRun, number: int = 0) -> None:
        self.run_, self.pool = run, run.pool
        self.events = run.events
        self.number = number
        self.hold = not run.throttle.paces
        self.held: tuple[ledger.Claimed, int] | None = None  # the row whose "." waits, and its bytes

    def run(self) -> None:
        from newsletter.addresses import ascii_address

        connection = SmtpConnection(self.pool.config)
        row = None
        try:
            while True:
                row = self._next_row(connection)
                if row is None:
                    return
                if self.run_.abort.is_set():
                    continue  # stays claimed: recovery retries it
                try:
                    data = self.run_.make_data(row)  # its variant's WireMessages.data: stuffed, ready for DATA
                    recipient = ascii_address(row.subscriber.email)
                    sender = self.run_.envelope(row.subscriber)
                except NewsletterError as err:
                    self.events.put(Done(row, Attempt(AttemptKind.UNBUILDABLE, str(err))))
                    continue
                if not self._ensure_open(connection, row):
                    return
                if not self.run_.throttle.wait(self.run_.quit_waits):
                    self.events.put(Unstarted(row))
                    continue
                if not self._send(connection, row, recipient, data, sender):
                    return
                row = None
        except Exception as err:  # a bug must not leave the recording thread waiting for this row
            logger.exception("SMTP worker failed")
            if row is not None:
                self.events.put(Trouble(row, ConnectionTrouble(f"{self.pool.config.where}: unexpected error: "
                                                               f"{err!r}", fatal=True)))
        finally:
            if self.held is not None and not self.run_.abort.is_set():  # the recording thread waits for it
                self._report_held(connection.end_held() if connection.holding else Attempt(
                    AttemptKind.IN_DOUBT, f"{self.pool.config.where}: the session ended with the message held"))
            connection.close()  # after an abort a held message is not ended: the server discards it

    def _next_row(self, connection: SmtpConnection) -> ledger.Claimed | None:
        """Take the next row; end the held message first when no row is waiting or the run winds down."""
        run = self.run_
        if self.held is not None and not run.abort.is_set():
            if not run.quit_waits.is_set():
                try:
                    return run.work.get_nowait()
                except queue.Empty:
                    pass
            self._report_held(connection.end_held())
        return run.work.get()

    def _report_held(self, result: Attempt | ConnectionTrouble) -> None:
        """Report what came of the held message."""
        assert self.held is not None
        (row, nbytes), self.held = self.held, None
        self.events.put(Trouble(row, result) if isinstance(result, ConnectionTrouble) else Done(row, result, nbytes))

    def _send(self, connection: SmtpConnection, row: ledger.Claimed, recipient: str, data: bytes,
              sender: str | None = None) -> bool:
        """Send ROW's message; report the result; return False when this worker must end."""
        abort = self.run_.abort

        def before_data() -> Callable[[], None]:
            recorded = threading.Event()
            self.events.put(DataSent(row.subscriber.id, recorded, self.number, time.monotonic()))

            def wait() -> None:
                recorded.wait()
                if abort.is_set():
                    raise _Aborted()

            return wait

        try:
            if self.hold:
                attempt = connection.send_holding_end(recipient, data, before_data, held_ended=self._report_held,
                                                      last_reply=row.last_reply, sender=sender)
            else:
                attempt = connection.send(recipient, data, before_data, last_reply=row.last_reply, sender=sender)
        except ConnectionTrouble as trouble:
            self.events.put(Trouble(row, trouble))
            return False
        except _Aborted:
            return False
        if attempt is None:
            self.held = (row, len(data))
        else:
            self.events.put(Done(row, attempt, len(data)))
        return True

    def _ensure_open(self, connection: SmtpConnection, row: ledger.Claimed) -> bool:
        """Open the connection if it is closed; on failure report the row as untried and return False."""
        tries = 0
        quit_waits, policy = self.run_.quit_waits, self.pool.policy
        while not connection.is_open:
            try:
                connection.open()
            except ConnectionTrouble as trouble:
                tries += 1
                if trouble.fatal or tries >= policy.connect_tries or quit_waits.is_set():
                    if not trouble.fatal and tries >= policy.connect_tries:
                        trouble = ConnectionTrouble(f"{trouble} ({tries} tries)", fatal=True)
                    self.events.put(Trouble(row, trouble))
                    return False
                quit_waits.wait(0.2 * tries)
        return True


__all__ = [
    "Attempt", "AttemptKind", "ConnectionTrouble", "Reply", "RetryPolicy", "SmtpConfig", "SmtpConnection",
    "SmtpTransport", "Throttle", "WireMessages", "from_settings", "is_bounce", "is_rate_limit", "send_one",
    "smtp_config", "stuff",
]
