"""What may go into a mail header: one line of plain text, never an RFC 2047 encoded word.

Shared by the settings (checked when they load) and the messages (checked again when built).
Python 3.11.7's email package lets a newline in an address through (CVE-2024-6923), so nothing
that reaches a header is left to it.
"""

from __future__ import annotations

import re

from newsletter.errors import HeaderError

# C0 and C1 controls, DEL, the Unicode line and paragraph separators, lone surrogates.
FORBIDDEN_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
ENCODED_WORD = re.compile(r"=\?.*\?=", re.DOTALL)


def clip(value: str) -> str:
    """Return VALUE's repr, shortened for an error message."""
    return repr(value if len(value) <= 60 else value[:57] + "...")


def check_header_value(field: str, value: str) -> str:
    """Return VALUE if it is safe in a header; raise HeaderError naming FIELD if it is not."""
    if not isinstance(value, str):
        raise HeaderError(f"{field}: expected text, not {type(value).__name__}")
    if found := FORBIDDEN_CHARS.search(value):
        raise HeaderError(
            f"{field}: contains the control character U+{ord(found[0]):04X} ({clip(value)}); "
            "a header value must be one line of plain text"
        )
    if ENCODED_WORD.search(value):
        raise HeaderError(
            f"{field}: looks like an RFC 2047 encoded word ({clip(value)}); "
            "write the text itself, not an encoding of it"
        )
    return value
