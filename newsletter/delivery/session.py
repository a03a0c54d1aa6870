"""One SMTP session driven without blocking: the pool's loop feeds it messages and bytes as they come.

The pool (`pool.py`) runs every connection from one thread with a selector, so a message costs no
hand-off between threads. A `Session` is an opened `SmtpConnection` whose socket no longer blocks:
`begin` writes a message's commands, the loop calls `readable`/`writable` when the socket is ready
and `expire` for timeouts, and the session tells its `Listener` two things: a recipient was
accepted (the ledger must record `data_sent` before the final "."; `data_recorded` says it did), and
what came of a message (an `Attempt`, or `ConnectionTrouble` when a reply blames our side).

With PIPELINING (RFC 2920), MAIL, RCPT and DATA go out in one write, and in hold mode a message's
final "." waits for the next message and goes out in the same packet as its commands: one round
trip per message. `send_now` drives one session alone for the single messages (proofs,
confirmations), so every SMTP message goes through this one state machine.
"""

from __future__ import annotations

import selectors
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from newsletter.delivery.connection import (
    Attempt, AttemptKind, ConnectionTrouble, Reply, SmtpConfig, SmtpConnection, attempt_of, gave_up, refused,
)

_MAX_REPLY = 65536  # bytes of reply without an end of line: not an SMTP server
_KNOWN_REPLIES = 64  # single-line replies a session keeps made (a server says the same few again and again)


@dataclass(eq=False)
class Message:
    """One message on its way: the pool's TOKEN (its row), where it goes, and how far it got."""

    token: object
    recipient: str
    data: bytes  # stuffed DATA bytes, ending with ".\r\n" (wire.stuff)
    sender: str | None = None  # the envelope sender (VERP); None: the From address
    last_reply: str = ""  # what this row's previous attempt recorded (connection.refused)
    mail: Reply | None = None
    rcpt: Reply | None = None
    asked: bool = False  # data_sent was asked for
    recorded: bool = False  # data_sent is durable: the final "." may go
    body_out: bool = False  # the body, all but its final ".", is in the socket
    end_out: bool = False  # the final "." is in the socket: a loss from now on is in doubt


class Listener(Protocol):
    def asked(self, session: Session, message: Message) -> None:
        """MESSAGE's recipient was accepted: record data_sent, then call `session.data_recorded`."""

    def ended(self, session: Session, message: Message, result: Attempt | ConnectionTrouble) -> None:
        """What came of MESSAGE (ConnectionTrouble: not about this recipient, the session is dead)."""


