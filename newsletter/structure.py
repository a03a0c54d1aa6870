"""The structured issue, frozen as JSON beside its HTML: what the archive, the feed and digests read.

The HTML is one presentation of an issue, and a project may override any template: nothing after
the builder should dig headlines or the preheader back out of markup. `from_issue` takes them from
the built Issue; the ledger stores `to_json` of it when an issue is frozen. Issues frozen before
that have no JSON: `from_html` reads what it can from their HTML as the default templates made it.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from datetime import date
from typing import Any

from newsletter.errors import NewsletterError
from newsletter.models import CrossReference, Issue

VERSION = 1


@dataclass(frozen=True)
class Headline:
    anchor: str
    text: str


@dataclass(frozen=True)
class ArticleEntry:
    """One article as a reader of the archive or a digest needs it."""

    section: str
    headline: str
    summary: str  # the editor's summary, else the body's first sentence
    anchor: str  # the article's id in the issue, so `{archive_url}#{anchor}` opens it
    slug: str
    url: str = ""  # the original article, when the editors gave one
    sources: tuple[str, ...] = ()  # front matter sources and citations found in the body
    cross_references: tuple[CrossReference, ...] = ()


@dataclass(frozen=True)
class SectionEntry:
    name: str
    anchor: str
    articles: tuple[ArticleEntry, ...]


@dataclass(frozen=True)
class IssueStructure:
    """One issue's content without its markup."""

    day: date
    number: int
    subject: str
    preheader: str
    archive_url: str
    sections: tuple[SectionEntry, ...] = ()
    note_title: str = ""
    note_summary: str = ""  # the note's first sentence (digests show the week's notes in short)
    feature_title: str = ""
    feature_link: str = ""

    @property
    def articles(self) -> tuple[ArticleEntry, ...]:
        return tuple(a for s in self.sections for a in s.articles)

    @property
    def headlines(self) -> tuple[Headline, ...]:
        return tuple(Headline(a.anchor, a.headline) for a in self.articles if a.anchor and a.headline)


def from_issue(issue: Issue) -> IssueStructure:
    """Return the structure of a built ISSUE."""
    sections = tuple(
        SectionEntry(section.name, section.anchor, tuple(
            ArticleEntry(
                section=section.name, headline=item.article.title, summary=item.summary,
                anchor=item.anchor, slug=item.article.slug, url=item.article.url,
                sources=item.sources, cross_references=item.cross_references,
            )
            for item in section.articles
        ))
        for section in issue.sections
    )
    return IssueStructure(
        day=issue.day, number=issue.number, subject=issue.subject, preheader=issue.preheader,
        archive_url=issue.archive_url, sections=sections,
        note_title=issue.note.title if issue.note else "",
        note_summary=first_sentence(issue.note.body_html) if issue.note else "",
        feature_title=issue.feature.title if issue.feature else "",
        feature_link=issue.feature.link if issue.feature else "",
    )


def to_json(structure: IssueStructure) -> str:
    """Return STRUCTURE as JSON (version 1), one object."""
    def article(entry: ArticleEntry) -> dict[str, Any]:
        return {
            "section": entry.section, "headline": entry.headline, "summary": entry.summary,
            "anchor": entry.anchor, "slug": entry.slug, "url": entry.url,
            "link": f"{structure.archive_url}#{entry.anchor}", "sources": list(entry.sources),
            "cross_references": [
                {"text": r.text, "day": r.day.isoformat(), "url": r.url, "exists": r.exists}
                for r in entry.cross_references
            ],
        }

    return json.dumps({
        "version": VERSION, "day": structure.day.isoformat(), "number": structure.number,
        "subject": structure.subject, "preheader": structure.preheader,
        "archive_url": structure.archive_url,
        "sections": [
            {"name": s.name, "anchor": s.anchor, "articles": [article(a) for a in s.articles]}
            for s in structure.sections
        ],
        "note": {"title": structure.note_title, "summary": structure.note_summary} if structure.note_title else None,
        "feature": {"title": structure.feature_title, "link": structure.feature_link}
        if structure.feature_title else None,
    }, ensure_ascii=False, indent=1)


