"""DKIM canonicalization and hashing (RFC 6376 §3.4, §3.5, §3.7), for whole messages and spliced ones.

A message is `headers CRLF body`, CRLF line ends throughout. The body hash is SHA-256 over the
canonical body; the data signed is each header named in h= (bottom-up, RFC 6376 §5.4.2), in its
canonical form, then the DKIM-Signature header itself with an empty b= and no final CRLF.

`SplicedBody` is the issue-wide half: the messages of an issue are one template's static segments
with personal values between them, and everything in the body up to the first personal line is
hashed once, its SHA-256 state kept and copied per message (`hashlib`'s `.copy()`); the static
segments after it are canonicalized once and only hashed per message.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence

_WSP_RUN = re.compile(rb"[ \t]+")
_FIELD_END = re.compile(rb"\r\n(?![ \t])")


class Canonicalization:
    """The c= tag: `relaxed` or `simple` for the headers, then for the body."""

    NAMES = ("relaxed/relaxed", "relaxed/simple", "simple/relaxed", "simple/simple")

    def __init__(self, value: str) -> None:
        if value not in self.NAMES:
            raise ValueError(f"{value!r} is not one of {', '.join(self.NAMES)}")
        header, body = value.split("/")
        self.value = value
        self.relaxed_header = header == "relaxed"
        self.relaxed_body = body == "relaxed"

    def __repr__(self) -> str:
        return f"Canonicalization({self.value!r})"

    def header(self, field: bytes) -> bytes:
        """Return one header FIELD (name, colon, value, folds, no final CRLF) in canonical form with its CRLF."""
        if not self.relaxed_header:
            return field + b"\r\n"
        name, _, value = field.partition(b":")
        value = _WSP_RUN.sub(b" ", value.replace(b"\r\n", b"")).strip(b" ")
        return name.rstrip(b" \t").lower() + b":" + value + b"\r\n"

    def lines(self, data: bytes) -> bytes:
        """Return whole body lines in canonical form, without the end-of-body rule."""
        if not self.relaxed_body:
            return data
        return _WSP_RUN.sub(b" ", data).replace(b" \r\n", b"\r\n")

    def ending(self, tail: bytes) -> bytes:
        """Return the canonical TAIL of a body (already through `lines`) with its empty lines at the end dropped."""
        kept = tail.rstrip(b"\r\n")
        if kept or not self.relaxed_body:
            return kept + b"\r\n"
        return b""  # relaxed: an empty body stays empty; simple: it is one CRLF

    def body(self, body: bytes) -> bytes:
        """Return the canonical form of a whole BODY."""
        return self.ending(self.lines(body))


def split_message(raw: bytes) -> tuple[bytes, bytes]:
    """Return RAW's header block (each field ending in CRLF) and its body; ValueError unless CRLF throughout."""
    if raw.count(b"\n") != raw.count(b"\r\n") or raw.count(b"\r") != raw.count(b"\r\n"):
        raise ValueError("a message to sign must have CRLF line ends only")
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return (raw if raw.endswith(b"\r\n") else raw + b"\r\n"), b""
    return raw[: end + 2], raw[end + 4:]


def header_fields(head: bytes) -> dict[bytes, list[bytes]]:
    """Return HEAD's fields (no final CRLF) by lower-case name, in their order."""
    fields: dict[bytes, list[bytes]] = {}
    for field in _FIELD_END.split(head[:-2] if head.endswith(b"\r\n") else head):
        fields.setdefault(_name(field), []).append(field)
    return fields


def _name(field: bytes) -> bytes:
    return field.split(b":", 1)[0].rstrip(b" \t").lower()


class SignedHeaders:
    """The part of the signed data that the header fields named in h= make, for header blocks.

    Canonicalizing a field is pure, so the fields of KNOWN_HEADS (a template's static header
    segments: everything but To, Message-ID and List-Unsubscribe) are canonicalized once here,
    and per message only the fields that hold a personal value are.
    """

    def __init__(self, canon: Canonicalization, names: Sequence[bytes], known_heads: Sequence[bytes] = ()) -> None:
        self.canon = canon
        self.names = tuple(names)
        self._unique = len(set(self.names)) == len(self.names)  # h= names each header once: the last one counts
        self._known: dict[bytes, tuple[bytes, bytes]] = {}
        for head in known_heads:
            for field in _FIELD_END.split(head):
                if field:
                    self._known[field] = (_name(field), canon.header(field))

    def data(self, head: bytes) -> bytes:
        """Return the canonical fields of HEAD (through its last CRLF) that h= names, bottom-up (RFC 6376 §5.4.2).

        A name absent from HEAD contributes nothing, so nobody can add that header on the way.
        """
        if not self._unique:
            return self._data_in_order(head)
        known = self._known
        last: dict[bytes, tuple[bytes, bytes | None]] = {}
        for field in _FIELD_END.split(head[:-2] if head.endswith(b"\r\n") else head):
            entry = known.get(field)
            if entry is None:
                name = _name(field)
                last[name] = (field, None)
            else:
                last[entry[0]] = (field, entry[1])
        out = []
        for name in self.names:
            found = last.get(name)
            if found is not None:
                out.append(found[1] if found[1] is not None else self.canon.header(found[0]))
        return b"".join(out)

    def _data_in_order(self, head: bytes) -> bytes:
        # a name listed twice signs the last field of that name, then the one above it (§5.4.2)
        fields = header_fields(head)
        return b"".join(self.canon.header(fields[name].pop()) for name in self.names if fields.get(name))


