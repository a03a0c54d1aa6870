"""The static archive: every sent issue as a web page, an index by month, and an Atom feed.

The pages come from the frozen renders in the ledger's `issues` table (what subscribers got),
through `messages.public_html`: the fallback greeting and nobody's token. Links to the site
(`{base_url}/archive/YYYY/MM/DD/`, `{base_url}/unsubscribe/`) become relative, so the site works on
any static host, under any path, and from `newsletter serve`; the feed keeps them absolute.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import date, datetime, timezone
from html import escape
from pathlib import Path

import jinja2

from newsletter import i18n, store, structure
from newsletter.errors import BuildError, NewsletterError
from newsletter.files import PUBLIC_DIR, PUBLIC_FILE, make_dirs, write_atomic
from newsletter.models import Issue, RenderedIssue
from newsletter.settings import Settings
from newsletter.structure import Headline, IssueStructure

logger = logging.getLogger(__name__)

FEED_ENTRIES = 20  # the feed carries the full content of this many latest issues
ATOM = "http://www.w3.org/2005/Atom"

# Inline styles that hide an element: a preheader is the hidden element holding the preheader text.
_HIDING = ("display:none", "max-height:0", "visibility:hidden", "opacity:0", "mso-hide:all")


@dataclass(frozen=True)
class ArchivedIssue:
    """One sent issue as the archive shows it: public HTML, its structure, when it was frozen."""

    day: date
    number: int
    subject: str
    html: str
    structure: IssueStructure
    updated: str  # ISO 8601 with offset: when the issue was frozen for sending
    language: str = i18n.SOURCE_LANGUAGE  # the newsletter's, for the dates its pages show

    @property
    def headlines(self) -> tuple[Headline, ...]:
        return self.structure.headlines

    @property
    def path(self) -> str:
        """The issue's folder in the site, as cross-references spell it."""
        return f"archive/{self.day:%Y/%m/%d}/"

    @property
    def long_date(self) -> str:
        return i18n.long_date(self.day, self.language)


@dataclass(frozen=True)
class SiteReport:
    """What `build_site` did: the folder, the issues in it, the files written and left as they were."""

    out: Path
    issues: int
    written: int
    unchanged: int


def archived_issues(conn: sqlite3.Connection, settings: Settings) -> list[ArchivedIssue]:
    """Return every sent issue, newest first (notices of days without an issue are left out)."""
    from newsletter import messages

    issues = []
    for row in conn.execute(
        "SELECT i.day, i.number, i.subject, i.html, i.text, i.created_at, s.structure"
        " FROM issues i LEFT JOIN issue_structures s ON s.day = i.day WHERE i.number > 0 ORDER BY i.day DESC"
    ):
        day = date.fromisoformat(row["day"])
        shell = Issue(day=day, number=row["number"], subject=row["subject"], preheader="", sections=(),
                      archive_url="")
        public = messages.public_html(RenderedIssue(shell, row["html"], row["text"]), settings)
        if row["structure"] is None:  # frozen before the structure was kept: read the default markup
            outline = structure.from_html(public, day=day, number=row["number"], subject=row["subject"])
        else:
            outline = structure.from_json(row["structure"], f"{settings.database_path}: issue {day}")
        issues.append(ArchivedIssue(day, row["number"], row["subject"], public, outline,
                                    _rfc3339(row["created_at"]), settings.newsletter.language))
    return issues


