"""Wire bytes: a message as SMTP's DATA wants it (CRLF, dot-stuffed, ended with CRLF.CRLF).

Messages go out as prepared bytes: already CRLF, dot-stuffed with one `bytes.replace` (C speed),
written with one `sendall`, instead of smtplib's `data()`, which rescans each message with regexes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from newsletter.models import Subscriber

if TYPE_CHECKING:
    from newsletter.messages import MessageTemplate


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
    personal pieces (To, Message-ID, token, the lines with a name or token) are made
    (`MessageTemplate.values`), then stuffed and spliced in: scanning each
    190 KB message for line-leading dots would cost more than making it. A DKIM signature covers the
    unstuffed bytes: the template signs from the same values (`MessageTemplate.signature`) and its
    header, which has no line starting with a dot, goes in front. A signer that cannot sign from
    the values (dkimpy, the reference) gets each message made whole, signed, then stuffed.
    """

    def __init__(self, template: MessageTemplate) -> None:
        from newsletter.messages import sign

        self.template = template
        self._fast = template.signer is sign or template.signs_spliced
        if not self._fast:
            return
        # What each slot holds is known (messages.py): a token never ends a line; a header line and a
        # body line end theirs, and only a body line (quoted-printable) can hold a line-leading ".".
        # So where each line starts is known per issue: each static segment is stuffed here once,
        # in the form its place calls for, and per message only the body lines are looked at.
        stuffed = [segment.replace(b"\r\n.", b"\r\n..") for segment in template.segments]
        line_start = True  # at the start of the message
        pieces, checks = [], []
        for index, segment in enumerate(stuffed):
            if line_start and segment.startswith(b"."):
                segment = b"." + segment
            if segment:
                line_start = segment.endswith(b"\n")
            pieces.append(segment)
            if index < len(template.slots):
                kind = template.slots[index][0]
                checks.append(kind in _BODY_LINES)
                if kind in _BODY_LINES and not line_start:
                    raise ValueError(f"slot {index} ({kind}) does not start a line")
                line_start = kind != "token"
        if not line_start:
            pieces[-1] += b"\r\n"
        pieces[-1] += b".\r\n"
        self._head, self._pieces, self._checks = pieces[0], pieces[1:], checks

    def data(self, subscriber: Subscriber) -> bytes:
        """Return SUBSCRIBER's message as DATA bytes: the same as `stuff(template.personalize(...))`."""
        if not self._fast:
            return stuff(self.template.personalize(subscriber))
        values = self.template.values(subscriber)
        out = [self.template.signature(values), self._head]
        for value, piece, check in zip(values, self._pieces, self._checks):
            if check:  # a body line: it starts a line, and a soft line break may start another
                if b"\r\n." in value:
                    value = value.replace(b"\r\n.", b"\r\n..")
                if value[:1] == b".":
                    value = b"." + value
            out.append(value)
            out.append(piece)
        return b"".join(out)


_BODY_LINES = frozenset({"text", "html"})  # MessageTemplate.slots' kinds
