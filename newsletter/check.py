"""The pre-send gate: build a day's issue and one sample message, and hold them to EMAIL.md.

`check_issue(settings, day)` never raises for a problem of the issue itself: a bad article, a
template error or an issue too big for Gmail becomes an error finding that names the file at
fault. `newsletter send` and the scheduler run it first and refuse to send when it has errors.
"""

from __future__ import annotations

import email
import email.policy
import html as html_lib
import logging
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path

from newsletter.errors import ArticleError, NewsletterError
from newsletter.models import PLACEHOLDERS, TOKEN_PLACEHOLDER, Issue, RenderedIssue, Subscriber
from newsletter.pipeline import PreparedIssue
from newsletter.settings import CONFIG_NAME, Settings

logger = logging.getLogger(__name__)

SIZE_LIMIT = 102_000  # Gmail clips above this (EMAIL.md rule 6)
SIZE_WARNING = 90_000
PREHEADER_MIN, PREHEADER_MAX = 40, 140
MIN_FONT_PX = 14
MAX_LINE = 998

# The sample message: a reader whose name and domain are not ASCII, so encoding is exercised.
SAMPLE_SUBSCRIBER = Subscriber(
    id=1, email="leserin@bücher.example", email_key="leserin@bücher.example",
    name="Zoë Łukasiewicz-Nguyễn", status="active", created_at="", updated_at="",
)
# The sample is never sent: a fixed key keeps the check from creating the project's key file.
_SAMPLE_KEY = b"newsletter-check-sample-key"

_TEMPLATE_SYNTAX = re.compile(r"\{\{.{0,80}?\}\}|\{%.{0,80}?%\}|\{#.{0,80}?#\}|\{\{|\{%|\{#", re.S)
_LEFTOVER_WORDS = re.compile("|".join([*map(re.escape, PLACEHOLDERS), r"NLX[A-Z]+X?"]))
_FORBIDDEN_TAGS = ("script", "form", "iframe", "base", "object", "embed", "frame", "frameset")
_LAYOUT_PROPERTIES = re.compile(r"^(?:flex|grid)(?:-|$)")
_FONT_PX = re.compile(r"^(\d+(?:\.\d+)?)px$")
# "Source, Month Day", or "Author, Source, Month Day": the date comes last.
_CITATION_SHAPE = re.compile(r"^(?P<source>[^()]*?[^\W\d_][^()]*?),\s*(?P<month>[A-Za-z]+)\.?\s+(?P<day>\d{1,2})(?:,?\s+(?P<year>\d{4}))?$")
_LOOKS_LIKE_CITATION = re.compile(r"\(([^()<>]{2,80}?,\s*[A-Za-z]+\.?\s+\d{1,2}(?:,?\s+\d{4})?)\)")


@dataclass(frozen=True)
class Finding:
    """One problem: how bad, which rule of EMAIL.md (None: a rule of ours), what, and where."""

    severity: str  # "error" | "warning"
    rule: int | None
    message: str
    where: str = ""  # the article file or template at fault, relative to the project

    def to_dict(self) -> dict:
        return {"severity": self.severity, "rule": self.rule, "where": self.where, "message": self.message}


@dataclass(frozen=True)
class CheckReport:
    """What the check found for one day, errors first."""

    day: date
    findings: tuple[Finding, ...] = ()
    skipped_reason: str = ""
    number: int | None = None
    subject: str = ""
    html_bytes: int | None = None

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "warning")

    @property
    def skipped(self) -> bool:
        """True when the day has no issue to send (the empty policy), so there was nothing to check."""
        return bool(self.skipped_reason) and self.html_bytes is None and not self.findings

    @property
    def ok(self) -> bool:
        """True when nothing stops the issue from being sent."""
        return not self.errors

    def to_dict(self) -> dict:
        return {
            "day": self.day.isoformat(),
            "summary": {
                "ok": self.ok, "errors": len(self.errors), "warnings": len(self.warnings),
                "skipped": self.skipped, "skipped_reason": self.skipped_reason,
                "number": self.number, "subject": self.subject, "html_bytes": self.html_bytes,
            },
            "findings": [f.to_dict() for f in self.findings],
        }


