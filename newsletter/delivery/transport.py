"""What every transport does, and the typed values a send hands it and gets back.

A transport takes a day's claimed rows to their readers. `send.send_issue` owns the ledger's
start (freeze, snapshot, expiry, policies) and end (done or not); in between it asks the
transport to `recover` what a killed run left, to `deliver` the claims, and to `close`. Proofs
and single messages (a sign-up confirmation) go through the same object.

Adding a transport (an email service's HTTP API, say) is one module with a class that has the
methods of `Transport` and a `from_settings(settings, options)` constructor, and its name in
`TransportName` and `_MODULES` below.
"""

from __future__ import annotations

import importlib
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from newsletter.delivery import ledger
from newsletter.delivery.states import InDoubt
from newsletter.errors import SettingsError
from newsletter.settings import Settings

if TYPE_CHECKING:
    from newsletter.delivery.smtp import RetryPolicy
    from newsletter.variants import IssueTemplates

Progress = Callable[[int, int], None]


class TransportName(StrEnum):
    """The `[delivery] transport` values."""

    OUTBOX = "outbox"  # one .eml file per subscriber in outbox/DAY/mail/new/
    SMTP = "smtp"  # a pool of connections to [smtp] host


_MODULES = {
    TransportName.OUTBOX: "newsletter.delivery.outbox",
    TransportName.SMTP: "newsletter.delivery.smtp",
}


def transport_name(settings: Settings, name: str | None = None) -> TransportName:
    """Return NAME (default: [delivery] transport) as a TransportName; SettingsError if it is none."""
    value = name or settings.delivery.transport
    try:
        return TransportName(value)
    except ValueError:
        choices = " or ".join(f"'{known}'" for known in TransportName)
        raise SettingsError(f"{settings.root / 'newsletter.toml'}: [delivery] transport must be {choices}, "
                            f"not {value!r}") from None


@dataclass(frozen=True)
class Options:
    """How a send wants its transport to behave (all settings are checked when it is made)."""

    sync: str = "auto"  # outbox: how a batch is made durable (syncfs, fsync, auto)
    in_doubt: InDoubt = InDoubt.RETRY  # SMTP: a drop after the final "."
    policy: RetryPolicy | None = None  # SMTP: backoffs and the breaker; None: the default


def open_transport(settings: Settings, name: str | None = None, options: Options = Options()) -> Transport:
    """Return the transport NAME (default: [delivery] transport), its settings checked, nothing opened yet."""
    kind = transport_name(settings, name)
    module = importlib.import_module(_MODULES[kind])
    return module.from_settings(settings, options)


@dataclass(frozen=True)
class Recovery:
    """What a transport's recovery found, rows a killed run left behind."""

    sent: int = 0  # claimed rows whose message was already delivered: now sent
    released: int = 0  # rows to send again
    removed: int = 0  # stray files removed (outbox)
    in_doubt: int = 0  # rows the server may have had in full: now in doubt (SMTP)


@dataclass
class Totals:
    """What one `deliver` did."""

    written: int = 0  # messages written (outbox) or accepted by the server (SMTP)
    skipped: int = 0  # rows skipped because the subscriber left after the snapshot
    failed: int = 0  # rows failed: the message could not be made, or the server refused it
    bounced: int = 0  # of those, refusals that mark the subscriber bounced
    deferred: int = 0  # attempts that ended in a retry (4xx, a drop before the end of the body)
    in_doubt: int = 0  # drops after the final "."
    released: int = 0  # claimed but never attempted (a stop or a pause): back to pending
    nbytes: int = 0
    seconds: float = 0.0
    stopped: bool = False  # a stop was asked for: the run ended at a clean point
    waiting_retries: int = 0  # rows left in retry for a later send


