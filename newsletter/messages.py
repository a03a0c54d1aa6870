"""Per-subscriber message bytes: a reference built with EmailMessage, and a fast path that splices.

`build_reference` is the oracle: one `EmailMessage` per subscriber, as the email package writes it.
`MessageTemplate` builds that same message once per issue with sentinels where personal values go,
serializes it, and cuts the bytes at the sentinels. Per subscriber it encodes only the To line,
the Message-ID line, the token and the few body lines that hold a placeholder, and joins.
Quoted-printable is line-local (each source line encodes on its own), so a body line holding a
placeholder is re-encoded alone with the same encoder the email package uses, and the bytes come
out identical to the reference. tests/test_messages.py holds the two paths against each other.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import html
import logging
import re
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from datetime import date, datetime
from email import policy as email_policy
from email import quoprimime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path


from newsletter import i18n
from newsletter.ahead import WINDOW, Ahead
from newsletter.addresses import ascii_address, ascii_domain, ascii_mailbox
from newsletter.dkim import DKIM_SIGNED_HEADERS, DkimSigner, dkim_signer, sign
from newsletter.errors import BuildError, SettingsError
from newsletter.headers import FORBIDDEN_CHARS, check_header_value, has_encoded_word, mailbox, quoted_string
from newsletter.models import (
    GREETING_PLACEHOLDER,
    NAME_PLACEHOLDER,
    PLACEHOLDERS,
    PREFERENCES_PLACEHOLDER,
    TOKEN_PLACEHOLDER,
    RenderedIssue,
    Subscriber,
)
from newsletter.rules import MAX_LINE_OCTETS as _MAX_LINE
from newsletter.verp import Verp
from newsletter.rules import Rule, https_only
from newsletter.settings import CONFIG_NAME, Settings
from newsletter.signing import preferencer, preferences_token, unsubscribe_token, unsubscriber, verify_token

logger = logging.getLogger(__name__)

# Parts are built with 76-octet quoted-printable lines (RFC 2045). The whole message is written
# with headers unfolded up to 998 octets: at 78, Python folds a long List-Unsubscribe into
# RFC 2047 encoded words that mail providers do not read as a URL (EMAIL.md rule 18).
_BUILD_POLICY = email_policy.SMTP.clone(max_line_length=76)
WIRE_POLICY = email_policy.SMTP.clone(max_line_length=_MAX_LINE)
_QP_LINE_LENGTH = 76
# A line of these characters, not ending in a space, comes out of quoted-printable unchanged.
_QP_LITERAL = re.compile(r"(?:[\x20-\x3c\x3e-\x7e]*[\x21-\x3c\x3e-\x7e])?")

_PLACEHOLDER_RE = re.compile("|".join(map(re.escape, PLACEHOLDERS)))
_PLACEHOLDER_SPLIT = re.compile(f"({_PLACEHOLDER_RE.pattern})")

# Sentinels of the template. Each is ASCII letters and digits, short, on a line of its own or
# inside a one-line header, so neither quoted-printable nor folding can split it.
_TO_SENTINEL = "NLXRECIPIENTX@nlx.invalid"
_MSGID_SENTINEL = "<NLXMESSAGEIDX@nlx.invalid>"
_LINE_SENTINEL = "NLXSLOT"
_SLOT_RE = re.compile(
    rb"To: NLXRECIPIENTX@nlx\.invalid\r\n"
    rb"|Message-ID: <NLXMESSAGEIDX@nlx\.invalid>\r\n"
    rb"|NLXUNSUBSCRIBETOKENX"
    rb"|NLXSLOT([0-9]+)X\r\n"
)
_LEFTOVERS = (b"NLXRECIPIENTX", b"NLXMESSAGEIDX", b"NLXSLOT", *(p.encode() for p in PLACEHOLDERS))



# --- ids ---------------------------------------------------------------------------------------

class _MessageIds:
    """Message-IDs of one issue: `<YYYYMMDD.{id}.{hash}@domain>`, the same for the same subscriber."""

    def __init__(self, day: date, domain: str) -> None:
        domain = domain.strip().lower()
        self._domain = ascii_domain(domain)
        self._day = f"{day:%Y%m%d}"
        self._seed = hashlib.sha256(f"{day.isoformat()}\0{self._domain}\0".encode("ascii"))

    def __call__(self, subscriber_id: int) -> str:
        state = self._seed.copy()
        state.update(str(subscriber_id).encode("ascii"))
        return f"<{self._day}.{subscriber_id}.{state.hexdigest()[:12]}@{self._domain}>"


def message_id(day: date, subscriber_id: int, domain: str) -> str:
    """Return the Message-ID of one issue for one subscriber; the same on every call."""
    return _MessageIds(day, domain)(subscriber_id)


def message_ids(day: date, domain: str) -> Callable[[int], str]:
    """Return `message_id` for DAY's issue as a function of the subscriber id (the per-issue work done once)."""
    return _MessageIds(day, domain)