def format_report(report: CheckReport) -> str:
    """Return REPORT as lines a person reads at a glance: a summary, then errors, then warnings."""
    if report.skipped:
        return f"No issue to check: {report.skipped_reason}"
    errors, warnings = len(report.errors), len(report.warnings)
    if report.skipped_reason:  # the empty policy sends a notice instead: that is what was checked
        what = f"{report.skipped_reason}\nThe notice of {report.day}"
    elif report.number:
        what = f"Issue No. {report.number} of {report.day}"
    else:
        what = f"Issue of {report.day}"
    size = f", {report.html_bytes:,} bytes of HTML" if report.html_bytes is not None else ""
    counts = f"{errors} error{'' if errors == 1 else 's'}, {warnings} warning{'' if warnings == 1 else 's'}"
    lines = [f"{what}{size}: {counts}" if report.findings else f"{what}{size}: no problems found"]
    for finding in report.findings:
        rule = f" (EMAIL.md rule {finding.rule})" if finding.rule else ""
        where = f"{finding.where}: " if finding.where else ""
        label = "ERROR  " if finding.severity == "error" else "warning"
        body = f"{where}{finding.message}{rule}".replace("\n", "\n         ")
        lines.append(f"  {label} {body}")
    if errors:
        lines.append("Fix the errors above: an issue with errors is not sent.")
    return "\n".join(lines)


# --- entry points --------------------------------------------------------------------------------

def check_issue(settings: Settings, day: date) -> CheckReport:
    """Build DAY's issue and a sample message and check them; problems of the issue become findings."""
    from newsletter.pipeline import prepare_issue

    try:
        prepared = prepare_issue(settings, day)
    except ArticleError as err:
        return CheckReport(day, _sorted(_article_findings(settings, err)))
    except NewsletterError as err:
        return CheckReport(day, (_build_finding(settings, day, err),))
    if prepared.rendered is None:
        return CheckReport(day, skipped_reason=prepared.skipped_reason)
    return check_rendered(prepared, settings)


def check_rendered(prepared: PreparedIssue, settings: Settings) -> CheckReport:
    """Check a prepared issue: its HTML, its text, one personalized message, its references."""
    rendered = prepared.rendered
    if rendered is None:
        return CheckReport(prepared.day, skipped_reason=prepared.skipped_reason)
    checker = _Checker(settings, rendered)
    checker.run(prepared.warnings)
    issue = rendered.issue
    return CheckReport(
        day=prepared.day, findings=_sorted(checker.findings), skipped_reason=prepared.skipped_reason,
        number=issue.number or None, subject=issue.subject, html_bytes=checker.html_bytes,
    )


def _sorted(findings: list[Finding]) -> tuple[Finding, ...]:
    unique = list(dict.fromkeys(findings))
    return tuple(sorted(unique, key=lambda f: f.severity != "error"))  # stable: errors first


# --- failures before there is anything to check --------------------------------------------------

def _article_findings(settings: Settings, err: ArticleError) -> list[Finding]:
    """One error per problem of the ArticleError, each naming its file (and line)."""
    findings = []
    for line in str(err).splitlines():
        where, message = _split_where(settings, line)
        findings.append(Finding("error", None, message, where))
    return findings


def _build_finding(settings: Settings, day: date, err: NewsletterError) -> Finding:
    text = str(err)
    if "Gmail clips" in text:
        return Finding("error", 6, _too_big_message(settings, day, text), f"articles/{day.isoformat()}")
    where, message = _split_where(settings, text)
    rule = 12 if "is not https:// or mailto:" in text else 9 if "image" in text and "https" in text else None
    return Finding("error", rule, message, where)


def _too_big_message(settings: Settings, day: date, text: str) -> str:
    """Say how big the HTML is and which articles weigh most, so the editor knows what to cut."""
    size = re.search(r"the HTML is ([\d,]+) bytes", text)
    shown = f"the HTML is {size[1]} bytes" if size else "the HTML is too big"
    message = (f"{shown}: Gmail clips a message above {SIZE_LIMIT:,} bytes and hides the unsubscribe "
               "footer; shorten articles or move some to another day")
    try:
        from newsletter import readers

        articles = readers.read_day(settings.articles_dir, day, settings).articles
    except NewsletterError:
        return message
    heaviest = sorted(articles, key=lambda a: -len(a.body_html.encode("utf-8")))[:3]
    if heaviest:
        listed = ", ".join(f"{_display(settings, a.path)} ({len(a.body_html.encode('utf-8')):,} bytes)"
                           for a in heaviest)
        message += f" ({len(articles)} articles; the longest: {listed})"
    return message


def _split_where(settings: Settings, text: str) -> tuple[str, str]:
    """Split "path:line: message" into (path:line, message) when the start names a file of the project."""
    head, sep, rest = text.partition(": ")
    if sep and re.fullmatch(r"[^\s:][^:]*?(?::\d+)?", head):
        path = Path(head.rsplit(":", 1)[0] if re.search(r":\d+$", head) else head)
        if path.suffix or (settings.root / path).exists() or path.exists():
            if path.is_absolute():
                head = _display(settings, path) + (head[len(str(path)):])
            return head, rest
    return "", text


def _display(settings: Settings, path: Path | str) -> str:
    path = Path(path)
    for base in (settings.root, settings.root.resolve()):
        try:
            return str(path.relative_to(base))
        except ValueError:
            pass
    return str(path)