class ReplyReader:
    """SMTP replies out of the bytes read, however they were split: `feed` bytes, then take `replies`.

    A reply is one line "NNN text", or several "NNN-text" lines ended by "NNN text"; a code that is
    not three digits reads as -1 (as smtplib does).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._lines: list[bytes] = []  # the lines so far of a multi-line reply
        self._known: dict[bytes, Reply] = {}  # single-line replies read before, by their bytes

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def overlong(self) -> bool:
        """Whether what waits for its end of line is too long to be a reply (not an SMTP server)."""
        return len(self._buffer) > _MAX_REPLY

    def replies(self) -> list[Reply]:
        """The replies complete so far, in order (each is taken once)."""
        buffer = self._buffer
        end = buffer.rfind(b"\n") + 1
        if not end:
            return []
        complete = bytes(buffer[:end])
        del buffer[:end]
        out = []
        known = self._known
        for line in complete.split(b"\n")[:-1]:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not self._lines and (reply := known.get(line)) is not None:
                out.append(reply)
                continue
            if line[3:4] == b"-":
                self._lines.append(line)
                continue
            code = int(line[:3]) if line[:3].isdigit() else -1
            if self._lines:
                self._lines.append(line)
                text, self._lines = b"\n".join(part[4:] for part in self._lines), []
                out.append(Reply.of(code, text))
                continue
            reply = Reply.of(code, line[4:])
            if len(known) < _KNOWN_REPLIES:
                known[line] = reply  # a Reply is frozen: the same one can stand for every time it is said
            out.append(reply)
        return out


class _Stage(Enum):
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    END = "end"  # the reply to a message's final "."
    RSET = "rset"


class Session:
    """One connection's SMTP transactions, one message at a time, without blocking."""

    def __init__(self, config: SmtpConfig, listener: Listener, *, number: int = 0, hold: bool = True,
                 selector: selectors.BaseSelector | None = None) -> None:
        self.config, self.listener, self.number = config, listener, number
        self.hold = hold  # hold each final "." for the next message's commands (PIPELINING only)
        self.selector = selector
        self.connection = SmtpConnection(config)
        self.sock: socket.socket | None = None
        self.pipelining = False
        self.current: Message | None = None  # the message whose transaction is open
        self.held: Message | None = None  # body out and recorded, its final "." waiting
        self.dead = False  # a reply blamed our side: this session sends nothing more
        self.deadline = 0.0  # when what is awaited times out (see `awaiting`)
        self._expect: deque[tuple[_Stage, Message | None]] = deque()
        self._out: deque[tuple[memoryview, Callable[[], None] | None]] = deque()
        self._reader = ReplyReader()
        self._writing = False  # registered for EVENT_WRITE

    # --- what the loop asks ---------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.sock is not None

    @property
    def idle(self) -> bool:
        """Open and waiting for a message (a held one may wait for its final ".")."""
        return self.sock is not None and self.current is None and not self._expect and not self._out

    @property
    def busy(self) -> bool:
        """A message is under way whose recipient is not yet accepted (data_sent may soon be asked)."""
        return self.current is not None and not self.current.asked and not self.current.recorded

    def open(self) -> None:
        """Open the session (blocking: connect, greet, TLS, login); ConnectionTrouble names the cause."""
        self.connection.open()
        self.attach()

    def attach(self) -> None:
        """Take over the connection `connection.open()` made (on any thread): non-blocking, in the selector."""
        smtp = self.connection.smtp
        assert smtp is not None and smtp.sock is not None
        self.sock = smtp.sock
        self.sock.setblocking(False)
        self.pipelining = self.connection.pipelining
        self._reader = ReplyReader()
        if self.selector is not None:
            self.selector.register(self.sock, selectors.EVENT_READ, self)
            self._writing = False

    def begin(self, message: Message) -> None:
        """Start MESSAGE: its commands (after the held message's final ".", in one write)."""
        assert self.sock is not None and self.current is None and not self._expect
        self.current = message
        mail_from = message.sender or self.config.sender
        if not self.pipelining:
            self._command(f"MAIL FROM:<{mail_from}>\r\n", _Stage.MAIL, message)
            return
        commands = f"MAIL FROM:<{mail_from}>\r\nRCPT TO:<{message.recipient}>\r\nDATA\r\n".encode("ascii")
        held = self.held
        if held is not None:
            if gave_up(self.sock):
                self._lost("the connection dropped (the server closed the connection before the end of the "
                           "message)")
                return
            self.held = None
            self._expect.append((_Stage.END, held))
            self._write(b".\r\n" + commands, held)
        else:
            self._write(commands)
        self._expect.extend(((_Stage.MAIL, message), (_Stage.RCPT, message), (_Stage.DATA, message)))

    def end_held(self) -> None:
        """Write the held message's final "." alone (no message follows)."""
        held, self.held = self.held, None
        assert held is not None and self.sock is not None
        if gave_up(self.sock):
            self.held = held
            self._lost("the connection dropped (the server closed the connection before the end of the message)")
            return
        self._expect.append((_Stage.END, held))
        self._write(b".\r\n", held)

    def data_recorded(self, message: Message) -> None:
        """MESSAGE's data_sent is durable: its final "." may go once its body is out."""
        message.recorded = True
        self._maybe_end(message)

    def readable(self) -> None:
        """Read what the server said and act on each complete reply."""
        sock = self.sock
        if sock is None:
            return
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    self._lost("the connection dropped (Connection unexpectedly closed)")
                    return
                self._reader.feed(chunk)
                if not isinstance(sock, ssl.SSLSocket) or not sock.pending():
                    break
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except OSError as err:
            self._lost(str(err) or type(err).__name__)
            return
        self._replies()

    def writable(self) -> None:
        self._flush()

    @property
    def awaiting(self) -> bool:
        """Whether a reply is awaited or bytes wait to go out (then `deadline` counts)."""
        return bool(self._expect or self._out) and self.sock is not None

    def expire(self, now: float) -> None:
        """Time out what is awaited, if its deadline passed (waiting for a commit never times out)."""
        if self.awaiting and now >= self.deadline:
            self._lost("no reply in time (timeout)")

    def close(self) -> None:
        """Say QUIT (briefly) and close; a held message is not ended, so the server discards it."""
        if self.held is not None or self._expect or self.current is not None:
            self.abandon()
            return
        if self.sock is not None:
            self._unregister()
            self.sock.settimeout(min(self.config.timeout, 2.0))
            self.sock = None
        self.connection.close()

    def abandon(self) -> None:
        """Close at once, no QUIT: a message whose "." was not sent is discarded by the server."""
        self._unregister()
        self.sock = None
        self.held = self.current = None
        self._expect.clear()
        self._out.clear()
        self.deadline = 0.0
        self.connection.drop()

    # --- writing --------------------------------------------------------------------------------

    def _command(self, line: str, stage: _Stage, message: Message | None) -> None:
        self._expect.append((stage, message))
        self._write(line.encode("ascii"))

    def _write(self, data: bytes | memoryview, ends: Message | None = None, then: Callable[[], None] | None = None) -> None:
        """Queue DATA; ENDS: the message whose final "." it carries; THEN runs once all of it is out."""
        if ends is not None:
            def end_out() -> None:
                ends.end_out = True
            then = end_out
        self._out.append((memoryview(data), then))
        self._touch()
        self._flush()

    def _flush(self) -> None:
        sock, out = self.sock, self._out
        if sock is None:
            return
        try:
            while out:
                view, then = out[0]
                sent = sock.send(view)
                if sent < len(view):
                    out[0] = (view[sent:], then)
                    self._touch()
                    break
                out.popleft()
                if then is not None:
                    then()
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            pass
        except OSError as err:
            self._lost(str(err) or type(err).__name__)
            return
        self._want_write(bool(out))

    def _want_write(self, wanted: bool) -> None:
        if wanted != self._writing and self.selector is not None and self.sock is not None:
            self.selector.modify(self.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if wanted else 0), self)
            self._writing = wanted

    def _unregister(self) -> None:
        if self.selector is not None and self.sock is not None:
            try:
                self.selector.unregister(self.sock)
            except (KeyError, ValueError):
                pass
        self._writing = False

    def _touch(self) -> None:
        """Something moved: what is awaited now has the whole timeout again."""
        self.deadline = time.monotonic() + self.config.timeout

    # --- reading --------------------------------------------------------------------------------

    def _replies(self) -> None:
        """Act on each complete reply in what was read."""
        for reply in self._reader.replies():
            self._reply(reply)
            if self.sock is None:
                return
        if self._reader.overlong:
            self._lost("the server sent a line too long to be an SMTP reply")
            return
        self._touch()

    def _reply(self, reply: Reply) -> None:
        if not self._expect:
            self._lost(f"the server said {reply} unasked")
            return
        stage, message = self._expect.popleft()
        assert message is not None or stage is _Stage.RSET
        if stage is _Stage.END:
            assert message is not None
            self._ended(message, reply)
        elif stage is _Stage.MAIL:
            assert message is not None
            message.mail = reply
            if not self.pipelining:
                if reply.code == 250:
                    self._command(f"RCPT TO:<{message.recipient}>\r\n", _Stage.RCPT, message)
                else:
                    self._refusal(message, None)
        elif stage is _Stage.RCPT:
            assert message is not None
            message.rcpt = reply
            accepted = message.mail is not None and message.mail.code == 250 and reply.code in (250, 251)
            if accepted:
                message.asked = True
                self.listener.asked(self, message)
                if not self.pipelining and self.sock is not None:
                    self._command("DATA\r\n", _Stage.DATA, message)
            elif not self.pipelining:
                self._refusal(message, None)
        elif stage is _Stage.DATA:
            assert message is not None
            self._data_reply(message, reply)
        elif reply.code != 250:  # RSET
            self._drop()

    def _data_reply(self, message: Message, reply: Reply) -> None:
        if not message.asked or reply.code != 354:
            self.current = None  # decided here, whatever happens to the session next
        if not message.asked:  # pipelined after a refusal: DATA's own reply (503/554) closes the transaction
            self._refusal(message, reply)
        elif reply.code != 354:
            self._after_refusal(reply)
            self._report(message, lambda: refused(self.config, reply, message.recipient, "at DATA"))
        else:
            def body_out() -> None:
                message.body_out = True
                self._maybe_end(message)

            self._write(memoryview(message.data)[:-3], then=body_out)

    def _maybe_end(self, message: Message) -> None:
        """Send MESSAGE's final "." (or hold it) once its body is out and its data_sent recorded."""
        if not (message.body_out and message.recorded) or message is not self.current or self.sock is None:
            return
        if self.hold and self.pipelining:
            self.current, self.held = None, message  # `begin` or `end_held` checks the session before the "."
            return
        if gave_up(self.sock):
            # closed (or answered) before our final ".": the server cannot have the message
            self._lost("the connection dropped (the server closed the connection before the end of the message)")
            return
        self.current = None
        self._expect.append((_Stage.END, message))
        self._write(b".\r\n", message)

    def _ended(self, message: Message, final: Reply) -> None:
        """The reply to MESSAGE's final "."."""
        if final.code == 421:
            self._drop()
        if final.code == 250:
            self._report(message, lambda: attempt_of(AttemptKind.SENT, final))
        else:
            self._report(message, lambda: refused(self.config, final, message.recipient, "at the end of the message"))

    def _refusal(self, message: Message, late: Reply | None) -> None:
        """MAIL or RCPT was refused (LATE: pipelined, DATA's reply): report it and leave the session ready."""
        mail = message.mail
        assert mail is not None
        self.current = None  # decided here, whatever happens to the session next
        refusal = message.rcpt if mail.code == 250 and message.rcpt is not None else mail
        # a server that said 354 anyway wants a body: that session is closed
        self._after_refusal(late if late is not None and late.code == 354 else refusal)
        if refusal is mail and mail.code >= 500:
            trouble = ConnectionTrouble(f"{self.config.where}: the server refuses the sender "
                                        f"<{message.sender or self.config.sender}>: {mail}", fatal=True)
            self._report(message, lambda: trouble)
        elif refusal is mail:
            self._report(message, lambda: attempt_of(AttemptKind.DEFERRED, mail))
        else:
            self._report(message, lambda: refused(self.config, refusal, message.recipient, "at RCPT", at_rcpt=True,
                                                  last_reply=message.last_reply))

    def _after_refusal(self, reply: Reply) -> None:
        """Leave the session ready for the next message: RSET, or reconnect after a 421."""
        if reply.code in (421, 354) or self.sock is None:
            self._drop()
        else:
            self._command("RSET\r\n", _Stage.RSET, None)

    def _report(self, message: Message, result: Callable[[], Attempt | ConnectionTrouble]) -> None:
        """Tell the listener what came of MESSAGE; a ConnectionTrouble (raised or returned) ends the session."""
        try:
            outcome = result()
        except ConnectionTrouble as trouble:
            outcome = trouble
        if message is self.current:
            self.current = None
        if isinstance(outcome, ConnectionTrouble):
            self._die(message, outcome)
            return
        self.listener.ended(self, message, outcome)

    def _die(self, message: Message, trouble: ConnectionTrouble) -> None:
        """A reply blamed our side: MESSAGE and every message still open here get TROUBLE; no more sends."""
        others = [m for m in (self.current, self.held, *(m for _, m in self._expect)) if m is not None and m is not message]
        self.dead = True
        self.abandon()
        self.listener.ended(self, message, trouble)
        for other in dict.fromkeys(others):
            self.listener.ended(self, other, ConnectionTrouble(str(trouble), fatal=trouble.fatal))

    # --- losing the connection ------------------------------------------------------------------

    def _drop(self) -> None:
        """Close after a 421, a late 354 or a failed RSET; a message still open here is lost as by a drop."""
        self._lost("the connection closed after the previous message")

    def _lost(self, cause: str) -> None:
        """The connection is gone: a message whose final "." went out is in doubt, any other is dropped."""
        where = f"{self.config.where}: {cause}"
        lost = [m for _, m in self._expect if m is not None]
        for message in (self.held, self.current):
            if message is not None and message not in lost:
                lost.append(message)
        self.abandon()
        for message in dict.fromkeys(lost):
            if message.end_out:
                self.listener.ended(self, message, Attempt(AttemptKind.IN_DOUBT, f"{where} after the end of the message"))
            else:
                self.listener.ended(self, message, Attempt(AttemptKind.DROPPED, where))


