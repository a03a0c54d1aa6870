"""Variants of a day's issue: one per distinct set of sections that readers chose.

A reader's sections are stored as text: the names one per line, sorted ('' for every section, the
default). A variant's key is that text, and a set that covers every section of `[issue] sections`
is the full issue, key ''. Readers with the same key get the same issue with their own personal
values, so an issue is rendered, checked and frozen once per key, never per reader; each delivery
row names its variant (delivery/ledger.py), and a row keeps it when its reader changes sections
while the issue is going out. The archive and the web pages keep the full issue.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from newsletter.ahead import WINDOW
from newsletter.errors import DeliveryError
from newsletter.models import RenderedIssue, Subscriber, decode_sections, encode_sections

if TYPE_CHECKING:
    from newsletter.delivery.ledger import Claimed
    from newsletter.messages import MessageTemplate

ALL = ""  # the key of the full issue: readers who chose no section, or all of them


def key_of(sections: Iterable[str], all_sections: Sequence[str]) -> str:
    """Return the variant key of a reader who chose SECTIONS (ALL for none, or every one of ALL_SECTIONS)."""
    chosen = {name for name in sections if name}
    if not chosen or chosen == set(all_sections):
        return ALL
    return encode_sections(chosen)  # a key is the sections as the list stores them


def sections_of(key: str) -> frozenset[str]:
    """Return the sections of a variant KEY (empty: every section)."""
    return decode_sections(key)


def describe(key: str) -> str:
    """Return a variant as a person reads it: 'all sections' or 'Nuclear, Chemical'."""
    return ", ".join(sorted(sections_of(key))) if key else "all sections"


def key_sql(all_sections: Sequence[str], column: str = "sections") -> tuple[str, tuple[str]]:
    """Return the SQL expression (and its parameter) of the variant key of a subscriber row.

    Plain SQL, so the snapshot stays one INSERT … SELECT: the stored text is already sorted, one
    name a line; a reader who chose every section gets the full issue.
    """
    return f"CASE WHEN {column} = ? THEN '' ELSE {column} END", (encode_sections(all_sections),)


@dataclass(frozen=True)
class Variant:
    """One variant of a day's issue: its key, and what its readers get.

    RENDERED is None when the readers' sections have no article today and the empty policy is
    `skip`: their rows are skipped with SKIPPED_REASON. Under `notice`, RENDERED is the notice.
    """

    key: str
    rendered: RenderedIssue | None
    article_count: int
    skipped_reason: str = ""

    @property
    def label(self) -> str:
        return describe(self.key)


class IssueTemplates:
    """An issue's message template per variant: each claimed row gets its own variant's bytes."""

    def __init__(self, templates: Mapping[str, MessageTemplate]) -> None:
        if not templates:
            raise ValueError("an issue needs at least one template")
        self._templates = dict(templates)
        self.default = self._templates.get(ALL) or next(iter(self._templates.values()))

    @classmethod
    def of(cls, template: MessageTemplate | IssueTemplates) -> IssueTemplates:
        """Return TEMPLATE as IssueTemplates (one MessageTemplate is the full issue's)."""
        return template if isinstance(template, IssueTemplates) else cls({ALL: template})

    def __getitem__(self, key: str) -> MessageTemplate:
        try:
            return self._templates[key]
        except KeyError:
            raise DeliveryError(f"issue {self.default.day}: no frozen copy for readers of "
                                f"{describe(key)}") from None

    def items(self) -> Iterator[tuple[str, MessageTemplate]]:
        return iter(self._templates.items())

    def personalize(self, row: Claimed) -> bytes:
        """Return ROW's message, from its variant's template."""
        return self[row.variant].personalize(row.subscriber)

    def personalize_file(self, row: Claimed) -> bytes:
        """Return ROW's message as an outbox file, from its variant's template."""
        return self[row.variant].personalize_file(row.subscriber)

    @property
    def signs_spliced(self) -> bool:
        """Whether the messages are DKIM-signed from their values (the same for every variant)."""
        return self.default.signs_spliced

    def made_ahead(self, rows: Sequence[Claimed], pool: Executor | None) -> Callable[[Claimed], bytes]:
        """Return `personalize_file` for ROWS asked for in their order, each variant's made ahead in POOL
        (MessageTemplate.made_ahead: signing overlaps the caller's writing)."""
        keys = [key for key in self._templates if any(row.variant == key for row in rows)]
        window = max(1, WINDOW // max(1, len(keys)))  # the variants share one window: messages waiting stay few
        ahead = {key: self._templates[key].made_ahead([row.subscriber for row in rows if row.variant == key], pool,
                                                      window=window)
                 for key in keys}

        def make(row: Claimed) -> bytes:
            made = ahead.get(row.variant)
            return made(row.subscriber) if made is not None else self.personalize_file(row)  # names it

        return make

    def envelope_sender(self, subscriber: Subscriber) -> str | None:
        """Return SUBSCRIBER's envelope sender (the same in every variant)."""
        return self.default.envelope_sender(subscriber)
