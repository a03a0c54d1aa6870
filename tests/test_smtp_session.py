"""Reading SMTP replies as the non-blocking session gets them: in whatever pieces the network cuts."""

from __future__ import annotations

from hypothesis import given, strategies as st

from newsletter.delivery.connection import Reply
from newsletter.delivery.session import ReplyReader

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
