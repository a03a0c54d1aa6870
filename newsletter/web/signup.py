"""Sign-up with confirmation: the signed confirmation link, the request limits, the confirmation message.

A sign-up request is queued (`outgoing_mail`, sent by web/outgoing.py); the worker records the address
as `pending` and mails a link `{base_url}/confirm/TOKEN`. The token (signing.py) is an HMAC of (purpose, list,
subscriber, expiry) under the project's secret key: a different purpose string from the unsubscribe
tokens, so neither can stand in for the other, and it expires. Requests are logged in
`signup_requests` so one address gets at most a few mails a day (the page never says so), and one
client address cannot make many requests an hour. No HTTP here (web/app.py).
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import jinja2

from newsletter import i18n, store, subscribers
from newsletter.addresses import ascii_address, ascii_domain, ascii_mailbox
from newsletter.errors import HeaderError, NewsletterError, SubscriberError
from newsletter.headers import check_header_value
from newsletter.models import Subscriber
from newsletter.settings import Settings
from newsletter.signing import CONFIRM_DAYS, confirm_token, token_subscriber_id, verify_confirm_token

logger = logging.getLogger(__name__)

ADDRESS_LIMIT = 3            # mails per address in a rolling window …
ADDRESS_WINDOW = timedelta(hours=24)
IP_LIMIT = 20                # … and sign-up requests per client address
IP_WINDOW = timedelta(hours=1)


class LimitReached(NewsletterError):
    """Too many sign-up requests from one client; try again later."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# --- the confirmation link (its token: signing.py) ---------------------------------------------

def confirm_url(settings: Settings, token: str) -> str:
    """Return the address of the confirmation page for TOKEN."""
    return f"{settings.newsletter.base_url.rstrip('/')}/confirm/{token}"


# --- limits --------------------------------------------------------------------------------------

def _stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def _count(conn: sqlite3.Connection, kind: str, key: str, window: timedelta, now: datetime) -> tuple[int, str | None]:
    """Return how many requests of KIND for KEY fall in the rolling WINDOW before NOW, and the oldest."""
    conn.execute("DELETE FROM signup_requests WHERE at < ?", (_stamp(now - max(ADDRESS_WINDOW, IP_WINDOW)),))
    row = conn.execute("SELECT count(*), min(at) FROM signup_requests WHERE kind = ? AND key = ? AND at >= ?",
                       (kind, key, _stamp(now - window))).fetchone()
    return row[0], row[1]


def _admit_client(conn: sqlite3.Connection, client: str, now: datetime) -> None:
    """Refuse with LimitReached past IP_LIMIT requests from CLIENT in IP_WINDOW; else count this one."""
    count, oldest = _count(conn, "ip", client, IP_WINDOW, now)
    if count >= IP_LIMIT and oldest is not None:  # past the limit there is an oldest request
        retry = max(int((datetime.fromisoformat(oldest) + IP_WINDOW - now).total_seconds()) + 1, 1)
        raise LimitReached("too many sign-up requests from your network; try again later", retry)
    conn.execute("INSERT INTO signup_requests (kind, key, at) VALUES ('ip', ?, ?)", (client, _stamp(now)))


def _admit_mail(conn: sqlite3.Connection, email_key: str, now: datetime) -> bool:
    """Return whether EMAIL_KEY may get another mail (ADDRESS_LIMIT in ADDRESS_WINDOW), counting it if so."""
    count, _ = _count(conn, "address", email_key, ADDRESS_WINDOW, now)
    if count >= ADDRESS_LIMIT:
        return False
    conn.execute("INSERT INTO signup_requests (kind, key, at) VALUES ('address', ?, ?)", (email_key, _stamp(now)))
    return True


# --- the confirmation message --------------------------------------------------------------------

