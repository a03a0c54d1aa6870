"""Read → build → render one day's issue: the only place that joins the files to the pure stages."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.files import write_atomic
from newsletter.findings import Finding
from newsletter.models import RenderedIssue, Subscriber
from newsletter.settings import Settings, secret_key
from newsletter.variants import ALL, Variant, describe, sections_of

if TYPE_CHECKING:
    import jinja2

    from newsletter.models import DayContent


@dataclass(frozen=True)
class PreparedIssue:
    """A day's issue ready to send, or why there is none (the empty policy)."""

    day: date
    rendered: RenderedIssue | None
    article_count: int
    warnings: tuple[Finding, ...] = ()  # the builder's and the renderer's
    skipped_reason: str = ""
    variants: tuple[Variant, ...] = ()  # the copies for readers who chose sections (not the full issue)


def prepare_issue(settings: Settings, day: date, variants: Iterable[str] = ()) -> PreparedIssue:
    """Read DAY's articles, build and render the issue; apply the empty policy when there are too few.

    VARIANTS are the keys (variants.py) of the sets of sections readers chose: each is rendered
    once, beside the full issue (a day that gets the notice gives every variant the notice).
    """
    from newsletter import builder, readers, renderer

    content = readers.read_day(settings.articles_dir, day, settings)
    count = len(content.articles)
    env = renderer.make_environment(settings)
    if count < max(settings.issue.min_articles, 1):
        reason = (
            f"{day}: {count} article(s) in {settings.articles_dir / day.isoformat()}, "
            f"fewer than [issue] min_articles = {settings.issue.min_articles}"
        )
        if settings.issue.empty_policy == "skip":
            return PreparedIssue(day, None, count, (), f"{reason}; nothing sent (empty_policy = skip)")
        rendered = renderer.render_notice(day, settings, env)
        # every reader gets the notice, whatever sections they chose
        notices = tuple(Variant(key, rendered, 0) for key in sorted(set(variants) - {ALL}))
        return PreparedIssue(day, rendered, count, (), f"{reason}; sending a short notice (empty_policy = notice)",
                             variants=notices)
    issue_days = readers.article_days(settings.articles_dir)
    issue = builder.build_issue(content, settings, issue_days=issue_days)
    rendered = renderer.render_issue(issue, settings, env)
    warnings = issue.findings + tuple(renderer.size_warnings(rendered.html))
    made = tuple(_variant(settings, content, key, issue_days, env) for key in sorted(set(variants) - {ALL}))
    return PreparedIssue(day, rendered, count, warnings, variants=made)


def _variant(settings: Settings, content: DayContent, key: str, issue_days: list[date],
             env: jinja2.Environment) -> Variant:
    """Render the copy of CONTENT's issue for the readers of KEY's sections, or apply the empty policy."""
    from newsletter import builder, renderer

    only = sections_of(key)
    count = sum(1 for article in content.articles if article.section in only)
    if count == 0:
        reason = f"{content.day}: no article in {describe(key)}"
        if settings.issue.empty_policy == "skip":
            return Variant(key, None, 0, f"{reason}; nothing sent to its readers (empty_policy = skip)")
        return Variant(key, renderer.render_notice(content.day, settings, env), 0,
                       f"{reason}; its readers get a short notice (empty_policy = notice)")
    issue = builder.build_issue(content, settings, issue_days=issue_days, only=only)
    return Variant(key, renderer.render_issue(issue, settings, env), count)


def write_public_copy(settings: Settings, rendered: RenderedIssue) -> tuple[Path, Path]:
    """Write outbox/DAY/issue.html and issue.txt: the issue as anyone may see it, no personal data."""
    from newsletter import messages

    folder = settings.outbox_dir / rendered.issue.day.isoformat()
    html = write_atomic(folder, "issue.html", messages.public_html(rendered, settings).encode("utf-8"))
    text = write_atomic(folder, "issue.txt", messages.public_text(rendered, settings).encode("utf-8"))
    return html, text


def write_preview(
    settings: Settings, rendered: RenderedIssue, subscriber: Subscriber | None
) -> tuple[Path, str]:
    """Write the preview HTML (one subscriber's copy, or the public one); return its path and the text part."""
    from newsletter import messages

    folder = settings.outbox_dir / rendered.issue.day.isoformat()
    if subscriber is None:
        html_path, _ = write_public_copy(settings, rendered)
        return html_path, messages.public_text(rendered, settings)
    key = secret_key(settings)
    html = messages.personal_html(rendered, subscriber, settings, key)
    path = write_atomic(folder, f"preview-{subscriber.id}.html", html.encode("utf-8"))
    return path, messages.personal_text(rendered, subscriber, settings, key)
