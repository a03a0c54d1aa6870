"""The rules of the list's standing with mailbox providers, read from the subscriber database."""

from __future__ import annotations

from collections.abc import Iterator

from newsletter import reputation, store, subscribers
from newsletter.check.context import Context
from newsletter.errors import StoreError
from newsletter.findings import Finding, error, warning
from newsletter.rules import Rule
from newsletter.settings import CONFIG_NAME


def complaint_rate(ctx: Context) -> Iterator[Finding]:
    """The last 30 days' complaints stay under 0.1% of the messages delivered (Google's limit is 0.3%)."""
    try:
        with reputation.reading(ctx.settings) as conn:
            if conn is None:
                return
            window = reputation.complaint_rate(conn, ctx.issue.day)
    except store.errors(StoreError):  # an older schema, locked, unreachable: nothing to say from it
        return
    if window.rate is None or window.rate <= reputation.COMPLAINT_RATE_LIMIT:
        return
    yield warning(Rule.COMPLAINT_RATE,
                  f"{window.complaints:,} spam complaint{'' if window.complaints == 1 else 's'} for "
                  f"{window.sent:,} messages delivered from {window.first} to {window.last}: a complaint rate of "
                  f"{reputation.percent(window.rate)}, over {reputation.percent(reputation.COMPLAINT_RATE_LIMIT)} "
                  "(Google asks bulk senders to stay under 0.30%). See which issues drew them with "
                  "`newsletter status --date DAY`; send only to readers who asked for it, and keep the "
                  "unsubscribe link plain to see")


def chosen_sections(ctx: Context) -> Iterator[Finding]:
    """Every section readers chose is in [issue] sections: a renamed or removed one would reach none of them."""
    try:
        with reputation.reading(ctx.settings) as conn:
            if conn is None:
                return
            chosen = subscribers.chosen_sections(conn)
    except store.errors(StoreError):  # an older schema (nobody chose a section yet), unreachable
        return
    known = ctx.settings.issue.sections
    for name, readers in sorted(chosen.items()):
        if name in known:
            continue
        who = f"{readers:,} reader{'' if readers == 1 else 's'}"
        yield error(Rule.CHOSEN_SECTION,
                    f"[issue] sections has no section {name!r}, which {who} chose: they would get none of it. "
                    f"Move them to a section with `newsletter subscribers rename-section {_quoted(name)} NEW` "
                    f"(one of {', '.join(known)}), or put {name!r} back in [issue] sections",
                    CONFIG_NAME)


def _quoted(name: str) -> str:
    return name if name.replace("-", "").replace("_", "").isalnum() else f'"{name}"'


RULES = (complaint_rate, chosen_sections)