# --- the checks ----------------------------------------------------------------------------------

@dataclass
class _Checker:
    settings: Settings
    rendered: RenderedIssue
    findings: list[Finding] = field(default_factory=list)
    html_bytes: int | None = None
    _bad_layout: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    @property
    def issue(self) -> Issue:
        return self.rendered.issue

    def error(self, rule: int | None, message: str, where: str = "") -> None:
        self.findings.append(Finding("error", rule, message, where))

    def warn(self, rule: int | None, message: str, where: str = "") -> None:
        self.findings.append(Finding("warning", rule, message, where))

    def run(self, pipeline_warnings: tuple[str, ...]) -> None:
        from lxml import html as lxml_html

        from newsletter import messages

        self._templates = _TemplateSources(self.settings)
        raw = self._sample_message()
        if raw is not None:
            parts = _decoded_parts(raw)
            html_text, plain = parts.get("text/html", ""), parts.get("text/plain", "")
        else:
            html_text = messages.personal_html(self.rendered, SAMPLE_SUBSCRIBER, self.settings, _SAMPLE_KEY)
            plain = messages.personal_text(self.rendered, SAMPLE_SUBSCRIBER, self.settings, _SAMPLE_KEY)
        self.html_bytes = len(html_text.encode("utf-8"))
        self._size()
        doc = lxml_html.document_fromstring(self.rendered.html)
        self._head(doc)
        self._styles(doc)
        self._forbidden(doc)
        self._tables(doc)
        self._images(doc)
        self._preheader(doc)
        self._headings(doc)
        self._links(doc)
        self._text_sizes(doc)
        self._leftovers("HTML part", html_text)
        self._leftovers("text part", plain)
        self._sections()
        self._references()
        self._pipeline_warnings(pipeline_warnings)
        self._dkim_settings()
        if raw is not None:
            self._message(raw)

    # rule 6
    def _size(self) -> None:
        size = self.html_bytes or 0
        where = f"articles/{self.issue.day.isoformat()}"
        if size > SIZE_LIMIT:
            self.error(6, f"the HTML is {size:,} bytes: Gmail clips above {SIZE_LIMIT:,} and hides the "
                          "unsubscribe footer; shorten articles or move some to another day", where)
        elif size > SIZE_WARNING:
            self.warn(6, f"the HTML is {size:,} bytes, close to Gmail's clipping limit of {SIZE_LIMIT:,}; "
                         f"keep it under {SIZE_WARNING:,}", where)

    # rule 7
    def _head(self, doc) -> None:
        page = self.rendered.html
        layout = self._templates.blame("<html", "<head")
        if not re.match(r"\s*<!DOCTYPE html>", page, re.I):
            self.error(7, "the HTML does not start with <!DOCTYPE html> (Outlook and Gmail fall back to quirks mode)", layout)
        if not doc.get("lang"):
            self.warn(7, "<html> has no lang attribute (screen readers guess the language)", layout)
        metas = {(m.get("name") or "").lower(): m.get("content") or "" for m in doc.iter("meta")}
        charsets = [m.get("charset") for m in doc.iter("meta") if m.get("charset")]
        if not any(c.lower() == "utf-8" for c in charsets):
            self.error(7, 'no <meta charset="utf-8"> in <head>', layout)
        for name, why in (("viewport", "phones zoom out to a desktop width"),
                          ("x-apple-disable-message-reformatting", "Apple Mail rescales the text"),
                          ("color-scheme", "dark-mode clients recolour the issue on their own")):
            if name not in metas:
                self.warn(7, f'no <meta name="{name}"> in <head>: {why}', layout)
        title = doc.find(".//title")
        if title is None or (title.text or "").strip() != self.issue.subject:
            self.warn(7, "<title> is not the subject (it is what a browser tab and some clients show)", layout)

    # rules 1, 2, 4, 8 in the style blocks that stayed, 13 for linked stylesheets
    def _styles(self, doc) -> None:
        import cssutils

        for link in doc.iter("link"):
            if "stylesheet" in (link.get("rel") or "").lower():
                self.error(13, f"<link rel=stylesheet href={link.get('href')!r}>: mail clients do not load "
                               "remote stylesheets; put the CSS in templates/email.css",
                           self._templates.blame(link.get("href") or "<link", "<link"))
        for block in doc.iter("style"):
            css = block.text or ""
            problems: list[str] = []
            parser = cssutils.CSSParser(log=_ListLogger(problems), loglevel=logging.WARNING,
                                        raiseExceptions=False, validate=False)
            sheet = parser.parseString(css)
            for problem in problems[:3]:
                self.warn(4, f"cssutils cannot read part of a kept <style> block: {problem}",
                          self._templates.blame(css.strip()[:40], "<style"))
            not_inlined, not_important = [], []
            for rule in sheet.cssRules:
                if rule.type == rule.STYLE_RULE:
                    if not re.search(r":(?!:?-)", rule.selectorText):  # no pseudo-class: could be inlined
                        not_inlined.append(rule.selectorText)
                    declarations = [(rule.selectorText, p) for p in rule.style]
                elif rule.type == rule.MEDIA_RULE:
                    declarations = [(r.selectorText, p) for r in rule.cssRules if r.type == r.STYLE_RULE for p in r.style]
                else:
                    continue
                for selector, prop in declarations:
                    if prop.priority != "important":
                        not_important.append(f"{selector} {{ {prop.name}: {prop.value} }}")
                    self._layout_property(prop.name, prop.value, f"<style> {selector}")
            if not_important:
                self.error(2, f"{len(not_important)} declaration(s) in a <style> block are not !important, so "
                              "inline styles win over them, or they were never inlined (Gmail apps ignore "
                              f"<style>): first {not_important[0]}",
                           self._templates.blame(not_important[0].split(" {")[0], "<style"))
            if not_inlined:
                self.warn(1, f"rule {not_inlined[0]} stays in a <style> block though it could be inlined",
                          self._templates.blame(not_inlined[0]))
        seen: set[tuple[str, str]] = set()
        for element in doc.iter():
            style = element.get("style") if isinstance(element.tag, str) else None
            for name, value in _declarations(style or ""):
                if (name, value) not in seen:
                    seen.add((name, value))
                    self._layout_property(name, value, f"<{element.tag}>")
        self._report_layout()

    def _layout_property(self, name: str, value: str, where_found: str) -> None:
        name, value = name.lower(), " ".join(value.lower().replace("!important", "").split())
        bad = (
            (name == "display" and re.search(r"\b(?:inline-)?(?:flex|grid)\b", value))
            or (name == "float" and value not in ("none", ""))
            or (name == "position" and value not in ("static", ""))
            or _LAYOUT_PROPERTIES.match(name)
        )
        if bad:
            where = self._templates.blame(f"{name}:{value}", f"{name}: {value}", value, name)
            found = self._bad_layout.setdefault(where, [])
            if f"{name}: {value}" not in (f for f, _ in found):
                found.append((f"{name}: {value}", where_found))

    def _report_layout(self) -> None:
        for where, found in self._bad_layout.items():
            listed = ", ".join(f"{declaration} (on {element})" for declaration, element in found[:4])
            more = f" and {len(found) - 4} more" if len(found) > 4 else ""
            self.error(8, f"layout by flex, grid, float or position: {listed}{more}; Outlook and the Gmail "
                          "apps ignore these, so the columns fall apart: lay out with tables", where)

    # rule 13
    def _forbidden(self, doc) -> None:
        for tag in _FORBIDDEN_TAGS:
            for _ in doc.iter(tag):
                self.error(13, f"<{tag}> in the HTML: mail clients strip it or mark the message as dangerous",
                           self._templates.blame(f"<{tag}"))
                break

    # rule 8
    def _tables(self, doc) -> None:
        unmarked = bare = 0
        for table in doc.iter("table"):
            if _in_article_body(table) or table.find(".//th") is not None or table.find("thead") is not None:
                continue  # a data table from an article
            if (table.get("role") or "").lower() != "presentation":
                unmarked += 1
            elif not all(table.get(a) == "0" for a in ("cellpadding", "cellspacing", "border")):
                bare += 1
        if unmarked:
            self.error(8, f"{unmarked} layout table(s) without role=\"presentation\": screen readers read "
                          "them out as data tables", self._templates.blame("<table>", "<table"))
        if bare:
            self.warn(8, f'{bare} layout table(s) without cellpadding="0" cellspacing="0" border="0"',
                      self._templates.blame("<table"))
        page = self.rendered.html
        if "<!--[if mso]>" not in page:
            self.warn(8, "no Outlook ghost table (<!--[if mso]> … <![endif]-->): Outlook on Windows ignores "
                         "max-width and stretches the column", self._templates.blame("<body"))
        if not re.search(r"max-width:\s*(?:[1-5]?\d{1,2}|600)px", page):
            self.warn(8, "no container with max-width of 600px or less: the column spreads on wide screens",
                      self._templates.blame("<body"))

    # rule 9
    def _images(self, doc) -> None:
        for img in doc.iter("img"):
            src = img.get("src") or ""
            where = self._where_url(src) or self._templates.blame(src, "<img")
            shown = src if len(src) <= 80 else src[:77] + "..."
            if img.get("alt") is None:
                self.error(9, f"<img src={shown!r}> has no alt attribute (alt=\"\" if it is decoration): "
                              "clients that block images show the alt text instead", where)
            if not re.fullmatch(r"\d+", img.get("width") or ""):
                self.error(9, f"<img src={shown!r}> has no integer width attribute: Outlook shows it at "
                              "its natural size", where)
            if src.lower().startswith("data:"):
                self.error(9, "an <img> is a data: URI: Gmail and Outlook do not show it; host the image", where)
            elif not src.startswith("https://"):
                self.error(9, f"<img src={shown!r}> is not an absolute https:// address", where)

    # rule 10
    def _preheader(self, doc) -> None:
        text = self.issue.preheader
        where = self._templates.blame("preheader", "<body")
        if not text:
            self.error(10, "the issue has no preheader (the line inbox lists show after the subject)", where)
            return
        body = doc.find(".//body")
        first = next((e for e in (body if body is not None else []) if isinstance(e.tag, str)), None)
        holder = first if first is not None and _text(first) == text else next(
            (e for e in doc.iter() if isinstance(e.tag, str) and e.tag not in ("title", "html", "body")
             and _text(e) == text and not len(e)), None)
        if holder is None:
            self.error(10, "the preheader is not in the HTML: inbox lists show the first words of the body "
                           "instead", where)
            return
        if holder is not first:
            self.warn(10, "the preheader is not the first element in <body>", where)
        style = dict(_declarations(holder.get("style") or ""))
        hidden = style.get("display", "").startswith("none") or (
            style.get("max-height", "").startswith("0") and style.get("overflow", "").startswith("hidden"))
        if not hidden:
            self.error(10, "the preheader is not hidden (display:none): it shows as a stray line at the top",
                       where)
        if not PREHEADER_MIN <= len(text) <= PREHEADER_MAX:
            self.warn(10, f"the preheader is {len(text)} characters; inbox lists show {PREHEADER_MIN}–"
                          f"{PREHEADER_MAX}", where)
        if text.casefold() == self.issue.subject.casefold():
            self.warn(10, "the preheader repeats the subject", where)

    # rule 11
    def _headings(self, doc) -> None:
        headings = [e for e in doc.iter("h1", "h2", "h3", "h4", "h5", "h6")]
        ones = [h for h in headings if h.tag == "h1"]
        if len(ones) != 1:
            self.error(11, f"{len(ones)} <h1> elements; an issue has exactly one (the masthead)",
                       self._templates.blame("<h1"))
        level = 0
        for heading in headings:
            new = int(heading.tag[1])
            label = _text(heading)
            if not label and heading.find(".//img[@alt]") is None:
                self.error(11, f"an empty <{heading.tag}>", self._where_text("") or self._templates.blame(f"<{heading.tag}"))
            if new > level + 1:
                where = self._where_text(label) or self._templates.blame(f"<{heading.tag}")
                shown = f"<{heading.tag}> {label[:60]!r}"
                self.error(11, f"{shown} skips a heading level (after <h{level}>)" if level else
                           f"{shown} comes before the <h1>", where)
            level = new

    # rule 12
    def _links(self, doc) -> None:
        view = unsubscribe = False
        for a in doc.iter("a"):
            href = (a.get("href") or "").strip()
            if TOKEN_PLACEHOLDER in href:
                unsubscribe = True
            if href == self.issue.archive_url or href.rstrip("/") == self.issue.archive_url.rstrip("/"):
                view = True
            if not href:
                self.warn(12, f"a link without href: {_text(a)[:60]!r}", self._templates.blame("<a>", "<a "))
            elif not href.lower().startswith(("https://", "mailto:")):
                shown = href if len(href) <= 80 else href[:77] + "..."
                self.error(12, f"link {shown!r} is not https: or mailto: (mail clients flag other links; "
                               "javascript: never runs)", self._where_url(href) or
                           self._templates.blame(href, href.split(":", 1)[0] + ":"))
            if not _text(a) and not any((img.get("alt") or "").strip() for img in a.iter("img")):
                self.warn(11, f"the link to {href[:80]!r} has no text (screen readers read the address)",
                          self._where_url(href) or self._templates.blame(href))
        unsubscribe_url = f"{self.settings.newsletter.base_url.rstrip('/')}/u/{TOKEN_PLACEHOLDER}"
        layout = self._templates.blame("unsubscribe_url", "<body")
        if not unsubscribe:
            self.error(12, "the HTML part has no unsubscribe link (a link to {{ unsubscribe_url }}): "
                           "Gmail and Yahoo require one in the body", layout)
        if unsubscribe_url not in self.rendered.text:
            self.error(12, "the text part has no unsubscribe link ({{ unsubscribe_url }})",
                       self._templates.blame("footer", "{% include", text_part=True))
        if not view:
            self.warn(12, "no \"view in browser\" link to the issue's archive page ({{ view_url }})", layout)

    # rule 11: text size
    def _text_sizes(self, doc) -> None:
        small: dict[str, str] = {}
        for element in doc.iter():
            if not isinstance(element.tag, str) or not (element.text or "").strip():
                continue
            size = dict(_declarations(element.get("style") or "")).get("font-size", "")
            match = _FONT_PX.match(size)
            if match and float(match[1]) < MIN_FONT_PX:
                small.setdefault(size, f"<{element.tag}> {_text(element)[:40]!r}")
        for size, example in small.items():
            self.warn(11, f"text set in {size}, under {MIN_FONT_PX}px, is hard to read on phones (e.g. {example})",
                      self._templates.blame(f"font-size: {size}", f"font-size:{size}"))

    # template leftovers and placeholders, in what a subscriber would read
    def _leftovers(self, part: str, text: str) -> None:
        for match in list(_TEMPLATE_SYNTAX.finditer(text))[:3]:
            snippet = match[0]
            article = self._where_text(snippet)
            if article:
                self.warn(None, f"the {part} shows {snippet!r}, which looks like template syntax; "
                                "fine if the article means it", article)
            else:
                self.error(None, f"the {part} shows template syntax {snippet!r} to the reader: a template "
                                 "left it unrendered (a raw block, or a variable in a string)",
                           self._templates.blame(snippet, snippet[:2], text_part=part == "text part"))
        for word in sorted(set(_LEFTOVER_WORDS.findall(text))):
            self.error(None, f"the {part} still holds the placeholder {word} after personalizing: a template "
                             "puts it where the message builder does not replace it",
                       self._templates.blame(word, "{{ greeting", "unsubscribe_url", text_part=part == "text part"))

    def _sections(self) -> None:
        for section in self.issue.sections:
            if not section.articles:
                self.error(None, f"section {section.name!r} is empty", CONFIG_NAME)
        for item in self.issue.articles:
            if not item.article.title.strip():
                self.error(None, "the article has no title", _display(self.settings, item.article.path))

    def _references(self) -> None:
        self._reported_references: set[str] = set()
        for item in self.issue.articles:
            where = _display(self.settings, item.article.path)
            for ref in item.cross_references:
                if not ref.exists:
                    self._reported_references.add(ref.text)
                    self.warn(None, f"cross-reference ({ref.text}) points at {ref.day.isoformat()}, which has "
                                    "no issue: the link leads to a missing archive page", where)
            for source in item.sources:
                problem = citation_problem(source)
                if problem:
                    self.warn(None, f"citation {source!r} {problem}", where)
            plain = html_lib.unescape(re.sub(r"<[^>]*>", " ", item.body_html))
            cited = set(item.sources)
            for match in _LOOKS_LIKE_CITATION.finditer(plain):
                inner = " ".join(match[1].split())
                if inner in cited or inner.lower().startswith("see "):
                    continue
                problem = citation_problem(inner)
                if problem:
                    self.warn(None, f"({inner}) looks like a citation but {problem}", where)

    def _pipeline_warnings(self, warnings: tuple[str, ...]) -> None:
        for text in warnings:
            if text.startswith("the HTML is"):
                continue  # the size is measured here
            if any(f"cross-reference ({ref})" in text for ref in self._reported_references):
                continue
            where, message = _split_where(self.settings, text)
            self.warn(None, message, where)

    # rule 20, from the settings
    def _dkim_settings(self) -> None:
        dkim = self.settings.dkim
        if not (dkim.selector or dkim.domain or dkim.key_file):
            return
        config = CONFIG_NAME
        if not (dkim.selector and dkim.domain and dkim.key_file):
            missing = [k for k in ("selector", "domain", "key_file") if not getattr(dkim, k)]
            self.error(20, f"[dkim] is half configured: {', '.join(missing)} missing", config)
        if dkim.domain and dkim.domain.strip().lower() != self.settings.sender_domain:
            self.error(20, f"[dkim] domain {dkim.domain!r} is not the From domain "
                           f"{self.settings.sender_domain!r}: DMARC fails unless d= is aligned with From", config)
        if dkim.key_file and not (self.settings.root / dkim.key_file).is_file():
            self.error(20, f"[dkim] key_file {dkim.key_file!r} does not exist", config)

    # the sample message: rules 14-18, 20
    def _sample_message(self) -> bytes | None:
        from newsletter import messages

        day = self.issue.day
        when = datetime.combine(day, time.fromisoformat(self.settings.schedule.send_time), self.settings.tz)
        try:
            template = messages.MessageTemplate.build(self.rendered, self.settings, _SAMPLE_KEY, when)
            return template.personalize(SAMPLE_SUBSCRIBER)
        except NewsletterError as err:
            text = str(err)
            if "has no unsubscribe link" in text:
                return None  # reported by _links, naming the template
            where, message = _split_where(self.settings, text)
            self.error(None, f"cannot build the message: {message}", where or CONFIG_NAME)
            return None

    def _message(self, raw: bytes) -> None:
        if not raw.isascii():
            self.error(15, "the message is not 7-bit clean: servers without 8BITMIME mangle it")
        lines = raw.split(b"\r\n")
        if b"\n" in raw.replace(b"\r\n", b"") or b"\r" in raw.replace(b"\r\n", b""):
            self.error(15, "the message has bare CR or LF line ends; SMTP needs CRLF")
        longest = max(len(line) for line in lines)
        if longest > MAX_LINE:
            self.error(15, f"a line of the message is {longest} octets; SMTP allows {MAX_LINE}")
        head = raw[: raw.find(b"\r\n\r\n") + 2].decode("ascii", "replace")
        fields = _raw_headers(head)
        for name in ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version"):
            if name.lower() not in fields:
                self.error(16, f"the message has no {name} header", CONFIG_NAME)
        msgid = fields.get("message-id", "")
        domain = self.settings.sender_domain
        ascii_domain = domain if domain.isascii() else domain.encode("idna").decode("ascii")
        if msgid and not msgid.rstrip().rstrip(">").lower().endswith("@" + ascii_domain):
            self.error(16, f"Message-ID {msgid.strip()} is not on the From domain {ascii_domain}", CONFIG_NAME)
        unsubscribe = fields.get("list-unsubscribe", "")
        if not unsubscribe:
            self.error(18, "no List-Unsubscribe header: Gmail and Yahoo require one-click unsubscribe", CONFIG_NAME)
        elif "=?" in unsubscribe or not unsubscribe.strip().startswith("<https://"):
            self.error(18, f"List-Unsubscribe is not a plain <https://…> URL: {unsubscribe.strip()[:80]!r}",
                       CONFIG_NAME)
        if fields.get("list-unsubscribe-post", "").strip() != "List-Unsubscribe=One-Click":
            self.error(18, "no List-Unsubscribe-Post: List-Unsubscribe=One-Click header (RFC 8058)", CONFIG_NAME)
        if not re.search(r"<[^<>@\s]+\.[^<>@\s]+>", fields.get("list-id", "")):
            self.error(18, "no List-Id header of the form Name <list.example.org> (RFC 2919)", CONFIG_NAME)
        for name, value in (("precedence", "bulk"), ("auto-submitted", "auto-generated")):
            if fields.get(name, "").strip().lower() != value:
                self.warn(18, f"no {name.title()}: {value} header: auto-responders may answer the issue",
                          CONFIG_NAME)
        signature = fields.get("dkim-signature", "")
        if signature:
            d = re.search(r"\bd=([^;\s]+)", signature)
            if not d or d[1].lower() != ascii_domain:
                self.error(20, f"DKIM d={d[1] if d else '?'} is not the From domain {ascii_domain}", CONFIG_NAME)
        message = email.message_from_bytes(raw, policy=email.policy.default)
        if message.get_content_type() != "multipart/alternative":
            self.error(14, f"the message is {message.get_content_type()}, not multipart/alternative")
            return
        parts = list(message.iter_parts())
        kinds = [p.get_content_type() for p in parts]
        if kinds[:1] != ["text/plain"] or kinds[-1:] != ["text/html"]:
            self.error(14, f"the parts are {', '.join(kinds)}: text/plain must come first and text/html last")
        for part in parts:
            if (part.get_content_charset() or "").lower() != "utf-8":
                self.error(14, f"the {part.get_content_type()} part is not UTF-8")
            if part.get("Content-Transfer-Encoding", "").lower() not in ("quoted-printable", "base64", "7bit"):
                self.error(15, f"the {part.get_content_type()} part is sent as "
                               f"{part.get('Content-Transfer-Encoding')}, not quoted-printable")

    # --- where is it from?

    def _where_url(self, url: str) -> str:
        """Return the article (or note, feature) whose body or front matter holds URL."""
        if not url:
            return ""
        escaped = html_lib.escape(url)
        for item in self.issue.articles:
            article = item.article
            if url in (article.url, article.image) or f'"{escaped}"' in item.body_html:
                return _display(self.settings, article.path)
        for box in (self.issue.note, self.issue.feature):
            if box is not None and (url == getattr(box, "link", None) or f'"{escaped}"' in box.body_html):
                return _display(self.settings, box.path)
        return ""

    def _where_text(self, text: str) -> str:
        """Return the article whose body holds TEXT (an empty TEXT matches nothing)."""
        if not text:
            return ""
        for item in self.issue.articles:
            if text in html_lib.unescape(item.body_html):
                return _display(self.settings, item.article.path)
        for box in (self.issue.note, self.issue.feature):
            if box is not None and text in html_lib.unescape(box.body_html):
                return _display(self.settings, box.path)
        return ""


