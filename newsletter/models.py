"""The typed values passed between stages. No I/O here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from markdown_it.token import Token

from newsletter.findings import Finding

# Placeholders the renderer writes where per-subscriber values go; messages.py swaps them per
# subscriber. Plain ASCII letters and digits only, so escaping, inlining and quoted-printable
# leave them intact.
NAME_PLACEHOLDER = "NLXSUBSCRIBERNAMEX"
GREETING_PLACEHOLDER = "NLXGREETINGX"
TOKEN_PLACEHOLDER = "NLXUNSUBSCRIBETOKENX"
PREFERENCES_PLACEHOLDER = "NLXPREFERENCESTOKENX"  # the token of the reader's preferences page (/p/TOKEN)
PLACEHOLDERS = (NAME_PLACEHOLDER, GREETING_PLACEHOLDER, TOKEN_PLACEHOLDER, PREFERENCES_PLACEHOLDER)

STATUSES = ("active", "unsubscribed", "bounced", "pending")


@dataclass(frozen=True)
class Article:
    """One article of a day, its body already sanitized HTML."""

    path: Path
    slug: str
    title: str
    section: str
    body_html: str
    summary: str = ""
    sources: tuple[str, ...] = ()
    priority: int = 100
    url: str = ""
    author: str = ""
    image: str = ""
    image_alt: str = ""
    # the body as markdown-it tokens (body_html is their sanitized rendering): the builder finds
    # cross-references and plain text here, where code and links are tokens of their own
    tokens: tuple[Token, ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class Note:
    """The editors' note ("Note to our readers"), from `_note.md`."""

    path: Path
    title: str
    body_html: str


@dataclass(frozen=True)
class Feature:
    """A feature box ("Country profile … Learn more →"), from `_feature.md`."""

    path: Path
    title: str
    body_html: str
    link: str = ""
    link_text: str = "Learn more"


@dataclass(frozen=True)
class DayContent:
    """Everything the editors put in one day's folder."""

    day: date
    articles: tuple[Article, ...]
    note: Note | None = None
    feature: Feature | None = None


@dataclass(frozen=True)
class CrossReference:
    """`(see SSB, May 18)` in an article: the day it points at and whether that day has an issue."""

    text: str
    day: date
    url: str
    exists: bool


@dataclass(frozen=True)
class IssueArticle:
    """An article as it appears in an issue: body with citations and cross-references resolved."""

    article: Article
    anchor: str
    body_html: str
    sources: tuple[str, ...]
    cross_references: tuple[CrossReference, ...] = ()
    summary: str = ""  # the editor's summary, else the body's first sentence (for the archive and feeds)


@dataclass(frozen=True)
class IssueSection:
    name: str
    anchor: str
    articles: tuple[IssueArticle, ...]


@dataclass(frozen=True)
class Issue:
    """One day's issue, built and ordered, ready to render."""

    day: date
    number: int
    subject: str
    preheader: str
    sections: tuple[IssueSection, ...]
    archive_url: str
    note: Note | None = None
    feature: Feature | None = None
    findings: tuple[Finding, ...] = field(default=(), compare=False)  # the builder's warnings

    @property
    def warnings(self) -> tuple[str, ...]:
        """The builder's warnings as the CLI prints them ("path: message")."""
        return tuple(map(str, self.findings))

    @property
    def articles(self) -> tuple[IssueArticle, ...]:
        return tuple(a for s in self.sections for a in s.articles)


@dataclass(frozen=True)
class RenderedIssue:
    """The issue as inlined HTML and plain text, with placeholders where personal values go."""

    issue: Issue
    html: str
    text: str


class Frequency(StrEnum):
    """How often a reader hears from us: every issue, or a digest of the week."""

    DAILY = "daily"
    WEEKLY = "weekly"


@dataclass(frozen=True)
class Subscriber:
    id: int
    email: str
    email_key: str
    name: str
    status: str
    created_at: str
    updated_at: str
    sections: frozenset[str] = frozenset()  # the sections this reader chose; empty means all
    frequency: Frequency = Frequency.DAILY
    preferences_at: str = ""  # when the reader last changed sections or frequency ('' never)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Subscriber:
        """Build a subscriber from a database row holding the columns of `subscribers`."""
        fields = dict(row)
        fields["sections"] = decode_sections(fields.get("sections") or "")
        fields["frequency"] = Frequency(fields.get("frequency") or Frequency.DAILY)
        return cls(**fields)


def encode_sections(sections: Iterable[str]) -> str:
    """Sections as the database keeps them: one name per line, sorted ('' means all)."""
    return "\n".join(sorted(set(sections)))


def decode_sections(text: str) -> frozenset[str]:
    return frozenset(line for line in text.split("\n") if line)
