"""Header input and display names: what may go into a mail header, and how a name is written there.

Every value that becomes (part of) a header goes through `header_problem` first: a subscriber's
name, an article title, the subject, the `[sender]` settings (when they load, and again when a
message is built). It refuses control characters and
line breaks (Python 3.11.7's email package writes a newline inside a header value as it is,
CVE-2024-6923, so a name could add a header of its own) and RFC 2047 encoded words (a reader
would show the decoded text, which may be anything, EMAIL.md rule 21). Writing a name into To is
`mailbox`: on Python 3.11 the email package's folder puts an encoded word right next to plain
text (`=?utf-8?q?=3A_=C2=A0?=0` for ": \\xa00"), which RFC 2047 readers do not decode.
"""

from __future__ import annotations

import base64
import re
from typing import NamedTuple

from newsletter.errors import HeaderError
from newsletter.rules import MAX_LINE_OCTETS

# C0 and C1 controls, DEL, the Unicode line and paragraph separators, lone surrogates.
FORBIDDEN_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
ENCODED_WORD = re.compile(r"=\?.*\?=", re.DOTALL)
# A name of plain words goes into To as it is.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9'-]+(?: [A-Za-z0-9'-]+)*")


class HeaderProblem(NamedTuple):
    """What makes a value unfit for a header, and what to do instead."""

    what: str  # "contains the control character U+000A", said of the value
    hint: str


def has_encoded_word(text: str | bytes) -> bool:
    """Return whether TEXT holds something shaped like an RFC 2047 encoded word (`=?…?=`)."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    return ENCODED_WORD.search(text) is not None


def header_problem(value: str) -> HeaderProblem | None:
    """Return what makes VALUE unfit for a mail header (a control character, an encoded word), or None."""
    if found := FORBIDDEN_CHARS.search(value):
        return HeaderProblem(f"contains the control character U+{ord(found[0]):04X}",
                             "a header value must be one line of plain text")
    if has_encoded_word(value):
        return HeaderProblem("looks like an RFC 2047 encoded word (=?…?=)",
                             "write the text itself, not an encoding of it")
    return None


def clip(value: str) -> str:
    """Return VALUE as a repr short enough for an error message."""
    return repr(value if len(value) <= 60 else value[:57] + "...")


def check_header_value(field: str, value: str) -> str:
    """Return VALUE if it is fit for a header; raise HeaderError naming FIELD if it is not."""
    if not isinstance(value, str):
        raise HeaderError(f"{field}: expected text, not {type(value).__name__}")
    if problem := header_problem(value):
        raise HeaderError(f"{field}: {problem.what} ({clip(value)}); {problem.hint}")
    return value


# --- display names ----------------------------------------------------------------------------------

def quoted_string(text: str) -> str:
    """Return ASCII TEXT as an RFC 5322 quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def encoded_words(text: str) -> list[str]:
    """Return TEXT as RFC 2047 encoded words of at most 75 characters, cut after a space if one is near."""
    words = []
    while text:
        end = size = 0
        while end < len(text) and size + len(text[end].encode("utf-8")) <= 45:  # 60 base64 chars
            size += len(text[end].encode("utf-8"))
            end += 1
        if end < len(text) and (space := text.rfind(" ", 1, end)) > 0:
            end = space + 1  # the space stays inside the word: whitespace between words is dropped
        words.append("=?utf-8?b?" + base64.b64encode(text[:end].encode("utf-8")).decode("ascii") + "?=")
        text = text[end:]
    return words


def mailbox(name: str, address: str, field: str = "To") -> str:
    """Return the FIELD value `name <address>`, folded with CRLF where it is long.

    A name is plain words, one quoted string, or wholly encoded words; ADDRESS is already ASCII.
    """
    if not name:
        return address
    if _PLAIN_NAME.fullmatch(name):
        phrase = name
    elif re.fullmatch(r"[\x20-\x7e]+", name):
        phrase = quoted_string(name)
    else:
        phrase = ""
    prefix = len(field) + 2
    if phrase and prefix + len(phrase) + len(address) + 3 <= 78:
        return f"{phrase} <{address}>"
    if phrase and prefix + len(phrase) <= MAX_LINE_OCTETS and len(address) + 3 <= MAX_LINE_OCTETS:
        return f"{phrase}\r\n <{address}>"
    words = encoded_words(name)
    if prefix + sum(len(w) + 1 for w in words) + len(address) + 2 <= 78:
        return " ".join(words) + f" <{address}>"
    return "\r\n ".join(words) + f"\r\n <{address}>"


__all__ = ["ENCODED_WORD", "FORBIDDEN_CHARS", "HeaderProblem", "check_header_value", "clip", "encoded_words",
           "has_encoded_word", "header_problem", "mailbox", "quoted_string"]
