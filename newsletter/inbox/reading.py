"""What one incoming message means: a bounce, a complaint, an unsubscribe request, or none of these.

Pure: bytes in, a `Verdict` out (the Feedback to apply, or why nothing is to be done); no database,
no clock. The order matters and each step says why it comes where it does:

1. too large: refused unread (a hostile or broken message is never parsed);
2. a VERP address among the recipients names the subscriber; a false tag refuses the message;
3. feedback-loop reports (RFC 5965 ARF) are complaints;
4. delivery status notifications (RFC 3464) are bounces, even when marked auto-replied (MTAs mark
   their bounces so);
5. other auto-replies (RFC 3834 Auto-Submitted, X-Autoreply, out-of-office subjects) are ignored:
   they come to the envelope sender too, and are never bounces;
6. non-standard bounces (Exim, qmail, Exchange, Yahoo, …) through flufl.bounce's detectors;
7. mail to the unsubscribe address with a valid List-Unsubscribe token unsubscribes;
8. anything else is left for a human.
"""

from __future__ import annotations

import email
import email.message
import email.parser
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import getaddresses, parseaddr
from enum import StrEnum

import flufl.bounce

from newsletter import events, signing
from newsletter.feedback import Feedback, FeedbackKind
from newsletter.settings import Settings
from newsletter.verp import Forged, Tag, Verp


class Category(StrEnum):
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    IGNORED = "ignored"      # auto-replies, delay warnings, "not spam" reports
    HUMAN = "human"          # the tool cannot act on it: someone should read it
    REFUSED = "refused"      # hostile or unreadable: nothing is done, and the summary says why


@dataclass(frozen=True)
class Verdict:
    category: Category
    feedback: tuple[Feedback, ...] = ()
    why: str = ""


ARF, DSN = "arf", "dsn"  # event sources: a feedback-loop report, a bounce
_RECIPIENT_HEADERS = ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "to", "cc")
_DAEMONS = {"mailer-daemon", "postmaster", "mail-daemon", "mailer_daemon", "maildaemon", "mdaemon"}
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_TOKEN = re.compile(r"unsubscribe-([0-9]{1,18}\.[0-9a-f]{32})\b", re.IGNORECASE)
_LINK_TOKEN = re.compile(r"/u/([0-9]{1,18}\.[0-9a-f]{32})\b", re.IGNORECASE)
_AUTO_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|antwort)|auto:|out of (the )?office|abwesen|vacation|"
    r"r[ée]ponse automatique|respuesta autom[áa]tica|risposta automatica|i am away|away from)",
    re.IGNORECASE,
)
MAX_BODY_SCAN = 64 * 1024  # characters of a text part searched for a token or a status code


