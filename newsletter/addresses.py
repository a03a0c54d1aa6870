"""Email addresses: one validation for the whole tool (email-validator, EMAIL.md rule 22), fast for
the common shape.

email-validator costs 50-200 us an address, most of it judging the domain; a list has few
distinct domains. A plain ASCII dot-atom local part is one email-validator takes exactly as it
is (but for RFC 2142's role names, which it lowercases), so such an address is its local part plus the domain as email-validator normalizes it, and
each domain is judged once. Anything else gets email-validator's full judgement (and its
error, which names what is wrong). A Hypothesis test holds the two ways equal.
"""

from __future__ import annotations

import functools
import re

import idna
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

from newsletter.errors import HeaderError

__all__ = ["EmailNotValidError", "ascii_address", "ascii_domain", "ascii_mailbox", "normalize"]

_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9_+-]{1,64}(?:\.[A-Za-z0-9_+-]{1,64})*")
_MAX_ADDRESS = 254
# RFC 2142 role mailboxes (postmaster, abuse, www, ...) email-validator lowercases: the slow path.
_ROLE_NAMES = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)


def normalize(address: str) -> tuple[str, str | None]:
    """Return ADDRESS normalized and in ASCII form (None when its local part needs SMTPUTF8).

    Raises EmailNotValidError saying what is wrong. `+tags` and dots are kept.
    """
    local, at, domain = address.rpartition("@")
    if at and len(local) <= 64 and _PLAIN_LOCAL.fullmatch(local) and local.lower() not in _ROLE_NAMES:
        try:
            unicode_domain, ascii_domain = _domain(domain)
        except EmailNotValidError:
            pass  # judge the whole address, for an error that names it
        else:
            normalized, ascii_form = f"{local}@{unicode_domain}", f"{local}@{ascii_domain}"
            if max(len(normalized), len(ascii_form)) <= _MAX_ADDRESS:
                return normalized, ascii_form
    result = validate_email(address, check_deliverability=False, strict=True)
    return result.normalized, result.ascii_email


@functools.lru_cache(maxsize=65536)
def _domain(domain: str) -> tuple[str, str]:
    result = validate_email("postmaster@" + domain, check_deliverability=False, strict=True)
    return result.domain, result.ascii_domain


def ascii_domain(domain: str) -> str:
    """Return DOMAIN as it goes on the wire: as it is when ASCII, else its IDNA 2008 form.

    The one conversion for every domain the tool writes (Message-ID, From, DKIM d=, mailto): UTS 46
    mapping, non-transitional, so `straße.de` is `xn--strae-oqa.de` as email-validator writes the
    subscriber's own address, never IDNA 2003's `strasse.de` (Python's "idna" codec).
    """
    if domain.isascii():
        return domain
    try:
        mapped = idna.uts46_remap(domain, std3_rules=False, transitional=False)
        return ".".join(idna.alabel(label).decode("ascii") for label in mapped.split("."))
    except (idna.IDNAError, UnicodeError, ValueError) as err:
        raise HeaderError(f"{domain!r}: not a valid domain name: {err}") from err


@functools.lru_cache(maxsize=1024)  # a send asks twice for each message: for its To header and for RCPT
def ascii_address(email: str) -> str:
    """Return the ASCII form of EMAIL (IDNA domain); HeaderError if it needs SMTPUTF8 or is invalid."""
    try:
        _, ascii_form = normalize(email)
    except EmailNotValidError as err:
        raise HeaderError(f"{email!r}: not a valid address: {err}") from err
    if ascii_form is None:
        raise HeaderError(
            f"{email!r}: the part before @ is not ASCII; delivering to it needs SMTPUTF8, "
            "which this sender does not use"
        )
    return ascii_form


def ascii_mailbox(value: str) -> str:
    """Return VALUE (`Name <local@domain>` or a bare address) with the address's domain in ASCII.

    Only a non-ASCII domain is rewritten, so a setting that is ASCII already stays byte for byte.
    """
    at = value.rfind("@")
    if at < 0:
        return value
    end = value.find(">", at)
    end = len(value) if end < 0 else end
    domain = value[at + 1:end].strip()
    if domain.isascii():
        return value
    start = max(value.rfind("<", 0, at), value.rfind(" ", 0, at)) + 1
    if not value[start:at].isascii():
        raise HeaderError(f"{value!r}: the part before @ is not ASCII; sending from it needs SMTPUTF8, "
                          "which this sender does not use")
    return value[:at + 1] + ascii_domain(domain.lower()) + value[end:]
