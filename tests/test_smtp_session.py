"""Reading SMTP replies as the non-blocking session gets them: in whatever pieces the network cuts."""

from __future__ import annotations

import email
import email.policy
import socket
import threading

import pytest
from hypothesis import given, strategies as st

from newsletter.delivery.connection import Reply
from newsletter.delivery.session import ReplyReader
from newsletter.settings import load_settings

_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
_REPLY = st.tuples(st.integers(200, 599), st.lists(_TEXT, min_size=1, max_size=4))


def wire(code: int, lines: list[str], end: bytes) -> bytes:
    """One reply as a server writes it: "NNN-line" for all but the last, "NNN line" last."""
    return b"".join(f"{code}{'-' if n < len(lines) - 1 else ' '}{line}".encode() + end for n, line in enumerate(lines))


@given(st.lists(_REPLY, max_size=6), st.lists(st.integers(0, 400), max_size=12), st.sampled_from([b"\r\n", b"\n"]))
def test_replies_read_the_same_however_the_bytes_were_split(replies, cuts, end):
    stream = b"".join(wire(code, lines, end) for code, lines in replies)
    reader = ReplyReader()
    got: list[Reply] = []
    start = 0
    for cut in sorted({min(c, len(stream)) for c in cuts}) + [len(stream)]:
        reader.feed(stream[start:cut])
        got.extend(reader.replies())
        start = cut
    assert got == [Reply.of(code, "\n".join(lines)) for code, lines in replies]
    assert reader.replies() == []


def test_a_reply_without_three_digits_reads_as_minus_one_and_a_line_without_end_waits():
    reader = ReplyReader()
    reader.feed(b"abc garbled\r\n250 2.0.0 queu")
    assert reader.replies() == [Reply(-1, "garbled")]
    reader.feed(b"ed as 1234\r\n")
    assert reader.replies() == [Reply(250, "2.0.0 queued as 1234")]


def test_an_endless_line_is_not_an_smtp_server():
    reader = ReplyReader()
    reader.feed(b"2" * 70_000)
    assert reader.replies() == [] and reader.overlong


# ----------------------------------------------------------------------------- a body bigger than the buffers


class _NarrowSink:
    """A minimal SMTP server (PIPELINING) on 127.0.0.1 with a tiny receive buffer: a body of megabytes
    fills the client's socket, so the session writes it in pieces as the socket drains."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited by the accepted socket
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.port = self.listener.getsockname()[1]
        self.bodies: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.sendall(b"220 narrow sink\r\n")
            buffer = b""
            while True:
                line, buffer = self._line(conn, buffer)
                verb = line[:4].upper()
                if verb == b"EHLO":
                    conn.sendall(b"250-narrow\r\n250 PIPELINING\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 go on\r\n")
                    while b"\r\n.\r\n" not in buffer:
                        chunk = conn.recv(4096)
                        if not chunk:
                            return
                        buffer += chunk
                    body, _, buffer = buffer.partition(b"\r\n.\r\n")
                    self.bodies.append(body)
                    conn.sendall(b"250 queued\r\n")
                elif verb == b"QUIT" or not line:
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 ok\r\n")

    @staticmethod
    def _line(conn: socket.socket, buffer: bytes) -> tuple[bytes, bytes]:
        while b"\r\n" not in buffer:
            chunk = conn.recv(4096)
            if not chunk:
                return b"", b""
            buffer += chunk
        line, _, rest = buffer.partition(b"\r\n")
        return line, rest


@pytest.mark.slow
def test_a_body_of_megabytes_goes_out_in_pieces_and_arrives_whole(project):
    from factories import make_rendered, send_unchecked
    from newsletter import store

    sink = _NarrowSink()
    conn = store.connect(project / "subscribers" / "newsletter.db")
    now = store.now_iso()
    with store.write(conn):
        conn.executemany("INSERT INTO subscribers (email, email_key, name, status, created_at, updated_at)"
                         " VALUES (?, ?, ?, 'active', ?, ?)",
                         [(f"reader{n}@example.org", f"reader{n}@example.org", f"Reader {n}", now, now) for n in range(2)])
    words = "\n".join(f"Paragraph {n}: the interceptor talks resumed at the border post." for n in range(45_000))
    settings = load_settings(project).replace("delivery", transport="smtp", concurrency=1)
    settings = settings.replace("smtp", host="127.0.0.1", port=sink.port, security="none", timeout=20.0)
    report = send_unchecked(conn, settings, make_rendered(words=words))
    conn.close()
    sink.thread.join(timeout=30)
    assert report.written == 2 and len(sink.bodies) == 2
    for body in sink.bodies:
        assert len(body) > 5_000_000  # more than the socket buffers hold: written in pieces
        message = email.message_from_bytes(body.replace(b"\r\n..", b"\r\n."), policy=email.policy.default)
        assert message.get_body(("plain",)).get_content().count("the interceptor talks resumed") == 45_000