class _Alone:
    """The listener of a session that sends single messages: data_sent needs no ledger."""

    def __init__(self) -> None:
        self.results: list[Attempt | ConnectionTrouble] = []

    def asked(self, session: Session, message: Message) -> None:
        session.data_recorded(message)

    def ended(self, session: Session, message: Message, result: Attempt | ConnectionTrouble) -> None:
        self.results.append(result)


def single_session(config: SmtpConfig) -> Session:
    """A session for single messages (proofs, confirmations), sent one by one with `send_now`."""
    return Session(config, _Alone(), hold=False)


def send_now(session: Session, message: Message) -> Attempt:
    """Send MESSAGE over SESSION (a `single_session`, opened if needed), blocking until its reply.

    Raises ConnectionTrouble for what is not about this recipient.
    """
    listener = session.listener
    assert isinstance(listener, _Alone) and session.selector is None
    listener.results.clear()
    if not session.is_open:
        session.open()
    assert session.sock is not None
    session.begin(message)
    with selectors.DefaultSelector() as selector:
        while not listener.results and session.sock is not None:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if session._out else 0)
            selector.register(session.sock, events)
            ready = selector.select(max(session.deadline - time.monotonic(), 0.0) if session.awaiting
                                    else session.config.timeout)
            selector.unregister(session.sock)
            for _, mask in ready:
                if mask & selectors.EVENT_WRITE:
                    session.writable()
                if mask & selectors.EVENT_READ:
                    session.readable()
            session.expire(time.monotonic())
    if not listener.results:
        raise ConnectionTrouble(f"{session.config.where}: the session ended without a reply", fatal=False)
    result = listener.results[0]
    if isinstance(result, ConnectionTrouble):
        raise result
    return result
