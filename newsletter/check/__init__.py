"""The pre-send gate: build a day's issue and one sample message, and hold them to EMAIL.md.

`check_issue(settings, day)` never raises for a problem of the issue itself: a bad article, a
template error or an issue too big for Gmail becomes an error finding that names the file at
fault. `newsletter send` and the scheduler run it first and refuse to send when it has errors.

Each rule is a small function that takes the Context and yields Findings (html_rules,
issue_rules, list_rules, message_rules); a new rule is one more function in one of their RULES tuples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime, time

from newsletter.check import feed_rules, html_rules, issue_rules, list_rules, message_rules
from newsletter.check.context import Context, TemplateSources, decoded_parts, display
from newsletter.check.issue_rules import citation_problem
from newsletter.check.report import CheckReport, errors_first, format_report
from newsletter.errors import ArticleError, ClippedError, NewsletterError
from newsletter.findings import Finding, Severity, error
from newsletter.models import RenderedIssue, Subscriber
from newsletter.pipeline import PreparedIssue
from newsletter.rules import GMAIL_CLIP_BYTES, Rule
from newsletter.settings import CONFIG_NAME, Settings

# The sample message: a reader whose name and domain are not ASCII, so encoding is exercised.
SAMPLE_SUBSCRIBER = Subscriber(
    id=1, email="leserin@bücher.example", email_key="leserin@bücher.example",
    name="Zoë Łukasiewicz-Nguyễn", status="active", created_at="", updated_at="",
)
# The sample is never sent: a fixed key keeps the check from creating the project's key file.
_SAMPLE_KEY = b"newsletter-check-sample-key"

CheckRule = Callable[[Context], Iterable[Finding]]
# In the order their findings are listed (errors first, then warnings, each in this order).
RULES: tuple[CheckRule, ...] = (*html_rules.RULES, *issue_rules.RULES, *list_rules.RULES, *feed_rules.RULES)
MESSAGE_RULES: tuple[CheckRule, ...] = message_rules.RULES  # only when the sample message was built
# what each variant's copy (the readers of some sections) is held to; the list's rules run once
VARIANT_RULES: tuple[CheckRule, ...] = (*html_rules.RULES, *issue_rules.RULES)


# --- entry points --------------------------------------------------------------------------------

def check_issue(settings: Settings, day: date) -> CheckReport:
    """Build DAY's issue, its copy for each set of sections readers chose, and a sample message, and check
    them; problems of the issue become findings."""
    from newsletter.pipeline import prepare_issue

    try:
        prepared = prepare_issue(settings, day, _variant_keys(settings, day))
    except NewsletterError as err:
        found = [*_failure_findings(settings, day, err), *feed_rules.feed_findings(settings, day)]
        return CheckReport(day, errors_first(found))
    if prepared.rendered is None:
        return CheckReport(day, tuple(feed_rules.feed_findings(settings, day)), skipped_reason=prepared.skipped_reason)
    return check_rendered(prepared, settings)


def check_rendered(prepared: PreparedIssue, settings: Settings) -> CheckReport:
    """Check a prepared issue: its HTML, its text, one personalized message, its references, and the same
    of each variant (the copy for readers of some sections)."""
    rendered = prepared.rendered
    if rendered is None:
        return CheckReport(prepared.day, skipped_reason=prepared.skipped_reason)
    ctx, found = _context(settings, rendered, prepared.warnings)
    rules = RULES + (MESSAGE_RULES if ctx.raw is not None else ())
    for rule in rules:
        found.extend(rule(ctx))
    found.extend(_variant_findings(prepared, settings, set(found)))
    issue = rendered.issue
    return CheckReport(
        day=prepared.day, findings=errors_first(found), skipped_reason=prepared.skipped_reason,
        number=issue.number or None, subject=issue.subject, html_bytes=ctx.html_bytes,
    )


def _variant_keys(settings: Settings, day: date) -> list[str]:
    """Return the variants DAY's issue has readers for, read without creating or changing the database."""
    from newsletter import reputation, store
    from newsletter.delivery.recipients import variant_keys
    from newsletter.errors import StoreError

    try:
        with reputation.reading(settings) as conn:
            return variant_keys(conn, day, settings.issue.sections) if conn is not None else []
    except store.errors(StoreError):  # an older schema: `send` migrates it, and its check sees the variants
        return []


