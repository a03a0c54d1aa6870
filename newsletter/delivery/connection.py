"""One SMTP connection: the [smtp] settings checked, a session opened and closed, what a reply means.

`SmtpConnection.open` connects, greets, starts TLS and logs in (blocking); the messages then go
through `session.py`, which drives the open socket without blocking. An `Attempt` says what came
of one message; trouble that is not about one recipient (a login, TLS, a sender the server
refuses, a reply that blames us: `refused`) is `ConnectionTrouble`, which the pool turns into its
circuit breaker. How a refusal is read (whom it blames) is `replies.py`'s job.
"""

from __future__ import annotations

import os
import re
import select
import smtplib
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from enum import StrEnum

from newsletter.delivery.replies import Blame, classify
from newsletter.delivery.wire import stuff
from newsletter.errors import DeliveryError, NewsletterError, SettingsError
from newsletter.settings import Settings, smtp_password
from newsletter.tls import client_context

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
    from newsletter.addresses import ascii_address

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
        context = client_context(settings.root, smtp.ca_file, smtp.verify, where, SettingsError)
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


class AttemptKind(StrEnum):
    """What one attempt came to."""

    SENT = "sent"  # 250 after the final "."
    DEFERRED = "deferred"  # 4xx: try again later
    REJECTED = "rejected"  # 5xx about this recipient or this message
    DROPPED = "dropped"  # the connection dropped before the end of the body: safe to retry
    IN_DOUBT = "in_doubt"  # dropped or timed out after the final ".": the server may have it
    UNBUILDABLE = "unbuildable"  # the message could not be made: nothing was sent


@dataclass(frozen=True)
class Attempt:
    """What one attempt came to, with the reply that said so."""

    kind: AttemptKind
    reply: str
    at_rcpt: bool = False
    enhanced: tuple[int, int, int] | None = None
    code: int = 0
    blame: Blame | None = None  # rejected: whom the reply blames (replies.py)


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
            smtp._host = config.host  # type: ignore[attr-defined]  # smtplib's own, read by starttls
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

    @property
    def smtp(self) -> smtplib.SMTP | None:
        """The open session (session.py writes and reads its socket itself)."""
        return self._smtp

    @property
    def pipelining(self) -> bool:
        """Whether the server offers PIPELINING (RFC 2920)."""
        return self._pipelining

    def close(self) -> None:
        """Say QUIT (politely, briefly) and close."""
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
            _close(smtp)

    def drop(self) -> None:
        """Close at once, without QUIT: a message whose final "." was not sent is discarded by the server."""
        smtp, self._smtp = self._smtp, None
        _close(smtp)


def attempt_of(kind: AttemptKind, reply: Reply, *, at_rcpt: bool = False) -> Attempt:
    """The Attempt of KIND that REPLY said."""
    return Attempt(kind, str(reply), at_rcpt, reply.enhanced, reply.code)


def refused(config: SmtpConfig, reply: Reply, recipient: str, stage: str, *, at_rcpt: bool = False,
            last_reply: str = "") -> Attempt:
    """Return the Attempt for a refusal; raise ConnectionTrouble when it blames our side (replies.py).

    Some servers give one recipient a reply that reads as ours (Microsoft 365 answers a
    missing user with "550 5.4.1 Recipient address rejected: Access denied"). Retried rows
    are claimed first, so that one row would pause every later send. When the same reply
    already paused the last send at this very recipient (LAST_REPLY says so), it is about
    them: the message fails (the subscriber is not bounced) and the send goes on; if the
    server really refuses us, the next recipient pauses it again.
    """
    if reply.code < 500:
        return attempt_of(AttemptKind.DEFERRED, reply, at_rcpt=at_rcpt)
    blame = classify(reply.code, reply.text)
    if blame is Blame.OURS:
        trouble = (f"{config.where}: {reply} (refused <{recipient}> {stage}; the reply blames "
                   "the sender, the relay or our settings, not the recipient)")
        if not (at_rcpt and last_reply == trouble):
            raise ConnectionTrouble(trouble, fatal=True)
        return Attempt(AttemptKind.REJECTED, f"{reply} (the same reply paused the last send at this recipient "
                       "alone: failed, not bounced)", at_rcpt, reply.enhanced, reply.code, Blame.MESSAGE)
    return Attempt(AttemptKind.REJECTED, str(reply), at_rcpt, reply.enhanced, reply.code, blame)


def _no_delay(sock: socket.socket | None) -> None:
    """Turn off Nagle's algorithm: commands and the final "." are small writes that must not wait
    for the acknowledgement of the body (with delayed ACKs, that costs milliseconds per message)."""
    try:
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


def gave_up(sock: socket.socket) -> bool:
    """Whether the server closed the connection, or said something, while it should wait for our "."."""
    try:
        if isinstance(sock, ssl.SSLSocket):
            poller = select.poll()  # not select.select: a process with many files has descriptors past 1024
            poller.register(sock, select.POLLIN)
            # a TLS record before our "." (a close_notify, an early reply): nothing to wait for
            return bool(poller.poll(0) or sock.pending())
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)  # b"" at the end of the stream, or an early reply
        return True
    except BlockingIOError:
        return False
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
    send_message(smtp_config(settings), raw, recipient)


def send_message(config: SmtpConfig, raw: bytes, recipient: str) -> None:
    """Send RAW to RECIPIENT over one connection to CONFIG's server (see send_one)."""
    from newsletter.addresses import ascii_address
    from newsletter.delivery.session import Message, send_now, single_session

    session = single_session(config)
    try:
        attempt = send_now(session, Message(recipient, ascii_address(recipient), stuff(raw)))
    except ConnectionTrouble as err:
        raise DeliveryError(str(err)) from err
    finally:
        session.close()
    if attempt.kind is not AttemptKind.SENT:
        raise DeliveryError(f"{config.where}: not delivered to {recipient}: {attempt.reply}")
