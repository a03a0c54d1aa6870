"""What the email services' webhooks say, read into plain typed reports; who may say it.

Each service's payload (Amazon SES's notification inside an SNS message, Postmark's bounce and
spam-complaint webhooks, Mailgun's signed events) becomes a list of `Report`s, one per recipient:
a permanent or temporary bounce, a complaint or an unsubscribe, with the address, the DSN status
code and diagnostic text, the message's Message-ID when the service passes it on, and a key that
makes the same event, delivered twice, count once. Anything else (deliveries, opens, auto-replies)
becomes no report. The checks of who sent a request live here too: Postmark's HTTP basic auth and
Mailgun's HMAC signature with its replay guard. SNS's signature is web/sns.py's.

Nothing here touches the database: web/webhooks.py hands the reports to `feedback.apply`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from newsletter.errors import NewsletterError

HARD_BOUNCE = "hard_bounce"
SOFT_BOUNCE = "soft_bounce"
COMPLAINT = "complaint"
UNSUBSCRIBE = "unsubscribe"

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
DIAGNOSTIC_LIMIT = 1000  # characters of a diagnostic kept; services pass on whole SMTP transcripts


class WebhookRefused(NewsletterError):
    """A webhook request that is refused: `status` is the HTTP answer (400, 401, 403)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        self.status = status
        self.headers = dict(headers or {})
        super().__init__(message)


@dataclass(frozen=True)
class Report:
    """One recipient's bounce, complaint or unsubscribe, as a service reported it."""

    kind: str  # HARD_BOUNCE, SOFT_BOUNCE, COMPLAINT or UNSUBSCRIBE
    email: str
    source: str  # "ses", "postmark", "mailgun"
    dedupe_key: str  # the same event delivered twice has the same key
    status: str = ""  # the DSN status code, "5.1.1"
    diagnostic: str = ""  # the receiving server's words
    message_id: str = ""  # the Message-ID header of the message it is about, "<...>", when known
    at: datetime | None = None  # when the message was sent, or else when the event happened


def read_json(body: bytes, service: str) -> dict:
    """Return BODY as a JSON object; 400 naming SERVICE when it is not one."""
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError) as err:
        raise WebhookRefused(400, f"{service}: the request body is not JSON: {err}") from None
    if not isinstance(value, dict):
        raise WebhookRefused(400, f"{service}: the request body is not a JSON object")
    return value


def status_code(*texts: str) -> str:
    """Return the first enhanced status code ("5.1.1") in TEXTS, or ""."""
    for text in texts:
        if match := _STATUS.search(text or ""):
            return ".".join(match.groups())
    return ""


def _text(value: object) -> str:
    return value.strip()[:DIAGNOSTIC_LIMIT] if isinstance(value, str) else ""


def _angle(message_id: object) -> str:
    """Return MESSAGE_ID as "<id>" (Mailgun drops the brackets), or "" for anything else."""
    if not isinstance(message_id, str) or not message_id.strip():
        return ""
    value = message_id.strip()
    return value if value.startswith("<") else f"<{value}>"


def _time(value: object) -> datetime | None:
    """Return an ISO 8601 string or a Unix time as an aware datetime, or None."""
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, timezone.utc)
        if isinstance(value, str) and value:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    except (ValueError, OverflowError, OSError):
        pass
    return None


def _object(value: object) -> dict:
    return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------- Amazon SES


def ses_reports(message: str) -> list[Report]:
    """Return the reports of one SES notification (the `Message` of an SNS notification)."""
    notification = read_json(message.encode("utf-8"), "ses")
    kind = notification.get("notificationType") or notification.get("eventType")  # event publishing says eventType
    mail = _object(notification.get("mail"))
    message_id = _object(mail.get("commonHeaders")).get("messageId") or next(
        (h.get("value") for h in mail.get("headers") or [] if isinstance(h, dict)
         and str(h.get("name", "")).lower() == "message-id"), "")
    sent_at = _time(mail.get("timestamp"))

    def report(kind: str, person: dict, feedback_id: object, status: str = "", diagnostic: str = "") -> Report:
        email = person["emailAddress"]
        return Report(kind, email, "ses", f"ses:{feedback_id}:{email.lower()}", status, diagnostic,
                      _angle(message_id), sent_at)

    if kind == "Bounce":
        bounce = _object(notification.get("bounce"))
        permanent = bounce.get("bounceType") == "Permanent"  # Transient and Undetermined may pass
        reports = []
        for person in map(_object, bounce.get("bouncedRecipients") or []):
            if isinstance(person.get("emailAddress"), str):
                diagnostic = _text(person.get("diagnosticCode"))
                reports.append(report(HARD_BOUNCE if permanent else SOFT_BOUNCE, person, bounce.get("feedbackId", ""),
                                      _text(person.get("status")) or status_code(diagnostic), diagnostic))
        return reports
    if kind == "Complaint":
        complaint = _object(notification.get("complaint"))
        if complaint.get("complaintFeedbackType") == "not-spam":  # the reader says it is not spam
            return []
        detail = _text(complaint.get("complaintFeedbackType")) or "complaint"
        return [report(COMPLAINT, person, complaint.get("feedbackId", ""), diagnostic=detail)
                for person in map(_object, complaint.get("complainedRecipients") or [])
                if isinstance(person.get("emailAddress"), str)]
    return []  # Delivery, Send, Open...: nothing for the list


# --------------------------------------------------------------------------- Postmark

