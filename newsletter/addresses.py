"""Email addresses: one validation for the whole tool (email-validator, EMAIL.md rule 22), fast for
the common shape.

email-validator costs 50-200 us an address, most of it judging the domain; a list has few
distinct domains. A plain ASCII dot-atom local part is one email-validator takes exactly as it
is, so such an address is its local part plus the domain as email-validator normalizes it, and
each domain is judged once. Anything else gets email-validator's full judgement (and its
error, which names what is wrong). A Hypothesis test holds the two ways equal.
"""

from __future__ import annotations

import functools
import re

from email_validator import EmailNotValidError, validate_email

__all__ = ["EmailNotValidError", "normalize"]

_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9_+-]{1,64}(?:\.[A-Za-z0-9_+-]{1,64})*")
_MAX_ADDRESS = 254


def normalize(address: str) -> tuple[str, str | None]:
    """Return ADDRESS normalized and in ASCII form (None when its local part needs SMTPUTF8).

    Raises EmailNotValidError saying what is wrong. `+tags` and dots are kept.
    """
    local, at, domain = address.rpartition("@")
    if at and len(local) <= 64 and _PLAIN_LOCAL.fullmatch(local):
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