def signed_header_data(
    canon: Canonicalization, head: bytes, names: Sequence[bytes], signature_prefix: bytes,
) -> bytes:
    """Return the data a signature covers: the NAMES' fields of HEAD (bottom-up), then SIGNATURE_PREFIX.

    SIGNATURE_PREFIX is the DKIM-Signature header as it will be written, ending in `b=`.
    """
    return SignedHeaders(canon, names).data(head) + canon.header(signature_prefix)[:-2]


def body_hash(digest: bytes) -> bytes:
    """Return the bh= value of a SHA-256 DIGEST."""
    return base64.b64encode(digest)


class SplicedBody:
    """The body hash of messages spliced from one template's static SEGMENTS and per-message values.

    Made once per template; `hash(values)` per message. `make` returns None when the template's
    shape does not allow it (then each message is hashed whole, which is always right).
    """

    def __init__(self, canon: Canonicalization, head_index: int, body_start: int,
                 prefix: hashlib._Hash, after: tuple[bytes, ...]) -> None:
        self.canon = canon
        self.head_index = head_index  # the segment where the headers end
        self.body_start = body_start  # where the body starts in that segment
        self._prefix = prefix         # SHA-256 of the canonical body up to the first personal value
        self._after = after           # each static segment after a body value, canonical

    @classmethod
    def make(cls, canon: Canonicalization, segments: Sequence[bytes]) -> SplicedBody | None:
        """Return the issue-wide half of the body hash for SEGMENTS, or None if it cannot be split."""
        head_index = next((i for i, s in enumerate(segments) if b"\r\n\r\n" in s), None)
        # values are header lines or body lines, never an empty line: a segment that starts with
        # CRLF before the one holding CRLF CRLF could end the headers itself
        if head_index is None or any(s.startswith(b"\r\n") for s in segments[1:head_index + 1]):
            return None
        body_start = segments[head_index].index(b"\r\n\r\n") + 4
        first = segments[head_index][body_start:]
        rest = segments[head_index + 1:]
        if not rest:  # nothing personal in the body
            prefix = hashlib.sha256(canon.body(first))
            return cls(canon, head_index, body_start, prefix, ())
        # each value must start a line and end one, so that canonicalizing piece by piece is exact
        if (first and not first.endswith(b"\r\n")) or any(not s.endswith(b"\r\n") for s in rest[:-1]):
            return None
        last = canon.ending(canon.lines(rest[-1]))
        if not last.strip(b"\r\n"):  # the body's trailing empty lines could reach back into a value
            return None
        after = tuple(canon.lines(s) for s in rest[:-1]) + (last,)
        return cls(canon, head_index, body_start, hashlib.sha256(canon.lines(first)), after)

    def hash(self, values: Sequence[bytes]) -> bytes | None:
        """Return the body's SHA-256 digest for one message's VALUES (all slots), or None to hash it whole."""
        state = self._prefix.copy()
        lines = self.canon.lines
        for value, static in zip(values[self.head_index:], self._after):
            if not value.endswith(b"\r\n"):
                return None
            state.update(lines(value))
            state.update(static)
        return state.digest()


def head_segments(segments: Sequence[bytes], spliced: SplicedBody) -> tuple[bytes, ...]:
    """Return the static pieces of SEGMENTS' header block (the values between them are left out)."""
    return tuple(segments[: spliced.head_index]) + (segments[spliced.head_index][: spliced.body_start - 2],)


def head_of(segments: Sequence[bytes], values: Sequence[bytes], spliced: SplicedBody) -> bytes:
    """Return the header block of the message SEGMENTS and VALUES make, through its last CRLF."""
    out = []
    for segment, value in zip(segments[: spliced.head_index], values):
        out.append(segment)
        out.append(value)
    out.append(segments[spliced.head_index][: spliced.body_start - 2])
    return b"".join(out)


__all__ = ["Canonicalization", "SignedHeaders", "SplicedBody", "body_hash", "head_of", "head_segments",
           "header_fields", "signed_header_data", "split_message"]