class Reader:
    """Reads incoming messages for one project (its settings and secret key)."""

    def __init__(self, settings: Settings, key: bytes) -> None:
        self.settings = settings
        self.key = key
        self.list_id = settings.sender.list_id
        self.max_bytes = settings.inbox.max_message_bytes
        bounce = settings.sender.bounce_address
        self.verp = Verp(key, self.list_id, bounce) if bounce else None
        self.mailto = settings.sender.unsubscribe_mailto.lower()

    def read(self, raw: bytes) -> Verdict:
        """Return what the message RAW means."""
        if len(raw) > self.max_bytes:
            return Verdict(Category.REFUSED, why=f"larger than {self.max_bytes} bytes: not read")
        msg = email.message_from_bytes(raw)
        report_id = (_h(msg, "message-id") or "").strip() or "sha256:" + hashlib.sha256(raw).hexdigest()[:32]
        try:
            tag = self._tag(_recipients(msg))
            report_type = msg.get_param("report-type", "", header="content-type")
            if msg.get_content_type() == "multipart/report" and str(report_type).lower() == "feedback-report":
                return self._complaint(msg, report_id, tag)
            if msg.get_content_type() == "multipart/report" and str(report_type).lower() == "delivery-status":
                return self._bounce(msg, report_id, tag) or Verdict(Category.HUMAN, why="an empty delivery report")
            if _auto_reply(msg):
                return Verdict(Category.IGNORED, why="auto-reply")
            verdict = self._bounce(msg, report_id, tag, heuristic=True)
            if verdict is not None:
                return verdict
            return self._unsubscribe(msg, report_id)
        except Forged as err:
            return Verdict(Category.REFUSED, why=f"forged VERP tag ({err})")

    # ------------------------------------------------------------------ who

    def _tag(self, addresses: list[str]) -> Tag | None:
        """Return the VERP tag among ADDRESSES; raise Forged if one is under the bounce address but false."""
        if self.verp is None:
            return None
        for address in addresses:
            found = self.verp.read(address)
            if found is not None:
                return found
        return None

    def _token_id(self, text: str, pattern: re.Pattern[str]) -> int | None:
        for match in pattern.finditer(text):
            found = signing.verify_token(self.key, match[1].lower(), self.list_id)
            if found is not None:
                return found
        return None

    # ------------------------------------------------------------------ bounces

    def _bounce(self, msg: email.message.Message, report_id: str, tag: Tag | None,
                heuristic: bool = False) -> Verdict | None:
        blocks = list(_dsn_blocks(msg))
        # a bounce that reaches us without the VERP address in its headers may still carry our copy
        tag = tag or self._tag([_h(_original(msg), "return-path", "")])
        try:
            temporary, permanent = flufl.bounce.all_failures(msg)
        except Exception as err:  # a third-party parser on hostile input: whatever it raises, refuse
            return Verdict(Category.REFUSED, why=f"the bounce detectors failed on it: {type(err).__name__}")
        failed = {a.decode("ascii", "replace").lower(): FeedbackKind.HARD_BOUNCE for a in permanent}
        failed.update({a.decode("ascii", "replace").lower(): FeedbackKind.SOFT_BOUNCE for a in temporary})
        if blocks and all(b.action.startswith("delayed") for b in blocks):
            return Verdict(Category.IGNORED, why="delay warning (the mail system is still trying)")
        if blocks and not failed and not any(b.failed for b in blocks):
            return Verdict(Category.IGNORED, why="a delivery report that reports no failure")
        text = _text(msg)
        if heuristic and not failed:
            # no detector found a failure: only a mail system's message naming a failure status
            # about one of our messages is a bounce (a wrong bounce removes a reader for good)
            status = _STATUS.search(text)
            if tag is None or not _from_daemon(msg) or status is None or status[1] == "2":
                return None
        found: list[Feedback] = []
        if tag is not None:
            block = next((b for b in blocks if b.failed), blocks[0] if blocks else None)
            kind = next(iter(failed.values()), FeedbackKind.HARD_BOUNCE)
            found.append(self._bounce_feedback(kind, block, text, report_id, subscriber_id=tag.subscriber_id,
                                               tag=tag))
        else:
            failing = [b for b in blocks if b.failed]
            for address, kind in sorted(failed.items()):
                # the block naming the address; else the only failing one (flufl may read an odd address otherwise)
                block = next((b for b in blocks if address in b.recipients), failing[0] if len(failing) == 1 else None)
                found.append(self._bounce_feedback(kind, block, text, report_id, email=address))
        if not found:
            return Verdict(Category.HUMAN, why="a bounce that names no recipient")
        return Verdict(Category.BOUNCE, tuple(found))

    def _bounce_feedback(self, kind: FeedbackKind, block: _Block | None, text: str, report_id: str, *,
                         subscriber_id: int | None = None, email: str = "", tag: Tag | None = None) -> Feedback:
        status, diagnostic = (block.status, block.diagnostic) if block else ("", "")
        if not status:
            match = _STATUS.search(diagnostic) or _STATUS.search(text)
            status = match.group(0) if match else ""
            if match and not diagnostic:
                diagnostic = _line_at(text, match.start())
        if status[:1] == "5":
            kind = FeedbackKind.HARD_BOUNCE
        elif status[:1] == "4":
            kind = FeedbackKind.SOFT_BOUNCE
        who = tag.text if tag else email
        return Feedback(kind, DSN, email=email, subscriber_id=subscriber_id,
                        issue_day=tag.issue_day if tag else None, status=status, diagnostic=diagnostic,
                        dedupe_key=f"{report_id}|{who}")

    # ------------------------------------------------------------------ complaints

    def _complaint(self, msg: email.message.Message, report_id: str, tag: Tag | None) -> Verdict:
        report = _first_part(msg, "message/feedback-report")
        fields = _fields(report) if report is not None else email.message.Message()
        if _h(fields, "feedback-type", "abuse").strip().lower() == "not-spam":
            return Verdict(Category.IGNORED, why="a 'not spam' report")
        original = _original(msg)
        tag = tag or self._tag([_h(fields, "original-mail-from", ""), _h(original, "return-path", "")])
        subscriber_id = tag.subscriber_id if tag else self._token_id(_h(original, "list-unsubscribe", ""), _LINK_TOKEN)
        address = parseaddr(_h(fields, "original-rcpt-to", "") or _h(original, "to", ""))[1]
        if subscriber_id is None and not address:
            return Verdict(Category.HUMAN, why="a complaint that names no recipient")
        named = _h(original, "list-id")
        list_id = (parseaddr(named)[1] or named.strip()) if named else None
        who = tag.text if tag else (f"id:{subscriber_id}" if subscriber_id is not None else address.lower())
        return Verdict(Category.COMPLAINT, (Feedback(
            FeedbackKind.COMPLAINT, ARF, email=address, subscriber_id=subscriber_id,
            issue_day=tag.issue_day if tag else None, diagnostic=_h(fields, "user-agent", "").strip(),
            dedupe_key=f"{report_id}|{who}", list_id=list_id),))

    # ------------------------------------------------------------------ mailto unsubscribes

    def _unsubscribe(self, msg: email.message.Message, report_id: str) -> Verdict:
        if not self.mailto or self.mailto not in (a.lower() for a in _recipients(msg)):
            return Verdict(Category.HUMAN, why="not a bounce, complaint or unsubscribe request")
        subject = str(_h(msg, "subject", ""))
        subscriber_id = self._token_id(subject, _TOKEN)
        if subscriber_id is None:
            subscriber_id = self._token_id(_text(msg), _TOKEN)
        if subscriber_id is None:
            return Verdict(Category.HUMAN, why="an unsubscribe request without a valid token")
        return Verdict(Category.UNSUBSCRIBE, (Feedback(
            FeedbackKind.UNSUBSCRIBE, events.MAILTO, subscriber_id=subscriber_id,
            dedupe_key=f"{report_id}|mailto"),))


