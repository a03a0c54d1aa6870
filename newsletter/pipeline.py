"""Read → build → render one day's issue: the only place that joins the files to the pure stages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from newsletter.models import RenderedIssue
from newsletter.settings import Settings


@dataclass(frozen=True)
class PreparedIssue:
    """A day's issue ready to send, or why there is none (the empty policy)."""

    day: date
    rendered: RenderedIssue | None
    article_count: int
    warnings: tuple[str, ...] = ()
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
    warnings = tuple(issue.warnings) + tuple(renderer.size_warnings(rendered.html))
    return PreparedIssue(day, rendered, count, warnings)
