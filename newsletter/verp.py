"""VERP: a per-message envelope sender that names its issue and its subscriber, signed.

With `[sender] bounce_address = "bounces@example.org"`, the message of day D to subscriber N goes
out with the envelope sender `bounces+YYYYMMDD-N-MAC@example.org`, so a bounce names its
recipient even when its body is unreadable (or names a forwarding address). MAC is the first 10
bytes, in lowercase hex, of HMAC-SHA256 under the project's secret key over
`newsletter-verp\\0{list id}\\0{YYYYMMDD}\\0{N}`: the same construction as the tool's other signed
links, with its own purpose label, so one kind of token never stands in for another. Digits,
lowercase hex and '-' survive an MTA that changes the letter case of a local part, and the tag
is checked without the database.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import date

PURPOSE = "verp"
MAC_BYTES = 10  # 80 bits: forging one takes 2**80 tries, each one a bounce message
_TAG = re.compile(r"(\d{8})-(0|[1-9]\d{0,17})-([0-9a-f]{%d})" % (2 * MAC_BYTES))


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
        # the keyed state after the label, copied per message: most of the cost of hmac.new is here
        self._keyed = hmac.new(key, f"newsletter-{PURPOSE}\0{list_id}\0".encode("utf-8"), hashlib.sha256)

    def _mac(self, day_number: int, subscriber_id: int) -> str:
        state = self._keyed.copy()
        state.update(f"{day_number}\0{subscriber_id}".encode("ascii"))
        return state.digest()[:MAC_BYTES].hex()

    def tag(self, day: date, subscriber_id: int) -> str:
        """Return the tag of the message of DAY to SUBSCRIBER_ID."""
        number = day.year * 10000 + day.month * 100 + day.day
        return f"{number}-{subscriber_id}-{self._mac(number, subscriber_id)}"

    def address(self, day: date, subscriber_id: int) -> str:
        """Return the envelope sender of the message of DAY to SUBSCRIBER_ID."""
        return f"{self.local}+{self.tag(day, subscriber_id)}@{self.domain}"

    def read(self, address: str) -> Tag | None:
        """Return what ADDRESS names; None if it is not under the bounce address; raise Forged if its tag is false."""
        local, _, domain = address.strip().strip("<>").rpartition("@")
        if domain.lower() != self.domain.lower() or not local.lower().startswith(self._prefix):
            return None
        text = local[len(self._prefix):].lower()
        match = _TAG.fullmatch(text)
        if match is None:
            raise Forged(f"{address}: not a tag of ours")
        number, subscriber_id = int(match[1]), int(match[2])
        if not hmac.compare_digest(match[3], self._mac(number, subscriber_id)):
            raise Forged(f"{address}: the tag's signature does not match")
        try:
            day = date(number // 10000, number // 100 % 100, number % 100)
        except ValueError:
            raise Forged(f"{address}: the tag names no real day") from None
        return Tag(day, subscriber_id, text)


__all__ = ["Forged", "MAC_BYTES", "PURPOSE", "Tag", "Verp"]