def _rfc3339(stamp: str) -> str:
    moment = datetime.fromisoformat(stamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.isoformat(timespec="seconds")


def email_body(html: str, preheader: str, *, base_url: str = "", depth: int = 0) -> tuple[str, str]:
    """Return the inside of the email's <body> without the hidden preheader and filler, and its styles.

    With BASE_URL, links to the site (`{base_url}/…`) point at the same page relative to a page
    DEPTH folders deep, so the site works on any host and under any path.
    """
    from lxml import etree
    from lxml import html as lxml_html

    try:
        doc = lxml_html.document_fromstring(html)
    except (etree.ParserError, ValueError) as err:
        raise BuildError(f"the issue's HTML cannot be read: {err}") from err
    body = doc.find("body")
    if body is None:
        raise BuildError("the issue's HTML has no <body>")
    for hidden in _preheader_elements(body, preheader):
        hidden.drop_tree()
    if base_url:
        _relative_links(body, base_url, depth)
    styles = "\n".join(style.text or "" for style in doc.iter("style"))
    inner = escape(body.text or "", quote=False) + "".join(
        lxml_html.tostring(child, encoding="unicode") for child in body)
    return inner.strip(), styles


def _preheader_elements(body, preheader: str) -> list:
    """Return the hidden elements that hold PREHEADER or only invisible filler after it.

    Found by what they hold, not by their class, whatever the layout calls them: an element hidden
    by its inline style whose visible text is the preheader, and hidden text-only elements whose
    every character is invisible (the filler that keeps inbox previews to the preheader).
    """
    wanted = structure.visible_text(preheader)
    found = []
    for element in body.iter():
        style = "".join((element.get("style") or "").split()).lower()
        if not (any(rule in style for rule in _HIDING) or element.get("hidden") is not None):
            continue
        shown = structure.visible_text(element.text_content())
        if (wanted and shown == wanted) or (not shown and element.text_content().strip() and len(element) == 0):
            found.append(element)
    return found


def _relative_links(body, base_url: str, depth: int) -> None:
    """Point links to the site (`{base_url}/…`) at the same page relative to a page DEPTH folders deep."""
    base = base_url.rstrip("/") + "/"
    up = "../" * depth
    for element in body.iter():
        href = element.get("href")
        if href and href.startswith(base):
            rest = href[len(base):]
            element.set("href", up + rest if up or rest else "./")


def _page_context(settings: Settings, root: str, title: str) -> dict:
    from newsletter.renderer import direction_values

    sender = settings.sender
    return {
        **direction_values(settings.newsletter.language),
        "site_name": settings.newsletter.name,
        "tagline": settings.newsletter.tagline,
        "postal_address": sender.postal_address,
        "root": root,
        "title": title,
        "feed_url": f"{root}feed.xml",
        "main_class": "",
        "extra_style": "",
        "script": "",
    }


def render_page(env: jinja2.Environment, name: str, settings: Settings, root: str, title: str, **values) -> str:
    """Render the web template NAME (under templates/web/) with the site's common values."""
    from newsletter.renderer import _render

    context = _page_context(settings, root, title)
    context.update(values)
    return _render(env, f"web/{name}", context)


def issue_page(env: jinja2.Environment, settings: Settings, issue: ArchivedIssue,
               previous: ArchivedIssue | None = None, next_: ArchivedIssue | None = None) -> str:
    """Render one issue's archive page (four folders deep: archive/YYYY/MM/DD/)."""
    root = "../../../../"
    body, styles = email_body(issue.html, issue.structure.preheader,
                              base_url=settings.newsletter.base_url, depth=4)

    def link(other: ArchivedIssue | None) -> dict | None:
        return None if other is None else {
            "href": root + other.path, "number": other.number, "long_date": other.long_date,
        }

    return render_page(env, "issue.html.j2", settings, root, issue.subject, content=body,
                       extra_style=styles, main_class="issue-page",
                       previous=link(previous), next=link(next_))


def index_page(env: jinja2.Environment, settings: Settings, issues: list[ArchivedIssue]) -> str:
    """Render the front page: the subscribe form and every issue by month, newest first."""
    months: list[dict] = []
    for issue in issues:
        name = i18n.month_year(issue.day, settings.newsletter.language)
        if not months or months[-1]["name"] != name:
            months.append({"name": name, "issues": []})
        months[-1]["issues"].append({
            "href": issue.path, "number": issue.number, "long_date": issue.long_date,
            "headlines": issue.headlines,
        })
    return render_page(env, "index.html.j2", settings, "./", settings.newsletter.name, months=months)


def unsubscribe_page(env: jinja2.Environment, settings: Settings) -> str:
    """Render the page the public copy's Unsubscribe link opens: each email has a personal link."""
    contact = settings.sender.reply_to or settings.sender.unsubscribe_mailto
    _ = i18n.gettext_for(settings)
    title = _("Unsubscribe: %(name)s") % {"name": settings.newsletter.name}
    return render_page(env, "unsubscribe.html.j2", settings, "../", title,
                       contact=contact)


def atom_feed(settings: Settings, issues: list[ArchivedIssue], now: datetime, limit: int = FEED_ENTRIES) -> bytes:
    """Return the Atom feed (RFC 4287) of the latest LIMIT issues with their full content."""
    base = settings.newsletter.base_url.rstrip("/")
    ET.register_namespace("", ATOM)

    def add(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        element = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
        if text is not None:
            element.text = text
        return element

    latest = issues[:limit]
    feed = ET.Element(f"{{{ATOM}}}feed", {"xml:lang": i18n.html_lang(settings.newsletter.language)})
    add(feed, "id", f"{base}/")
    add(feed, "title", settings.newsletter.name)
    add(feed, "subtitle", settings.newsletter.tagline)
    add(feed, "updated", max((i.updated for i in latest), default=now.astimezone(timezone.utc)
                             .isoformat(timespec="seconds")))
    add(feed, "link", rel="self", type="application/atom+xml", href=f"{base}/feed.xml")
    add(feed, "link", rel="alternate", type="text/html", href=f"{base}/")
    author = add(feed, "author")
    add(author, "name", settings.newsletter.name)
    for issue in latest:
        url = f"{base}/{issue.path}"
        entry = add(feed, "entry")
        add(entry, "id", url)
        add(entry, "title", issue.subject)
        add(entry, "updated", issue.updated)
        add(entry, "published", issue.updated)
        add(entry, "link", rel="alternate", type="text/html", href=url)
        if issue.headlines:
            add(entry, "summary", "; ".join(h.text for h in issue.headlines))
        add(entry, "content", email_body(issue.html, issue.structure.preheader)[0], type="html")
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(feed, encoding="utf-8", xml_declaration=False) + b"\n"


def _write(out: Path, relative: str, data: bytes, counts: list[int]) -> None:
    """Write a file of the site unless it already holds DATA (a rebuild rewrites only what changed)."""
    target = out / relative
    try:
        if target.read_bytes() == data:
            if target.stat().st_mode & 0o777 != PUBLIC_FILE:  # written private by an older version
                os.chmod(target, PUBLIC_FILE)
            counts[1] += 1
            return
    except OSError:
        pass
    write_atomic(out, relative, data, public=True)
    counts[0] += 1


def build_site(conn: sqlite3.Connection, settings: Settings, out: Path, now: datetime,
               env: jinja2.Environment | None = None) -> SiteReport:
    """Write the archive of every sent issue into OUT: index, one page per issue, feed, unsubscribe page."""
    from newsletter.renderer import make_environment

    env = env or make_environment(settings)
    try:
        issues = archived_issues(conn, settings)
    except store.errors() as err:
        raise NewsletterError(f"{settings.database_path}: cannot read the sent issues: {err}") from err
    counts = [0, 0]
    make_dirs(out, PUBLIC_DIR)
    os.chmod(out, PUBLIC_DIR)  # the site is served by a web server that may run as another user
    for position, issue in enumerate(issues):
        older = issues[position + 1] if position + 1 < len(issues) else None
        newer = issues[position - 1] if position > 0 else None
        try:
            page = issue_page(env, settings, issue, previous=older, next_=newer)
        except BuildError as err:
            raise BuildError(f"issue {issue.day}: {err}") from err
        _write(out, f"{issue.path}index.html", page.encode("utf-8"), counts)
    _write(out, "index.html", index_page(env, settings, issues).encode("utf-8"), counts)
    _write(out, "unsubscribe/index.html", unsubscribe_page(env, settings).encode("utf-8"), counts)
    _write(out, "feed.xml", atom_feed(settings, issues, now), counts)
    logger.info("archive: %d issues in %s (%d files written)", len(issues), out, counts[0])
    return SiteReport(out, len(issues), counts[0], counts[1])


__all__ = [
    "ArchivedIssue", "Headline", "SiteReport", "archived_issues", "atom_feed", "build_site",
    "email_body", "index_page", "issue_page", "render_page", "unsubscribe_page",
]
