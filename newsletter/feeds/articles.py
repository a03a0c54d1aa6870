"""A feed's entry → the text of an ordinary article file (front matter + Markdown), or why not.

The entry's markup goes through the same nh3 sanitizer as every article (readers.sanitize), its
relative links are resolved against the entry's link first, and every link left must be https:
or mailto: (http: is upgraded with `upgrade_http`, else its text stays and the link goes). The
text is then read back by readers.py before it is written: a feed never writes a file that
would stop the day's build.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import nh3
import yaml

from newsletter import i18n, readers
from newsletter.feeds.markdown import escape, to_markdown
from newsletter.feeds.parse import Entry
from newsletter.headers import header_problem
from newsletter.rules import MONTHS, https_only
from newsletter.settings import FeedSettings, Settings

SUMMARY_CHARS = 300
SLUG_CHARS = 60
UNTITLED_WORDS = 10  # an entry without a title (a JSON Feed note) is titled by its first words


@dataclass(frozen=True)
class Draft:
    """An article file about to be written: its name without suffix, its text, and what was changed."""

    slug: str
    text: str
    notes: tuple[str, ...] = ()  # links dropped: a warning naming the entry


class LeftOut(Exception):
    """The entry cannot become an article; the message says why (a warning naming it)."""


def draft_article(entry: Entry, feed: FeedSettings, source: str, base: str, day: date, settings: Settings) -> Draft:
    """Return ENTRY as an article file's text for DAY's issue; raise LeftOut when it cannot be one."""
    notes: list[str] = []
    absolute = urljoin(base, entry.link) if entry.link else ""
    link = _policy(absolute, feed, notes)
    markup = entry.content_html if feed.content == "full" and entry.content_html else entry.summary_html
    body = to_markdown(_links(readers.sanitize(_absolute(markup, absolute or base)), feed, notes))
    if link and (feed.content == "summary" or not body.strip()):
        _ = i18n.gettext_for(settings)
        label = _("Read the full article at %(source)s") % {"source": escape(source)}
        body += f"\n[{label}](<{link}>)\n"
    summary = _shorten(_plain(entry.summary_html or markup), SUMMARY_CHARS)
    title = _title(entry.title, summary or _plain(markup))
    when = entry.published.astimezone(settings.tz) if entry.published else None
    meta: dict[str, object] = {
        "title": title, "section": feed.section or settings.issue.default_section, "summary": summary,
        "sources": [f"{source}, {_citation_date(when.date() if when else day)}"], "url": link,
        "author": _plain(entry.author), "published": when.isoformat(timespec="minutes") if when else "",
    }
    image = _policy(urljoin(base, entry.image), feed, []) if entry.image else ""
    alt = _plain(entry.image_alt)
    if image and alt:
        meta.update(image=image, image_alt=alt)
    front = yaml.safe_dump({k: v for k, v in meta.items() if v}, sort_keys=False, allow_unicode=True, width=100_000)
    text = f"---\n{front}---\n{body}"
    slug = readers.slugify(title)[:SLUG_CHARS].strip("-") or "article"
    problems = readers.article_problems(Path(f"{slug}.md"), text, settings)
    if problems:
        raise LeftOut("; ".join(p.message for p in problems))
    return Draft(slug, text, tuple(notes))


def _title(raw: str, fallback: str) -> str:
    title = " ".join(re.sub(r"[\x00-\x1f\x7f]", " ", _plain(raw)).split())
    if not title:
        words = fallback.split()
        title = " ".join(words[:UNTITLED_WORDS]) + ("…" if len(words) > UNTITLED_WORDS else "")
    if not title:
        raise LeftOut("it has no title and no text")
    if problem := header_problem(title):
        raise LeftOut(f"its title {title[:80]!r}: {problem.what}")
    return title


def _policy(url: str, feed: FeedSettings, notes: list[str]) -> str:
    """Return URL if https: (or mailto:), upgraded from http: when the feed allows; else '' and a note."""
    url = url.strip()
    if https_only(url, mailto=True):
        return url
    if urlsplit(url).scheme.lower() == "http":
        if feed.upgrade_http:
            return "https:" + url.split(":", 1)[1]
        notes.append(url)
    return ""


def _absolute(markup: str, base: str) -> str:
    """Return MARKUP with its relative links made absolute against BASE (the sanitizer drops relative ones)."""
    from lxml import html as lxml_html
    from lxml.etree import ParserError

    if not markup.strip() or not base:
        return markup
    try:
        fragment = lxml_html.fragment_fromstring(markup, create_parent="div")
    except ParserError:
        return markup
    fragment.make_links_absolute(base, resolve_base_href=False, handle_failures="discard")
    return lxml_html.tostring(fragment, encoding="unicode")


def _links(markup: str, feed: FeedSettings, notes: list[str]) -> str:
    """Apply the https rule to every link of sanitized MARKUP: keep, upgrade, or unwrap (its text stays)."""
    from lxml import html as lxml_html

    if "<a" not in markup:
        return markup
    fragment = lxml_html.fragment_fromstring(markup, create_parent="div")
    for anchor in list(fragment.iter("a")):
        href = anchor.get("href")
        kept = _policy(href, feed, notes) if href else ""
        if kept:
            anchor.set("href", kept)
        else:
            anchor.drop_tag()
    return html.escape(fragment.text or "") + "".join(lxml_html.tostring(c, encoding="unicode") for c in fragment)


def _plain(markup: str) -> str:
    """Return the words of MARKUP (tags removed, entities read), whitespace collapsed."""
    return " ".join(html.unescape(nh3.clean(markup, tags=set(), clean_content_tags={"script", "style"})).split())


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + "…"


def _citation_date(day: date | datetime) -> str:
    month = MONTHS[day.month - 1]
    return f"{month if len(month) <= 4 else month[:3] + '.'} {day.day}"


__all__ = ["Draft", "LeftOut", "draft_article"]