def _variant_findings(prepared: PreparedIssue, settings: Settings, seen: set[Finding]) -> Iterator[Finding]:
    """Check each variant's copy as the full issue is; a finding the full issue has not says whose copy it is in."""
    for variant in prepared.variants:
        if variant.rendered is None:
            continue
        ctx, found = _context(settings, variant.rendered, ())
        for rule in VARIANT_RULES + (MESSAGE_RULES if ctx.raw is not None else ()):
            found.extend(rule(ctx))
        for finding in found:
            if finding not in seen:
                seen.add(finding)
                yield dataclasses.replace(finding, message=f"{finding.message} (in the copy for readers of "
                                                           f"{variant.label})")


def _context(settings: Settings, rendered: RenderedIssue,
             pipeline: tuple[Finding, ...]) -> tuple[Context, list[Finding]]:
    """Build the sample message and parse the HTML once for every rule; a failed build is a finding."""
    from lxml import html as lxml_html

    from newsletter import messages

    found: list[Finding] = []
    raw = _sample_message(settings, rendered, found)
    if raw is not None:
        parts = decoded_parts(raw)
        html_text, plain = parts.get("text/html", ""), parts.get("text/plain", "")
    else:
        html_text = messages.personal_html(rendered, SAMPLE_SUBSCRIBER, settings, _SAMPLE_KEY)
        plain = messages.personal_text(rendered, SAMPLE_SUBSCRIBER, settings, _SAMPLE_KEY)
    doc = lxml_html.document_fromstring(rendered.html)
    ctx = Context(settings, rendered, doc, html_text, plain, raw, TemplateSources(settings), pipeline)
    return ctx, found


def _sample_message(settings: Settings, rendered: RenderedIssue, found: list[Finding]) -> bytes | None:
    """Return the sample subscriber's message as sent (rules 14-18, 20 read it), or None if it fails."""
    from newsletter import messages

    when = datetime.combine(rendered.issue.day, time.fromisoformat(settings.schedule.send_time), settings.tz)
    try:
        template = messages.MessageTemplate.build(rendered, settings, _SAMPLE_KEY, when)
        return template.personalize(SAMPLE_SUBSCRIBER)
    except NewsletterError as err:
        causes = err.findings or (error(Rule.MESSAGE, str(err)),)
        for cause in causes:
            if cause.rule is not Rule.UNSUBSCRIBE_LINK:  # the links rule says so, naming the template
                found.append(error(Rule.MESSAGE, f"cannot build the message: {cause.message}",
                                   display(settings, cause.path) if cause.path else CONFIG_NAME, cause.line))
        return None


# --- failures before there is anything to check --------------------------------------------------

def _failure_findings(settings: Settings, day: date, err: NewsletterError) -> Iterator[Finding]:
    """The errors that stopped DAY's issue from being built, each naming its file (and line)."""
    if isinstance(err, ClippedError):
        yield error(Rule.GMAIL_CLIP, _too_big_message(settings, day, err.size), f"articles/{day.isoformat()}")
        return
    if not err.findings:
        yield error(Rule.ARTICLE if isinstance(err, ArticleError) else Rule.BUILD, str(err))
    for finding in err.findings:
        path = display(settings, finding.path) if finding.path else ""
        yield Finding(Severity.ERROR, finding.rule, path, finding.line, finding.message)


def _too_big_message(settings: Settings, day: date, size: int) -> str:
    """Say how big the HTML is and which articles weigh most, so the editor knows what to cut."""
    message = (f"the HTML is {size:,} bytes: Gmail clips a message above {GMAIL_CLIP_BYTES:,} bytes and hides "
               "the unsubscribe footer; shorten articles or move some to another day")
    try:
        from newsletter import readers

        articles = readers.read_day(settings.articles_dir, day, settings).articles
    except NewsletterError:
        return message
    heaviest = sorted(articles, key=lambda a: -len(a.body_html.encode("utf-8")))[:3]
    if heaviest:
        listed = ", ".join(f"{display(settings, a.path)} ({len(a.body_html.encode('utf-8')):,} bytes)"
                           for a in heaviest)
        message += f" ({len(articles)} articles; the longest: {listed})"
    return message


__all__ = [
    "CheckReport", "Finding", "RULES", "SAMPLE_SUBSCRIBER", "check_issue", "check_rendered", "citation_problem",
    "format_report",
]