# Postmark's bounce `Type`s that say something about the address; the others (AutoResponder,
# SpamNotification, Unknown...) say nothing the list should act on
_POSTMARK_KINDS = {
    "HardBounce": HARD_BOUNCE, "BadEmailAddress": HARD_BOUNCE,
    "SoftBounce": SOFT_BOUNCE, "Transient": SOFT_BOUNCE, "DnsError": SOFT_BOUNCE,
    "SpamComplaint": COMPLAINT, "Unsubscribe": UNSUBSCRIBE,
}


def postmark_reports(payload: dict) -> list[Report]:
    """Return the report of one Postmark bounce or spam-complaint webhook (one recipient each)."""
    kind = _POSTMARK_KINDS.get("SpamComplaint" if payload.get("RecordType") == "SpamComplaint"
                               else str(payload.get("Type", "")))
    email = payload.get("Email")
    if kind is None or not isinstance(email, str):
        return []
    details = _text(payload.get("Details")) or _text(payload.get("Description"))
    return [Report(kind, email, "postmark", dedupe_key=f"postmark:{payload.get('ID', '')}:{email.lower()}",
                   status=status_code(details), diagnostic=details, at=_time(payload.get("BouncedAt")))]


def check_basic_auth(authorization: str, username: str, password: str) -> None:
    """Refuse (401) a request whose HTTP basic credentials are not USERNAME and PASSWORD."""
    challenge = {"WWW-Authenticate": 'Basic realm="newsletter webhooks", charset="UTF-8"'}
    scheme, _, encoded = authorization.partition(" ")
    try:
        user, colon, given = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        user, colon, given = "", "", ""
    # both compared in full whatever the first says, so the time tells nothing
    good_user = hmac.compare_digest(user.encode(), username.encode())
    good_password = hmac.compare_digest(given.encode(), password.encode())
    if scheme.lower() != "basic" or not colon or not (good_user and good_password):
        raise WebhookRefused(401, "postmark: the request's user name or password is wrong", challenge)


# --------------------------------------------------------------------------- Mailgun


class MailgunSignatures:
    """Check Mailgun's signed timestamp and token; remember tokens (in memory) while they are fresh.

    A token seen again within MAX_AGE is a replay and refused; an older timestamp is stale and
    refused, so a token need not be kept longer than that. After a restart the memory is empty:
    a replay within the window then reaches `feedback.apply`, whose dedupe key (Mailgun's event
    id) makes it change nothing.
    """

    def __init__(self, key: bytes, max_age: float) -> None:
        self.key = key
        self.max_age = max_age
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def check(self, signature: object, now: datetime) -> str:
        """Refuse (403) a forged, stale or replayed signature; else remember its token and return it."""
        signature = _object(signature)
        timestamp, token, given = (str(signature.get(k, "")) for k in ("timestamp", "token", "signature"))
        expected = hmac.new(self.key, (timestamp + token).encode("utf-8"), hashlib.sha256).hexdigest()
        if not token or not hmac.compare_digest(expected.encode(), given.encode()):
            raise WebhookRefused(403, "mailgun: the signature does not match the webhook signing key")
        moment = now.timestamp()
        try:
            signed_at = float(timestamp)
        except ValueError:
            raise WebhookRefused(403, f"mailgun: the timestamp {timestamp!r} is not a number") from None
        if abs(moment - signed_at) > self.max_age:
            raise WebhookRefused(403, f"mailgun: the signature's timestamp is {moment - signed_at:.0f} s away "
                                      f"from now (at most {self.max_age:g} s): a stale or replayed request")
        with self._lock:
            self._seen = {t: until for t, until in self._seen.items() if until > moment}
            if token in self._seen:
                raise WebhookRefused(403, "mailgun: this token was already used: a replayed request")
            self._seen[token] = signed_at + self.max_age
        return token

    def forget(self, token: str) -> None:
        """Forget TOKEN: its request was not processed (503), so Mailgun's retry of it must pass."""
        with self._lock:
            self._seen.pop(token, None)


_MAILGUN_FAILED = {"permanent": HARD_BOUNCE, "temporary": SOFT_BOUNCE}  # by severity
_MAILGUN_OTHER = {"complained": COMPLAINT, "unsubscribed": UNSUBSCRIBE}


def mailgun_reports(event: dict) -> list[Report]:
    """Return the report of one Mailgun event (`event-data`): failed, complained or unsubscribed."""
    name, severity = str(event.get("event")), str(event.get("severity"))
    kind = _MAILGUN_FAILED.get(severity) if name == "failed" else _MAILGUN_OTHER.get(name)
    email = event.get("recipient")
    if kind is None or not isinstance(email, str):
        return []
    status = _object(event.get("delivery-status"))
    diagnostic = _text(status.get("message")) or _text(status.get("description")) or _text(event.get("reason"))
    code = _text(status.get("enhanced-code")) or status_code(diagnostic)
    headers = _object(_object(event.get("message")).get("headers"))
    return [Report(kind, email, "mailgun", dedupe_key=f"mailgun:{event.get('id', '')}:{email.lower()}",
                   status=code, diagnostic=diagnostic, message_id=_angle(headers.get("message-id")),
                   at=_time(event.get("timestamp")))]


__all__ = [
    "COMPLAINT", "HARD_BOUNCE", "SOFT_BOUNCE", "UNSUBSCRIBE", "MailgunSignatures", "Report",
    "WebhookRefused", "check_basic_auth", "mailgun_reports", "postmark_reports", "read_json",
    "ses_reports", "status_code",
]