def confirmation_message(
    settings: Settings, env: jinja2.Environment, subscriber: Subscriber, url: str, now: datetime,
) -> bytes:
    """Return the confirmation message for SUBSCRIBER (with URL), or without URL the "already subscribed" note."""
    from newsletter import messages
    from newsletter.renderer import _render

    from newsletter.renderer import direction_values

    _ = i18n.gettext_for(settings)
    name = settings.newsletter.name
    subject = (_("Confirm your subscription to %(name)s") if url else _("You are already subscribed to %(name)s")) % {
        "name": name}
    template = "confirm_email" if url else "already_email"
    check_header_value("confirmation subject", subject)
    check_header_value("sender.from", settings.sender.from_address)
    context = {
        **direction_values(settings.newsletter.language), "site_name": name, "subject": subject,
        "address": subscriber.email, "confirm_url": url, "valid_days": CONFIRM_DAYS,
        "postal_address": settings.sender.postal_address,
    }
    text = _render(env, f"web/{template}.txt.j2", context)
    html = _render(env, f"web/{template}.html.j2", context)
    msg = EmailMessage()
    msg["From"] = ascii_mailbox(settings.sender.from_address)
    msg["To"] = ascii_address(subscriber.email)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now.astimezone(timezone.utc))
    msg["Message-ID"] = make_msgid("confirm", domain=ascii_domain(settings.sender_domain))
    if settings.sender.reply_to:
        msg["Reply-To"] = ascii_mailbox(settings.sender.reply_to)
    msg["MIME-Version"] = "1.0"
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    for part in msg.iter_parts():
        del part["MIME-Version"]
    return messages.sign(msg.as_bytes(policy=messages.WIRE_POLICY), settings)


# --- the sign-up ---------------------------------------------------------------------------------

def checked_address(email: str) -> tuple[str, str]:
    """Return EMAIL normalized and as an SMTP envelope address; SubscriberError if it cannot be one."""
    normalized, _ = subscribers.normalize_email(email)
    try:
        # an address goes into the To header: no encoded words (EMAIL.md rule 21), and ASCII or IDNA only
        check_header_value("email", normalized)
        return normalized, ascii_address(normalized)
    except HeaderError as err:
        raise SubscriberError(f"{normalized}: not a valid address for this list: {err}") from err


def request_sign_up(conn: sqlite3.Connection, email: str, client: str, now: datetime) -> str:
    """Queue a sign-up request for EMAIL (the mail worker decides what it becomes); return EMAIL normalized.

    The same work whatever the address's status: the answer, and its time, tell nothing about who is
    on the list. Raises SubscriberError for an address that is not valid, and LimitReached when
    CLIENT made too many requests (per client, never per address: nobody can lock a victim out).
    """
    normalized, _ = checked_address(email)
    with store.write(conn):
        _admit_client(conn, client or "unknown", now)
        conn.execute("INSERT INTO outgoing_mail (email, requested_at, next_attempt_at) VALUES (?, ?, ?)",
                     (normalized, _stamp(now), _stamp(now)))
    return normalized


def resolve(conn: sqlite3.Connection, settings: Settings, env: jinja2.Environment, key: bytes,
            row_id: int, email: str, now: datetime) -> bool:
    """Turn the queued request ROW_ID for EMAIL into its mail; return False if it becomes none (and drop it).

    A new or pending address gets a confirmation link; an unsubscribed one a link of its own that
    only its button turns into a rejoin (their record says unsubscribed until then, so a stranger
    typing their address changes nothing); an active one a short "already subscribed" note; a
    bounced one nothing. At most ADDRESS_LIMIT mails per address in ADDRESS_WINDOW,
    counted in this server's clock.
    """
    normalized, envelope = checked_address(email)
    person = subscribers.sign_up(conn, normalized).subscriber
    raw = None
    if person.status in (subscribers.PENDING, subscribers.UNSUBSCRIBED):
        rejoin = person.updated_at if person.status == subscribers.UNSUBSCRIBED else ""
        token = confirm_token(key, person.id, settings.sender.list_id, now, rejoin=rejoin)
        raw = confirmation_message(settings, env, person, confirm_url(settings, token), now)
    elif person.status == subscribers.ACTIVE:
        raw = confirmation_message(settings, env, person, "", now)
    with store.write(conn):
        if raw is None or not _admit_mail(conn, person.email_key, now):
            conn.execute("DELETE FROM outgoing_mail WHERE id = ?", (row_id,))
            logger.info("sign-up for subscriber %s (%s): no mail", person.id, person.status)
            return False
        conn.execute("UPDATE outgoing_mail SET recipient = ?, raw = ? WHERE id = ?", (envelope, raw, row_id))
    return True


__all__ = [
    "ADDRESS_LIMIT", "CONFIRM_DAYS", "IP_LIMIT", "LimitReached", "checked_address", "confirm_token",
    "confirm_url", "confirmation_message", "request_sign_up", "resolve", "token_subscriber_id",
    "verify_confirm_token",
]