class _TemplateSources:
    """The templates an email is made of, as the Jinja environment resolves them, the project's own first."""

    def __init__(self, settings: Settings) -> None:
        from newsletter import renderer

        env = renderer.make_environment(settings)
        project = settings.templates_dir.resolve()
        sources = []
        roots = ((renderer.HTML_TEMPLATE, renderer.NOTICE_HTML_TEMPLATE, False),
                 (renderer.TEXT_TEMPLATE, renderer.NOTICE_TEXT_TEMPLATE, True))
        for *names, is_text in roots:
            for name, source, filename in _referenced_templates(env, names):
                path = Path(filename).resolve()
                own = path.is_relative_to(project)
                shown = _display(settings, path) if own else f"{name} (built-in template)"
                sources.append((not own, shown, is_text, source.lower()))
        self.sources = [s[1:] for s in sorted(sources, key=lambda s: s[0])]

    def blame(self, *needles: str, text_part: bool = False) -> str:
        """Return the first template of the HTML (or text) part holding one of NEEDLES, tried in order."""
        for needle in needles:
            needle = needle.lower().strip()
            if not needle:
                continue
            for shown, is_text, source in self.sources:
                if is_text == text_part and needle in source:
                    return shown
        return ""


def _referenced_templates(env, names: list[str]) -> list[tuple[str, str, str]]:
    """Return (name, source, file) of NAMES and every template they extend, include or import."""
    import jinja2
    from jinja2 import meta

    found, queue = {}, list(names)
    while queue:
        name = queue.pop()
        if name in found:
            continue
        try:
            source, filename, _ = env.loader.get_source(env, name)
            referenced = meta.find_referenced_templates(env.parse(source))
        except jinja2.TemplateError:
            continue  # missing or broken: the render reported it already
        found[name] = (name, source, filename)
        queue.extend(r for r in referenced if r)
    return list(found.values())