# ----------------------------------------------------------------------------- message helpers


@dataclass(frozen=True)
class _Block:
    """One recipient block of a delivery-status part."""

    recipients: frozenset[str]
    action: str
    status: str
    diagnostic: str

    @property
    def failed(self) -> bool:
        return self.action.startswith(("failed", "error"))


def _dsn_blocks(msg: email.message.Message) -> Iterator[_Block]:
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status" or not part.is_multipart():
            continue
        for block in part.get_payload():
            if not isinstance(block, email.message.Message):
                continue
            recipients = frozenset(
                value.split(";", 1)[-1].strip().strip("<>").lower()
                for value in (_h(block, "final-recipient", ""), _h(block, "original-recipient", ""))
                if value
            )
            if not recipients:
                continue  # the per-message block
            status = _STATUS.search(_h(block, "status", ""))
            diagnostic = " ".join(_h(block, "diagnostic-code", "").split())
            if diagnostic.lower().startswith(("smtp;", "x-postfix;", "x-unix;")):
                diagnostic = diagnostic.split(";", 1)[1].strip()
            yield _Block(recipients, _h(block, "action", "").strip().lower(),
                         status.group(0) if status else "", diagnostic)


def _h(msg: email.message.Message, name: str, default: str = "") -> str:
    """Return header NAME of MSG as text ('' if absent): compat32 gives a Header object for 8-bit values."""
    value = msg.get(name)
    return default if value is None else str(value)


