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
        # each static segment stuffed inside, and a second form for when it starts a line
        self._static = []
        for segment in template.segments:
            inner = segment.replace(b"\r\n.", b"\r\n..")
            self._static.append((inner, b"." + inner if inner.startswith(b".") else inner))

    def data(self, subscriber: Subscriber) -> bytes:
        """Return SUBSCRIBER's message as DATA bytes: the same as `stuff(template.personalize(...))`."""
        if not self._fast:
            return stuff(self.template.personalize(subscriber))
        values = self.template.values(subscriber)
        static = self._static
        out = [self.template.signature(values)]
        line_start = True  # whether the next byte starts a line (a leading "." is then doubled)
        piece = static[0][1]
        if piece:
            line_start = piece.endswith(b"\n")
        out.append(piece)
        for value, forms in zip(values, static[1:]):
            if b"\r\n." in value:
                value = value.replace(b"\r\n.", b"\r\n..")
            if value:
                if line_start and value[:1] == b".":
                    value = b"." + value
                line_start = value.endswith(b"\n")
                out.append(value)
            piece = forms[1] if line_start else forms[0]
            if piece:
                line_start = piece.endswith(b"\n")
                out.append(piece)
        if not line_start:
            out.append(b"\r\n")
        out.append(b".\r\n")
        return b"".join(out)
