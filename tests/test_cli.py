"""The command line as a user sees it: help everywhere, init, projects found or explained, fast start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.main import get_command
from typer.testing import CliRunner

from newsletter.cli import app


def walk_commands(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from walk_commands(sub, (*path, name))


def test_every_command_has_help(runner: CliRunner) -> None:
    commands = list(walk_commands(get_command(app)))
    assert len(commands) > 5
    for path, command in commands:
        assert (command.help or "").strip(), f"`newsletter {' '.join(path)}` has no help text"
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output


def test_init_makes_a_project_that_builds(project: Path, runner: CliRunner) -> None:
    for folder in ("articles", "templates", "subscribers", "outbox"):
        assert (project / folder).is_dir()
    config = (project / "newsletter.toml").read_text()
    for section in ("[newsletter]", "[sender]", "[issue]", "[schedule]", "[delivery]", "[smtp]", "[dkim]"):
        assert section in config
    assert "password" not in config.split("[smtp]")[1].split("[dkim]")[0].replace("PASSWORD", "")
    day = next((project / "articles").iterdir()).name
    result = runner.invoke(app, ["--project", str(project), "build", "--date", day])
    assert result.exit_code == 0, result.output
    assert (project / "outbox" / day / "issue.html").is_file()


def test_init_refuses_to_overwrite(project: Path, runner: CliRunner) -> None:
    before = (project / "newsletter.toml").read_text()
    result = runner.invoke(app, ["init", str(project)])
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error: ")
    assert "a project is already here; nothing was changed" in result.output
    assert (project / "newsletter.toml").read_text() == before


def test_outside_a_project_says_how_to_make_one(tmp_path: Path, runner: CliRunner) -> None:
    result = runner.invoke(app, ["--project", str(tmp_path), "subscribers", "count"])
    assert result.exit_code == 1
    assert "not a newsletter project" in result.output
    assert "newsletter init DIR" in result.output


def test_bad_date_is_named(project: Path, runner: CliRunner) -> None:
    result = runner.invoke(app, ["--project", str(project), "build", "--date", "26/11/2026"])
    assert result.exit_code == 1
    assert "Error: --date '26/11/2026': expected a date as YYYY-MM-DD" in result.output


def test_python_dash_m_runs_the_tool(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "newsletter", "--help"], capture_output=True, text=True, check=True
    )
    assert "subscribers" in result.stdout


def test_help_and_count_do_not_import_heavy_modules(project: Path) -> None:
    probe = (
        "import sys\n"
        "from newsletter.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('premailer', 'lxml', 'apscheduler', 'jinja2', 'cssutils') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    for args in (["--help"], ["--project", str(project), "subscribers", "count"]):
        result = subprocess.run(
            [sys.executable, "-c", probe, *args], capture_output=True, text=True
        )
        assert "HEAVY []" in result.stdout, (args, result.stdout, result.stderr)


def test_a_bad_test_pause_value_is_named_and_nothing_is_sent(sample_project: Path, runner: CliRunner) -> None:
    result = runner.invoke(app, ["--project", str(sample_project), "send", "--date", "2026-11-26"],
                           env={"NEWSLETTER_TEST_PAUSE_AFTER": "soon"})
    assert result.exit_code == 1
    assert "Error: NEWSLETTER_TEST_PAUSE_AFTER (a test hook) must be a number of messages, not 'soon'" in result.output
    assert not (sample_project / "outbox" / "2026-11-26" / "mail").exists()
