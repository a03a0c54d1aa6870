"""Files on disk: personal data is the owner's alone, the public archive is world-readable (issue 11)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from newsletter.cli import app


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    """Run the test under an explicit umask: the modes must not depend on the caller's."""
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes_under(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): mode(p) for p in [folder, *folder.rglob("*")]}


def test_personal_files_are_owner_only_and_the_archive_is_world_readable(tmp_path: Path, runner, umask: int) -> None:
    folder = tmp_path / "project"
    for args in (["init", str(folder)], ["--project", str(folder), "subscribers", "add", "ada@example.org"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    config = folder / "newsletter.toml"
    config.write_text(config.read_text().replace("Your organisation, street, city", "1 Test Road, Example City"))
    for args in (["send"], ["send", "--test-to", "proof@example.org"], ["archive"]):
        result = runner.invoke(app, ["--project", str(folder), *args])
        assert result.exit_code == 0, result.output

    subscribers = folder / "subscribers"
    assert mode(subscribers) == 0o700
    for name in ("newsletter.db", "secret.key"):
        assert mode(subscribers / name) == 0o600, name
    for extra in subscribers.glob("newsletter.db-*"):
        assert mode(extra) == 0o600, extra.name

    emls = list((folder / "outbox").rglob("*.eml")) + list((folder / "outbox").glob("*/mail/new/*"))
    assert len(emls) >= 2  # the subscriber's message and the proof
    for eml in emls:
        assert mode(eml) == 0o600, eml
        for parent in eml.relative_to(folder / "outbox").parents:
            if parent != Path("."):
                assert mode(folder / "outbox" / parent) == 0o700, parent

    site = folder / "outbox" / "site"
    assert mode(folder / "outbox") & 0o555 == 0o555  # another user may pass through to site/
    found = modes_under(site)
    assert "index.html" in found and "feed.xml" in found
    wrong = {name: oct(m) for name, m in found.items()
             if m != (0o755 if (site / name).is_dir() or name == "." else 0o644)}
    assert wrong == {}


def test_an_older_world_readable_database_is_made_owner_only(project: Path, runner) -> None:
    database = project / "subscribers" / "newsletter.db"
    result = runner.invoke(app, ["--project", str(project), "subscribers", "add", "ada@example.org"])
    assert result.exit_code == 0, result.output
    os.chmod(database, 0o644)
    os.chmod(project / "subscribers" / "secret.key", 0o600)
    result = runner.invoke(app, ["--project", str(project), "subscribers", "count"])
    assert result.exit_code == 0, result.output
    assert mode(database) == 0o600


def test_archive_files_written_private_by_an_older_version_become_readable(project: Path, runner) -> None:
    result = runner.invoke(app, ["--project", str(project), "archive"])
    assert result.exit_code == 0, result.output
    index = project / "outbox" / "site" / "index.html"
    os.chmod(index, 0o600)
    result = runner.invoke(app, ["--project", str(project), "archive"])
    assert result.exit_code == 0, result.output
    assert mode(index) == 0o644