@dataclass(frozen=True)
class Claims:
    """One send's rows, handed to a transport, which claims them in batches with `take`."""

    conn: sqlite3.Connection
    day: date
    sha256: str  # the frozen content every claimed row gets
    batch_size: int
    stop: threading.Event  # set: finish what is in flight, record it, and return
    todo: int = 0  # rows due when the send started, for the progress callback
    progress: Progress | None = None
    clock: Callable[[], datetime] | None = None  # a fixed clock (tests): retries are not waited for
    variant_sha256: Mapping[str, str] = field(default_factory=dict)  # each frozen variant's fingerprint
    owner: str = ""  # this run's number: its claims carry it (several senders on PostgreSQL)
    lease_seconds: float = 600.0  # how long its claims stay its own without another claim

    def now(self) -> str:
        """The time the ledger records, to the second."""
        return self._moment().isoformat(timespec="seconds")

    def now_ms(self) -> str:
        """The time retries are kept at, to the millisecond (a claim compares at that precision)."""
        return self._moment().isoformat(timespec="milliseconds")

    def _moment(self) -> datetime:
        return self.clock() if self.clock else datetime.now(timezone.utc)

    @property
    def waits_for_retries(self) -> bool:
        """Whether a run may wait for retries due soon (not with a fixed clock)."""
        return self.clock is None

    def lease(self) -> ledger.Lease:
        """This run's claims: its number, and until when they are its own."""
        until = self._moment() + timedelta(seconds=self.lease_seconds)
        return ledger.Lease(self.owner, until.isoformat(timespec="seconds"))

    def take(self, limit: int, *, now: str | None = None) -> ledger.Claim:
        """Claim up to LIMIT due rows (retries first, due by NOW); rows of subscribers who left are skipped."""
        return ledger.claim_batch(self.conn, self.day, limit, sha256=self.sha256, now=now or self.now(),
                                  variant_sha256=self.variant_sha256, lease=self.lease())

    def record_sent(self, subscriber_ids: Sequence[int]) -> None:
        """Record claimed rows as sent: call only once their messages are safely delivered."""
        ledger.set_state(self.conn, self.day, subscriber_ids, ledger.SENT, now=self.now(), expected=ledger.CLAIMED)

    def record_failed(self, subscriber_id: int, reply: str) -> None:
        """Record a claimed row as failed, with what went wrong."""
        ledger.set_state(self.conn, self.day, [subscriber_id], ledger.FAILED, now=self.now(),
                         expected=ledger.CLAIMED, reply=reply)

    def done(self, count: int) -> None:
        """Report COUNT rows settled so far in this run."""
        if self.progress:
            self.progress(count, max(self.todo, count))


@dataclass(frozen=True)
class Copy:
    """One proof copy: its recipient and its finished bytes."""

    recipient: str
    raw: bytes


@dataclass(frozen=True)
class ProofReport:
    """Where the proof copies went: files written (outbox) or addresses the server accepted (SMTP)."""

    transport: TransportName
    delivered: tuple[str, ...] = ()
    refused: tuple[tuple[str, str], ...] = ()  # (address, the server's reply)
    files: tuple[Path, ...] = ()
    server: str = ""


class Transport(Protocol):
    """Takes messages to their readers: a day's claims, proof copies, or one message."""

    name: TransportName
    failed_means: str  # what a failed row means with this transport, for the closing summary
    hint: str  # what to say after a send by this transport ("" for nothing)

    def destination(self, day: date) -> Path | str:
        """Where DAY's messages go: a folder, or the server's host:port."""
        ...

    def recover(self, conn: sqlite3.Connection, day: date, *, now: str) -> Recovery:
        """Resolve the rows a killed send left claimed (or data_sent)."""
        ...

    def deliver(self, claims: Claims, template: IssueTemplates) -> Totals:
        """Claim and deliver until no row is due or CLAIMS.stop is set; record every row, each with its variant's bytes."""
        ...

    def deliver_copies(self, copies: Sequence[Copy], *, day: date, moment: datetime) -> ProofReport:
        """Deliver proof COPIES outside the ledger."""
        ...

    def deliver_one(self, raw: bytes, recipient: str) -> Path | None:
        """Deliver one message outside any issue; return the file written, if any."""
        ...

    def close(self) -> None:
        """Let go of what the transport holds."""
        ...
