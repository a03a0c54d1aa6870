"""Who an SMTP refusal blames: this recipient's mailbox, this message, our side, or nobody for long.

A refusal is read by its enhanced status code (RFC 3463, "5.1.1" at the start of the text) when it
has one whose class agrees with the reply code, else by the reply code and a few words of its text.
The rule is to be sure before blaming a subscriber: only a reply that says *this recipient's
mailbox* does not exist may mark them bounced (a wrong "bounced" removes a reader for good, while a
wrong "failed" costs one message). A reply that blames the sender, the relay, our login or the
server itself is an outage: the whole send pauses and nobody is failed.

| blame     | replies                                                                   | the row       |
|-----------|---------------------------------------------------------------------------|---------------|
| MAILBOX   | 5.1.1, 5.1.2, 5.1.10; or a bare 550/551/553 saying "user unknown", …      | failed, bounced |
| MESSAGE   | other 5xx: content, spam, policy, a full or disabled mailbox, 5.7.1 …     | failed        |
| OURS      | 5.1.7/5.1.8 sender, 5.7.1 relay, 5.7.0/5.7.8 auth, 5.3.x, 5.4.x, 5.5.x … | breaker: retry |
| TRANSIENT | 4xx                                                                       | retry later   |
"""

from __future__ import annotations

import enum
import re
from typing import Generic, TypeVar

Item = TypeVar("Item")


class Blame(enum.Enum):
    """Whom a refusal blames, and so what happens to the row (see the module's table)."""

    MAILBOX = "the recipient's mailbox"
    MESSAGE = "this message"
    OURS = "the sender, the relay or our settings"
    TRANSIENT = "nobody for long"


_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?!\d)")

# (subject, detail) of enhanced codes that say the mailbox does not exist (RFC 3463, RFC 7505)
_MAILBOX_GONE = {(1, 1), (1, 2), (1, 10)}
# 5.7.x that blame our sending: auth required/failed/too weak, encryption needed, a password or an
# account of ours that changed, and receivers' checks of our domain (SPF, reverse DNS, DMARC)
_OURS_SECURITY = {0, 8, 9, 10, 11, 12, 13, 14, 23, 24, 25, 26, 27}

# the words of a bare reply (or of a 5.7.0/5.7.1, which servers use for both kinds) that say whom
# it blames; content words are looked for first, so "mailbox unavailable: spam" is not a bounce
_CONTENT = re.compile(r"\bspam|\bvirus|malware|content|\bphish|\bbulk\b|message (?:was )?(?:rejected|refused|blocked)",
                      re.I)
_OUR_SIDE = re.compile(
    r"\brelay|\bsender\b|rcpthosts|\bauth|\blog ?in\b|starttls|\btls\b|\bhelo\b|\behlo\b|client host|"
    r"\bsyntax\b|command",
    re.I)
_NO_SUCH_MAILBOX = re.compile(
    r"user unknown|unknown user|no such (?:user|mailbox|recipient)|does not exist|doesn't exist|"
    r"mailbox unavailable|mailbox not found|recipient unknown|unknown recipient|invalid recipient|"
    r"address rejected: user unknown",
    re.I)


def enhanced_code(code: int, text: str) -> tuple[int, int, int] | None:
    """Return the enhanced status code at the start of TEXT when its class agrees with CODE."""
    match = _ENHANCED.match(text.lstrip())
    if match is None or int(match[1]) != code // 100:
        return None  # RFC 3463: the class must be the reply code's; a mismatch is not trusted
    return int(match[1]), int(match[2]), int(match[3])


def classify(code: int, text: str) -> Blame:
    """Return whom the refusal CODE TEXT blames (any reply that is not 2xx or 3xx)."""
    if 400 <= code < 500:
        return Blame.TRANSIENT
    if not 500 <= code < 600:
        return Blame.OURS  # not an SMTP refusal at all: the server and we do not understand each other
    enhanced = enhanced_code(code, text)
    if enhanced is not None:
        blame = _by_enhanced(enhanced[1], enhanced[2], text)
        if blame is not None:
            return blame
    return _by_code(code, text)


