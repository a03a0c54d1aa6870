"""Fixtures shared by every test file: a fresh project made by the real `newsletter init`."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter import store
from newsletter.cli import app
from newsletter.project import POSTAL_PLACEHOLDER

REPO = Path(__file__).resolve().parent.parent
POSTAL_ADDRESS = "Example Bulletin, 2 Test Road, 1010 Example City"


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
