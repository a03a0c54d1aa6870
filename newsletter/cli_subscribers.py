"""`newsletter subscribers …`: the list's commands (add, unsubscribe, show, count, list, import, export)."""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Optional

import typer

from newsletter import cli_output as output
from newsletter.cli_context import store
from newsletter.errors import NewsletterError

subscribers_app = typer.Typer(help="Manage the subscriber list.", no_args_is_help=True)


class Format(str, enum.Enum):
    table = "table"
    csv = "csv"
    json = "json"


class ExportFormat(str, enum.Enum):
    csv = "csv"
    json = "json"


# ----------------------------------------------------------------------------- newsletter subscribers …


@subscribers_app.command("add")
def subscribers_add(
    email: str = typer.Argument(..., help="The address to add."),
    name: str = typer.Option("", "--name", "-n", help="The subscriber's name, used in the greeting."),
    resubscribe: bool = typer.Option(
        False, "--resubscribe", help="Make an unsubscribed or bounced address active again (they asked to rejoin)."
    ),
) -> None:
    """Add EMAIL to the list; an address already there (in any letter case) is left alone."""
    from newsletter import subscribers as subscribers_module

    try:
        result = subscribers_module.add(store(), email, name=name, resubscribe=resubscribe)
    except NewsletterError as err:
        output.fail(err)
    person = result.subscriber
    if result.outcome == "added":
        typer.echo(f"Added {person.email}")
    elif result.outcome == "resubscribed":
        typer.echo(f"Resubscribed {person.email}")
    else:
        typer.echo(f"{person.email} is already on the list ({person.status}); nothing changed")


@subscribers_app.command("unsubscribe")
def subscribers_unsubscribe(email: str = typer.Argument(..., help="The address to unsubscribe.")) -> None:
    """Unsubscribe EMAIL: no later issue is sent to it."""
    from newsletter import subscribers as subscribers_module

    try:
        change = subscribers_module.unsubscribe(store(), email)
    except NewsletterError as err:
        output.fail(err)
    person = change.subscriber
    if change.changed:
        typer.echo(f"Unsubscribed {person.email}")
    else:
        typer.echo(f"{person.email} is already {person.status}; nothing changed")


@subscribers_app.command("resubscribe")
def subscribers_resubscribe(email: str = typer.Argument(..., help="The address that asked to rejoin.")) -> None:
    """Make an unsubscribed or bounced EMAIL active again (only when they asked to rejoin)."""
    from newsletter import subscribers as subscribers_module

    try:
        change = subscribers_module.resubscribe(store(), email)
    except NewsletterError as err:
        output.fail(err)
    person = change.subscriber
    if change.changed:
        typer.echo(f"Resubscribed {person.email} (was {change.before})")
    else:
        typer.echo(f"{person.email} is already active; nothing changed")


