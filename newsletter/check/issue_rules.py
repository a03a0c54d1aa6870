"""The rules of the issue's content and settings: leftovers, sections, references, citations, DKIM."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date

from newsletter.check.context import Context
from newsletter.findings import Finding, Severity, error, warning
from newsletter.models import PLACEHOLDERS
from newsletter.rules import MONTH_NUMBER, Rule
from newsletter.settings import CONFIG_NAME
from newsletter.tokens import plain_text

_TEMPLATE_SYNTAX = re.compile(r"\{\{.{0,80}?\}\}|\{%.{0,80}?%\}|\{#.{0,80}?#\}|\{\{|\{%|\{#", re.S)
_LEFTOVER_WORDS = re.compile("|".join([*map(re.escape, PLACEHOLDERS), r"NLX[A-Z]+X?"]))
# "Source, Month Day", or "Author, Source, Month Day": the date comes last.
_CITATION_SHAPE = re.compile(r"^(?P<source>[^()]*?[^\W\d_][^()]*?),\s*(?P<month>[A-Za-z]+)\.?\s+(?P<day>\d{1,2})(?:,?\s+(?P<year>\d{4}))?$")
_LOOKS_LIKE_CITATION = re.compile(r"\(([^()<>]{2,80}?,\s*[A-Za-z]+\.?\s+\d{1,2}(?:,?\s+\d{4})?)\)")


def html_leftovers(ctx: Context) -> Iterator[Finding]:
    """Template syntax or placeholders left in the HTML part a subscriber reads."""
    yield from _leftovers(ctx, "HTML part", ctx.html_text)


def text_leftovers(ctx: Context) -> Iterator[Finding]:
    """Template syntax or placeholders left in the text part a subscriber reads."""
    yield from _leftovers(ctx, "text part", ctx.plain)


def _leftovers(ctx: Context, part: str, text: str) -> Iterator[Finding]:
    is_text = part == "text part"
    for match in list(_TEMPLATE_SYNTAX.finditer(text))[:3]:
        snippet = match[0]
        article = ctx.where_text(snippet)
        if article:
            yield warning(Rule.TEMPLATE_SYNTAX, f"the {part} shows {snippet!r}, which looks like template syntax; "
                          "fine if the article means it", article)
        else:
            yield error(Rule.TEMPLATE_SYNTAX, f"the {part} shows template syntax {snippet!r} to the reader: a "
                        "template left it unrendered (a raw block, or a variable in a string)",
                        ctx.templates.blame(snippet, snippet[:2], text_part=is_text))
    for word in sorted(set(_LEFTOVER_WORDS.findall(text))):
        yield error(Rule.PLACEHOLDER, f"the {part} still holds the placeholder {word} after personalizing: a "
                    "template puts it where the message builder does not replace it",
                    ctx.templates.blame(word, "{{ greeting", "unsubscribe_url", text_part=is_text))


def sections(ctx: Context) -> Iterator[Finding]:
    """Every section shown has articles, every article a title."""
    for section in ctx.issue.sections:
        if not section.articles:
            yield error(Rule.EMPTY_SECTION, f"section {section.name!r} is empty", CONFIG_NAME)
    for item in ctx.issue.articles:
        if not item.article.title.strip():
            yield error(Rule.ARTICLE_TITLE, "the article has no title", ctx.show(item.article.path))


def references(ctx: Context) -> Iterator[Finding]:
    """Cross-references lead to an issue; citations are 'Source, Month Day' with a real day."""
    for item in ctx.issue.articles:
        where = ctx.show(item.article.path)
        for ref in item.cross_references:
            if not ref.exists:
                yield warning(Rule.MISSING_ISSUE, f"cross-reference ({ref.text}) points at {ref.day.isoformat()}, "
                              "which has no issue: the link leads to a missing archive page", where)
        for source in item.sources:
            problem = citation_problem(source)
            if problem:
                yield warning(Rule.CITATION, f"citation {source!r} {problem}", where)
        plain = plain_text(item.article.tokens)
        cited = set(item.sources)
        for match in _LOOKS_LIKE_CITATION.finditer(plain):
            inner = " ".join(match[1].split())
            if inner in cited or inner.lower().startswith("see "):
                continue
            problem = citation_problem(inner)
            if problem:
                yield warning(Rule.CITATION, f"({inner}) looks like a citation but {problem}", where)


def pipeline_warnings(ctx: Context) -> Iterator[Finding]:
    """The builder's warnings, but the size (measured here) and missing issues (said by `references`)."""
    for finding in ctx.pipeline:
        if finding.rule not in (Rule.GMAIL_CLIP, Rule.MISSING_ISSUE):
            yield Finding(Severity.WARNING, finding.rule, ctx.show(finding.path) if finding.path else "",
                          finding.line, finding.message)


