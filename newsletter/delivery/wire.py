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
    personal pieces (To, Message-ID, token, the lines with a name or token) are made, by a twin
    template whose static segments are NUL separators, then stuffed and spliced in: scanning each
    190 KB message for line-leading dots would cost more than making it. A DKIM signature covers the
    unstuffed bytes: the template signs from the same values (`MessageTemplate.signature`) and its
    header, which has no line starting with a dot, goes in front. A signer that cannot sign from
    the values (dkimpy, the reference) gets each message made whole, signed, then stuffed.
    """

    def __init__(self, template: MessageTemplate) -> None:
        from newsletter.messages import MessageTemplate, sign

        self.template = template
        self._fast = template.signer is sign or template.signs_spliced
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
        out = [self.template.signature(values)]
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
