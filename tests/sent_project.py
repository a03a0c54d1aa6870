"""A copy of the sample project where some issues were sent, as a user would do it with the CLI.

Shared by the archive, web and browser tests: made once per test module (the sends are the slow
part), then copied for each test that changes it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from typer.testing import CliRunner

from newsletter import dbcopy, store
from newsletter.cli import app
from newsletter.settings import DATABASE_URL_ENV
from pg_server import sqlite_connect

REPO = Path(__file__).resolve().parent.parent
# 26 cross-references 25, 24, 22, 21; 25 and 24 are enough for a reference to follow both ways
SENT_DAYS = ("2026-11-24", "2026-11-25", "2026-11-26")


def make_sent_project(folder: Path, days: tuple[str, ...] = SENT_DAYS) -> Path:
    """Copy the sample project into FOLDER, import its subscribers and send DAYS to the outbox."""
    folder.mkdir(parents=True)
    shutil.copy(REPO / "newsletter.toml", folder / "newsletter.toml")
    shutil.copytree(REPO / "articles", folder / "articles")
    (folder / "subscribers").mkdir()
    shutil.copy(REPO / "subscribers" / "sample.csv", folder / "subscribers" / "sample.csv")
    runner = CliRunner()
    for args in (["subscribers", "import", str(folder / "subscribers" / "sample.csv")],
                 *(["send", "--date", day] for day in days)):
        result = runner.invoke(app, ["--project", str(folder), *args])
        assert result.exit_code == 0, result.output
    return folder


def copy_project(source: Path, target: Path) -> Path:
    """Copy a made project (database included) so a test may change it.

    On the PostgreSQL pass the project was made on SQLite (once per module, before the test's own
    database existed): its list and history are copied into the test's database, as `db copy` does.
    """
    shutil.copytree(source, target)
    if url := os.environ.get(DATABASE_URL_ENV):
        with contextlib.closing(sqlite_connect(target / "subscribers" / "newsletter.db")) as sqlite, \
                contextlib.closing(store.connect_url(url)) as postgres:
            dbcopy.copy(sqlite, postgres, url)
    return target
