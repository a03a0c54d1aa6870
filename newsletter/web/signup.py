"""Sign-up with confirmation: the signed confirmation link, the request limits, the confirmation message.

A sign-up records the address as `pending` and mails a link `{base_url}/confirm/TOKEN`. The token is
an HMAC of (purpose, list, subscriber, expiry) under the project's secret key: a different purpose
string from the unsubscribe tokens, so neither can stand in for the other, and it expires.
Requests are logged in `signup_requests` so one address gets at most a few confirmation messages a
day, and one client address cannot make many requests an hour. No HTTP here (web/app.py).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import jinja2

from newsletter import store, subscribers
from newsletter.errors import HeaderError, NewsletterError, SubscriberError
from newsletter.models import Subscriber
from newsletter.settings import Settings

logger = logging.getLogger(__name__)

CONFIRM_DAYS = 7
ADDRESS_LIMIT = 3            # confirmation requests per address …
ADDRESS_WINDOW = timedelta(hours=24)
IP_LIMIT = 20                # … and sign-up requests per client address
IP_WINDOW = timedelta(hours=1)

_TOKEN_RE = re.compile(r"(0|[1-9][0-9]{0,17})\.([1-9][0-9]{0,11})\.([0-9a-f]{32})")
_MAX_TOKEN_LENGTH = 18 + 1 + 12 + 1 + 32


class LimitReached(NewsletterError):
    """Too many sign-up requests for one address or from one client; try again later."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class SignUp:
    """What a sign-up did. The page shows the same whatever it says: it is for logs and tests."""

    subscriber: Subscriber
    sent: Path | None
    message_sent: bool


# --- the confirmation token ----------------------------------------------------------------------

def _mac(key: bytes, list_id: str, subscriber_id: int, expires: int) -> str:
    message = f"newsletter-confirm\0{list_id}\0{subscriber_id}\0{expires}".encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).digest()[:16].hex()


def confirm_token(key: bytes, subscriber_id: int, list_id: str, now: datetime, days: int = CONFIRM_DAYS) -> str:
    """Return a confirmation token for SUBSCRIBER_ID that expires DAYS after NOW: `{id}.{expiry}.{hmac}`."""
    if not key:
        raise ValueError("confirmation tokens need a non-empty secret key")
    expires = int((now + timedelta(days=days)).timestamp())
    return f"{subscriber_id}.{expires}.{_mac(key, list_id, subscriber_id, expires)}"


def verify_confirm_token(key: bytes, token: str, list_id: str, now: datetime) -> int | None:
    """Return the subscriber id TOKEN confirms, or None if it is forged, malformed or expired."""
    if not key or not isinstance(token, str) or len(token) > _MAX_TOKEN_LENGTH or not token.isascii():
        return None
    match = _TOKEN_RE.fullmatch(token.lower())
    if match is None:
        return None
    subscriber_id, expires = int(match[1]), int(match[2])
    if not hmac.compare_digest(match[3], _mac(key, list_id, subscriber_id, expires)):
        return None
    if now.timestamp() > expires:
        return None
    return subscriber_id


def confirm_url(settings: Settings, token: str) -> str:
    """Return the address of the confirmation page for TOKEN."""
    return f"{settings.newsletter.base_url.rstrip('/')}/confirm/{token}"


# --- limits --------------------------------------------------------------------------------------

def _admit(conn: sqlite3.Connection, checks: list[tuple[str, str, int, timedelta, str]], now: datetime) -> None:
    """Refuse with LimitReached if any check is over its limit; else log one request for each, atomically."""
    stamp = now.astimezone(timezone.utc).isoformat(timespec="seconds")
    oldest = now - max(window for _, _, _, window, _ in checks)
    with store.write(conn):
        conn.execute("DELETE FROM signup_requests WHERE at < ?",
                     (oldest.astimezone(timezone.utc).isoformat(timespec="seconds"),))
        for kind, key, limit, window, message in checks:
            since = (now - window).astimezone(timezone.utc).isoformat(timespec="seconds")
            rows = conn.execute(
                "SELECT count(*), min(at) FROM signup_requests WHERE kind = ? AND key = ? AND at >= ?",
                (kind, key, since),
            ).fetchone()
            if rows[0] >= limit:
                first = datetime.fromisoformat(rows[1])
                retry = max(int((first + window - now).total_seconds()) + 1, 1)
                raise LimitReached(message, retry)
        conn.executemany("INSERT INTO signup_requests (kind, key, at) VALUES (?, ?, ?)",
                         [(kind, key, stamp) for kind, key, *_ in checks])


