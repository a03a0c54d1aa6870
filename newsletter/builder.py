"""DayContent → Issue: sections and order, number, citations, cross-references, subject, preheader.

Pure: no files, no clock. Everything it needs comes in as arguments.
"""

from __future__ import annotations

import re
import string
from datetime import date
from typing import Sequence

from newsletter import files, findings, i18n
from newsletter.errors import BuildError
from newsletter.findings import Finding
from newsletter.models import Article, CrossReference, DayContent, Issue, IssueArticle, IssueSection
from newsletter.headers import FORBIDDEN_CHARS, has_encoded_word
from newsletter.readers import render_tokens, slugify
from newsletter.rules import MONTH_NUMBER as _MONTH_NUMBER
from newsletter.rules import MONTHS, PREHEADER_MAX, PREHEADER_MIN, Rule
from newsletter.settings import CONFIG_NAME, Settings
from newsletter.tokens import link_phrases, plain_text

SUBJECT_KEYS = ("name", "short_name", "long_date", "date", "number", "lead_title")
ELLIPSIS = "…"
TITLE_JOINER = " · "

# Month names as written in citations (rules.MONTH_NUMBER); a period is optional.
_MONTH = "|".join(sorted((m.capitalize() for m in _MONTH_NUMBER), key=len, reverse=True))
_DATE = rf"(?P<month>{_MONTH})\.?\s+(?P<day>[0-3]?\d)(?:,?\s+(?P<year>\d{{4}}))?"
# A citation: "(Source, Month Day)"; the source part is anything without parentheses.
_CITATION = re.compile(rf"\((?P<inner>[^()<>]*?,\s*{_DATE})\)")
# Abbreviations after which a period does not end a sentence.
_NOT_SENTENCE_END = {m.capitalize() for m in _MONTH_NUMBER} | {
    "Mr", "Mrs", "Ms", "Dr", "Prof", "St", "Gen", "Col", "Lt", "Sgt", "Capt", "Rep", "Sen", "Gov",
    "No", "Vol", "Fig", "Inc", "Ltd", "Co", "Corp", "vs", "etc", "e.g", "i.e", "U.S", "U.K", "U.N",
}


def long_date(day: date, language: str = i18n.SOURCE_LANGUAGE) -> str:
    """Return DAY in full in LANGUAGE, from CLDR: 'Thursday, November 26, 2026', 'jeudi 26 novembre 2026'."""
    return i18n.long_date(day, language)


def archive_url(settings: Settings, day: date) -> str:
    """Return the archive address of DAY's issue."""
    return f"{settings.newsletter.base_url.rstrip('/')}/archive/{day:%Y/%m/%d}/"


def build_issue(
    content: DayContent, settings: Settings, *, issue_days: Sequence[date], only: frozenset[str] = frozenset(),
) -> Issue:
    """Build CONTENT's day into an ordered Issue; ISSUE_DAYS are all days that have an issue.

    ONLY (empty: every section) keeps those sections: a variant for the readers who chose them,
    whose contents, lead, subject and preheader follow; the note and the feature stay, and the
    anchors are the full issue's (the contents link to the archive page).
    """
    known_days = set(issue_days) | {content.day}
    number = 1 + sum(1 for d in set(issue_days) if d < content.day)
    warnings: list[Finding] = []
    section_index = {name: i for i, name in enumerate(settings.issue.sections)}
    for article in content.articles:
        if article.section not in section_index:
            raise BuildError.about(
                Rule.SECTION, f"section {article.section!r} is not one of " + ", ".join(settings.issue.sections),
                files.display(article.path, settings.root),
            )

    anchors: set[str] = set()
    sections = []
    for name in settings.issue.sections:
        chosen = sorted(
            (a for a in content.articles if a.section == name),
            key=lambda a: (a.priority, a.title.casefold()),
        )
        if not chosen:
            continue
        built = tuple(
            _issue_article(a, _unique(f"a-{a.slug}", anchors), content.day, known_days, settings, warnings)
            for a in chosen
        )
        sections.append(IssueSection(name=name, anchor=f"s-{slugify(name, fallback='x')}", articles=built))
    if only:
        sections = [s for s in sections if s.name in only]

    lead = min(
        (a for a in content.articles if not only or a.section in only),
        key=lambda a: (a.priority, section_index[a.section], a.title.casefold()),
        default=None,
    )
    subject = _subject(settings, content.day, number, lead)
    ordered = [a.article for s in sections for a in s.articles]
    preheader = _preheader(lead, ordered, subject, settings, content.day, number)
    return Issue(
        day=content.day, number=number, subject=subject, preheader=preheader,
        sections=tuple(sections), archive_url=archive_url(settings, content.day),
        note=content.note, feature=content.feature, findings=tuple(warnings),
    )


