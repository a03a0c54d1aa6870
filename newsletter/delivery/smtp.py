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

Messages go out as prepared bytes: already CRLF, dot-stuffed with one `bytes.replace` (C speed),
written with one `sendall`, instead of smtplib's `data()`, which rescans each message with regexes.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import select
import smtplib
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from email.utils import parseaddr

from newsletter.delivery import ledger
from newsletter.delivery.replies import Blame, RefusalStreak, classify
from newsletter.errors import DeliveryError, NewsletterError, SettingsError
from newsletter.models import Subscriber
from newsletter.settings import Settings, smtp_password

logger = logging.getLogger(__name__)

_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?!\d)")


# --- settings -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to connect, checked once before anything is claimed."""

    host: str
    port: int
    security: str  # starttls | ssl | none
    username: str
    password: str = field(repr=False)
    timeout: float
    sender: str  # the envelope sender (MAIL FROM): the From address
    context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def smtp_config(settings: Settings, environ: Mapping[str, str] = os.environ) -> SmtpConfig:
    """Return the [smtp] settings checked and ready; SettingsError names the setting at fault."""
    from newsletter.messages import ascii_address

    smtp = settings.smtp
    where = f"{settings.root / 'newsletter.toml'}: [smtp]"
    host = smtp.host.strip()
    if not host or any(c.isspace() for c in host) or "/" in host:
        raise SettingsError(f"{where} host {smtp.host!r} is not a host name or address")
    if not 0 < smtp.port < 65536:
        raise SettingsError(f"{where} port {smtp.port} is not between 1 and 65535")
    if smtp.security not in ("starttls", "ssl", "none"):
        raise SettingsError(f"{where} security must be 'starttls', 'ssl' or 'none', not {smtp.security!r}")
    if not smtp.timeout > 0:
        raise SettingsError(f"{where} timeout must be a positive number of seconds, not {smtp.timeout}")
    password = smtp_password(environ)
    if smtp.username and not password:
        raise SettingsError(f"{where} username {smtp.username!r} is set but NEWSLETTER_SMTP_PASSWORD is empty; "
                            "the password is read only from the environment")
    if smtp.username and smtp.security == "none" and host not in ("localhost", "127.0.0.1", "::1"):
        raise SettingsError(f"{where} security = 'none' would send the password for {smtp.username!r} "
                            f"in clear text to {host}; use 'starttls' or 'ssl'")
    context = None
    if smtp.security != "none":
        cafile = None
        if smtp.ca_file:
            path = settings.root / smtp.ca_file
            if not path.is_file():
                raise SettingsError(f"{where} ca_file {str(path)!r} does not exist")
            cafile = str(path)
        try:
            context = ssl.create_default_context(cafile=cafile)
        except ssl.SSLError as err:
            raise SettingsError(f"{where} ca_file {cafile!r} is not a PEM certificate file: {err}") from err
        if not smtp.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    try:
        sender = ascii_address(parseaddr(settings.sender.from_address)[1])
    except NewsletterError as err:
        raise SettingsError(f"{settings.root / 'newsletter.toml'}: [sender] from: {err}") from err
    return SmtpConfig(host, smtp.port, smtp.security, smtp.username, password, smtp.timeout, sender, context)


# --- one connection -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reply:
    """An SMTP reply: its code and text (multi-line replies joined with spaces)."""

    code: int
    text: str

    @classmethod
    def of(cls, code: int, message: bytes | str) -> Reply:
        text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
        return cls(code, " ".join(text.split()))

    @property
    def enhanced(self) -> tuple[int, int, int] | None:
        """The enhanced status code (RFC 3463) at the start of the text, as (class, subject, detail)."""
        match = _ENHANCED.match(self.text)
        return (int(match[1]), int(match[2]), int(match[3])) if match else None

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


class ConnectionTrouble(Exception):
    """Not about one recipient: FATAL ones trip the breaker at once, others after a few in a row."""

    def __init__(self, message: str, *, fatal: bool) -> None:
        super().__init__(message)
        self.fatal = fatal


