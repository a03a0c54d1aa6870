"""Read → build → render one day's issue: the only place that joins the files to the pure stages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

from newsletter.files import write_atomic
from newsletter.findings import Finding
from newsletter.models import RenderedIssue, Subscriber
from newsletter.settings import Settings, secret_key


@dataclass(frozen=True)
class PreparedIssue:
    """A day's issue ready to send, or why there is none (the empty policy)."""

    day: date
    rendered: RenderedIssue | None
    article_count: int
    warnings: tuple[Finding, ...] = ()  # the builder's and the renderer's
    skipped_reason: str = ""


def prepare_issue(settings: Settings, day: date) -> PreparedIssue:
    """Read DAY's articles, build and render the issue; apply the empty policy when there are too few."""
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
        return PreparedIssue(day, rendered, count, (), f"{reason}; sending a short notice (empty_policy = notice)")
    issue_days = readers.article_days(settings.articles_dir)
    issue = builder.build_issue(content, settings, issue_days=issue_days)
    rendered = renderer.render_issue(issue, settings, env)
    warnings = issue.findings + tuple(renderer.size_warnings(rendered.html))
    return PreparedIssue(day, rendered, count, warnings)


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