def dkim_settings(ctx: Context) -> Iterator[Finding]:
    """Rule 20, from the settings: all of [dkim] or none, on the From domain, a key that exists."""
    settings = ctx.settings
    dkim = settings.dkim
    if not (dkim.selector or dkim.domain or dkim.key_file):
        return
    if not (dkim.selector and dkim.domain and dkim.key_file):
        missing = [k for k in ("selector", "domain", "key_file") if not getattr(dkim, k)]
        yield error(Rule.DKIM, f"[dkim] is half configured: {', '.join(missing)} missing", CONFIG_NAME)
    if dkim.domain and dkim.domain.strip().lower() != settings.sender_domain:
        yield error(Rule.DKIM, f"[dkim] domain {dkim.domain!r} is not the From domain {settings.sender_domain!r}: "
                    "DMARC fails unless d= is aligned with From", CONFIG_NAME)
    for name in ("key_file", "ed25519_key_file"):
        path = getattr(dkim, name)
        if path and not (settings.root / path).is_file():
            yield error(Rule.DKIM, f"[dkim] {name} {path!r} does not exist", CONFIG_NAME)


def postal_address(ctx: Context) -> Iterator[Finding]:
    """Bulk mail carries the sender's postal address (CAN-SPAM; Gmail and Yahoo sender rules)."""
    from newsletter.project import POSTAL_PLACEHOLDER

    address = ctx.settings.sender.postal_address.strip()
    if not address or address == POSTAL_PLACEHOLDER:
        state = "empty" if not address else f"still the placeholder {POSTAL_PLACEHOLDER!r}"
        yield error(Rule.POSTAL_ADDRESS, f"[sender] postal_address is {state}: bulk mail must carry the sender's "
                    "postal address (CAN-SPAM; Gmail and Yahoo sender rules)", CONFIG_NAME)


def translations(ctx: Context) -> Iterator[Finding]:
    """Every fixed string (the package's, and the project's templates') has a translation in the newsletter's language."""
    from newsletter import i18n

    settings = ctx.settings
    if i18n.language_of(settings).is_source:
        return  # the msgids are English
    yield from _untranslated_copies(ctx)
    found = i18n.template_msgids(settings.templates_dir)
    missing = i18n.untranslated(settings, [msgid for msgid, _, _ in found])
    if not missing:
        return
    language = settings.newsletter.language
    catalog = f"{i18n.PROJECT_CATALOGS}/{i18n.locale_of(language)}.po"
    where = {msgid: (ctx.show(path), line) for msgid, path, line in reversed(found)}
    shown = 5
    for msgid in missing[:shown]:
        path, line = where.get(msgid, (catalog, None))
        yield error(Rule.TRANSLATION, f"{msgid!r} has no {language!r} translation: readers would see it in English; "
                    f"add it to {catalog} (README: Languages)", path, line)
    if len(missing) > shown:
        yield error(Rule.TRANSLATION, f"{len(missing) - shown} more fixed strings have no {language!r} translation; "
                    f"`pybabel init` writes a catalog of them all for {catalog} (README: Languages)", catalog)


def _untranslated_copies(ctx: Context) -> Iterator[Finding]:
    """A project's copy of a packaged template made before languages existed: its words stay English."""
    from newsletter.project import packaged_templates

    packaged, own = packaged_templates(), ctx.settings.templates_dir
    if not own.is_dir() or own.resolve() == packaged.resolve():
        return
    for copy in sorted(own.rglob("*.j2")):
        original = packaged / copy.relative_to(own)
        if not original.is_file():
            continue
        marked = lambda text: "_(" in text or "{% trans" in text  # noqa: E731
        if marked(original.read_text(encoding="utf-8")) and not marked(copy.read_text(encoding="utf-8")):
            yield warning(Rule.TRANSLATION, "this copy of a packaged template has no translatable strings (made "
                          "before languages existed?): readers see its words in English whatever the language; "
                          "copy the packaged template again, or delete this copy if you did not change it",
                          ctx.show(copy))


def citation_problem(text: str) -> str:
    """Return what is wrong with a citation such as 'Interfax, June 2', or "" if it is well formed."""
    match = _CITATION_SHAPE.match(" ".join(text.split()))
    if not match:
        return "is not of the form 'Source, Month Day'"
    month = MONTH_NUMBER.get(match["month"].lower())
    if month is None:
        return f"has {match['month']!r}, which is not a month"
    year = int(match["year"]) if match["year"] else 2024  # a leap year: Feb 29 is a day
    try:
        date(year, month, int(match["day"]))
    except ValueError:
        return f"has {match['month']} {match['day']}, which is not a day of the year"
    return ""


RULES = (html_leftovers, text_leftovers, sections, references, pipeline_warnings, dkim_settings, postal_address,
         translations)
