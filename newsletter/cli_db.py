"""`newsletter db …`: the database itself (copy a list with its history to PostgreSQL)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import typer

from newsletter import cli_output as output
from newsletter.cli_context import settings, store
from newsletter.errors import NewsletterError

db_app = typer.Typer(help="The database: move a list to PostgreSQL.", no_args_is_help=True)


@db_app.command("copy")
def db_copy(
    to: str = typer.Option(..., "--to", help="The empty database to copy into: postgresql://user@host/db (password "
                                             "from NEWSLETTER_DATABASE_PASSWORD) or a SQLite file."),
) -> None:
    """Copy the list with its whole history (subscribers, events, issues, ledger) into an empty database."""
    from newsletter import dbcopy, postgres
    from newsletter import store as store_module
    from newsletter.settings import DATABASE_PASSWORD_ENV, DATABASE_URL_ENV, hide_password

    here = store_module.where(settings())
    if (postgres.shown(to) == here if postgres.is_url(to)
            else isinstance(here, Path) and Path(to).resolve() == here.resolve()):
        output.fail(f"--to: {here} is the database this list is in already; name another, empty one")
    try:
        if postgres.is_url(to):
            if hide_password(to) != to:
                output.fail(f"--to: put the password in {DATABASE_PASSWORD_ENV}, not on the command line")
            target = store_module.connect_url(postgres.with_password(to, os.environ.get(DATABASE_PASSWORD_ENV, "")))
            name = postgres.shown(to)
        else:
            target = store_module.connect(Path(to))
            name = to
        source = store()
        with contextlib.closing(source), contextlib.closing(target):
            report = dbcopy.copy(source, target, name)
    except NewsletterError as err:
        output.fail(err)
    for table, count in report.rows.items():
        typer.echo(f"  {table:<20} {count:>10,}")
    typer.echo(f"Copied {report.total:,} rows from {here} to {name}; the counts match.")
    if postgres.is_url(to):
        typer.echo(f"Next: set [database] url = \"{name}\" in newsletter.toml (and {DATABASE_PASSWORD_ENV}) on every host.")
    else:  # a project's SQLite list is always its subscribers/newsletter.db, used when no URL is set
        typer.echo(f"Next: to use it, put it at {settings().database_path} and leave [database] url empty "
                   f"(and {DATABASE_URL_ENV} unset).")
