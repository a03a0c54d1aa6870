"""`newsletter subscribers …`: the list's commands (add, set, unsubscribe, show, count, list, import, export,
rename-section)."""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Optional

import typer

from newsletter import cli_output as output
from newsletter.cli_context import settings, store
from newsletter.errors import NewsletterError
from newsletter.models import Frequency

subscribers_app = typer.Typer(help="Manage the subscriber list.", no_args_is_help=True)


class Format(str, enum.Enum):
    table = "table"
    csv = "csv"
    json = "json"


class ExportFormat(str, enum.Enum):
    csv = "csv"
    json = "json"


_SECTIONS_HELP = "Only these sections, by name, comma-separated (as in [issue] sections, any letter case)."


def _sections(names: Optional[str], option: str = "--sections") -> Optional[frozenset[str]]:
    """Return OPTION's names as [issue] sections spells them (None when not given); an unknown name is an error."""
    from newsletter import subscribers as subscribers_module

    if names is None:
        return None
    try:
        chosen = subscribers_module.known_sections(names.split(","), settings().issue.sections)
    except NewsletterError as err:
        output.fail(f"{option}: {err}")
    if not chosen:
        output.fail(f"{option} {names!r}: name at least one section")
    return chosen


def describe_preferences(sections: frozenset[str], frequency: Frequency) -> str:
    """Return a reader's choice in words: `sections Chemical, Nuclear; weekly`."""
    return f"sections {', '.join(sorted(sections)) or 'all'}; {frequency}"


# ----------------------------------------------------------------------------- newsletter subscribers …


@subscribers_app.command("add")
def subscribers_add(
    email: str = typer.Argument(..., help="The address to add."),
    name: str = typer.Option("", "--name", "-n", help="The subscriber's name, used in the greeting."),
    resubscribe: bool = typer.Option(
        False, "--resubscribe", help="Make an unsubscribed or bounced address active again (they asked to rejoin)."
    ),
    sections: Optional[str] = typer.Option(None, "--sections", "-s", help=_SECTIONS_HELP + " Default: all."),
    frequency: Frequency = typer.Option(Frequency.DAILY, "--frequency", help="daily: every issue; weekly: the digest."),
) -> None:
    """Add EMAIL to the list; an address already there (in any letter case) is left alone (`set` changes it)."""
    from newsletter import subscribers as subscribers_module

    chosen = _sections(sections) or frozenset()
    try:
        result = subscribers_module.add(store(), email, name=name, resubscribe=resubscribe,
                                        sections=chosen, frequency=frequency)
    except NewsletterError as err:
        output.fail(err)
    person = result.subscriber
    if result.outcome == "added":
        typer.echo(f"Added {person.email} ({describe_preferences(person.sections, person.frequency)})")
    elif result.outcome == "resubscribed":
        typer.echo(f"Resubscribed {person.email}")
    else:
        typer.echo(f"{person.email} is already on the list ({person.status}); nothing changed")
    if result.outcome != "added" and (sections is not None or frequency != Frequency.DAILY):
        typer.echo(f"  to change their sections or frequency: newsletter subscribers set {person.email} …")


@subscribers_app.command("set")
def subscribers_set(
    email: str = typer.Argument(..., help="The subscriber's address."),
    sections: Optional[str] = typer.Option(None, "--sections", "-s", help=_SECTIONS_HELP),
    all_sections: bool = typer.Option(False, "--all-sections", help="Every section, new ones included (the default)."),
    frequency: Optional[Frequency] = typer.Option(None, "--frequency", help="daily: every issue; weekly: the digest."),
) -> None:
    """Set the sections EMAIL receives and how often (from the next issue not yet started); the rest stays."""
    from newsletter import events, subscribers as subscribers_module

    if sections is not None and all_sections:
        output.fail("--sections and --all-sections: pass one of them, not both")
    if sections is None and not all_sections and frequency is None:
        output.fail("nothing to set: pass --sections, --all-sections or --frequency")
    chosen = frozenset() if all_sections else _sections(sections)
    conn = store()
    try:
        person = subscribers_module.get(conn, email)
        changed = subscribers_module.set_preferences(conn, person.id, sections=chosen, frequency=frequency,
                                                     source=events.CLI)
        person = subscribers_module.get(conn, email)
    except NewsletterError as err:
        output.fail(err)
    now = describe_preferences(person.sections, person.frequency)
    typer.echo(f"Set {person.email}: {now}" if changed else f"{person.email} already has {now}; nothing changed")


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
    typer.echo(f"receives: {describe_preferences(person.sections, person.frequency)}"
               + (f" (chosen {person.preferences_at})" if person.preferences_at else ""))
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
    section: Optional[str] = typer.Option(None, "--section", help="Only who receives this section (chose it, or all)."),
    format: Format = typer.Option(Format.table, "--format", "-f", help="Output format."),
) -> None:
    """List the subscribers (all, or by status, search or section) with what each receives."""
    from newsletter import subscribers as subscribers_module

    wanted = None if section is None else next(iter(_sections(section, "--section")))  # type: ignore[arg-type]
    conn = store()
    try:
        if format is not Format.table:
            subscribers_module.export(conn, sys.stdout, format=format.value, status=status, search=search,
                                      section=wanted)
            return
        width = max(subscribers_module.longest_email(conn, status=status, search=search, section=wanted), len("email"))
        rows = subscribers_module.iter_subscribers(conn, status=status, search=search, section=wanted)
        typer.echo(f"{'email':<{width}}  {'status':<12}  {'frequency':<9}  {'added':<25}  {'name':<20}  sections")
        shown = 0
        for person in rows:
            sections = ", ".join(sorted(person.sections)) or "all"
            typer.echo(f"{person.email:<{width}}  {person.status:<12}  {person.frequency.value:<9}  "
                       f"{person.created_at:<25}  {person.name:<20}  {sections}")
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
            store(), file, dry_run=dry_run, resubscribe=resubscribe, skip_invalid=skip_invalid, encoding=encoding,
            sections=settings().issue.sections,
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
    if report.with_sections or report.unmatched_sections:
        typer.echo(f"  with chosen sections: {report.with_sections:,}")
    if report.weekly:
        typer.echo(f"  weekly digest: {report.weekly:,}")
    if report.unmatched_sections:
        names = [f"{name} ({rows:,} row{'' if rows == 1 else 's'})" for name, rows in report.unmatched_sections.items()]
        output.echo_lines(f"  not a section of this newsletter, left out: {len(names):,} "
                          f"(the sections are: {', '.join(settings().issue.sections)})", names)
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


@subscribers_app.command("rename-section")
def subscribers_rename_section(
    old: str = typer.Argument(..., help="The section readers chose, as they chose it (no longer in [issue] sections)."),
    new: str = typer.Argument(..., help="The section of [issue] sections they get instead."),
) -> None:
    """Move every reader who chose the section OLD to NEW (after a section was renamed or removed)."""
    from newsletter import subscribers as subscribers_module

    try:
        changed = subscribers_module.rename_section(store(), old, new, settings().issue.sections)
    except NewsletterError as err:
        output.fail(err)
    typer.echo(f"Renamed {old} to {new} for {changed:,} reader{'' if changed == 1 else 's'}")