# What one attempt came to. Kinds: sent, deferred (4xx), rejected (5xx), dropped (before the end of
# the body: safe to retry), in_doubt (after the final "."), trouble (no message was attempted).
@dataclass(frozen=True)
class Attempt:
    kind: str
    reply: str
    at_rcpt: bool = False
    enhanced: tuple[int, int, int] | None = None
    code: int = 0
    blame: Blame | None = None  # rejected: whom the reply blames (replies.py)


def _attempt(kind: str, reply: Reply, *, at_rcpt: bool = False) -> Attempt:
    return Attempt(kind, str(reply), at_rcpt, reply.enhanced, reply.code)


def stuff(raw: bytes) -> bytes:
    """Return RAW (CRLF line ends) dot-stuffed and ended with the final CRLF.CRLF, ready for DATA."""
    data = raw.replace(b"\r\n.", b"\r\n..")
    if data.startswith(b"."):
        data = b"." + data
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


class WireMessages:
    """Each subscriber's DATA bytes (dot-stuffed, ended with CRLF.CRLF) from an issue's MessageTemplate.

    The static segments of the template are dot-stuffed once per issue. Per subscriber only the
    personal pieces (To, Message-ID, token, the lines with a name or token) are made, by a twin
    template whose static segments are NUL separators, then stuffed and spliced in: scanning each
    190 KB message for line-leading dots would cost more than making it. With a DKIM signer the
    signature covers the unstuffed bytes, so each message is made whole, signed, then stuffed.
    """

    def __init__(self, template) -> None:
        from newsletter.messages import MessageTemplate, sign

        self.template = template
        self._fast = template.signer is sign
        if not self._fast:
            return
        count = len(template.slots)
        self._pieces = MessageTemplate(
            template.day, template.settings, template.key, (b"",) + (b"\0",) * (count - 1) + (b"",),
            template.slots, template.lines,
        )
        # each static segment stuffed inside, and a second form for when it starts a line
        self._static = []
        for segment in template.segments:
            inner = segment.replace(b"\r\n.", b"\r\n..")
            self._static.append((inner, b"." + inner if inner.startswith(b".") else inner))
        self._count = count

    def data(self, subscriber: Subscriber) -> bytes:
        """Return SUBSCRIBER's message as DATA bytes: the same as `stuff(template.personalize(...))`."""
        if not self._fast:
            return stuff(self.template.personalize(subscriber))
        values = self._pieces.personalize(subscriber).split(b"\0")
        if len(values) != self._count:  # a NUL inside a value: cannot happen with 7-bit headers
            return stuff(self.template.personalize(subscriber))
        static = self._static
        out = []
        line_start = True  # whether the next byte starts a line (a leading "." is then doubled)
        piece = static[0][1]
        for index in range(self._count + 1):
            if index:
                value = values[index - 1].replace(b"\r\n.", b"\r\n..")
                if line_start and value.startswith(b"."):
                    value = b"." + value
                if value:
                    line_start = value.endswith(b"\n")
                out.append(value)
                piece = static[index][1 if line_start else 0]
            if piece:
                line_start = piece.endswith(b"\n")
            out.append(piece)
        if not line_start:
            out.append(b"\r\n")
        out.append(b".\r\n")
        return b"".join(out)


