"""A full disk, a read-only or a damaged database: one line naming the file, nothing lost (issue 11).

The faults are real: a file-size limit (RLIMIT_FSIZE, which fails a write with EFBIG exactly as a
full disk fails it with ENOSPC) set in the child process, and, when the tests run as root, a
small tmpfs mounted for the project that fills up and can be remounted read-only.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter import store
from newsletter.cli import app
from newsletter.delivery.outbox import file_name

from conftest import fill_postal_address

ACTIVE = 300
BATCH_SIZE = 25
AT_FREEZE = 16_384  # four database pages: the write-ahead log's header and a first transaction, not the freeze


def make_project(folder: Path) -> Path:
    """A project made by `newsletter init` with ACTIVE subscribers and small batches."""
    result = CliRunner().invoke(app, ["init", str(folder)])
    assert result.exit_code == 0, result.output
    config = fill_postal_address(folder) / "newsletter.toml"
    config.write_text(config.read_text().replace("batch_size = 500", f"batch_size = {BATCH_SIZE}"))
    conn = store.connect(folder / "subscribers" / "newsletter.db")
    now = store.now_iso()
    with store.write(conn):
        conn.executemany(
            "INSERT INTO subscribers (email, email_key, name, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            [(f"r{n}@example.org", f"r{n}@example.org", f"Reader {n}", "active", now, now) for n in range(ACTIVE)])
    conn.close()
    return folder


def run(project: Path, *args: str, file_limit: int | None = None) -> subprocess.CompletedProcess:
    """Run `newsletter ARGS` as a user would, optionally under a file-size limit."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.run([sys.executable, "-m", "newsletter", "--project", str(project), *args],
                          capture_output=True, text=True, timeout=120, cwd=project,
                          preexec_fn=limit if file_limit else None)


def assert_one_error_line(result: subprocess.CompletedProcess, path: Path, *causes: str) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"Error: {path}"), errors[0]
    assert any(cause in errors[0] for cause in causes), errors[0]
    return errors[0]


def assert_ledger_matches_files(project: Path) -> int:
    """Every row recorded sent has its whole message in new/; no temporary file is left."""
    day_folders = [p for p in (project / "outbox").iterdir() if p.name[:2] == "20"]
    conn = sqlite3.connect(f"file:{project / 'subscribers' / 'newsletter.db'}?mode=ro", uri=True)
    sent = conn.execute("SELECT subscriber_id, message_id FROM deliveries WHERE state = 'sent'").fetchall()
    conn.close()
    new = {p.name: p for folder in day_folders for p in (folder / "mail" / "new").iterdir()}
    assert [file_name(*row) for row in sent if file_name(*row) not in new] == []
    for path in new.values():
        assert path.read_bytes().rstrip().endswith(b"--"), f"{path.name}: cut short"
    leftovers = [p for folder in day_folders for p in (folder / "mail" / "tmp").iterdir()]
    leftovers += [p for p in project.rglob("*.tmp")]
    assert leftovers == []
    return len(new)


def assert_resumes(project: Path) -> None:
    result = run(project, "send")
    assert result.returncode == 0, result.stdout + result.stderr
    assert assert_ledger_matches_files(project) == ACTIVE
    conn = sqlite3.connect(project / "subscribers" / "newsletter.db")
    assert conn.execute("SELECT state, count(*) FROM deliveries GROUP BY state").fetchall() == [("sent", ACTIVE)]
    conn.close()


@pytest.fixture(scope="module")
def template_project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("disk") / "p")


@pytest.mark.slow
@pytest.mark.parametrize("extra", [0, 150_000, 400_000], ids=["at-freeze", "early", "late"])
def test_a_file_size_limit_mid_send_is_one_line_and_the_next_send_resumes(
    template_project: Path, tmp_path: Path, extra: int
) -> None:
    project = tmp_path / "p"
    shutil.copytree(template_project, project)
    database = project / "subscribers" / "newsletter.db"
    # the write-ahead log is the file that grows: the freeze alone needs more than AT_FREEZE of it
    # (the issue and 300 rows), whatever the schema's size; later limits are past the freeze
    limit = database.stat().st_size + extra if extra else AT_FREEZE
    result = run(project, "send", file_limit=limit)
    assert_one_error_line(result, database, "disk I/O error", "File too large")
    written = assert_ledger_matches_files(project)
    assert (0 < written < ACTIVE) if extra > 100_000 else written == 0  # mid-send, or before any message
    assert_resumes(project)


def test_a_damaged_database_is_one_line_naming_it(project: Path) -> None:
    database = project / "subscribers" / "newsletter.db"
    assert run(project, "subscribers", "add", "ada@example.org").returncode == 0
    database.write_bytes(os.urandom(database.stat().st_size))
    for args in (["subscribers", "count"], ["send"], ["subscribers", "add", "bob@example.org"]):
        line = assert_one_error_line(run(project, *args), database, "file is not a database")
        assert line.endswith("(the file is damaged: restore it from a backup)")


def test_a_database_damaged_after_its_header_is_one_line_naming_it(template_project: Path, tmp_path: Path) -> None:
    project = tmp_path / "p"
    shutil.copytree(template_project, project)
    database = project / "subscribers" / "newsletter.db"
    data = bytearray(database.read_bytes())
    data[4096:] = b"\xa5" * (len(data) - 4096)  # page 1 (the header and the schema) survives
    database.write_bytes(bytes(data))
    for args in (["subscribers", "count"], ["send"]):
        assert_one_error_line(run(project, *args), database, "malformed", "not a database")
    assert not (project / "outbox" / "site").exists()


# --- a real small file system (root only) ----------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MB tmpfs mounted at TMP_PATH/disk, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root; the file-size limit tests cover the fault")
    mount_point = tmp_path / f"disk-{uuid.uuid4().hex[:8]}"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def remount(mount_point: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(mount_point)], check=True)


@pytest.mark.slow
def test_a_full_disk_mid_send_is_one_line_and_the_next_send_resumes(small_disk: Path) -> None:
    project = make_project(small_disk / "p")
    result = run(project, "send")
    # the messages or the ledger: whichever write finds the disk full first is named
    assert_one_error_line(result, project, "No space left on device", "disk is full")
    written = assert_ledger_matches_files(project)
    assert 0 < written < ACTIVE
    remount(small_disk, "size=32m")
    assert_resumes(project)


def test_a_read_only_file_system_is_one_line_and_changes_nothing(small_disk: Path) -> None:
    project = make_project(small_disk / "p")
    database = project / "subscribers" / "newsletter.db"
    before = database.read_bytes()
    remount(small_disk, "ro")
    try:
        for args in (["send"], ["subscribers", "add", "ada@example.org"]):
            result = run(project, *args)
            assert_one_error_line(result, project, "read-only")
    finally:
        remount(small_disk, "rw,size=32m")
    assert database.read_bytes() == before
    assert_resumes(project)