# --- the confirmation message --------------------------------------------------------------------

def confirmation_message(
    settings: Settings, env: jinja2.Environment, subscriber: Subscriber, url: str, now: datetime,
) -> bytes:
    """Return the confirmation message for SUBSCRIBER: text and HTML, From the list, 7-bit."""
    from newsletter import messages
    from newsletter.renderer import _render

    name = settings.newsletter.name
    subject = f"Confirm your subscription to {name}"
    messages.check_header_value("confirmation subject", subject)
    messages.check_header_value("sender.from", settings.sender.from_address)
    context = {
        "language": settings.newsletter.language, "site_name": name, "subject": subject,
        "address": subscriber.email, "confirm_url": url, "valid_days": CONFIRM_DAYS,
        "postal_address": settings.sender.postal_address,
    }
    text = _render(env, "web/confirm_email.txt.j2", context)
    html = _render(env, "web/confirm_email.html.j2", context)
    msg = EmailMessage()
    msg["From"] = settings.sender.from_address
    msg["To"] = messages.ascii_address(subscriber.email)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now.astimezone(timezone.utc))
    msg["Message-ID"] = make_msgid("confirm", domain=settings.sender_domain)
    if settings.sender.reply_to:
        msg["Reply-To"] = settings.sender.reply_to
    msg["MIME-Version"] = "1.0"
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    for part in msg.iter_parts():
        del part["MIME-Version"]
    return messages.sign(msg.as_bytes(policy=messages.WIRE_POLICY), settings)


# --- the sign-up ---------------------------------------------------------------------------------

def sign_up(
    conn: sqlite3.Connection, settings: Settings, env: jinja2.Environment, key: bytes, email: str,
    client: str, now: datetime, send: Callable[[Settings, bytes, str], Path | None],
) -> SignUp:
    """Record EMAIL as pending and SEND it a confirmation link; leave an address already on the list alone.

    Raises SubscriberError for an address that is not valid and LimitReached past a limit, the
    same whatever the address's status, so the answer tells nothing about who is on the list.
    """
    from newsletter import messages

    normalized, email_key = subscribers.normalize_email(email)
    try:
        # an address goes into the To header: no encoded words (EMAIL.md rule 21), and ASCII or IDNA only
        messages.check_header_value("email", normalized)
        envelope = messages.ascii_address(normalized)
    except HeaderError as err:
        raise SubscriberError(f"{normalized}: not a valid address for this list: {err}") from err
    _admit(conn, [
        ("ip", client or "unknown", IP_LIMIT, IP_WINDOW,
         "too many sign-up requests from your network; try again later"),
        ("address", email_key, ADDRESS_LIMIT, ADDRESS_WINDOW,
         f"too many confirmation requests for {normalized} today; try again tomorrow"),
    ], now)
    result = subscribers.sign_up(conn, normalized)
    person = result.subscriber
    if person.status != subscribers.PENDING:
        logger.info("sign-up for subscriber %s (%s): nothing sent", person.id, person.status)
        return SignUp(person, None, False)
    token = confirm_token(key, person.id, settings.sender.list_id, now)
    raw = confirmation_message(settings, env, person, confirm_url(settings, token), now)
    path = send(settings, raw, envelope)
    logger.info("sign-up for subscriber %s: confirmation sent", person.id)
    return SignUp(person, path, True)



__all__ = [
    "ADDRESS_LIMIT", "CONFIRM_DAYS", "IP_LIMIT", "LimitReached", "SignUp", "confirm_token",
    "confirm_url", "confirmation_message", "sign_up", "verify_confirm_token",
]
