"""Signed links: one HMAC for every token the tool mails out and later reads back.

A token is its numbers, an optional expiry (Unix seconds) and a MAC, joined with dots:
`{n}[.{n}…][.{expires}].{mac}` (a VERP tag joins them with '-' and keeps 10 bytes of MAC, for
an address's local part: verp.py). The MAC is the first 16 bytes of HMAC-SHA256 under the project's
secret key over `newsletter-{purpose}\\0{scope}\\0{n}\\0…\\0{expires}[\\0{bound}…]`, in lowercase
hex (128 bits; it survives a mail system that changes the letter case of a mailto subject). Bound
values are not in the token: the verifier looks them up (a rejoin link is bound to the moment its
subscriber unsubscribed, so a later unsubscribe voids it). The purpose label
keeps one kind of link from standing in for another (an unsubscribe token is no confirmation),
the scope (the list id) one list's links from another's. Comparison is constant-time.

Tokens in emails already sent must keep verifying: the message format above is the one
messages.py (unsubscribe), web/signup.py (confirmation) and verp.py used before this module;
tests hold tokens made by that code.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime, timedelta

UNSUBSCRIBE = "unsubscribe"
CONFIRM = "confirm"
PREFERENCES = "preferences"
CONFIRM_DAYS = 7

_NUMBER = r"(0|[1-9][0-9]{0,17})"   # a non-negative integer below 10**18, written one way only
_EXPIRY = r"([1-9][0-9]{0,11})"
_PURPOSE = re.compile(r"[a-z][a-z0-9-]*")
_LIMIT = 10**18


class Signer:
    """Signed tokens of one PURPOSE within one SCOPE under one KEY, carrying NUMBERS integers."""

    def __init__(self, key: bytes, purpose: str, scope: str, *, numbers: int = 1, expiring: bool = False,
                 separator: str = ".", mac_bytes: int = 16) -> None:
        if not key:
            raise ValueError(f"{purpose} tokens need a non-empty secret key")
        if not _PURPOSE.fullmatch(purpose) or numbers < 1:
            raise ValueError(f"{purpose!r}: a purpose is lowercase letters, digits and '-', with at least one number")
        if separator not in (".", "-") or not 10 <= mac_bytes <= 32:
            raise ValueError("a token's parts are joined with '.' or '-', and its MAC keeps 10 to 32 bytes")
        self.numbers = numbers
        self.expiring = expiring
        self._separator, self._mac_bytes = separator, mac_bytes
        # The keyed state after the label, copied per token: a third of the cost of hmac.new.
        self._keyed = hmac.new(key, f"newsletter-{purpose}\0{scope}\0".encode("utf-8"), hashlib.sha256)
        fields = [_NUMBER] * numbers + ([_EXPIRY] if expiring else [])
        self._shape = re.compile(re.escape(separator).join([*fields, f"([0-9a-f]{{{2 * mac_bytes}}})"]))
        self._max_length = 18 * numbers + (13 if expiring else 0) + numbers + 2 * mac_bytes

    def mac(self, *fields: int, bound: tuple[str, ...] = ()) -> str:
        """Return the MAC of FIELDS (the numbers, then the expiry if any) and the BOUND values."""
        state = self._keyed.copy()
        state.update("\0".join(map(str, (*fields, *bound))).encode("utf-8"))
        return state.digest()[:self._mac_bytes].hex()

    def claimed(self, token: object) -> tuple[int, ...] | None:
        """Return the numbers TOKEN claims to carry, NOT verified (to look up what it is bound to)."""
        if not isinstance(token, str) or len(token) > self._max_length or not token.isascii():
            return None
        match = self._shape.fullmatch(token.lower())
        return None if match is None else tuple(int(f) for f in match.groups()[:self.numbers])

    def sign(self, *numbers: int, expires: int | None = None, bound: tuple[str, ...] = ()) -> str:
        """Return the token for NUMBERS (and EXPIRES, Unix seconds, when this signer's tokens expire)."""
        if len(numbers) != self.numbers:
            raise ValueError(f"a token carries {self.numbers} numbers, not {len(numbers)}")
        for n in numbers:
            if type(n) is not int or not 0 <= n < _LIMIT:  # not a bool either
                raise ValueError(f"{n!r} is not a non-negative integer below 10**18")
        if self.expiring != (expires is not None):
            raise ValueError("an expiring token needs an expiry, and only an expiring one")
        fields = numbers if expires is None else (*numbers, expires)
        text = self._separator.join(map(str, fields))
        # the MAC's message is the fields joined with NULs, then the bound values
        state = self._keyed.copy()
        state.update("\0".join((text.replace(self._separator, "\0"), *bound)).encode("utf-8"))
        return f"{text}{self._separator}{state.digest()[:self._mac_bytes].hex()}"

    def verify(self, token: object, now: datetime | None = None, bound: tuple[str, ...] = ()) -> tuple[int, ...] | None:
        """Return the numbers TOKEN carries, or None if it is malformed, forged, (at NOW) expired or not BOUND."""
        if not isinstance(token, str) or len(token) > self._max_length or not token.isascii():
            return None
        match = self._shape.fullmatch(token.lower())
        if match is None:
            return None
        *fields, mac = match.groups()
        values = tuple(int(f) for f in fields)
        if not hmac.compare_digest(mac, self.mac(*values, bound=bound)):
            return None
        if self.expiring:
            if now is None or now.timestamp() > values[-1]:
                return None
            values = values[:-1]
        return values


# --- the tool's links ------------------------------------------------------------------------------

def unsubscriber(key: bytes, list_id: str) -> Signer:
    """Return the signer of LIST_ID's unsubscribe links: `{subscriber id}.{mac}`, no expiry."""
    return Signer(key, UNSUBSCRIBE, list_id)


def unsubscribe_token(key: bytes, subscriber_id: int, list_id: str) -> str:
    """Return the unsubscribe token of one subscriber of one list: `{id}.{mac}`."""
    return unsubscriber(key, list_id).sign(subscriber_id)


def verify_token(key: bytes, token: str, list_id: str) -> int | None:
    """Return the subscriber id TOKEN was made for under KEY and LIST_ID, or None if it was not."""
    if not key:
        return None
    found = unsubscriber(key, list_id).verify(token)
    return found[0] if found else None


def preferencer(key: bytes, list_id: str) -> Signer:
    """Return the signer of LIST_ID's preferences links (`/p/TOKEN`): `{subscriber id}.{mac}`, no expiry."""
    return Signer(key, PREFERENCES, list_id)


def preferences_token(key: bytes, subscriber_id: int, list_id: str) -> str:
    """Return the token of one subscriber's preferences page: `{id}.{mac}`."""
    return preferencer(key, list_id).sign(subscriber_id)


def verify_preferences_token(key: bytes, token: str, list_id: str) -> int | None:
    """Return the subscriber id whose preferences page TOKEN opens, or None if this project did not make it."""
    if not key:
        return None
    found = preferencer(key, list_id).verify(token)
    return found[0] if found else None


def _confirmer(key: bytes, list_id: str) -> Signer:
    return Signer(key, CONFIRM, list_id, expiring=True)


def _rejoin(rejoin: str) -> tuple[str, ...]:
    return ("rejoin", rejoin) if rejoin else ()


def confirm_token(key: bytes, subscriber_id: int, list_id: str, now: datetime, days: int = CONFIRM_DAYS,
                  *, rejoin: str = "") -> str:
    """Return a confirmation token for SUBSCRIBER_ID that expires DAYS after NOW: `{id}.{expiry}.{mac}`.

    REJOIN is the `updated_at` of an unsubscribed subscriber asking to come back: their link
    confirms only while they are still unsubscribed since that moment.
    """
    expires = int((now + timedelta(days=days)).timestamp())
    return _confirmer(key, list_id).sign(subscriber_id, expires=expires, bound=_rejoin(rejoin))


def token_subscriber_id(token: str) -> int | None:
    """Return the subscriber id a confirmation TOKEN claims (not yet verified), or None if it is malformed."""
    found = _confirmer(b"-", "").claimed(token)
    return found[0] if found else None


def verify_confirm_token(key: bytes, token: str, list_id: str, now: datetime, *, rejoin: str = "") -> int | None:
    """Return the subscriber id TOKEN confirms, or None if it is forged, malformed, expired or not for REJOIN."""
    if not key:
        return None
    found = _confirmer(key, list_id).verify(token, now, bound=_rejoin(rejoin))
    return found[0] if found else None


__all__ = [
    "CONFIRM", "CONFIRM_DAYS", "PREFERENCES", "UNSUBSCRIBE", "Signer", "confirm_token", "preferencer",
    "preferences_token", "token_subscriber_id", "unsubscribe_token", "unsubscriber", "verify_confirm_token",
    "verify_preferences_token", "verify_token",
]
