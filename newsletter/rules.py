"""Every threshold and rule of a correct issue, in one place: EMAIL.md's numbers and our own.

The readers, the builder, the renderer, the messages and `newsletter check` import their limits
from here, and each rule a finding can name is one `Rule` member with the EMAIL.md rule it
enforces (None: a rule of ours). Pure: no project imports, no I/O.
"""

from __future__ import annotations

from enum import StrEnum

# EMAIL.md rule 6: Gmail clips a message whose HTML is larger and hides the unsubscribe footer.
GMAIL_CLIP_BYTES = 102_000
SIZE_WARNING_BYTES = 90_000  # the margin kept under the clip
# EMAIL.md rule 10: the length inbox lists show after the subject.
PREHEADER_MIN, PREHEADER_MAX = 40, 140
# EMAIL.md rule 11: smaller text is hard to read on phones.
MIN_FONT_PX = 14
# An article file larger than this is refused unread: far above any real article, far below a hang.
MAX_ARTICLE_BYTES = 2 * 1024 * 1024
# EMAIL.md rule 15 (RFC 5322 2.1.1): the longest line SMTP carries, CRLF not counted.
MAX_LINE_OCTETS = 998

# English month names, as dates are written and as citations name them.
MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)
# Month names as written in citations: full, three-letter, and "Sept" (lower case → 1..12).
MONTH_NUMBER = {name.lower(): i for i, name in enumerate(MONTHS, 1)}
MONTH_NUMBER.update({name[:3].lower(): i for i, name in enumerate(MONTHS, 1)})
MONTH_NUMBER["sept"] = 9

# EMAIL.md rules 9 and 12: what an address in an email may start with (case does not matter).
HTTPS = "https://"
LINK_PREFIXES = (HTTPS, "mailto:")


def https_only(url: str, *, mailto: bool = False) -> bool:
    """Return True when URL is an https:// address (or, with MAILTO, a mailto: link): EMAIL.md 9, 12.

    The one place the https-only rule is applied; the scheme is compared without regard to case.
    """
    return url.strip().lower().startswith(LINK_PREFIXES if mailto else (HTTPS,))


class Rule(StrEnum):
    """What a finding is about: a stable id (shown by `check --format json`) and its EMAIL.md rule."""

    number: int | None

    def __new__(cls, value: str, number: int | None = None) -> Rule:
        member = str.__new__(cls, value)
        member._value_ = value
        member.number = number
        return member

    # the files an issue is made of
    ARTICLE = "article"  # a problem of an article file (readers)
    SECTION = "section"
    SUBJECT = "subject-template"
    TEMPLATE = "template"
    BUILD = "build"  # anything else that stops the issue from being built
    EMPTY_BODY = "empty-body"
    EMPTY_SECTION = "empty-section"
    ARTICLE_TITLE = "article-title"
    CROSS_REFERENCE = "cross-reference"  # not a date on or before the issue's day
    MISSING_ISSUE = "missing-issue"  # a cross-reference to a day without an issue
    CITATION = "citation"
    TEMPLATE_SYNTAX = "template-syntax"
    PLACEHOLDER = "placeholder"
    BODY_HEADING = "body-heading"
    ARCHIVE_URL = "archive-url"
    # CSS (EMAIL.md 1-4) and the HTML (6-13)
    CSS_INLINE = "css-inline", 1
    CSS_IMPORTANT = "css-important", 2
    CSS_PARSE = "css-parse", 4
    GMAIL_CLIP = "gmail-clip", 6
    HTML_HEAD = "html-head", 7
    LAYOUT_TABLES = "layout-tables", 8
    CSS_LAYOUT = "css-layout", 8
    IMAGE = "image", 9
    IMAGE_HTTPS = "image-https", 9
    PREHEADER = "preheader", 10
    HEADINGS = "headings", 11
    TEXT_SIZE = "text-size", 11
    LINK_TEXT = "link-text", 11
    HTTPS_LINKS = "https-links", 12
    EMPTY_LINK = "empty-link", 12
    UNSUBSCRIBE_LINK = "unsubscribe-link", 12
    VIEW_LINK = "view-link", 12
    FORBIDDEN_TAG = "forbidden-tag", 13
    REMOTE_STYLESHEET = "remote-stylesheet", 13
    # the message (EMAIL.md 14-20)
    MESSAGE = "message"  # the sample message cannot be built
    MIME_PARTS = "mime-parts", 14
    SEVEN_BIT = "seven-bit", 15
    LINE_ENDS = "line-ends", 15
    LINE_LENGTH = "line-length", 15
    TRANSFER_ENCODING = "transfer-encoding", 15
    HEADERS = "headers", 16
    MESSAGE_ID = "message-id", 16
    LIST_UNSUBSCRIBE = "list-unsubscribe", 18
    LIST_ID = "list-id", 18
    AUTO_REPLY = "auto-reply-headers", 18
    DKIM = "dkim", 20
    TRANSLATION = "translation"  # a fixed string with no translation in the newsletter's language
    # the bulk-sender rules (CAN-SPAM; Gmail and Yahoo)
    POSTAL_ADDRESS = "postal-address"
    COMPLAINT_RATE = "complaint-rate"  # the last 30 days' spam complaints per message delivered
    # the sources of articles
    FEED = "feed"  # a [[feeds]] source that failed, or an entry that was changed or left out (feeds/)
    CHOSEN_SECTION = "chosen-section"  # readers chose a section that [issue] sections no longer has


__all__ = [
    "GMAIL_CLIP_BYTES", "HTTPS", "LINK_PREFIXES", "MAX_ARTICLE_BYTES", "MAX_LINE_OCTETS", "MIN_FONT_PX", "MONTHS", "MONTH_NUMBER",
    "PREHEADER_MAX", "PREHEADER_MIN", "Rule", "SIZE_WARNING_BYTES", "https_only",
]
