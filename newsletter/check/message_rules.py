"""The rules of the sample message as sent (EMAIL.md 14-18, 20), read from its raw bytes."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator

from newsletter.addresses import ascii_domain
from newsletter.check.context import Context, raw_headers
from newsletter.headers import has_encoded_word
from newsletter.findings import Finding, error, warning
from newsletter.rules import MAX_LINE_OCTETS, Rule, https_only
from newsletter.settings import CONFIG_NAME


def wire(ctx: Context) -> Iterator[Finding]:
    """Rule 15: 7-bit, CRLF line ends, no line over 998 octets."""
    raw = ctx.raw or b""
    if not raw.isascii():
        yield error(Rule.SEVEN_BIT, "the message is not 7-bit clean: servers without 8BITMIME mangle it")
    rest = raw.replace(b"\r\n", b"")
    if b"\n" in rest or b"\r" in rest:
        yield error(Rule.LINE_ENDS, "the message has bare CR or LF line ends; SMTP needs CRLF")
    longest = max(len(line) for line in raw.split(b"\r\n"))
    if longest > MAX_LINE_OCTETS:
        yield error(Rule.LINE_LENGTH, f"a line of the message is {longest} octets; SMTP allows {MAX_LINE_OCTETS}")


def headers(ctx: Context) -> Iterator[Finding]:
    """Rule 16: the headers every issue has, the Message-ID on the From domain."""
    fields = _fields(ctx)
    for name in ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version"):
        if name.lower() not in fields:
            yield error(Rule.HEADERS, f"the message has no {name} header", CONFIG_NAME)
    msgid = fields.get("message-id", "")
    domain = _ascii_domain(ctx)
    if msgid and not msgid.rstrip().rstrip(">").lower().endswith("@" + domain):
        yield error(Rule.MESSAGE_ID, f"Message-ID {msgid.strip()} is not on the From domain {domain}", CONFIG_NAME)


def dkim_signature(ctx: Context) -> Iterator[Finding]:
    """Rule 20: a signature's d= is the From domain (DMARC alignment)."""
    domain = _ascii_domain(ctx)
    signature = _fields(ctx).get("dkim-signature", "")
    if signature:
        d = re.search(r"\bd=([^;\s]+)", signature)
        if not d or d[1].lower() != domain:
            yield error(Rule.DKIM, f"DKIM d={d[1] if d else '?'} is not the From domain {domain}", CONFIG_NAME)


def list_headers(ctx: Context) -> Iterator[Finding]:
    """Rule 18: one-click unsubscribe as a plain URL, List-Id, and no auto-replies."""
    fields = _fields(ctx)
    unsubscribe = fields.get("list-unsubscribe", "")
    if not unsubscribe:
        yield error(Rule.LIST_UNSUBSCRIBE, "no List-Unsubscribe header: Gmail and Yahoo require one-click "
                    "unsubscribe", CONFIG_NAME)
    elif has_encoded_word(unsubscribe) or not (unsubscribe.strip().startswith("<") and https_only(unsubscribe.strip()[1:])):
        yield error(Rule.LIST_UNSUBSCRIBE, "List-Unsubscribe is not a plain <https://…> URL: "
                    f"{unsubscribe.strip()[:80]!r}", CONFIG_NAME)
    if fields.get("list-unsubscribe-post", "").strip() != "List-Unsubscribe=One-Click":
        yield error(Rule.LIST_UNSUBSCRIBE, "no List-Unsubscribe-Post: List-Unsubscribe=One-Click header (RFC 8058)",
                    CONFIG_NAME)
    if not re.search(r"<[^<>@\s]+\.[^<>@\s]+>", fields.get("list-id", "")):
        yield error(Rule.LIST_ID, "no List-Id header of the form Name <list.example.org> (RFC 2919)", CONFIG_NAME)
    for name, value in (("precedence", "bulk"), ("auto-submitted", "auto-generated")):
        if fields.get(name, "").strip().lower() != value:
            yield warning(Rule.AUTO_REPLY, f"no {name.title()}: {value} header: auto-responders may answer the issue",
                          CONFIG_NAME)


def mime(ctx: Context) -> Iterator[Finding]:
    """Rules 14, 15: multipart/alternative, text then HTML, both UTF-8 and quoted-printable."""
    message = email.message_from_bytes(ctx.raw or b"", policy=email.policy.default)
    if message.get_content_type() != "multipart/alternative":
        yield error(Rule.MIME_PARTS, f"the message is {message.get_content_type()}, not multipart/alternative")
        return
    parts = list(message.iter_parts())
    kinds = [p.get_content_type() for p in parts]
    if kinds[:1] != ["text/plain"] or kinds[-1:] != ["text/html"]:
        yield error(Rule.MIME_PARTS, f"the parts are {', '.join(kinds)}: text/plain must come first and text/html last")
    for part in parts:
        if (part.get_content_charset() or "").lower() != "utf-8":
            yield error(Rule.MIME_PARTS, f"the {part.get_content_type()} part is not UTF-8")
        if part.get("Content-Transfer-Encoding", "").lower() not in ("quoted-printable", "base64", "7bit"):
            yield error(Rule.TRANSFER_ENCODING, f"the {part.get_content_type()} part is sent as "
                        f"{part.get('Content-Transfer-Encoding')}, not quoted-printable")


def _fields(ctx: Context) -> dict[str, str]:
    raw = ctx.raw or b""
    return raw_headers(raw[: raw.find(b"\r\n\r\n") + 2].decode("ascii", "replace"))


def _ascii_domain(ctx: Context) -> str:
    return ascii_domain(ctx.settings.sender_domain)


RULES = (wire, headers, list_headers, dkim_signature, mime)
