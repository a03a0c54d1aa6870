"""The weekly digest: what each reader is owed from a week's issues, grouped into variants.

Read from the ledger only: the week's frozen issues (their structure JSON: headlines, summaries,
links to the archived pages, the editors' note) and each issue's delivery rows. The rule that
keeps a reader who switches mid-week from missing the week or getting it twice:

    the digest of week W gives a reader each issue of W that the ledger holds no daily row of
    for them, when they are weekly now or changed their preferences after that issue started.

A weekly reader has no daily rows (the daily snapshot takes daily readers only), so they get the
whole week; one who turned weekly on Thursday got Monday to Thursday as dailies and gets the rest;
one who turned daily on Thursday gets Monday to Wednesday. Readers owed the same issues in the
same sections share one variant, rendered once (`plan`); a variant with no article is not sent.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import defaultdict
from dataclasses import dataclass
from datetime import date

from newsletter import i18n, structure
from newsletter.builder import one_line, trim_preheader, archive_url, long_date
from newsletter.errors import NewsletterError
from newsletter.headers import has_encoded_word
from newsletter.models import Issue, RenderedIssue, decode_sections
from newsletter.rules import PREHEADER_MIN
from newsletter.settings import CONFIG_NAME, Settings
from newsletter.weeks import DigestKey, IsoWeek

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeekIssue:
    """One daily issue of the week, as frozen in the ledger."""

    day: date
    started: str  # when its send started (issues.created_at): the daily snapshot's moment
    content: structure.IssueStructure


@dataclass(frozen=True)
class DigestDay:
    """One issue in a digest: its headlines (in the reader's sections) and its note, in short."""

    day: date
    number: int
    long_date: str
    archive_url: str
    sections: tuple[structure.SectionEntry, ...]
    note_title: str = ""
    note_summary: str = ""

    @property
    def articles(self) -> tuple[structure.ArticleEntry, ...]:
        return tuple(a for s in self.sections for a in s.articles)


@dataclass(frozen=True)
class Digest:
    """One variant of a week's digest: the same issues in the same sections for all its readers."""

    key: DigestKey
    sections: frozenset[str]  # the readers' sections; empty: all
    days: tuple[DigestDay, ...]
    subject: str
    preheader: str

    @property
    def week(self) -> IsoWeek:
        return self.key.week

    @property
    def articles(self) -> int:
        return sum(len(day.articles) for day in self.days)

    def to_json(self) -> str:
        """What the ledger keeps beside the frozen HTML: which issues and sections this variant holds."""
        import json

        return json.dumps({"kind": "digest", "week": str(self.week), "variant": self.key.variant,
                           "subject": self.subject, "preheader": self.preheader,
                           "sections": sorted(self.sections), "days": [d.day.isoformat() for d in self.days],
                           "articles": self.articles}, ensure_ascii=False)


@dataclass(frozen=True)
class Plan:
    """A week's digest before it is frozen: its variants and who gets which."""

    week: IsoWeek
    variants: tuple[Digest, ...]
    recipients: dict[DigestKey, tuple[int, ...]]  # subscriber ids per variant
    nothing: int = 0  # readers owed issues with no article in their sections: they get no digest

    @property
    def readers(self) -> int:
        return sum(len(ids) for ids in self.recipients.values())


def week_issues(conn: sqlite3.Connection, week: IsoWeek) -> list[WeekIssue]:
    """Return the week's daily issues whose send started, by day, read from their frozen structure."""
    rows = conn.execute(
        "SELECT i.day, i.number, i.subject, i.html, i.created_at, s.structure FROM issues i"
        " LEFT JOIN issue_structures s ON s.day = i.day WHERE i.day BETWEEN ? AND ? ORDER BY i.day",
        (week.monday.isoformat(), week.sunday.isoformat()),
    ).fetchall()
    found = []
    for row in rows:
        day = date.fromisoformat(row["day"])
        if row["structure"]:
            content = structure.from_json(row["structure"], f"the ledger's issue of {day}")
        else:  # frozen before structures were kept: headlines only
            content = structure.from_html(row["html"], day=day, number=row["number"], subject=row["subject"])
        found.append(WeekIssue(day, row["created_at"], content))
    return found


def owed(conn: sqlite3.Connection, issues: list[WeekIssue]) -> dict[int, tuple[frozenset[str], tuple[date, ...]]]:
    """Return, per active reader owed any of ISSUES, their sections and the days they are owed."""
    days: dict[int, list[date]] = defaultdict(list)
    sections: dict[int, frozenset[str]] = {}
    for issue in issues:
        rows = conn.execute(
            "SELECT s.id, s.sections FROM subscribers s WHERE s.status = 'active'"
            " AND (s.frequency = 'weekly' OR s.preferences_at >= ?)"
            " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.issue_day = ? AND d.subscriber_id = s.id)",
            (issue.started, issue.day.isoformat()),
        )
        for subscriber_id, chosen in rows:
            days[subscriber_id].append(issue.day)
            if subscriber_id not in sections:
                sections[subscriber_id] = decode_sections(chosen or "")
    return {sid: (sections[sid], tuple(found)) for sid, found in days.items()}


def plan(conn: sqlite3.Connection, settings: Settings, week: IsoWeek) -> Plan:
    """Return the week's variants and their readers (nothing is written)."""
    issues = week_issues(conn, week)
    groups: dict[tuple[frozenset[str], tuple[date, ...]], list[int]] = defaultdict(list)
    for subscriber_id, wanted in owed(conn, issues).items():
        groups[wanted].append(subscriber_id)
    by_day = {issue.day: issue for issue in issues}
    variants: list[Digest] = []
    recipients: dict[DigestKey, tuple[int, ...]] = {}
    nothing = 0
    for chosen, days in sorted(groups, key=lambda g: (sorted(g[0]), g[1])):
        content = tuple(day for day in (_digest_day(by_day[d], chosen, settings) for d in days) if day.articles)
        ids = tuple(sorted(groups[chosen, days]))
        if not content:
            nothing += len(ids)
            continue
        key = week.key(len(variants) + 1)
        variants.append(make_digest(key, chosen, content, settings))
        recipients[key] = ids
    if nothing:
        logger.info("%s: %d reader(s) owed issues with no article in their sections get no digest", week, nothing)
    return Plan(week, tuple(variants), recipients, nothing)


def preview(conn: sqlite3.Connection, settings: Settings, week: IsoWeek, subscriber_id: int | None = None) -> Digest | None:
    """Return the digest one reader is owed for WEEK (None: nothing), or without SUBSCRIBER_ID the whole
    week in every section, as a weekly reader who chose no section gets it."""
    issues = week_issues(conn, week)
    chosen: frozenset[str] = frozenset()
    if subscriber_id is not None:
        wanted = owed(conn, issues).get(subscriber_id)
        if wanted is None:
            return None
        chosen, days = wanted
        issues = [issue for issue in issues if issue.day in days]
    content = tuple(day for day in (_digest_day(issue, chosen, settings) for issue in issues) if day.articles)
    return make_digest(week.key(0), chosen, content, settings) if content else None


def _digest_day(issue: WeekIssue, sections: frozenset[str], settings: Settings) -> DigestDay:
    """Return ISSUE as a digest shows it: the sections chosen (all when none), the note in short."""
    content = issue.content
    kept = tuple(s for s in content.sections if s.articles and (not sections or s.name in sections))
    return DigestDay(issue.day, content.number, long_date(issue.day, settings.newsletter.language),
                     content.archive_url or archive_url(settings, issue.day), kept,
                     content.note_title, content.note_summary)


def make_digest(key: DigestKey, sections: frozenset[str], days: tuple[DigestDay, ...], settings: Settings) -> Digest:
    """Return the digest of DAYS with its subject and preheader from [digest] subject and preheader."""
    articles = [a for day in days for a in day.articles]
    values = {
        "name": settings.newsletter.name, "short_name": settings.newsletter.short_name, "week": str(key.week),
        "dates": key.week.dates(settings.newsletter.language), "issues": len(days), "articles": len(articles),
        "lead_title": articles[0].headline if articles else "",
    }
    _ = i18n.gettext_for(settings)
    # empty settings (the default): the catalog's wording, in the newsletter's language
    subject_template = settings.digest.subject or _("{name}: the week of {dates}")
    preheader_template = settings.digest.preheader or _("{articles} articles from {issues} issues: {lead_title}")
    subject = one_line(_fill("subject", subject_template, values, settings)).rstrip(" :-–—·|,")
    preheader = trim_preheader(_fill("preheader", preheader_template, values, settings))
    for headline in (a.headline for a in articles[1:]):  # too short for inbox lists: add headlines
        if len(preheader) >= PREHEADER_MIN:
            break
        preheader = trim_preheader(f"{preheader} · {one_line(headline)}")
    return Digest(key, sections, days, subject, preheader)


def _fill(name: str, template: str, values: dict[str, object], settings: Settings) -> str:
    """Fill a [digest] template (its keys were checked when the settings were read)."""
    try:
        text = template.format(**values)
    except (ValueError, TypeError, KeyError, IndexError) as err:
        raise NewsletterError(f"{settings.root / CONFIG_NAME}: digest.{name} cannot be filled in ({err})") from err
    if has_encoded_word(text):
        raise NewsletterError(f"{settings.root / CONFIG_NAME}: digest.{name} must not contain '=?…?=' (encoded words)")
    return text


def as_issue(digest: Digest, settings: Settings) -> Issue:
    """Return DIGEST as the Issue the renderer, the check and the message builder take."""
    return Issue(day=digest.key, number=0, subject=digest.subject, preheader=digest.preheader, sections=(),
                 archive_url=settings.newsletter.base_url.rstrip("/") + "/")


def render(digest: Digest, settings: Settings, env=None) -> RenderedIssue:
    """Render DIGEST (HTML and text); a digest Gmail would clip is rendered again without summaries."""
    from newsletter import renderer
    from newsletter.errors import ClippedError

    try:
        return renderer.render_digest(as_issue(digest, settings), digest, settings, env, summaries=True)
    except ClippedError:
        logger.info("%s: the digest is too long for Gmail with summaries; sending headlines only", digest.key)
        return renderer.render_digest(as_issue(digest, settings), digest, settings, env, summaries=False)


__all__ = ["Digest", "DigestDay", "Plan", "WeekIssue", "as_issue", "make_digest", "owed", "plan", "preview", "render",
           "week_issues"]