class SmtpConnection:
    """One SMTP session, opened on first use and reused for message after message."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._smtp: smtplib.SMTP | None = None
        self._pipelining = False

    @property
    def is_open(self) -> bool:
        return self._smtp is not None

    def open(self) -> None:
        """Connect, greet, start TLS, log in; raise ConnectionTrouble naming the host and the cause."""
        config = self.config
        where = config.where
        smtp: smtplib.SMTP | None = None
        try:
            if config.security == "ssl":
                smtp = smtplib.SMTP_SSL(timeout=config.timeout, context=config.context)
            else:
                smtp = smtplib.SMTP(timeout=config.timeout)
            # the name TLS checks the certificate against (SMTP(host) would connect in __init__)
            smtp._host = config.host
            code, message = smtp.connect(config.host, config.port)
            _no_delay(smtp.sock)
            if code != 220:
                raise ConnectionTrouble(f"{where}: the server refused the session: {Reply.of(code, message)}",
                                        fatal=code >= 500)
            smtp.ehlo_or_helo_if_needed()
            if config.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise ConnectionTrouble(f"{where}: TLS error: the server does not offer STARTTLS "
                                            "(set [smtp] security = 'ssl' for port 465, or 'none' for a local relay)",
                                            fatal=True)
                code, message = smtp.starttls(context=config.context)
                smtp.ehlo()
            if config.username:
                smtp.login(config.username, config.password)
            self._pipelining = smtp.has_extn("pipelining")
        except ConnectionTrouble:
            _close(smtp)
            raise
        except smtplib.SMTPAuthenticationError as err:
            _close(smtp)
            raise ConnectionTrouble(f"{where}: authentication failed for {config.username!r}: "
                                    f"{Reply.of(err.smtp_code, err.smtp_error)}", fatal=True) from err
        except smtplib.SMTPNotSupportedError as err:
            _close(smtp)
            raise ConnectionTrouble(f"{where}: the server offers no login (AUTH) for {config.username!r}; "
                                    "is [smtp] security right?", fatal=True) from err
        except ssl.SSLError as err:
            _close(smtp)
            raise ConnectionTrouble(f"{where}: TLS error: {err.reason or err}", fatal=True) from err
        except ConnectionRefusedError as err:
            _close(smtp)
            raise ConnectionTrouble(f"{where}: connection refused (is the server running, and the port right?)",
                                    fatal=True) from err
        except socket.gaierror as err:
            _close(smtp)
            raise ConnectionTrouble(f"{where}: cannot resolve the host name: {err.strerror or err}",
                                    fatal=True) from err
        except smtplib.SMTPResponseException as err:
            _close(smtp)
            raise ConnectionTrouble(f"{where}: the server refused the session: "
                                    f"{Reply.of(err.smtp_code, err.smtp_error)}", fatal=err.smtp_code >= 500) from err
        except (smtplib.SMTPException, OSError) as err:
            _close(smtp)
            raise ConnectionTrouble(f"{where}: cannot open a session: {_cause(err)}", fatal=False) from err
        except Exception as err:  # e.g. ValueError from the TLS settings: not worth a retry
            _close(smtp)
            raise ConnectionTrouble(f"{where}: cannot open a session: {err}", fatal=True) from err
        self._smtp = smtp

    def close(self) -> None:
        """Say QUIT (politely, briefly) and close."""
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
            _close(smtp)

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        _close(smtp)

    def send(self, recipient: str, data: bytes,
             before_data: Callable[[], Callable[[], None]] | None = None) -> Attempt:
        """Send one message to RECIPIENT; DATA is the output of `stuff`.

        BEFORE_DATA runs once the server accepted the recipient: it asks for the ledger's
        `data_sent` and returns a function that waits until that is durable. The body is written
        meanwhile, all but the final ".": the server has the end of the message only after that
        wait (RELIABILITY.md: a row that is not yet data_sent never had the end of its message),
        so the commit's latency hides behind the transfer. Raises ConnectionTrouble only for a
        sender the server refuses (not about one recipient); everything else is an Attempt.
        """
        smtp = self._smtp
        assert smtp is not None, "open() first"
        where = self.config.where
        sent_end = False
        try:
            pipelined = self._pipelining
            if pipelined:
                # RFC 2920: MAIL, RCPT and DATA in one write (DATA last), then the three replies: one
                # round trip instead of three. The body still waits for the ledger (before_data).
                smtp.send(f"MAIL FROM:<{self.config.sender}>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n")
                mail, rcpt = Reply.of(*smtp.getreply()), Reply.of(*smtp.getreply())
            else:
                mail = Reply.of(*smtp.mail(self.config.sender))
                rcpt = Reply.of(*smtp.rcpt(recipient)) if mail.code == 250 else None
            if mail.code != 250 or rcpt is None or rcpt.code not in (250, 251):
                refusal = mail if mail.code != 250 else rcpt
                # pipelined, DATA was sent too: its reply (503/554, no valid recipient) is read and
                # dropped; a server that said 354 anyway wants a body: that session is closed
                late = Reply.of(*smtp.getreply()) if pipelined else None
                self._after_refusal(late if late is not None and late.code == 354 else refusal)
                if refusal is mail and mail.code >= 500:
                    raise ConnectionTrouble(f"{where}: the server refuses the sender <{self.config.sender}>: {mail}",
                                            fatal=True)
                if refusal is mail:
                    return _attempt("deferred", mail)
                return self._refused(rcpt, recipient, "at RCPT", at_rcpt=True)
            recorded = before_data() if before_data is not None else None
            if not pipelined:
                smtp.putcmd("data")
            ready = Reply.of(*smtp.getreply())
            if ready.code != 354:
                self._after_refusal(ready)
                return self._refused(ready, recipient, "at DATA")
            body = memoryview(data)
            smtp.sock.sendall(body[:-3])  # all but the final ".\r\n"
            if recorded is not None:
                recorded()
            if _gave_up(smtp.sock):
                # closed (or answered) before our final ".": the server cannot have the message
                raise smtplib.SMTPServerDisconnected("the server closed the connection before the end of the message")
            smtp.sock.sendall(body[-3:])
            sent_end = True
            final = Reply.of(*smtp.getreply())
            if final.code == 421:
                self._drop()
            if final.code == 250:
                return _attempt("sent", final)
            return self._refused(final, recipient, "at the end of the message")
        except ConnectionTrouble:
            raise
        except (smtplib.SMTPException, OSError) as err:
            self._drop()
            cause = f"{where}: {_cause(err)}"
            if sent_end:
                return Attempt("in_doubt", f"{cause} after the end of the message")
            return Attempt("dropped", cause)
        except BaseException:
            self._drop()  # never QUIT in the middle of a body: the server must discard it
            raise

    def _refused(self, reply: Reply, recipient: str, stage: str, *, at_rcpt: bool = False) -> Attempt:
        """Return the Attempt for a refusal; raise ConnectionTrouble when it blames our side (replies.py)."""
        if reply.code < 500:
            return _attempt("deferred", reply, at_rcpt=at_rcpt)
        blame = classify(reply.code, reply.text)
        if blame is Blame.OURS:
            raise ConnectionTrouble(f"{self.config.where}: {reply} (refused <{recipient}> {stage}; the reply blames "
                                    "the sender, the relay or our settings, not the recipient)", fatal=True)
        return Attempt("rejected", str(reply), at_rcpt, reply.enhanced, reply.code, blame)

    def _after_refusal(self, reply: Reply) -> None:
        """Leave the session ready for the next message: RSET, or reconnect after a 421."""
        if reply.code == 421 or reply.code == 354 or self._smtp is None:
            self._drop()
            return
        try:
            code, _ = self._smtp.rset()
            if code != 250:
                self._drop()
        except (smtplib.SMTPException, OSError):
            self._drop()


def _no_delay(sock: socket.socket | None) -> None:
    """Turn off Nagle's algorithm: commands and the final "." are small writes that must not wait
    for the acknowledgement of the body (with delayed ACKs, that costs milliseconds per message)."""
    try:
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


def _gave_up(sock: socket.socket) -> bool:
    """Whether the server closed the connection, or said something, while it should wait for our "."."""
    try:
        poller = select.poll()  # not select.select: a process with many files has descriptors past 1024
        poller.register(sock, select.POLLIN)
        if not poller.poll(0) and not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
            return False
        if isinstance(sock, ssl.SSLSocket):
            return True  # a TLS record before our "." (a close_notify, an early reply): nothing to wait for
        sock.recv(1, socket.MSG_PEEK)  # b"" at the end of the stream, or an early reply
        return True
    except (OSError, ValueError):
        return True


def _close(smtp: smtplib.SMTP | None) -> None:
    if smtp is not None:
        try:
            smtp.close()
        except OSError:
            pass


def _cause(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    if isinstance(err, (socket.timeout, TimeoutError)) or "timed out" in text:
        return "no reply in time (timeout)"
    if "Connection unexpectedly closed" in text or isinstance(err, smtplib.SMTPServerDisconnected):
        return f"the connection dropped ({text})"
    return text


def send_one(settings: Settings, raw: bytes, recipient: str) -> None:
    """Send RAW to RECIPIENT over one connection; DeliveryError names the host and the cause."""
    from newsletter.messages import ascii_address

    config = smtp_config(settings)
    connection = SmtpConnection(config)
    try:
        connection.open()
        attempt = connection.send(ascii_address(recipient), stuff(raw))
    except ConnectionTrouble as err:
        raise DeliveryError(str(err)) from err
    finally:
        connection.close()
    if attempt.kind != "sent":
        raise DeliveryError(f"{config.where}: not delivered to {recipient}: {attempt.reply}")


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
        if attempt.kind in ("dropped", "in_doubt"):
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
    return attempt.kind == "rejected" and attempt.at_rcpt and attempt.blame is Blame.MAILBOX


class Throttle:
    """Space sends across the whole pool: RATE per second at most, and HOURLY_CAP per rolling hour."""

    def __init__(self, rate: float, hourly_cap: int, recent: list[float] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        """RECENT: clock times of sends in the last hour (earlier runs), so a restart keeps the cap."""
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.cap = hourly_cap
        self.clock = clock
        self._lock = threading.Lock()
        self._next = 0.0
        self._window: deque[float] = deque(sorted(recent)[-hourly_cap:] if hourly_cap else (), maxlen=hourly_cap or None)

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


# --- the pool -------------------------------------------------------------------------------------

@dataclass
class SmtpTotals:
    """What one run did, for the SendReport."""

    sent: int = 0
    deferred: int = 0  # left to retry (4xx, drops)
    failed: int = 0
    bounced: int = 0
    in_doubt: int = 0
    skipped: int = 0
    released: int = 0  # claimed but never attempted (a stop or a pause): back to pending
    nbytes: int = 0
    seconds: float = 0.0
    stopped: bool = False
    waiting_retries: int = 0  # rows left in retry for a later send


_HOLD_SECONDS = 0.02  # the longest a result waits for a commit to share


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


class _Aborted(Exception):
    """The recording thread gave up: a worker must not send the body."""


class SmtpTransport:
    """Send one issue's claimed rows through a pool of connections, recording each commit point."""

    def __init__(self, config: SmtpConfig, *, concurrency: int, throttle: Throttle,
                 policy: RetryPolicy = RetryPolicy(), in_doubt: str = "retry") -> None:
        self.config = config
        self.concurrency = max(1, concurrency)
        self.throttle = throttle
        self.policy = policy
        self.in_doubt = in_doubt

    def deliver(
        self,
        conn,
        day: date,
        sha: str,
        make_data: Callable[[Subscriber], bytes],
        *,
        stop: threading.Event,
        stamp: Callable[[], str],
        progress: Callable[[int, int], None] | None = None,
        todo: int = 0,
        wait_for_retries: bool = True,
    ) -> SmtpTotals:
        """Claim and send until nothing is due; raise DeliveryError when the breaker trips.

        On a stop, messages in flight are finished and recorded, rows not yet attempted go back to
        `pending`. On a trip, the same, then the issue is `paused` and DeliveryError names the cause.
        """
        totals = SmtpTotals()
        size = self.concurrency
        work: queue.Queue = queue.Queue()
        events: queue.Queue = queue.Queue()
        abort = threading.Event()
        quit_waits = threading.Event()  # a throttle wait ends early on a stop or a trip
        workers = [threading.Thread(target=self._work, args=(work, events, abort, quit_waits, make_data),
                                    name=f"smtp-{n}", daemon=True) for n in range(size)]
        for worker in workers:
            worker.start()
        started = time.perf_counter()
        in_flight = 0
        halt: ConnectionTrouble | None = None
        drops_in_a_row, last_drop = 0, ""
        claim_pause_until = 0.0
        done_count = 0
        ahead = max(4 * size, 32)  # rows claimed ahead of the workers (released again on a stop)
        held: list[ledger.Outcome] = []  # results not yet committed
        held_since = 0.0
        streak: RefusalStreak[ledger.Outcome] = RefusalStreak()  # refusals that may blame us, held back
        if progress:
            progress(0, todo)

        def settle(decided: list[ledger.Outcome], nbytes: int = 0) -> list[ledger.Outcome]:
            """Count DECIDED in the totals and return them, to be recorded."""
            for outcome in decided:
                if outcome.state == ledger.SENT:
                    totals.sent += 1
                    totals.nbytes += nbytes
                elif outcome.state == ledger.FAILED:
                    totals.failed += 1
                    totals.bounced += outcome.bounce
                elif outcome.state == ledger.IN_DOUBT:
                    totals.in_doubt += 1
                else:
                    totals.deferred += 1
            return decided

        def flush(data_sent: list[int] = (), released: list[int] = ()) -> None:
            try:
                if data_sent or held:
                    ledger.record(conn, day, data_sent=data_sent, outcomes=held, now=stamp(),
                                  in_doubt=self.in_doubt)
                    held.clear()
                if released:
                    totals.released += ledger.release(conn, day, released, now=stamp())
            except BaseException:
                abort.set()  # nothing more leaves: the rows stay claimed/data_sent for recovery
                raise

        def pump(timeout: float) -> None:
            nonlocal in_flight, halt, drops_in_a_row, last_drop, done_count, held_since
            if held:
                timeout = min(timeout, max(0.0, held_since + _HOLD_SECONDS - time.monotonic()))
            try:
                batch = [events.get(timeout=timeout)]
            except queue.Empty:
                if held:
                    flush()
                return
            while True:
                try:
                    batch.append(events.get_nowait())
                except queue.Empty:
                    break
            data_sent, outcomes, waiters, released = [], [], [], []
            now = datetime.now(timezone.utc)
            for event in batch:
                kind = event[0]
                if kind == "data_sent":
                    data_sent.append(event[1])
                    waiters.append(event[2])
                elif kind == "unstarted":
                    released.append(event[1].subscriber.id)
                    in_flight -= 1
                elif kind == "trouble":
                    row, trouble = event[1], event[2]
                    in_flight -= 1
                    outcomes.append(ledger.Outcome(row.subscriber.id, ledger.RETRY, str(trouble), retry_at=_iso(now)))
                    if trouble.fatal:
                        halt = halt or trouble
                    else:
                        drops_in_a_row += 1
                        last_drop = str(trouble)
                else:  # done
                    row, attempt, nbytes = event[1], event[2], event[3]
                    in_flight -= 1
                    outcome = self._outcome(row, attempt, now)
                    if attempt.kind in ("dropped", "in_doubt"):
                        drops_in_a_row += 1
                        last_drop = attempt.reply
                    elif attempt.kind != "unbuildable":
                        drops_in_a_row = 0
                    if attempt.kind == "rejected":  # held until the streak says whom it blames
                        domain = row.subscriber.email.rpartition("@")[2]
                        outcomes.extend(settle(streak.add(attempt.code, attempt.reply.partition(" ")[2], domain,
                                                          outcome, first_try=row.attempts <= 1)))
                        if streak.tripped and halt is None:
                            count = streak.held
                            outcomes.extend(ledger.Outcome(o.subscriber_id, ledger.RETRY, o.reply, retry_at=_iso(now))
                                            for o in streak.release())
                            halt = ConnectionTrouble(
                                f"{self.config.where}: {attempt.reply} (the same refusal for {count} recipients in "
                                "a row at different domains: it blames our server, our address or a policy, not "
                                "each recipient)", fatal=True)
                    elif attempt.kind != "unbuildable":
                        outcomes.extend(settle(streak.release()))
                    if attempt.kind != "rejected":
                        outcomes.extend(settle([outcome], nbytes))
                    done_count += 1
            if outcomes and not held:
                held_since = time.monotonic()
            held.extend(outcomes)
            # Results ride along with the next data_sent commit (one fsync for both); alone, they
            # wait at most _HOLD_SECONDS. Only data_sent must be durable before a worker goes on.
            try:
                if data_sent or released or len(held) >= ahead or (
                        held and time.monotonic() - held_since >= _HOLD_SECONDS):
                    flush(data_sent, released)
            finally:
                for waiter in waiters:
                    waiter.set()
            if halt is None and drops_in_a_row >= self.policy.drops_in_a_row:
                halt = ConnectionTrouble(f"{last_drop} ({drops_in_a_row} messages in a row failed this way)",
                                         fatal=True)
            if progress and outcomes:
                progress(done_count, max(todo, done_count))

        try:
            while True:
                if halt is not None or stop.is_set():
                    quit_waits.set()
                    drained = []
                    while True:
                        try:
                            item = work.get_nowait()
                        except queue.Empty:
                            break
                        if item is not None:
                            drained.append(item.subscriber.id)
                    if drained:
                        in_flight -= len(drained)
                        totals.released += ledger.release(conn, day, drained, now=stamp())
                    if in_flight <= 0:
                        flush()
                        totals.stopped = halt is None
                        break
                    pump(0.1)
                    continue
                if in_flight <= ahead // 2 and time.monotonic() >= claim_pause_until:
                    flush()
                    claim = ledger.claim_batch(conn, day, ahead - in_flight, sha256=sha, now=stamp())
                    totals.skipped += claim.skipped
                    for row in claim.rows:
                        work.put(row)
                    in_flight += len(claim.rows)
                    if not claim.rows and not claim.skipped:
                        if in_flight == 0:
                            due = ledger.next_retry_at(conn, day)
                            if due is None:
                                break
                            wait = (datetime.fromisoformat(due) - datetime.now(timezone.utc)).total_seconds() \
                                if due else 0.0
                            if not wait_for_retries or wait > self.policy.wait_in_run:
                                break
                            stop.wait(min(max(wait, 0.0) + 0.01, self.policy.wait_in_run))
                            continue
                        claim_pause_until = time.monotonic() + 0.05
                pump(0.05 if in_flight else 0.0)
        finally:
            if not abort.is_set():
                # a streak too short to blame us: those rows failed; after a trip they wait for the resume
                left = streak.release()
                held.extend(settle(left) if halt is None else [
                    ledger.Outcome(o.subscriber_id, ledger.RETRY, o.reply, retry_at=stamp()) for o in left])
                if held:
                    flush()
            if in_flight > 0:  # an error in this thread: workers must not send bodies unrecorded
                abort.set()
                quit_waits.set()
            for _ in workers:
                work.put(None)
            for worker in workers:
                worker.join(timeout=self.config.timeout + 5)
        totals.seconds = time.perf_counter() - started
        totals.waiting_retries = ledger.counts(conn, day)[ledger.RETRY]
        if halt is not None:
            ledger.set_issue_state(conn, day, ledger.ISSUE_PAUSED, now=stamp())
            raise DeliveryError(
                f"{halt}; the issue of {day} is paused with {totals.sent:,} sent in this run and no "
                f"subscriber marked failed; fix the cause and run `newsletter send --date {day}` to resume"
            ) from halt
        return totals

    def _outcome(self, row: ledger.Claimed, attempt: Attempt, now: datetime) -> ledger.Outcome:
        sid = row.subscriber.id
        if attempt.kind == "sent":
            return ledger.Outcome(sid, ledger.SENT, attempt.reply)
        if attempt.kind == "unbuildable":
            return ledger.Outcome(sid, ledger.FAILED, attempt.reply, reason="unbuildable")
        if attempt.kind == "rejected":
            bounce = is_bounce(attempt)
            return ledger.Outcome(sid, ledger.FAILED, attempt.reply,
                                  reason=ledger.REASON_BOUNCED if bounce else ledger.REASON_REJECTED, bounce=bounce)
        retry_at = _iso(now + timedelta(seconds=self.policy.delay(attempt, row.attempts)))
        if attempt.kind == "in_doubt":
            return ledger.Outcome(sid, ledger.IN_DOUBT, attempt.reply, retry_at=retry_at)
        return ledger.Outcome(sid, ledger.RETRY, attempt.reply, retry_at=retry_at)

    def _work(self, work: queue.Queue, events: queue.Queue, abort: threading.Event, quit_waits: threading.Event,
              make_data: Callable[[Subscriber], bytes]) -> None:
        """One connection's thread: take a row, make its bytes, wait for a slot, send, report."""
        from newsletter.messages import ascii_address

        connection = SmtpConnection(self.config)
        row = None
        try:
            while True:
                row = work.get()
                if row is None:
                    return
                if abort.is_set():
                    continue  # stays claimed: recovery retries it
                try:
                    data = make_data(row.subscriber)  # WireMessages.data: stuffed, ready for DATA
                    recipient = ascii_address(row.subscriber.email)
                except NewsletterError as err:
                    events.put(("done", row, Attempt("unbuildable", str(err)), 0))
                    continue
                if not self._ensure_open(connection, row, events, quit_waits):
                    return
                if not self.throttle.wait(quit_waits):
                    events.put(("unstarted", row))
                    continue

                def before_data(row: ledger.Claimed = row) -> Callable[[], None]:
                    recorded = threading.Event()
                    events.put(("data_sent", row.subscriber.id, recorded))

                    def wait() -> None:
                        recorded.wait()
                        if abort.is_set():
                            raise _Aborted()

                    return wait

                try:
                    attempt = connection.send(recipient, data, before_data)
                except ConnectionTrouble as trouble:
                    events.put(("trouble", row, trouble))
                    return
                except _Aborted:
                    return
                events.put(("done", row, attempt, len(data)))
                row = None
        except Exception as err:  # a bug must not leave the recording thread waiting for this row
            logger.exception("SMTP worker failed")
            if row is not None:
                events.put(("trouble", row, ConnectionTrouble(f"{self.config.where}: unexpected error: {err!r}",
                                                              fatal=True)))
        finally:
            connection.close()

    def _ensure_open(self, connection: SmtpConnection, row: ledger.Claimed, events: queue.Queue,
                     quit_waits: threading.Event) -> bool:
        """Open the connection if it is closed; on failure report the row as untried and return False."""
        tries = 0
        while not connection.is_open:
            try:
                connection.open()
            except ConnectionTrouble as trouble:
                tries += 1
                if trouble.fatal or tries >= self.policy.connect_tries or quit_waits.is_set():
                    if not trouble.fatal and tries >= self.policy.connect_tries:
                        trouble = ConnectionTrouble(f"{trouble} ({tries} tries)", fatal=True)
                    events.put(("trouble", row, trouble))
                    return False
                quit_waits.wait(0.2 * tries)
        return True


__all__ = [
    "Attempt", "ConnectionTrouble", "Reply", "RetryPolicy", "SmtpConfig", "SmtpConnection", "SmtpTotals",
    "SmtpTransport", "Throttle", "WireMessages", "is_bounce", "is_rate_limit", "send_one", "smtp_config", "stuff",
]