def from_json(text: str, where: str) -> IssueStructure:
    """Read the JSON `to_json` wrote; WHERE names it in errors (the database and the day)."""
    try:
        data = json.loads(text)
        if data.get("version") != VERSION:
            raise NewsletterError(f"{where}: structured issue version {data.get('version')!r} is not "
                                  f"{VERSION}; upgrade newsletter")
        sections = tuple(
            SectionEntry(s["name"], s["anchor"], tuple(_article(a) for a in s["articles"]))
            for s in data["sections"]
        )
        note, feature = data.get("note") or {}, data.get("feature") or {}
        return IssueStructure(
            day=date.fromisoformat(data["day"]), number=int(data["number"]), subject=data["subject"],
            preheader=data["preheader"], archive_url=data["archive_url"], sections=sections,
            note_title=note.get("title", ""), note_summary=note.get("summary", ""),
            feature_title=feature.get("title", ""),
            feature_link=feature.get("link", ""),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise NewsletterError(f"{where}: the structured issue is not valid ({err!r})") from err


def _article(data: dict[str, Any]) -> ArticleEntry:
    return ArticleEntry(
        section=data["section"], headline=data["headline"], summary=data["summary"],
        anchor=data["anchor"], slug=data["slug"], url=data.get("url", ""),
        sources=tuple(data.get("sources", ())),
        cross_references=tuple(
            CrossReference(r["text"], date.fromisoformat(r["day"]), r["url"], bool(r["exists"]))
            for r in data.get("cross_references", ())
        ),
    )


def first_sentence(body_html: str, limit: int = 200) -> str:
    """Return the first sentence of BODY_HTML's text, cut at LIMIT characters on a word."""
    from lxml import html as lxml_html

    if not body_html.strip():
        return ""
    from newsletter.builder import _NOT_SENTENCE_END  # the abbreviations a sentence does not end at

    words = visible_text(lxml_html.fragment_fromstring(body_html, create_parent="div").text_content()).split(" ")
    for i, word in enumerate(words[:-1]):
        bare = word.rstrip("\"'”’)")
        if bare.endswith(("!", "?")) or (bare.endswith(".") and bare[:-1] not in _NOT_SENTENCE_END
                                         and words[i + 1][:1].isupper()):
            words = words[: i + 1]
            break
    text = " ".join(words)
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0].rstrip(" ,;:") + "…"
    return text


def visible_text(text: str) -> str:
    """Return TEXT without invisible characters (the preheader's filler), whitespace collapsed."""
    shown = "".join(c for c in text if unicodedata.category(c) not in ("Cf", "Mn", "Cc") or c.isspace())
    return " ".join(shown.split())


def from_html(html: str, *, day: date, number: int, subject: str) -> IssueStructure:
    """Return what the HTML of an issue frozen before structures were kept tells (default templates).

    Headlines are the `<h2 id=…>` of the articles, in one section without a name; the preheader is
    the text of the hidden `<div class="pre">`. Nothing else (summaries, sources) can be read back.
    """
    from lxml import html as lxml_html

    body = lxml_html.document_fromstring(html).body
    preheader = next((visible_text(e.text_content()) for e in body.iter("div")
                      if "pre" in (e.get("class") or "").split()), "")
    entries = tuple(
        ArticleEntry(section="", headline=text, summary="", anchor=h2.get("id") or "", slug="")
        for h2 in body.iter("h2")
        if h2.get("id") and (text := " ".join(h2.text_content().split()))
    )
    return IssueStructure(
        day=day, number=number, subject=subject, preheader=preheader, archive_url="",
        sections=(SectionEntry("", "", entries),) if entries else (),
    )


__all__ = [
    "ArticleEntry", "Headline", "IssueStructure", "SectionEntry", "VERSION",
    "first_sentence", "from_html", "from_issue", "from_json", "to_json", "visible_text",
]