# --- one article -------------------------------------------------------------------------------

def _issue_article(
    article: Article, anchor: str, day: date, known_days: set[date], settings: Settings,
    warnings: list[Finding],
) -> IssueArticle:
    name = files.display(article.path, settings.root)
    text = plain_text(article.tokens)
    if not text:
        warnings.append(findings.warning(Rule.EMPTY_BODY, "the article has no body text", name))
    body, references = _link_cross_references(article, day, known_days, settings, name, warnings)
    return IssueArticle(
        article=article, anchor=anchor, body_html=body,
        sources=_dedupe([*article.sources, *citations(text, settings.newsletter.short_name)]),
        cross_references=tuple(references),
        summary=one_line(article.summary) or _first_sentence(text, settings),
    )


def citations(text: str, short_name: str) -> list[str]:
    """Return the parenthesized sources in plain TEXT, such as 'Interfax, June 2', in order."""
    found = []
    for match in _CITATION.finditer(text):
        inner = " ".join(match["inner"].split())
        if _is_cross_reference(inner, short_name):
            continue
        found.append(inner)
    return found


def _is_cross_reference(inner: str, short_name: str) -> bool:
    return re.match(rf"see\s+{re.escape(short_name)}\s*,", inner, re.I) is not None


def _cross_reference_pattern(short_name: str) -> re.Pattern[str]:
    return re.compile(rf"\((?P<inner>see\s+{re.escape(short_name)}\s*,\s*{_DATE})\)")


def _link_cross_references(
    article: Article, day: date, known_days: set[date], settings: Settings, name: str,
    warnings: list[Finding],
) -> tuple[str, list[CrossReference]]:
    """Link each '(see SSB, May 18)' to that day's archive page (not in code or links: tokens.py)."""
    references: list[CrossReference] = []

    def link(match: re.Match[str]) -> str | None:
        text = " ".join(match["inner"].split())
        target = _resolve(match, day)
        if target is None:
            warnings.append(findings.warning(
                Rule.CROSS_REFERENCE, f"cross-reference ({text}) is not a date on or before {day.isoformat()}", name))
            return None
        exists = target in known_days
        if not exists:
            warnings.append(findings.warning(
                Rule.MISSING_ISSUE, f"cross-reference ({text}) points at {target.isoformat()}, which has no issue", name))
        url = archive_url(settings, target)
        references.append(CrossReference(text=text, day=target, url=url, exists=exists))
        return url

    linked = link_phrases(article.tokens, _cross_reference_pattern(settings.newsletter.short_name), link)
    return (article.body_html if linked is None else render_tokens(linked)), references


def _resolve(match: re.Match[str], day: date) -> date | None:
    """Return the most recent date on or before DAY with the matched month and day."""
    month = _MONTH_NUMBER[match["month"].lower()]
    mday = int(match["day"])
    if match["year"]:
        try:
            target = date(int(match["year"]), month, mday)
        except ValueError:
            return None
        return target if target <= day else None
    for year in range(day.year, day.year - 9, -1):  # Feb 29 may be up to 8 years back
        try:
            target = date(year, month, mday)
        except ValueError:
            if mday > 29 or month != 2:
                return None  # Nov 31: not a day in any year
            continue
        if target <= day:
            return target
    return None


# --- subject and preheader ---------------------------------------------------------------------