def _subscriber_id(subscriber: Subscriber) -> int:
    return subscriber.id


# --- input checks --------------------------------------------------------------------------------

def _subscriber_name(subscriber: Subscriber) -> str:
    return check_header_value(f"subscriber {subscriber.id} name", subscriber.name or "").strip()


# --- personal values: the one place where greeting and name are made and escaped -----------------

def _greeting(name: str, settings: Settings) -> str:
    greeting, fallback = greetings(settings)
    return greeting.format(name=name) if name else fallback


def greetings(settings: Settings) -> tuple[str, str]:
    """Return the greeting template and the fallback: the settings', or the catalog's when they are empty."""
    global _last_greetings
    last = _last_greetings  # made for every message: the same Settings object asks again and again
    if last[0] is settings:
        return last[1]
    issue = settings.issue
    found = _greetings(issue.greeting, issue.greeting_fallback, settings.newsletter.language, settings.root)
    _last_greetings = (settings, found)
    return found


_last_greetings: tuple[object, tuple[str, str]] = (None, ("", ""))


@functools.lru_cache(maxsize=16)
def _greetings(greeting: str, fallback: str, language: str, root: Path) -> tuple[str, str]:
    # cached: the greeting is made for every message, and looking up the catalogs stats their files
    _ = i18n.load(language, root).translations.gettext
    return greeting or _("Good morning, {name}."), fallback or _("Good morning.")


def _personal_values(name: str, token: str, settings: Settings,
                     preferences: str = "") -> tuple[dict[str, str], dict[str, str]]:
    """Return the placeholder values for the text part and for the HTML part (escaped).

    TOKEN opens the unsubscribe link, PREFERENCES the preferences page (both are ASCII).
    """
    greeting = _greeting(name, settings)
    text = {GREETING_PLACEHOLDER: greeting, NAME_PLACEHOLDER: name, TOKEN_PLACEHOLDER: token,
            PREFERENCES_PLACEHOLDER: preferences}
    markup = {
        GREETING_PLACEHOLDER: html.escape(greeting),
        NAME_PLACEHOLDER: html.escape(name),
        TOKEN_PLACEHOLDER: token,
        PREFERENCES_PLACEHOLDER: preferences,
    }
    return text, markup


def _tokens(key: bytes, subscriber: Subscriber, settings: Settings) -> tuple[str, str]:
    """Return SUBSCRIBER's unsubscribe and preferences tokens."""
    list_id = settings.sender.list_id
    return unsubscribe_token(key, subscriber.id, list_id), preferences_token(key, subscriber.id, list_id)


def _line_format(line: str) -> tuple[str, tuple[str, ...]]:
    """Return LINE as a str.format pattern and the placeholders its fields take, in order: what `_fill`
    does, with the placeholders found once per issue instead of once per message."""
    parts = _PLACEHOLDER_SPLIT.split(line)  # static, placeholder, static, ...
    pattern = "".join("{}" if i % 2 else part.replace("{", "{{").replace("}", "}}") for i, part in enumerate(parts))
    return pattern, tuple(parts[1::2])


def _fill(template: str, values: dict[str, str]) -> str:
    # One pass, so a name that happens to spell a placeholder is not replaced again.
    return _PLACEHOLDER_RE.sub(lambda m: values[m[0]], template)


def personal_html(rendered: RenderedIssue, subscriber: Subscriber, settings: Settings, key: bytes) -> str:
    """Return the HTML one subscriber receives (for the preview)."""
    token, preferences = _tokens(key, subscriber, settings)
    _, markup = _personal_values(_subscriber_name(subscriber), token, settings, preferences)
    return _fill(rendered.html, markup)


def personal_text(rendered: RenderedIssue, subscriber: Subscriber, settings: Settings, key: bytes) -> str:
    """Return the text part one subscriber receives (for the preview)."""
    token, preferences = _tokens(key, subscriber, settings)
    plain, _ = _personal_values(_subscriber_name(subscriber), token, settings, preferences)
    return _fill(rendered.text, plain)