class _ListLogger:
    """A logging.Logger stand-in for cssutils that keeps its messages."""

    def __init__(self, into: list[str]) -> None:
        self.into = into

    def _keep(self, msg: object, *args: object, **_: object) -> None:
        self.into.append(str(msg) % args if args else str(msg))

    error = warning = critical = fatal = _keep

    def info(self, *_: object, **__: object) -> None:
        pass

    debug = info

    def setLevel(self, *_: object) -> None:  # noqa: N802 - the logging API's name
        pass


# --- small helpers -------------------------------------------------------------------------------

def _declarations(style: str) -> list[tuple[str, str]]:
    out = []
    for part in style.split(";"):
        name, sep, value = part.partition(":")
        if sep and name.strip():
            out.append((name.strip().lower(), value.strip().lower()))
    return out


def _text(element) -> str:
    return " ".join(element.text_content().split())


def _in_article_body(element) -> bool:
    return any("body" in (parent.get("class") or "").split() for parent in element.iterancestors())


def _raw_headers(head: str) -> dict[str, str]:
    """Return the raw (unfolded, undecoded) header values by lower-case name."""
    fields: dict[str, str] = {}
    for line in re.split(r"\r\n(?![ \t])", head):
        name, sep, value = line.partition(":")
        if sep:
            fields.setdefault(name.strip().lower(), value.replace("\r\n", "").strip())
    return fields


def _decoded_parts(raw: bytes) -> dict[str, str]:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    parts = message.iter_parts() if message.is_multipart() else [message]
    return {p.get_content_type(): p.get_content() for p in parts if p.get_content_maintype() == "text"}


def citation_problem(text: str) -> str:
    """Return what is wrong with a citation such as 'Interfax, June 2', or "" if it is well formed."""
    from newsletter.builder import MONTHS

    match = _CITATION_SHAPE.match(" ".join(text.split()))
    if not match:
        return "is not of the form 'Source, Month Day'"
    months = {m.lower(): i for i, m in enumerate(MONTHS, 1)}
    months.update({m[:3].lower(): i for i, m in enumerate(MONTHS, 1)})
    months["sept"] = 9
    month = months.get(match["month"].lower())
    if month is None:
        return f"has {match['month']!r}, which is not a month"
    year = int(match["year"]) if match["year"] else 2024  # a leap year: Feb 29 is a day
    try:
        date(year, month, int(match["day"]))
    except ValueError:
        return f"has {match['month']} {match['day']}, which is not a day of the year"
    return ""


__all__ = ["CheckReport", "Finding", "SAMPLE_SUBSCRIBER", "check_issue", "citation_problem", "check_rendered", "format_report"]
