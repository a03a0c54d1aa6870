"""The SMTP pool's loop: every connection driven from one thread, and the ledger's commit points.

One thread drives every `Session` (session.py) through one selector: it claims rows ahead, starts
a message on each session that is free, reads replies as they come, and records, in one
transaction per round (a group commit, group_commit.py):

1. `data_sent` for every message whose recipient the server accepted: its body goes out meanwhile,
   but its final "." waits for that commit, so the end of a message never leaves unrecorded
   (RELIABILITY.md); under the `retry` in-doubt policy, also for each such session's next
   message (`asked`), so a commit serves two messages of each connection;
2. the results that came back meanwhile, and a claim of more rows when they run low.

No thread per connection means no hand-off between threads per message: the fixed cost of a
message is its bytes, its replies and its share of a commit. On SQLite the loop commits itself (a
local fsync costs less than two hand-offs of the GIL); on PostgreSQL the thread that owns the
connection commits while the loop goes on. Signed messages are made ahead by threads, one fewer
than the machine's cores (OpenSSL releases the GIL), which wake the loop through a socket pair;
sessions are opened (connect, greeting, TLS, login) on threads too, so a slow server's greeting
holds up none of the other connections.
"""

from __future__ import annotations

import logging
import os
import queue
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from newsletter.addresses import ascii_address
from newsletter import store
from newsletter.delivery import ledger
from newsletter.delivery.connection import Attempt, AttemptKind, ConnectionTrouble
from newsletter.delivery.group_commit import GroupCommit
from newsletter.delivery.replies import RefusalStreak
from newsletter.delivery.session import Message, Session
from newsletter.delivery.states import InDoubt
from newsletter.delivery.transport import Claims, Totals
from newsletter.errors import NewsletterError
from newsletter.models import Subscriber

if TYPE_CHECKING:
    from newsletter.delivery.smtp import SmtpTransport, Throttle

logger = logging.getLogger(__name__)

T = TypeVar("T")
_HOLD_SECONDS = 0.02  # the longest a result waits for a commit to share
_TICK = 0.05  # the longest the loop sleeps with work in flight (a stop is seen within it)
_CHUNK = 4  # messages made ahead in one task


def signer_threads(cores: int | None = None) -> int:
    """How many threads make signed messages ahead on a machine with CORES cores (default: this one's).

    One core is left to the loop (and to the kernel's side of the sockets): a signer running on
    every core delays the loop's replies and commits, and connections and cores then sit idle
    (measured on 2 cores: one signer left 8-13% of the CPU idle against 17-18% with two, and sent
    faster). RSA releases the GIL, so more cores take more signers, up to four.
    """
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores - 1))