def _by_enhanced(subject: int, detail: int, text: str) -> Blame | None:
    """Blame by the enhanced code's subject and detail, or None to read the reply's words instead."""
    if (subject, detail) in _MAILBOX_GONE:
        return Blame.MAILBOX
    if subject == 1:
        return Blame.OURS if detail in (7, 8) else Blame.MESSAGE  # 5.1.7/5.1.8: the sender's address
    if subject in (3, 4, 5):
        return Blame.OURS  # the receiving system, the network or routing, the protocol
    if subject == 7:
        if detail == 1:  # "delivery not authorized": used for relaying and for content alike
            return Blame.OURS if _OUR_SIDE.search(text) and not _CONTENT.search(text) else Blame.MESSAGE
        if detail == 0 and _CONTENT.search(text):
            return Blame.MESSAGE
        return Blame.OURS if detail in _OURS_SECURITY else Blame.MESSAGE
    if subject in (2, 6):
        return Blame.MESSAGE  # the mailbox is full or disabled; the content cannot be converted
    return None  # 5.0.x and subjects RFC 3463 does not define: the code and the words decide


def _by_code(code: int, text: str) -> Blame:
    """Blame a reply without a usable enhanced code, by its code and its words."""
    if _CONTENT.search(text):
        return Blame.MESSAGE
    if code in (500, 501, 502, 503, 504, 530, 534, 535, 538) or _OUR_SIDE.search(text):
        return Blame.OURS  # a command we sent was not understood, or the server wants a login
    if code in (550, 551, 553) and _NO_SUCH_MAILBOX.search(text):
        return Blame.MAILBOX
    return Blame.MESSAGE


# The same permanent refusal (reply code and enhanced code) for this many recipients in a row, at
# this many domains or more, blames us and not them (a blocklisted IP, a policy, a quota, a relay
# that thinks it is the final destination): the breaker trips instead of failing the list. Five
# in a row keeps a list with a few dead addresses from tripping it by chance; three domains keep
# one receiving domain's own trouble from pausing everyone else's mail.
SAME_REFUSAL_IN_A_ROW = 5
SAME_REFUSAL_DOMAINS = 3


class RefusalStreak(Generic[Item]):
    """Permanent refusals held back while they may be one refusal of us rather than of each recipient.

    Refusals of rows already tried before (a resumed send after a trip) are held with the streak
    but do not count toward it, so the same few dead addresses cannot trip the breaker at every
    resume; a resume whose server is still broken trips it again with fresh rows.
    """

    def __init__(self, in_a_row: int = SAME_REFUSAL_IN_A_ROW, domains: int = SAME_REFUSAL_DOMAINS) -> None:
        self.in_a_row = in_a_row
        self.domains_needed = domains
        self._key: tuple[int, tuple[int, int, int] | None] | None = None
        self._items: list[Item] = []
        self._counted = 0
        self._domains: set[str] = set()

    def add(self, code: int, text: str, domain: str, item: Item, *, first_try: bool) -> list[Item]:
        """Hold ITEM; return the items of an earlier streak that this different refusal ends."""
        key = (code, enhanced_code(code, text))
        released = self.release() if key != self._key else []
        self._key = key
        self._items.append(item)
        if first_try:
            self._counted += 1
            self._domains.add(domain.lower())
        return released

    @property
    def tripped(self) -> bool:
        """Whether the held refusals are one refusal of us."""
        return self._counted >= self.in_a_row and len(self._domains) >= self.domains_needed

    @property
    def held(self) -> int:
        return len(self._items)

    def release(self) -> list[Item]:
        """End the streak: return the items held (a different result came, or the run ends)."""
        items = self._items
        if not items:  # most messages: nothing was held (and nothing to reset)
            return []
        self._key, self._items, self._counted, self._domains = None, [], 0, set()
        return items


__all__ = ["Blame", "RefusalStreak", "SAME_REFUSAL_DOMAINS", "SAME_REFUSAL_IN_A_ROW", "classify", "enhanced_code"]
