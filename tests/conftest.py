"""Fixtures shared by every test file: a fresh project made by the real `newsletter init`."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter import store
from newsletter.cli import app
from newsletter.project import POSTAL_PLACEHOLDER
from newsletter.settings import DATABASE_URL_ENV
from pg_server import Server

REPO = Path(__file__).resolve().parent.parent
POSTAL_ADDRESS = "Example Bulletin, 2 Test Road, 1010 Example City"


# `make test` runs the suite twice: on SQLite, then with NEWSLETTER_TEST_DATABASE=postgresql the test
# files whose code reads or writes the database, each test on a fresh PostgreSQL database of its own
# (NEWSLETTER_DATABASE_URL, so the CLI and every subprocess use it; `store.connect(path)` in a test
# opens it too). A test about SQLite itself (its file, its pragmas, its faults) is marked sqlite_only.
POSTGRES = os.environ.get("NEWSLETTER_TEST_DATABASE", "sqlite") == "postgresql"
BOTH_BACKENDS = frozenset({
    "test_subscribers.py", "test_cli_subscribers.py", "test_importer.py", "test_delivery.py",
    "test_sending.py", "test_feedback.py", "test_reputation.py", "test_archive.py", "test_web.py",
    "test_webhooks.py", "test_smtp.py", "test_smtp_replies.py", "test_schedule.py", "test_inbox.py",
    "test_web_serve.py", "test_outbox_kill.py", "test_smtp_kill.py", "test_postgres.py", "test_cli.py",
    "test_postgres_senders.py", "test_postgres_batch.py", "test_feeds.py", "test_variants.py",
    "test_digest.py", "test_digest_smtp.py",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if POSTGRES:
        keep = [i for i in items if i.path.name in BOTH_BACKENDS and not i.get_closest_marker("sqlite_only")]
    else:
        keep = [i for i in items if not i.get_closest_marker("postgres_only")]
    if dropped := [i for i in items if i not in keep]:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep


@pytest.fixture(scope="session")
def postgres_server():
    """The session's PostgreSQL server (started on first use), or a skip saying why there is none."""
    server = Server()
    reason = server.start()
    if reason:
        server.stop()
        pytest.skip(f"no PostgreSQL to test on: {reason}")
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def database_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """On the PostgreSQL pass, a fresh database for this test; its URL (None on the SQLite pass)."""
    if not POSTGRES:
        yield None
        return
    from newsletter import postgres

    server = request.getfixturevalue("postgres_server")
    url = server.new_database()
    monkeypatch.setenv(DATABASE_URL_ENV, url)
    # the first file a test opens is the project's database; another file is another database
    urls: dict[Path, str] = {}

    def connect(path: Path):
        key = Path(path).resolve()
        if key not in urls:
            urls[key] = server.new_database() if urls else url
        return store.connect_url(urls[key])

    monkeypatch.setattr(store, "connect", connect)
    yield url
    postgres.close_pools()
    for each in {url, *urls.values()}:
        server.release(each)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def project(tmp_path: Path, runner: CliRunner) -> Path:
    """A new project made by `newsletter init`, with its postal address filled in as `check` asks."""
    folder = tmp_path / "project"
    result = runner.invoke(app, ["init", str(folder)])
    assert result.exit_code == 0, result.output
    return fill_postal_address(folder)


def fill_postal_address(folder: Path) -> Path:
    """Replace the postal address placeholder `newsletter init` writes, as `newsletter check` asks."""
    config = folder / "newsletter.toml"
    config.write_text(config.read_text(encoding="utf-8").replace(POSTAL_PLACEHOLDER, POSTAL_ADDRESS), encoding="utf-8")
    return folder


@pytest.fixture
def sample_project(tmp_path: Path) -> Path:
    """A copy of the repository's sample project (settings, articles, templates, sample subscribers)."""
    folder = tmp_path / "sample"
    folder.mkdir()
    shutil.copy(REPO / "newsletter.toml", folder / "newsletter.toml")
    shutil.copytree(REPO / "articles", folder / "articles")
    shutil.copytree(REPO / "feeds", folder / "feeds")
    (folder / "subscribers").mkdir()
    shutil.copy(REPO / "subscribers" / "sample.csv", folder / "subscribers" / "sample.csv")
    return folder


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    """A fresh subscriber database (test files that need another kind of connection define their own)."""
    connection = store.connect(tmp_path / "subscribers" / "newsletter.db")
    yield connection
    connection.close()
