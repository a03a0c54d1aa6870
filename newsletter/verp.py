"""VERP: a per-message envelope sender that names its issue and its subscriber, signed.

With `[sender] bounce_address = "bounces@example.org"`, the message of day D to subscriber N goes
out with the envelope sender `bounces+YYYYMMDD-N-MAC@example.org`, so a bounce names its
recipient even when its body is unreadable (or names a forwarding address). MAC is the first 10
bytes, in lowercase hex, of HMAC-SHA256 under the project's secret key over
`newsletter-verp\\0{list id}\\0{YYYYMMDD}\\0{N}`: a `signing.Signer` like the tool's other signed
links, with its own purpose label, so one kind of token never stands in for another. Digits,
lowercase hex and '-' survive an MTA that changes the letter case of a local part, and the tag
is checked without the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from newsletter.signing import Signer
from newsletter.weeks import DigestKey, IsoWeek

PURPOSE = "verp"
MAC_BYTES = 10  # 80 bits: forging one takes 2**80 tries, each one a bounce message


@dataclass(frozen=True)
class Tag:
    """What a valid VERP address names."""

    day: date
    subscriber_id: int
    text: str

    @property
    def issue_day(self) -> str:
        return self.day.isoformat()


class Forged(ValueError):
    """An address under the bounce address whose tag does not verify."""


class Verp:
    """Envelope senders under BOUNCE_ADDRESS for one list, signed with KEY."""

    def __init__(self, key: bytes, list_id: str, bounce_address: str) -> None:
        if not key:
            raise ValueError("VERP tags need a non-empty secret key")
        local, _, domain = bounce_address.strip().rpartition("@")
        if not local or not domain or "+" in local:
            raise ValueError(f"{bounce_address!r} is not a bounce address such as 'bounces@example.org'")
        self.local, self.domain = local, domain
        self._prefix = f"{local}+".lower()
        self._signer = Signer(key, PURPOSE, list_id, numbers=2, separator="-", mac_bytes=MAC_BYTES)

    def tag(self, day: date, subscriber_id: int) -> str:
        """Return the tag of the message of DAY (or of a digest) to SUBSCRIBER_ID."""
        return self._signer.sign(_number(day), subscriber_id)

    def address(self, day: date, subscriber_id: int) -> str:
        """Return the envelope sender of the message of DAY to SUBSCRIBER_ID."""
        return f"{self.local}+{self.tag(day, subscriber_id)}@{self.domain}"

    def read(self, address: str) -> Tag | None:
        """Return what ADDRESS names; None if it is not under the bounce address; raise Forged if its tag is false."""
        local, _, domain = address.strip().strip("<>").rpartition("@")
        if domain.lower() != self.domain.lower() or not local.lower().startswith(self._prefix):
            return None
        text = local[len(self._prefix):].lower()
        if self._signer.claimed(text) is None:
            raise Forged(f"{address}: not a tag of ours")
        found = self._signer.verify(text)
        if found is None:
            raise Forged(f"{address}: the tag's signature does not match")
        number, subscriber_id = found
        try:
            day = _day(number)
        except ValueError:
            raise Forged(f"{address}: the tag names no real day") from None
        return Tag(day, subscriber_id, text)


# a day is YYYYMMDD (8 digits); a digest YYYYWWNNN (9 digits: year, ISO week, variant)
_DIGEST_NUMBER = 10**8


def _number(day: date) -> int:
    if isinstance(day, DigestKey):
        return (day.week.year * 100 + day.week.week) * 1000 + day.variant
    return day.year * 10000 + day.month * 100 + day.day


def _day(number: int) -> date:
    if number >= _DIGEST_NUMBER:
        return IsoWeek(number // 100_000, number // 1000 % 100).key(number % 1000)
    return date(number // 10000, number // 100 % 100, number % 100)


__all__ = ["Forged", "MAC_BYTES", "PURPOSE", "Tag", "Verp"]