def _subject(settings: Settings, day: date, number: int, lead: Article | None) -> str:
    template = settings.issue.subject
    config = str(settings.root / CONFIG_NAME)
    allowed = ", ".join("{" + k + "}" for k in SUBJECT_KEYS)

    def refuse(message: str) -> BuildError:
        return BuildError.about(Rule.SUBJECT, f"issue.subject{message}", config)

    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        raise refuse(f" is not a valid template ({err}); use keys {allowed}") from err
    for field_name in fields:
        if field_name not in SUBJECT_KEYS:
            shown = "{" + field_name + "}" if field_name else "{}"
            raise refuse(f" uses unknown key {shown}; allowed keys: {allowed}")
    values = {
        "name": settings.newsletter.name, "short_name": settings.newsletter.short_name,
        "long_date": long_date(day, settings.newsletter.language), "date": day.isoformat(), "number": number,
        "lead_title": lead.title if lead else "",
    }
    try:
        subject = template.format(**values)
    except (ValueError, TypeError) as err:
        raise refuse(f" cannot be filled in ({err}); allowed keys: {allowed}") from err
    subject = one_line(subject)
    if not lead:  # "{short_name} {long_date}: {lead_title}" with no lead: drop the dangling ':'
        subject = subject.rstrip(" :-–—·|,")
    if has_encoded_word(subject):
        raise refuse(": the subject must not contain '=?…?=' (encoded words)")
    return subject


def one_line(text: str) -> str:
    """Return TEXT with control characters turned into spaces and whitespace collapsed."""
    return " ".join(FORBIDDEN_CHARS.sub(" ", text).split())


def _preheader(
    lead: Article | None, ordered: list[Article], subject: str, settings: Settings, day: date,
    number: int,
) -> str:
    _ = i18n.gettext_for(settings)
    when = long_date(day, settings.newsletter.language)
    if lead is None:
        return trim_preheader(f"{_('No articles today')}{TITLE_JOINER}{settings.newsletter.name}{TITLE_JOINER}{when}")
    text = one_line(lead.summary) or _first_sentence(plain_text(lead.tokens), settings)
    text = trim_preheader(text)
    fillers = [a.title for a in ordered if a is not lead]
    if not text:
        text = lead.title
    fillers += [settings.newsletter.name, when]
    for filler in fillers:
        if len(text) >= PREHEADER_MIN:
            break
        text = f"{text}{TITLE_JOINER}{one_line(filler)}"
    text = trim_preheader(text)
    if text.casefold() == subject.casefold():
        text = trim_preheader(f"{text}{TITLE_JOINER}" + _("No. %(number)s") % {"number": number})
    return text


def _first_sentence(text: str, settings: Settings) -> str:
    """Return the first sentence of plain TEXT, without its citations and cross-references."""
    words = text.split(" ")
    sentence: list[str] = []
    for i, word in enumerate(words):
        sentence.append(word)
        following = words[i + 1] if i + 1 < len(words) else ""
        stripped = word.rstrip("\"'”’)")
        if stripped.endswith(("!", "?")) or (
            stripped.endswith(".")
            and stripped[:-1].lstrip("(\"'“‘") not in _NOT_SENTENCE_END
            and not re.fullmatch(r"\(?[A-Z]\.", stripped)  # an initial: "J. Smith"
            and (not following or following[:1].isupper() or following[:1] in "\"'“‘(")
        ):
            break
    first = " ".join(sentence)
    first = _CITATION.sub("", first)
    first = _cross_reference_pattern(settings.newsletter.short_name).sub("", first)
    return " ".join(re.sub(r"\s+([.,;:!?])", r"\1", first).split())


def trim_preheader(text: str) -> str:
    """Return TEXT cut to at most PREHEADER_MAX characters on a word boundary, with an ellipsis."""
    text = one_line(text)
    if len(text) <= PREHEADER_MAX:
        return text
    cut = text[: PREHEADER_MAX - len(ELLIPSIS) + 1]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    else:
        cut = cut[: PREHEADER_MAX - len(ELLIPSIS)]
    return cut.rstrip(" ,;:·-–—") + ELLIPSIS


# --- small helpers -----------------------------------------------------------------------------

def _unique(anchor: str, taken: set[str]) -> str:
    candidate, n = anchor, 2
    while candidate in taken:
        candidate, n = f"{anchor}-{n}", n + 1
    taken.add(candidate)
    return candidate


def _dedupe(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i for i in items if i))


__all__ = ["build_issue", "long_date", "archive_url", "citations", "one_line", "trim_preheader", "MONTHS", "SUBJECT_KEYS"]