def iso_ms(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


class _Slot:
    """A session's next message, waiting for its send slot (the throttle) or for the session to reopen."""

    def __init__(self, message: Message, not_before: float) -> None:
        self.message, self.not_before, self.tries = message, not_before, 0


class _Database:
    """The loop's database calls, made on the thread that owns the connection (SQLite allows no
    other) while the loop goes on: `serve` runs them until `close`, or `fail` refuses them all.

    INLINE: each call is made at once, on the loop's own thread (which then owns the connection).
    """

    def __init__(self, *, inline: bool = False) -> None:
        self.inline = inline
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._failed: BaseException | None = None

    def submit(self, call: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        if self.inline:
            try:
                future.set_result(call())
            except BaseException as err:  # raised where the loop asks for the result
                future.set_exception(err)
            return future
        with self._lock:
            if self._failed is not None:
                future.set_exception(self._failed)
            else:
                self._jobs.put((call, future))
        return future

    def call(self, call: Callable[[], T]) -> T:
        return self.submit(call).result()

    def serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            call, future = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(call())
                except BaseException as err:  # the loop raises it where it waits
                    future.set_exception(err)

    def fail(self, err: BaseException) -> None:
        """The serving thread gave up (ERR): every call waiting, and every later one, raises ERR."""
        with self._lock:
            self._failed = err
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None and job[1].set_running_or_notify_cancel():
                    job[1].set_exception(err)

    def close(self) -> None:
        if not self.inline:
            self._jobs.put(None)


class PoolRun:
    """One `deliver`: the sessions, the rows claimed ahead of them, and what is recorded when."""

    def __init__(self, pool: SmtpTransport, claims: Claims, make_data: Callable[[ledger.Claimed], bytes],
                 throttle: Throttle, envelope: Callable[[Subscriber], str | None] = lambda subscriber: None,
                 *, sign_ahead: bool = False) -> None:
        self.pool, self.claims, self.make_data, self.throttle = pool, claims, make_data, throttle
        self.envelope = envelope  # each message's envelope sender (VERP), or None for the From address
        self.totals = Totals()
        self.rows: deque[ledger.Claimed] = deque()  # claimed, not yet on a session
        self.in_flight = 0  # claimed and not yet settled
        self.halt: ConnectionTrouble | None = None
        self.drops_in_a_row, self.last_drop = 0, ""
        self.claim_pause_until = 0.0
        self.done_count = 0
        # rows claimed ahead of the sessions (signed: enough to keep the signing threads busy)
        # (a claim costs two queries whatever its size: fewer, larger claims)
        self.ahead = max(16 * pool.concurrency, 64) * (2 if sign_ahead else 1)
        self.held: list[ledger.Outcome] = []  # results not yet committed
        self.held_since = 0.0
        self.streak: RefusalStreak[ledger.Outcome] = RefusalStreak()  # refusals that may blame us
        self.group = GroupCommit()  # how long to wait for more data_sent requests before a commit
        self.claim_wanted = False  # the next commit also claims rows (one commit instead of two)
        self.asking: list[tuple[Session, Message]] = []  # accepted recipients waiting for data_sent
        # a session's next message, whose data_sent rides with the commit of its current one's (`asked`)
        self.reserved: dict[Session, Message] = {}
        self.record_ahead = pool.in_doubt == InDoubt.RETRY
        # SQLite: a commit is a local fsync, cheaper than handing it to another thread and back (two
        # waits for the GIL); PostgreSQL: a commit waits on the network, and the loop goes on meanwhile
        self.database = _Database(inline=not store.is_postgres(claims.conn))
        self.committing: Future[tuple[ledger.Claim, int]] | None = None  # the commit under way
        self.committing_for: list[tuple[Session, Message]] = []  # whose data_sent it records
        self.committing_wanted, self.committing_since = False, 0.0  # whether it claims; when it began
        self.aborted = False  # the caller's thread failed: drop everything and end
        self.released: list[int] = []  # rows given back untried
        self.selector = selectors.DefaultSelector()
        hold = not throttle.paces  # a throttle spaces messages: each final "." goes at once
        self.sessions = [Session(pool.config, self, number=n, hold=hold, selector=self.selector)
                         for n in range(pool.concurrency)]
        self.slots: dict[Session, _Slot] = {}
        # sessions being opened on threads of their own (connecting, the greeting, TLS and the login
        # wait on the server: the loop goes on with the others meanwhile); their slot waits for it
        # (daemon threads: a Ctrl-C during a connect to a server that never answers ends the process
        # at once, where an executor's threads would hold its exit for the connect's timeout)
        self.opening: dict[Session, Future[None]] = {}
        self.closed = False  # the run is over: a connection opened after it is closed at once
        self.signers = ThreadPoolExecutor(signer_threads(), thread_name_prefix="smtp-sign") if sign_ahead else None
        # subscriber id → the chunk making its message ahead, and its place in it
        self.made: dict[int, tuple[Future[list[bytes | NewsletterError]], int]] = {}
        self.sleeping = self.woken = False  # the loop is in (or going into) select; another thread woke it
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)

    # --- the loop -------------------------------------------------------------------------------

    def run(self) -> Totals:
        """Claim, send and record until nothing is due, a stop, or a trip.

        On SQLite the loop makes its commits itself, on this thread. On PostgreSQL the loop runs in
        a thread of its own and this thread, which owns the connection, makes the loop's database
        calls, so a commit's round trips overlap the loop's work on the other connections.
        """
        started = time.perf_counter()
        failure: list[BaseException] = []
        if self.database.inline:
            self._loop()
            return self._totals(started)

        def loop() -> None:
            try:
                self._loop()
            except BaseException as err:
                failure.append(err)
            finally:
                self.database.close()

        thread = threading.Thread(target=loop, name="smtp-pool", daemon=True)
        thread.start()
        try:
            self.database.serve()
        except BaseException as err:
            self.aborted = True  # e.g. Ctrl-C here: the loop drops its sessions and ends
            self.database.fail(err)
            thread.join()
            raise
        thread.join()
        if failure:
            raise failure[0]
        return self._totals(started)

    def _totals(self, started: float) -> Totals:
        self.totals.seconds = time.perf_counter() - started
        logger.debug("%s: commits of data_sent took %.1f ms, a connection's cycle %.1f ms (running averages)",
                     self.claims.day, self.group.commit_seconds * 1e3, self.group.cycle_seconds * 1e3)
        self.totals.waiting_retries = ledger.counts(self.claims.conn, self.claims.day)[ledger.RETRY]
        return self.totals

    def _loop(self) -> None:
        self.claims.done(0)
        try:
            while self._step():
                pass
            self._finish()
        except BaseException:
            for session in self.sessions:  # nothing more leaves: rows stay claimed/data_sent for recovery
                session.abandon()
            raise
        finally:
            self._close()

    def _step(self) -> bool:
        """Do one round of the loop; return False when the run is over."""
        if self.aborted:
            raise RuntimeError("the SMTP send was interrupted")
        winding_down = self.halt is not None or self.claims.stop.is_set()
        if winding_down:
            self._give_back()
            if self.in_flight <= 0:
                self.flush_now()
                self.totals.stopped = self.halt is None
                return False
        elif self.in_flight <= self.ahead // 2 and time.monotonic() >= self.claim_pause_until:
            if self.in_flight > self.pool.concurrency:
                self.claim_wanted = True  # the sessions have rows left: the claim rides with the next commit
            else:
                self.flush_now()
                limit = self.ahead - self.in_flight
                self._hand_out(self.database.call(lambda: self.claims.take(limit, now=self.claims.now_ms())))
                if self.in_flight == 0 and self.claim_pause_until > time.monotonic():
                    return self._wait_for_retries()
        self._start_messages(winding_down)
        self._poll(self._timeout())
        self._record()
        if self.halt is None and self.drops_in_a_row >= self.pool.policy.drops_in_a_row:
            self.halt = ConnectionTrouble(f"{self.last_drop} ({self.drops_in_a_row} messages in a row failed "
                                          "this way)", fatal=True)
        return True

    def _hand_out(self, claim: ledger.Claim) -> None:
        """Queue CLAIM's rows for the sessions; after an empty claim, claim again only in a while."""
        self.claim_wanted = False
        self.totals.skipped += claim.skipped
        self.rows.extend(claim.rows)
        self.in_flight += len(claim.rows)
        if self.signers is not None:  # in chunks: a task costs a hand-off each way, a chunk pays it once
            for start in range(0, len(claim.rows), _CHUNK):
                chunk = claim.rows[start:start + _CHUNK]
                future = self.signers.submit(self._make_chunk, chunk)
                future.add_done_callback(self._wake)
                for index, row in enumerate(chunk):
                    self.made[row.subscriber.id] = (future, index)
        if not claim.rows and not claim.skipped:
            self.claim_pause_until = time.monotonic() + 0.05

    def _make_chunk(self, rows: Sequence[ledger.Claimed]) -> list[bytes | NewsletterError]:
        """Each row's message (a message that cannot be made: its error, reported when it comes up)."""
        made: list[bytes | NewsletterError] = []
        for row in rows:
            try:
                made.append(self.make_data(row))
            except NewsletterError as err:
                made.append(err)
        return made

    def _wake(self, _: object = None) -> None:
        """A commit, a chunk of messages or a session's opening is done (another thread): wake the loop if it sleeps.

        Writing to the pair costs that thread a wait for the GIL, so it is written only while the
        loop sleeps (or is about to); `_poll` checks `woken` before it sleeps, so no wake is lost.
        """
        self.woken = True
        if self.sleeping:
            try:
                self._wake_w.send(b"\0")
            except OSError:
                pass  # the pair is full (the loop is awake anyway) or closed (the run is over)

    def _give_back(self) -> None:
        """A stop or a trip: rows no session started go back to pending."""
        drained = [row.subscriber.id for row in self.rows]
        self.rows.clear()
        for future, _ in self.made.values():
            future.cancel()
        self.made.clear()
        for session, slot in list(self.slots.items()):
            drained.append(self._row(slot.message).subscriber.id)
            del self.slots[session]
        for message in self.reserved.values():
            drained.append(self._row(message).subscriber.id)
        self.reserved.clear()
        if drained:
            self.in_flight -= len(drained)
            self.released.extend(drained)

    def _wait_for_retries(self) -> bool:
        """Nothing claimable and nothing in flight: wait for a retry due soon, or end the run."""
        due = self.database.call(lambda: ledger.next_retry_at(self.claims.conn, self.claims.day))
        if due is None:
            return False
        wait = (datetime.fromisoformat(due) - datetime.now(timezone.utc)).total_seconds() if due else 0.0
        if not self.claims.waits_for_retries or wait > self.pool.policy.wait_in_run:
            return False
        self.claims.stop.wait(min(max(wait, 0.0) + 0.01, self.pool.policy.wait_in_run))
        return True

    def _finish(self) -> None:
        """Record what is held: a streak too short to blame us failed; after a trip it waits for the resume."""
        self.claim_wanted = False
        left = self.streak.release()
        self.held.extend(self.settle(left) if self.halt is None else self._retry(left, self.claims.now_ms()))
        if self.held or self.released:
            self.flush_now()

    def _close(self) -> None:
        self.closed = True  # a connect under way ends by its timeout and closes itself
        for session in self.sessions:
            session.close()
        if self.signers is not None:
            self.signers.shutdown(wait=True, cancel_futures=True)
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # --- starting messages ----------------------------------------------------------------------

    def _start_messages(self, winding_down: bool) -> None:
        """Give each free session its next message; end a held message when none is coming."""
        now = time.monotonic()
        for session in self.sessions:
            if (opening := self.opening.get(session)) is not None:
                if opening.done():
                    del self.opening[session]
                    slot = self.slots.pop(session, None)  # none: given back on a stop meanwhile
                    if self._opened(session, opening, slot, now) and slot is not None:
                        session.begin(slot.message)
                continue
            if session.dead and session in self.reserved:  # another session takes its next message
                self.rows.appendleft(self._row(self.reserved.pop(session)))
            if session.dead or (session.is_open and not session.idle):
                continue
            slot = self.slots.get(session)
            if slot is None and (reserved := self.reserved.pop(session, None)) is not None:
                slot = _Slot(reserved, now)
            elif slot is None:
                if winding_down or not self.rows:
                    if session.held is not None:
                        session.end_held()
                    continue
                message = self._next_message()
                if message is None:
                    if session.held is not None and not self.rows:
                        session.end_held()
                    continue
                delay = self.throttle.reserve()
                slot = _Slot(message, now + delay)
                if delay > 0:
                    self.slots[session] = slot
                    continue
            elif now < slot.not_before:
                continue
            else:
                del self.slots[session]
            if self._ensure_open(session, slot):
                session.begin(slot.message)

    def _next_message(self) -> Message | None:
        """The next row's message, or None while it is still being made (or could not be: reported)."""
        while self.rows:
            row = self.rows[0]
            ahead = self.made.get(row.subscriber.id)
            if ahead is not None and not ahead[0].done():
                return None  # the loop wakes when it is made
            self.rows.popleft()
            self.made.pop(row.subscriber.id, None)
            try:
                data = ahead[0].result()[ahead[1]] if ahead is not None else self.make_data(row)
                if isinstance(data, NewsletterError):
                    raise data
                return Message(row, ascii_address(row.subscriber.email), data, self.envelope(row.subscriber),
                               row.last_reply)
            except NewsletterError as err:
                self._settle_row(row, Attempt(AttemptKind.UNBUILDABLE, str(err)), 0)
        return None

    def _ensure_open(self, session: Session, slot: _Slot) -> bool:
        """Tell whether SESSION is open; if not, start opening it on a thread, SLOT waiting for it
        (`_start_messages` sees it done: the callback wakes the loop)."""
        if session.is_open:
            return True
        opening: Future[None] = Future()
        self.opening[session] = opening
        opening.add_done_callback(self._wake)

        def open_connection() -> None:
            try:
                session.connection.open()
            except BaseException as err:  # noqa: BLE001 - the loop raises it (`_opened`)
                opening.set_exception(err)
                return
            if self.closed:  # the run ended while it connected
                session.connection.drop()
            opening.set_result(None)

        slot.not_before = float("inf")  # no timer: the open's end wakes the loop
        self.slots[session] = slot
        threading.Thread(target=open_connection, name=f"smtp-open-{session.number}", daemon=True).start()
        return False

    def _opened(self, session: Session, opening: Future[None], slot: _Slot | None, now: float) -> bool:
        """Take SESSION's finished OPENING into the loop; a failure waits and tries again, then trips the breaker."""
        try:
            opening.result()
        except ConnectionTrouble as trouble:
            if slot is None:
                return False
            slot.tries += 1
            policy = self.pool.policy
            if trouble.fatal or slot.tries >= policy.connect_tries or self.claims.stop.is_set():
                if not trouble.fatal and slot.tries >= policy.connect_tries:
                    trouble = ConnectionTrouble(f"{trouble} ({slot.tries} tries)", fatal=True)
                session.dead = True
                self.ended(session, slot.message, trouble)
                return False
            slot.not_before = now + 0.2 * slot.tries
            self.slots[session] = slot
            return False
        session.attach()
        return True

    # --- waiting --------------------------------------------------------------------------------

    def _timeout(self) -> float:
        """How long the next poll may sleep (a commit that ends wakes it up)."""
        now = time.monotonic()
        idle = self.committing is None
        if idle and self.asking and self._commit_due(now):
            return 0.0
        until = now + (_TICK if self.in_flight or self.released else 0.0)
        if idle and self.asking:
            until = min(until, self.group.wait_until(now))
        if idle and self.held:
            until = min(until, self.held_since + _HOLD_SECONDS)
        for slot in self.slots.values():
            until = min(until, slot.not_before)
        for session in self.sessions:
            if session.awaiting:
                until = min(until, session.deadline)
        return max(until - now, 0.0)

    def _poll(self, timeout: float) -> None:
        """Wait up to TIMEOUT for a socket (or a commit or a chunk being done), then act on what is ready."""
        self.sleeping = True
        ready = self.selector.select(0.0 if self.woken else timeout)
        self.sleeping = self.woken = False
        for key, mask in ready:
            session = key.data
            if session is None:
                try:
                    while self._wake_r.recv(4096):
                        pass
                except OSError:
                    pass
                continue
            if mask & selectors.EVENT_WRITE:
                session.writable()
            if mask & selectors.EVENT_READ:
                session.readable()
        now = time.monotonic()
        for session in self.sessions:
            session.expire(now)

    # --- what the sessions say (session.Listener) -----------------------------------------------

    def asked(self, session: Session, message: Message) -> None:
        """SESSION asks for MESSAGE's data_sent, and gets its next message's recorded in the same commit.

        Each message's final "." waits for a commit, so recording two messages of a session at a
        time halves the commits (fsyncs, server round trips) per message. The cost: a crash
        before the next message's final "." leaves it in doubt although it never left, at most one per
        connection. So only under the `retry` policy, which sends a row in doubt once more (same
        Message-ID): its reader is mailed once. Under `skip` the reader would miss the issue.
        """
        now = time.monotonic()
        if message.recorded:  # it rode with the session's previous message: its next one asks
            self.group.back(session.number, now)
            return
        self.asking.append((session, message))
        self.group.asked(session.number, now)
        if (self.record_ahead and session.hold and session.pipelining and session not in self.reserved
                and self.halt is None and not self.claims.stop.is_set()):
            following = self._next_message()
            if following is not None:
                self.reserved[session] = following
                self.asking.append((session, following))

    def ended(self, session: Session, message: Message, result: Attempt | ConnectionTrouble) -> None:
        row = self._row(message)
        if isinstance(result, ConnectionTrouble):
            self.in_flight -= 1
            self._add([ledger.Outcome(row.subscriber.id, ledger.RETRY, str(result),
                                      retry_at=iso_ms(datetime.now(timezone.utc)))])
            if result.fatal:
                self.halt = self.halt or result
            else:
                self.drops_in_a_row += 1
                self.last_drop = str(result)
            return
        self._settle_row(row, result, len(message.data))

    @staticmethod
    def _row(message: Message) -> ledger.Claimed:
        row = message.token
        assert isinstance(row, ledger.Claimed)
        return row

    def _settle_row(self, row: ledger.Claimed, attempt: Attempt, nbytes: int) -> None:
        self.in_flight -= 1
        self._add(self._on_done(row, attempt, nbytes))
        self.done_count += 1

    def _add(self, outcomes: list[ledger.Outcome]) -> None:
        if outcomes and not self.held:
            self.held_since = time.monotonic()
        self.held.extend(outcomes)

    # --- recording ------------------------------------------------------------------------------

    def _commit_due(self, now: float) -> bool:
        """Commit the data_sent asked for now: every busy session has asked, or the others are not worth
        waiting for (group_commit.py)."""
        return not any(session.busy for session in self.sessions) or now >= self.group.wait_until(now)

    def _record(self) -> None:
        """Commit what is due: data_sent for the sessions waiting, results held long enough, rows given back.

        One commit at a time, on the database's thread: what comes meanwhile waits for the next.
        """
        if self.committing is not None:
            if not self.committing.done():
                return
            self._committed()
        now = time.monotonic()
        asking = self.asking if self.asking and self._commit_due(now) else []
        if not (asking or self.released or len(self.held) >= self.ahead
                or (self.held and now - self.held_since >= _HOLD_SECONDS)):
            return
        if asking:
            self.asking = []
        self._commit(asking)
        if self.committing is not None and self.committing.done():  # made on this thread (SQLite)
            self._committed()

    def flush_now(self) -> None:
        """Commit the held results and give back the released rows, and wait for it."""
        if self.committing is not None:
            self.committing.result()
            self._committed()
        if self.held or self.released:
            self._commit([])
            assert self.committing is not None
            self.committing.result()
            self._committed()

    def _commit(self, asking: list[tuple[Session, Message]]) -> None:
        """Start the commit of ASKING's data_sent and the held results in one transaction (with a claim,
        when one is wanted), and the release of the rows given back, on the database's thread."""
        conn, day, claims = self.claims.conn, self.claims.day, self.claims
        data_sent = [self._row(message).subscriber.id for _, message in asking]
        outcomes, self.held = self.held, []
        released, self.released = self.released, []
        wanted = self.claim_wanted and self.halt is None and not claims.stop.is_set() and bool(data_sent or outcomes)
        limit = self.ahead - self.in_flight if wanted else 0
        if wanted:
            self.claim_wanted = False

        def commit() -> tuple[ledger.Claim, int]:
            claim = ledger.Claim((), 0)
            if data_sent or outcomes:
                claim = ledger.record(conn, day, data_sent=data_sent, outcomes=outcomes, now=claims.now_ms(),
                                      in_doubt=self.pool.in_doubt, sha256=claims.sha256,
                                      variant_sha256=claims.variant_sha256, claim=limit,
                                      lease=claims.lease() if limit else ledger.Lease())
            return claim, ledger.release(conn, day, released, now=claims.now_ms()) if released else 0

        self.committing_for, self.committing_wanted, self.committing_since = asking, wanted, time.monotonic()
        self.committing = self.database.submit(commit)  # on SQLite made here and now: committing_since first
        if not self.committing.done():
            self.committing.add_done_callback(self._wake)

    def _committed(self) -> None:
        """The commit under way is done: its sessions may end their messages (an error ends the run)."""
        assert self.committing is not None
        future, asking, self.committing = self.committing, self.committing_for, None
        claim, given_back = future.result()
        self.totals.released += given_back
        if asking:  # a session whose next message is recorded too comes back without asking (`asked`)
            ahead = {session for session, message in asking if message is self.reserved.get(session)}
            self.group.committed((session.number for session, _ in asking if session not in ahead),
                                 self.committing_since, time.monotonic())
        for session, message in asking:
            session.data_recorded(message)
        if self.committing_wanted:
            self._hand_out(claim)
        self.claims.done(self.done_count)

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

    def _on_done(self, row: ledger.Claimed, attempt: Attempt, nbytes: int) -> list[ledger.Outcome]:
        """Return the outcomes decided by ATTEMPT (a refusal is held until the streak says whom it blames)."""
        now = datetime.now(timezone.utc)
        outcome = self.pool.outcome(row, attempt, now)
        if attempt.kind in (AttemptKind.DROPPED, AttemptKind.IN_DOUBT):
            self.drops_in_a_row += 1
            self.last_drop = attempt.reply
        elif attempt.kind is not AttemptKind.UNBUILDABLE:
            self.drops_in_a_row = 0
        if attempt.kind is not AttemptKind.REJECTED:
            released = self.settle(self.streak.release()) if attempt.kind is not AttemptKind.UNBUILDABLE else []
            return released + self.settle([outcome], nbytes)
        domain = row.subscriber.email.rpartition("@")[2]
        decided = self.settle(self.streak.add(attempt.code, attempt.reply.partition(" ")[2], domain, outcome,
                                              first_try=row.attempts <= 1))
        if self.streak.tripped and self.halt is None:
            count = self.streak.held
            decided += self._retry(self.streak.release(), iso_ms(now))
            self.halt = ConnectionTrouble(
                f"{self.pool.config.where}: {attempt.reply} (the same refusal for {count} recipients in a row at "
                "different domains: it blames our server, our address or a policy, not each recipient)",
                fatal=True)
        return decided