def _line_at(text: str, position: int) -> str:
    """Return the line of TEXT around POSITION, stripped (a diagnostic found in a bounce's prose)."""
    end = text.find("\n", position)
    return text[text.rfind("\n", 0, position) + 1:end if end >= 0 else len(text)].strip()


def _recipients(msg: email.message.Message) -> list[str]:
    values = [str(v) for name in _RECIPIENT_HEADERS for v in msg.get_all(name, [])]
    return [address for _, address in getaddresses(values) if address]


def _from_daemon(msg: email.message.Message) -> bool:
    sender = parseaddr(str(_h(msg, "from", "")))[1].lower()
    return (sender.split("@")[0] in _DAEMONS or _h(msg, "return-path", "").strip() == "<>"
            or msg.get("x-failed-recipients") is not None)


def _auto_reply(msg: email.message.Message) -> bool:
    """Whether MSG is an automatic reply of a person's mailbox (RFC 3834 and the common non-standard marks)."""
    if _from_daemon(msg):
        return False
    if _h(msg, "auto-submitted", "no").strip().lower() != "no":
        return True
    if any(msg.get(name) is not None for name in ("x-autoreply", "x-autorespond", "x-autoresponse")):
        return True
    if _h(msg, "precedence", "").strip().lower() == "auto_reply":
        return True
    return bool(_AUTO_SUBJECT.match(str(_h(msg, "subject", ""))))


def _own_parts(msg: email.message.Message) -> Iterator[email.message.Message]:
    """Yield MSG's parts, without descending into attached messages (a bounce's copy of ours)."""
    yield msg
    if msg.is_multipart() and not msg.get_content_maintype() == "message":
        for part in msg.get_payload():
            if isinstance(part, email.message.Message):
                yield from _own_parts(part)


def _text(msg: email.message.Message) -> str:
    """Return the message's own text/plain parts (decoded, at most MAX_BODY_SCAN characters)."""
    texts = []
    for part in _own_parts(msg):
        if part.get_content_type() == "text/plain":
            texts.append(_decoded(part).decode(_charset(part), "replace"))
    return "\n".join(texts)[:MAX_BODY_SCAN]


def _first_part(msg: email.message.Message, content_type: str) -> email.message.Message | None:
    return next((p for p in msg.walk() if p.get_content_type() == content_type), None)


def _fields(part: email.message.Message) -> email.message.Message:
    """Return the fields of a message/feedback-report part as headers (parsed either way)."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], email.message.Message):
        return payload[0]
    return email.parser.BytesHeaderParser().parsebytes(_decoded(part))


def _original(msg: email.message.Message) -> email.message.Message:
    """Return the headers of the reported message (message/rfc822 or text/rfc822-headers), or none."""
    for part in msg.walk():
        payload = part.get_payload()
        if part.get_content_type() == "message/rfc822" and isinstance(payload, list) and payload:
            first = payload[0]
            return first if isinstance(first, email.message.Message) else email.message.Message()
        if part.get_content_type() == "text/rfc822-headers":
            return email.parser.BytesHeaderParser().parsebytes(_decoded(part))
    return email.message.Message()


def _decoded(part: email.message.Message) -> bytes:
    """Return the bytes of a leaf PART, its transfer encoding undone (b'' for anything else)."""
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _charset(part: email.message.Message) -> str:
    import codecs

    name = part.get_content_charset() or "utf-8"
    try:
        return codecs.lookup(name).name
    except LookupError:
        return "utf-8"  # an unknown charset name: read it as UTF-8, with replacement characters


__all__ = ["Category", "Reader", "Verdict"]