def public_html(rendered: RenderedIssue, settings: Settings) -> str:
    """Return the HTML for the archive: the fallback greeting and no one's token."""
    return _fill(_public_unsubscribe(rendered.html, settings), _personal_values("", "", settings)[1])


def public_text(rendered: RenderedIssue, settings: Settings) -> str:
    """Return the text part for the archive: the fallback greeting and no one's token."""
    return _fill(_public_unsubscribe(rendered.text, settings), _personal_values("", "", settings)[0])


def _public_unsubscribe(page: str, settings: Settings) -> str:
    # nobody's token: the public copy's unsubscribe and preferences links go to the site's page
    # that says where each reader's own links are
    base = settings.newsletter.base_url.rstrip("/")
    return (page.replace(f"{base}/u/{TOKEN_PLACEHOLDER}", f"{base}/unsubscribe/")
            .replace(f"{base}/p/{PREFERENCES_PLACEHOLDER}", f"{base}/unsubscribe/"))


# --- the message ---------------------------------------------------------------------------------

def _check_settings(rendered: RenderedIssue, settings: Settings) -> None:
    day = rendered.issue.day
    check_header_value(f"issue {day} subject", rendered.issue.subject)
    if not settings.sender.from_address.strip():
        raise SettingsError(
            f"{settings.root / CONFIG_NAME}: sender.from is not set; write the address mail comes from, "
            "such as from = \"Name <list@example.org>\" under [sender]"
        )
    check_header_value("sender.from", settings.sender.from_address)
    check_header_value("sender.reply_to", settings.sender.reply_to)
    check_header_value("sender.list_id", settings.sender.list_id)
    check_header_value("sender.unsubscribe_mailto", settings.sender.unsubscribe_mailto)
    check_header_value("newsletter.name", settings.newsletter.name)
    check_header_value("newsletter.base_url", settings.newsletter.base_url)
    greeting, fallback = greetings(settings)
    for field, template in (("issue.greeting", greeting), ("issue.greeting_fallback", fallback)):
        if FORBIDDEN_CHARS.search(template):
            raise BuildError.about(Rule.MESSAGE, f"{field} {template!r}: contains a control character or line break")
    try:
        greeting.format(name="Ada")
    except (KeyError, IndexError, ValueError, AttributeError) as err:
        raise BuildError.about(
            Rule.MESSAGE, f"issue.greeting {greeting!r}: not a template with only {{name}} in it ({err!r})"
        ) from err
    for part, body in (("HTML", rendered.html), ("text", rendered.text)):
        if TOKEN_PLACEHOLDER not in body:
            raise BuildError.about(
                Rule.UNSUBSCRIBE_LINK, f"issue {day}: the {part} part has no unsubscribe link (no {TOKEN_PLACEHOLDER})")
        if _LINE_SENTINEL in body:
            raise BuildError.about(Rule.MESSAGE, f"issue {day}: the {part} part contains the reserved word {_LINE_SENTINEL}")


def _list_id(settings: Settings) -> str:
    name = settings.newsletter.name
    if name.isascii() and re.search(r'[()<>@,;:\\".\[\]]', name):
        name = quoted_string(name)
    return f"{name} <{settings.sender.list_id}>"


def _list_unsubscribe(settings: Settings, token: str) -> str:
    base = settings.newsletter.base_url.rstrip("/")
    links = [f"<{base}/u/{token}>"]
    if settings.sender.unsubscribe_mailto:
        links.append(f"<mailto:{ascii_mailbox(settings.sender.unsubscribe_mailto)}?subject=unsubscribe-{token}>")
    return ", ".join(links)


def _boundary(rendered: RenderedIssue) -> str:
    # "=_" never occurs in quoted-printable text, so this boundary is safe whatever the parts hold;
    # fixed per issue so a message written twice is the same bytes.
    digest = hashlib.sha256((rendered.text + "\0" + rendered.html).encode("utf-8", "surrogatepass"))
    return "=_nl." + digest.hexdigest()[:24]


