"""The command line: each command parses flags, calls one library function, and reports.

Heavy modules (premailer, lxml, apscheduler, the renderer) are imported inside the commands that
use them, so `newsletter --help` and `newsletter subscribers count` start at once.
"""

from __future__ import annotations

import enum
import sys
from datetime import date, datetime
from pathlib import Path
from typing import NoReturn, Optional

import typer

from newsletter.errors import NewsletterError
from newsletter.settings import Settings, find_project, load_settings

app = typer.Typer(
    help="A daily email bulletin: the day's articles become one email, sent once to every subscriber.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
subscribers_app = typer.Typer(help="Manage the subscriber list.", no_args_is_help=True)
app.add_typer(subscribers_app, name="subscribers")


class _State:
    project: Optional[Path] = None
    _settings: Optional[Settings] = None


_state = _State()


def fail(err: NewsletterError | str) -> NoReturn:
    """Print `Error: …` to stderr and exit 1."""
    typer.echo(f"Error: {err}", err=True)
    raise typer.Exit(1)


def settings() -> Settings:
    """Load the project's settings once (from --project or the current folder)."""
    if _state._settings is None:
        try:
            root = find_project(_state.project or Path.cwd())
            _state._settings = load_settings(root)
        except NewsletterError as err:
            fail(err)
    return _state._settings


def store():
    """Open the project's database (created and migrated on first use)."""
    from newsletter import store as store_module

    try:
        return store_module.connect(settings().database_path)
    except NewsletterError as err:
        fail(err)


def parse_day(value: Optional[str]) -> date:
    """Return --date as a date, defaulting to today in the newsletter's time zone."""
    if value is None:
        return datetime.now(settings().tz).date()
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"--date {value!r}: expected a date as YYYY-MM-DD")


@app.callback()
def root(
    project: Optional[Path] = typer.Option(
        None, "--project", "-p", help="The project folder (default: the current folder or a parent).",
        file_okay=False,
    ),
) -> None:
    """Build, preview and send a daily newsletter; manage its subscribers."""
    _state.project = project
    _state._settings = None


@app.command()
def init(
    folder: Path = typer.Argument(..., help="Folder for the new project (created if missing)."),
    name: str = typer.Option("My Daily Bulletin", help="The newsletter's name."),
    short_name: str = typer.Option("MDB", help="Short name used in cross-references."),
) -> None:
    """Create a new newsletter project in FOLDER that works as it is."""
    from newsletter.project import init_project

    today = date.today()
    try:
        created = init_project(folder, name, short_name, today.isoformat(), f"{today:%B} {today.day}")
    except NewsletterError as err:
        fail(err)
    typer.echo(f"Created a newsletter project in {created}")
    typer.echo(f"Next: cd {created} && newsletter preview   (then `newsletter send`)")


class Format(str, enum.Enum):
    table = "table"
    csv = "csv"
    json = "json"


class ExportFormat(str, enum.Enum):
    csv = "csv"
    json = "json"


def main() -> None:
    """Run the command line."""
    app(prog_name="newsletter")


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
