"""The feeds' warnings of the day (`newsletter fetch` records them): a feed that failed, an entry left out."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

from newsletter import reputation, store
from newsletter.check.context import Context
from newsletter.errors import StoreError
from newsletter.findings import Finding, warning
from newsletter.rules import Rule
from newsletter.settings import Settings


def feed_findings(settings: Settings, day: date) -> Iterator[Finding]:
    """Yield one warning per problem the last fetch for DAY met, each naming its feed."""
    try:
        with reputation.reading(settings) as conn:
            if conn is None:
                return
            from newsletter.feeds import state

            found = state.warnings(conn, day)
    except store.errors(StoreError):  # an older schema, locked, unreachable: nothing to say from it
        return
    for url, message in found:
        yield warning(Rule.FEED, message, url)


def feeds(ctx: Context) -> Iterator[Finding]:
    """The feeds' warnings of the issue's day."""
    yield from feed_findings(ctx.settings, ctx.issue.day)


RULES = (feeds,)