def _compose(
    rendered: RenderedIssue, settings: Settings, date_header: datetime,
    *, to: str, msgid: str, token: str, text: str, markup: str,
) -> bytes:
    """Return the serialized message; both paths go through here."""
    if date_header.tzinfo is None or date_header.utcoffset() is None:
        raise BuildError.about(Rule.HEADERS, f"issue {rendered.issue.day}: the Date {date_header.isoformat()} has no time zone")
    msg = EmailMessage(policy=_BUILD_POLICY)
    msg["From"] = ascii_mailbox(settings.sender.from_address)
    msg.set_raw("To", to)  # already encoded and folded: see headers.mailbox
    msg["Subject"] = rendered.issue.subject
    msg["Date"] = format_datetime(date_header)
    msg["Message-ID"] = msgid
    if settings.sender.reply_to:
        msg["Reply-To"] = ascii_mailbox(settings.sender.reply_to)
    msg["MIME-Version"] = "1.0"
    msg["List-Id"] = _list_id(settings)
    msg["List-Unsubscribe"] = _list_unsubscribe(settings, token)
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["Precedence"] = "bulk"
    msg["Auto-Submitted"] = "auto-generated"
    try:
        msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
        msg.add_alternative(markup, subtype="html", charset="utf-8", cte="quoted-printable")
    except UnicodeEncodeError as err:
        raise BuildError.about(Rule.MIME_PARTS, f"issue {rendered.issue.day}: the text cannot be encoded as UTF-8: {err}") from err
    for part in msg.iter_parts():
        del part["MIME-Version"]  # add_alternative puts one on the part; it belongs on the top only
    msg.set_boundary(_boundary(rendered))
    raw = msg.as_bytes(policy=WIRE_POLICY)
    _check_list_unsubscribe(rendered, raw)
    return raw


def _check_list_unsubscribe(rendered: RenderedIssue, raw: bytes) -> None:
    head = raw[: raw.find(b"\r\n\r\n") + 2]
    match = re.search(rb"^List-Unsubscribe: (.*)\r\n(?![ \t])", head, re.MULTILINE)
    first = match[1].decode("ascii", "replace") if match else ""
    if match is None or has_encoded_word(match[0]) or not (first.startswith("<") and https_only(first[1:])):
        raise BuildError.about(
            Rule.LIST_UNSUBSCRIBE, f"issue {rendered.issue.day}: List-Unsubscribe would not be written as plain URLs "
            "(newsletter.base_url or sender.unsubscribe_mailto too long or not ASCII)"
        )


def build_reference(
    rendered: RenderedIssue, subscriber: Subscriber, settings: Settings, key: bytes,
    date_header: datetime, *, signer: Callable[[bytes], bytes] = sign,
) -> bytes:
    """Return one subscriber's message built with EmailMessage: slow, and the oracle of the fast path."""
    _check_settings(rendered, settings)
    name = _subscriber_name(subscriber)
    address = ascii_address(subscriber.email)
    token, preferences = _tokens(key, subscriber, settings)
    text_values, html_values = _personal_values(name, token, settings, preferences)
    raw = _compose(
        rendered, settings, date_header,
        to=mailbox(name, address),
        msgid=message_id(rendered.issue.day, subscriber.id, settings.sender_domain),
        token=token,
        text=_fill(rendered.text, text_values),
        markup=_fill(rendered.html, html_values),
    )
    return signer(raw)


# --- the fast path -------------------------------------------------------------------------------

def _qp_line(line: str) -> bytes:
    """Encode one body line as the email package does inside a whole body, CRLF included."""
    if _QP_LITERAL.fullmatch(line):
        if len(line) <= _QP_LINE_LENGTH:
            return line.encode("ascii") + b"\r\n"  # what body_encode gives such a line: itself
        # nothing to escape (a link with a token, mostly): body_encode's soft breaks every 75 characters
        width = _QP_LINE_LENGTH - 1
        pieces = [line[start:start + width] for start in range(0, len(line) - _QP_LINE_LENGTH, width)]
        return ("=\r\n".join(pieces + [line[len(pieces) * width:]]) + "\r\n").encode("ascii")
    if line.replace("\t", " ").isprintable() and line[:1] != "." and line[-1:] not in (" ", "\t"):
        # a short line with a name to escape: binascii's encoder (C) writes it as the email package does
        # when it fits on one line (a leading "." or a trailing blank it writes otherwise)
        short = binascii.b2a_qp(line.encode("utf-8"), istext=True)
        if b"\n" not in short:
            return short + b"\r\n"
    encoded = quoprimime.body_encode(line.encode("utf-8").decode("latin-1") + "\n", _QP_LINE_LENGTH)
    return encoded.replace("\n", "\r\n").encode("ascii")