@subscribers_app.command("remove")
def subscribers_remove(
    email: str = typer.Argument(..., help="The address to erase."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Erase without asking."),
) -> None:
    """Erase EMAIL and its delivery records for good (a deletion request); to stop mail, unsubscribe instead."""
    from newsletter import subscribers as subscribers_module

    conn = store()
    try:
        person = subscribers_module.get(conn, email)
        if not yes:
            typer.confirm(f"Erase {person.email} and their delivery records for good?", abort=True)
        subscribers_module.remove(conn, email)
    except NewsletterError as err:
        output.fail(err)
    typer.echo(f"Erased {person.email}")


@subscribers_app.command("show")
def subscribers_show(email: str = typer.Argument(..., help="The address to show.")) -> None:
    """Show what the list holds about EMAIL, and its history: sign-up, unsubscribes, bounces, complaints."""
    from newsletter import events, subscribers as subscribers_module

    conn = store()
    try:
        person = subscribers_module.get(conn, email)
    except NewsletterError as err:
        output.fail(err)
    typer.echo(f"email:    {person.email}")
    typer.echo(f"name:     {person.name}")
    typer.echo(f"status:   {person.status}")
    typer.echo(f"added:    {person.created_at}")
    typer.echo(f"updated:  {person.updated_at}")
    history = events.history(conn, person.id)
    typer.echo(f"events:   {len(history) or 'none recorded'}")
    for event in history:
        detail = " ".join(filter(None, (event.status, event.detail, event.issue_day and f"(issue {event.issue_day})")))
        typer.echo(f"  {event.at}  {event.kind:<13} {event.source:<17} {_printable(detail)}".rstrip())


def _printable(text: str) -> str:
    """Return TEXT on one line without control characters: a bounce's diagnostic is a stranger's words."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


@subscribers_app.command("count")
def subscribers_count() -> None:
    """Count the subscribers in each status."""
    from newsletter import subscribers as subscribers_module

    try:
        counts = subscribers_module.count_by_status(store())
    except NewsletterError as err:
        output.fail(err)
    for status, number in counts.items():
        typer.echo(f"{status:<13} {number:>8,}")
    typer.echo(f"{'total':<13} {sum(counts.values()):>8,}")


@subscribers_app.command("list")
def subscribers_list(
    status: Optional[str] = typer.Option(None, "--status", help="Only this status: active, unsubscribed, bounced or pending."),
    search: Optional[str] = typer.Option(None, "--search", help="Only addresses or names containing this text."),
    format: Format = typer.Option(Format.table, "--format", "-f", help="Output format."),
) -> None:
    """List the subscribers (all, or by status or search)."""
    from newsletter import subscribers as subscribers_module

    conn = store()
    try:
        if format is not Format.table:
            subscribers_module.export(conn, sys.stdout, format=format.value, status=status, search=search)
            return
        width = max(subscribers_module.longest_email(conn, status=status, search=search), len("email"))
        rows = subscribers_module.iter_subscribers(conn, status=status, search=search)
        typer.echo(f"{'email':<{width}}  {'status':<12}  {'added':<25}  name")
        shown = 0
        for person in rows:
            typer.echo(f"{person.email:<{width}}  {person.status:<12}  {person.created_at:<25}  {person.name}".rstrip())
            shown += 1
    except NewsletterError as err:
        output.fail(err)
    typer.echo(f"({shown:,} subscriber{'' if shown == 1 else 's'})")


@subscribers_app.command("import")
def subscribers_import(
    file: Path = typer.Argument(..., help="A CSV export from Mailchimp, Substack, Ghost, listmonk, this tool, or any CSV with an email column.", dir_okay=False),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change, change nothing."),
    resubscribe: bool = typer.Option(
        False, "--resubscribe", help="Make unsubscribed or bounced addresses in the file active again."
    ),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Import the valid rows even if some are invalid."),
    encoding: str = typer.Option("utf-8", "--encoding", help="The file's text encoding, for example cp1252."),
) -> None:
    """Import the subscribers in FILE, all in one go: a bad file changes nothing."""
    from newsletter import importer

    try:
        report = importer.import_file(
            store(), file, dry_run=dry_run, resubscribe=resubscribe, skip_invalid=skip_invalid, encoding=encoding
        )
    except NewsletterError as err:
        output.fail(err)
    typer.echo(f"Read {report.rows:,} row{'' if report.rows == 1 else 's'} from {file} ({report.source_format} format)")
    typer.echo(f"  added: {report.added:,}")
    typer.echo(f"  updated: {report.updated:,}")
    typer.echo(f"  unchanged: {report.unchanged:,}")
    hint = " (pass --resubscribe only if they asked to rejoin)" if report.kept_unsubscribed else ""
    typer.echo(f"  kept unsubscribed: {report.kept_unsubscribed:,}{hint}")
    output.echo_lines(f"  merged duplicates: {len(report.merged):,}", report.merged)
    output.echo_lines(f"  invalid, skipped: {len(report.invalid):,}", report.invalid)
    if dry_run:
        typer.echo("dry run: nothing changed")


@subscribers_app.command("export")
def subscribers_export(
    file: Optional[str] = typer.Argument(None, help="Where to write; - or nothing for standard output."),
    format: ExportFormat = typer.Option(ExportFormat.csv, "--format", "-f", help="csv (spreadsheet-safe) or json."),
    status: Optional[str] = typer.Option(None, "--status", help="Only this status: active, unsubscribed, bounced or pending."),
) -> None:
    """Export the list as CSV (which `import` reads back) or JSON."""
    from newsletter import subscribers as subscribers_module

    conn = store()
    try:
        if file in (None, "-"):
            subscribers_module.export(conn, sys.stdout, format=format.value, status=status)
            return
        count = subscribers_module.export_to_path(conn, Path(file), format=format.value, status=status)
    except NewsletterError as err:
        output.fail(err)
    typer.echo(f"Exported {count:,} subscriber{'' if count == 1 else 's'} to {file}")