def _split_lines(body: str, start: int) -> tuple[str, list[str]]:
    """Return BODY with each line holding a placeholder replaced by a numbered sentinel, and those lines."""
    kept: list[str] = []
    personal: list[str] = []
    # Split as the email package does before encoding: bytes.splitlines (CR, LF, CRLF only).
    for line in body.encode("utf-8", "surrogatepass").splitlines():
        text = line.decode("utf-8", "surrogatepass")
        if _PLACEHOLDER_RE.search(text):
            kept.append(f"{_LINE_SENTINEL}{start + len(personal)}X")
            personal.append(text)
        else:
            kept.append(text)
    return "\n".join(kept), personal


class MessageTemplate:
    """One issue's message, pre-encoded, with slots where each subscriber's values go."""

    def __init__(
        self, day: date, settings: Settings, key: bytes, segments: tuple[bytes, ...],
        slots: tuple[tuple[str, int], ...], lines: tuple[str, ...], signer: Callable[[bytes], bytes] = sign,
    ) -> None:
        self.day = day
        self.settings = settings
        self.key = key
        self.segments = segments  # static bytes, one more than the slots
        self.slots = slots        # ("to"|"msgid"|"token", 0) or ("text"|"html", index into lines)
        self.lines = lines        # the source body lines that hold placeholders
        self.signer = signer
        prepare = getattr(signer, "prepare", None)  # a DkimSigner hashes the shared body once, here
        self._dkim = prepare(segments) if prepare is not None else None
        self._tokens = unsubscriber(key, settings.sender.list_id)
        # a project's own templates may have no preferences link: then no token is made for it
        self._preferences = (preferencer(key, settings.sender.list_id)
                             if any(PREFERENCES_PLACEHOLDER in line for line in lines) else None)
        self._message_ids = _MessageIds(day, settings.sender_domain)
        self._fills = tuple(_line_format(line) for line in lines)  # each personal line, ready for str.format
        bounce = settings.sender.bounce_address
        self._verp = Verp(key, settings.sender.list_id, bounce) if bounce else None

    def __repr__(self) -> str:  # not the segments (100+ KB) nor the key (secret)
        return f"MessageTemplate(day={self.day}, {len(self.slots)} slots, {sum(map(len, self.segments))} bytes)"

    @classmethod
    def build(
        cls, rendered: RenderedIssue, settings: Settings, key: bytes, date_header: datetime,
        *, signer: Callable[[bytes], bytes] = sign,
    ) -> MessageTemplate:
        """Build the issue's message once with sentinels and cut it into static segments."""
        day = rendered.issue.day
        _check_settings(rendered, settings)
        unsubscribe_token(key, 0, settings.sender.list_id)  # refuses an empty key now, not per subscriber
        text, text_lines = _split_lines(rendered.text, 0)
        markup, html_lines = _split_lines(rendered.html, len(text_lines))
        raw = _compose(
            rendered, settings, date_header,
            to=_TO_SENTINEL, msgid=_MSGID_SENTINEL, token=TOKEN_PLACEHOLDER,
            text=text, markup=markup,
        )
        segments, slots, seen = [], [], []
        last = 0
        for match in _SLOT_RE.finditer(raw):
            segments.append(raw[last:match.start()])
            last = match.end()
            found = match[0]
            if found.startswith(b"To: "):
                slots.append(("to", 0))
            elif found.startswith(b"Message-ID: "):
                slots.append(("msgid", 0))
            elif found == TOKEN_PLACEHOLDER.encode():
                slots.append(("token", 0))
            else:
                index = int(match[1])
                slots.append(("text" if index < len(text_lines) else "html", index))
                seen.append(index)
        segments.append(raw[last:])

        expected_tokens = 2 if settings.sender.unsubscribe_mailto else 1
        problems = []
        if slots.count(("to", 0)) != 1 or slots.count(("msgid", 0)) != 1:
            problems.append("the To or Message-ID sentinel is not there exactly once")
        if slots.count(("token", 0)) != expected_tokens:
            problems.append(f"the token sentinel is in the headers {slots.count(('token', 0))} times, "
                            f"not {expected_tokens}")
        if sorted(seen) != list(range(len(text_lines) + len(html_lines))):
            problems.append("a personal body line was split or lost by the encoder")
        static = b"".join(segments)
        if leftover := [s.decode() for s in _LEFTOVERS if s in static]:
            problems.append(f"{', '.join(leftover)} left outside the slots (a placeholder in a header?)")
        if not raw.isascii():
            problems.append("the message is not 7-bit")
        if any(len(line) > _MAX_LINE for line in raw.split(b"\r\n")):
            problems.append(f"a line is longer than {_MAX_LINE} octets")
        if problems:
            raise BuildError.about(Rule.MESSAGE, f"issue {day}: cannot make the message template: " + "; ".join(problems))

        logger.debug("issue %s: template of %d bytes, %d personal lines", day, len(raw), len(seen))
        return cls(
            day=day, settings=settings, key=key, segments=tuple(segments), slots=tuple(slots),
            lines=tuple(text_lines + html_lines), signer=signer,
        )

    def made_ahead(self, subscribers: Sequence[Subscriber], pool: Executor | None,
                   window: int = WINDOW) -> Callable[[Subscriber], bytes]:
        """Return `personalize_file` for SUBSCRIBERS asked for in their order, made ahead in POOL (ahead.Ahead,
        WINDOW chunks at a time).

        Signing is most of a signed message's cost and OpenSSL and hashlib release the GIL, so
        signing ahead in POOL's threads overlaps it with the caller's writing. Without a POOL or a
        DKIM key this is `personalize_file` itself. An error is raised when its subscriber is asked for.
        """
        if pool is None or self._dkim is None:
            return self.personalize_file
        return Ahead(self.personalize_file, subscribers, pool, key=_subscriber_id, window=window)

    def envelope_sender(self, subscriber: Subscriber) -> str | None:
        """Return SUBSCRIBER's envelope sender under [sender] bounce_address (VERP), or None: the From address."""
        return self._verp.address(self.day, subscriber.id) if self._verp is not None else None

    def personalize_file(self, subscriber: Subscriber) -> bytes:
        """Return SUBSCRIBER's message as an outbox file: with VERP, its Return-Path line first.

        A Return-Path is what the receiving end adds on delivery, so it is in the file (which stands
        for a delivered message) and never on the wire; DKIM does not sign it.
        """
        if self._verp is None:
            return self._make(subscriber)
        return self._make(subscriber, b"Return-Path: <" + self._verp.address(self.day, subscriber.id).encode("ascii")
                          + b">\r\n")

    @property
    def signs_spliced(self) -> bool:
        """Whether `signature` signs this template's messages from their values (a DKIM key is set)."""
        return self._dkim is not None

    def signature(self, values: list[bytes]) -> bytes:
        """Return the DKIM-Signature headers of the message VALUES (one per slot) make; b"" if unsigned."""
        return self._dkim.signature(values) if self._dkim is not None else b""

    def values(self, subscriber: Subscriber) -> list[bytes]:
        """Return SUBSCRIBER's bytes for each slot, in order."""
        name = _subscriber_name(subscriber)
        address = ascii_address(subscriber.email)
        token = self._tokens.sign(subscriber.id)
        preferences = self._preferences.sign(subscriber.id) if self._preferences is not None else ""
        text_values, html_values = _personal_values(name, token, self.settings, preferences)
        token_bytes = token.encode("ascii")
        out = []
        for kind, index in self.slots:
            if kind == "token":
                out.append(token_bytes)
            elif kind == "text" or kind == "html":
                pattern, keys = self._fills[index]
                filling = text_values if kind == "text" else html_values
                out.append(_qp_line(pattern.format(*[filling[key] for key in keys])))
            elif kind == "to":
                out.append(b"To: " + mailbox(name, address).encode("ascii") + b"\r\n")
            else:
                out.append(b"Message-ID: " + self._message_ids(subscriber.id).encode("ascii") + b"\r\n")
        return out

    def personalize(self, subscriber: Subscriber) -> bytes:
        """Return SUBSCRIBER's message: the reference's bytes, spliced instead of rebuilt, then signed."""
        return self._make(subscriber)

    def _make(self, subscriber: Subscriber, front: bytes = b"") -> bytes:
        """Return FRONT (header lines nobody signs), then SUBSCRIBER's signed message, joined once."""
        values = self.values(subscriber)
        segments = self.segments
        out = [front, segments[0]]
        for value, segment in zip(values, segments[1:]):
            out.append(value)
            out.append(segment)
        if self._dkim is not None:
            out[0] = front + self._dkim.signature(values)  # a 170 KB message is copied once, not twice
        elif self.signer is not sign:  # a signer that needs the whole message (the reference)
            return front + self.signer(b"".join(out))
        return b"".join(out)


__all__ = [
    "DKIM_SIGNED_HEADERS", "DkimSigner", "MessageTemplate", "WIRE_POLICY", "ascii_address", "build_reference",
    "check_header_value", "dkim_signer",
    "message_id", "message_ids", "personal_html", "public_html", "sign", "unsubscribe_token", "verify_token",
]
