"""`newsletter subscribers …` as a user runs it: output, exact `Error:` lines, exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.cli_subscribers import subscribers_app

FIXTURES = Path(__file__).parent / "fixtures" / "imports"


@pytest.fixture
def run(runner: CliRunner, project: Path):
    """Run `newsletter --project PROJECT subscribers ARGS…`."""

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(app, ["--project", str(project), "subscribers", *args], input=input)

    return invoke


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def test_every_subscribers_command_has_help(runner):
    names = [command.name for command in subscribers_app.registered_commands]
    assert set(names) == {"add", "set", "unsubscribe", "resubscribe", "remove", "show", "count", "list", "import",
                          "export", "rename-section"}
    for name in names:
        result = runner.invoke(app, ["subscribers", name, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.stdout
    for command in subscribers_app.registered_commands:
        assert command.callback.__doc__, command.name


def test_add_then_add_again_in_another_case(run):
    assert ok(run("add", "Ada@Example.COM", "--name", "Ada Lovelace")) == "Added Ada@example.com (sections all; daily)\n"
    assert ok(run("add", "ADA@example.com")) == "Ada@example.com is already on the list (active); nothing changed\n"
    assert ok(run("count")).splitlines()[-1].split() == ["total", "1"]


def test_add_refuses_a_bad_address_and_a_header_breaking_name(run):
    result = run("add", "not-an-address")
    assert result.exit_code == 1
    assert result.stderr == "Error: not-an-address: not a valid email address: An email address must have an @-sign.\n"
    result = run("add", "eve@example.com", "--name", "Eve\r\nBcc: all@example.com")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: name: 'Eve\\r\\nBcc: all@example.com' contains the control character U+000D")


def test_unsubscribe_resubscribe_and_the_resubscribe_flag(run):
    ok(run("add", "ada@example.com"))
    assert ok(run("unsubscribe", "ADA@example.com")) == "Unsubscribed ada@example.com\n"
    assert ok(run("unsubscribe", "ada@example.com")) == "ada@example.com is already unsubscribed; nothing changed\n"
    result = run("add", "ada@example.com")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: ada@example.com is unsubscribed; if they asked to join again, add it with --resubscribe\n"
    )
    assert ok(run("add", "ada@example.com", "--resubscribe")) == "Resubscribed ada@example.com\n"
    ok(run("unsubscribe", "ada@example.com"))
    assert ok(run("resubscribe", "ada@example.com")) == "Resubscribed ada@example.com (was unsubscribed)\n"
    assert ok(run("resubscribe", "ada@example.com")) == "ada@example.com is already active; nothing changed\n"


@pytest.mark.parametrize("command", ["show", "unsubscribe", "resubscribe", "remove"])
def test_an_unknown_address_is_an_error(run, command):
    extra = ["--yes"] if command == "remove" else []
    result = run(command, "nobody@example.org", *extra)
    assert result.exit_code == 1
    assert result.stderr == "Error: nobody@example.org is not on the list\n"
    assert result.stdout == ""


def test_remove_asks_first_unless_told_yes(run):
    ok(run("add", "ada@example.com"))
    declined = run("remove", "ada@example.com", input="n\n")
    assert declined.exit_code == 1
    assert "Erase ada@example.com and their delivery records for good?" in declined.stdout
    assert ok(run("show", "ada@example.com")).startswith("email:    ada@example.com\n")
    assert ok(run("remove", "ADA@example.com", input="y\n")).endswith("Erased ada@example.com\n")
    ok(run("add", "bob@example.com"))
    assert ok(run("remove", "bob@example.com", "--yes")) == "Erased bob@example.com\n"
    assert run("show", "bob@example.com").exit_code == 1


def test_show_prints_what_the_list_holds(run):
    ok(run("add", "ada@example.com", "--name", "Ada"))
    lines = ok(run("show", "Ada@example.com")).splitlines()
    assert lines[:3] == ["email:    ada@example.com", "name:     Ada", "status:   active"]
    assert lines[3] == "receives: sections all; daily"
    assert lines[4].startswith("added:    20") and lines[5].startswith("updated:  20")


def test_count_shows_each_status_and_the_total(run):
    for address in ("a@example.com", "b@example.com", "c@example.com"):
        ok(run("add", address))
    ok(run("unsubscribe", "b@example.com"))
    assert ok(run("count")) == (
        "active               2\n"
        "unsubscribed         1\n"
        "bounced              0\n"
        "pending              0\n"
        "total                3\n"
    )


def test_list_as_a_table_csv_and_json(run):
    ok(run("add", "ada.lovelace@example.com", "--name", "Ada Lovelace"))
    ok(run("add", "bob@example.com"))
    ok(run("unsubscribe", "bob@example.com"))
    table = ok(run("list")).splitlines()
    assert table[0].split() == ["email", "status", "frequency", "added", "name", "sections"]
    assert table[1].startswith("ada.lovelace@example.com  active        daily      20")
    assert table[1].endswith("  Ada Lovelace          all")
    assert table[2].startswith("bob@example.com           unsubscribed  daily      20")
    assert table[-1] == "(2 subscribers)"
    assert table[0].index("status") == table[1].index("active") == table[2].index("unsubscribed")

    assert ok(run("list", "--status", "unsubscribed", "--format", "csv")).splitlines()[1].startswith(
        "bob@example.com,,unsubscribed,")
    found = json.loads(ok(run("list", "--search", "lovelace", "--format", "json")))
    assert [p["email"] for p in found] == ["ada.lovelace@example.com"]
    assert ok(run("list", "--search", "nobody")).splitlines()[-1] == "(0 subscribers)"


def test_list_refuses_an_unknown_status(run):
    result = run("list", "--status", "gone")
    assert result.exit_code == 1
    assert result.stderr == "Error: status: 'gone' is not one of active, unsubscribed, bounced, pending\n"


def test_import_prints_the_summary(run):
    ok(run("add", "edsger@example.com", "--name", "E. W. Dijkstra"))
    out = ok(run("import", str(FIXTURES / "mailchimp_unsubscribed.csv")))
    assert out == (
        f"Read 2 rows from {FIXTURES / 'mailchimp_unsubscribed.csv'} (Mailchimp format)\n"
        "  added: 1\n"
        "  updated: 1\n"
        "  unchanged: 0\n"
        "  kept unsubscribed: 0\n"
        "  merged duplicates: 0\n"
        "  invalid, skipped: 0\n"
    )
    assert ok(run("show", "edsger@example.com")).splitlines()[1:3] == ["name:     Edsger Dijkstra", "status:   unsubscribed"]


def test_import_dry_run_says_so_and_changes_nothing(run):
    out = ok(run("import", str(FIXTURES / "case_duplicates.csv"), "--dry-run"))
    assert "  added: 2\n" in out
    assert "  merged duplicates: 2\n    line 3: mixed.case@example.com merged with line 2\n" in out
    assert out.endswith("dry run: nothing changed\n")
    assert ok(run("count")).splitlines()[-1].split() == ["total", "0"]


def test_import_keeps_unsubscribed_and_hints_at_the_flag(run):
    ok(run("add", "alan@example.com"))
    ok(run("unsubscribe", "alan@example.com"))
    out = ok(run("import", str(FIXTURES / "mailchimp_subscribed.csv")))
    assert "  kept unsubscribed: 1 (pass --resubscribe only if they asked to rejoin)\n" in out
    assert ok(run("show", "alan@example.com")).splitlines()[2] == "status:   unsubscribed"


def test_import_errors_name_the_file_and_line(run):
    result = run("import", str(FIXTURES / "wrong_header.csv"))
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {FIXTURES / 'wrong_header.csv'}:1: the header has no email column (found: 'address', 'full name'); "
        "expected a column named email or Email Address\n"
    )
    result = run("import", str(FIXTURES / "cp1252.csv"))
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {FIXTURES / 'cp1252.csv'}:2: not valid utf-8 (bytes e9: invalid continuation byte); "
        "if the file uses another encoding, pass it with --encoding (for example cp1252)\n"
    )
    assert "  added: 2\n" in ok(run("import", str(FIXTURES / "cp1252.csv"), "--encoding", "cp1252"))
    assert ok(run("show", "rene@example.com")).splitlines()[1] == "name:     René Descartes"


def test_import_of_invalid_rows_changes_nothing_unless_skipped(run):
    result = run("import", str(FIXTURES / "ragged.csv"))
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {FIXTURES / 'ragged.csv'}: 2 rows are invalid, so nothing was imported "
        "(fix them, or pass --skip-invalid to import the rest):\n"
        "  line 3: has 3 cells, the header has 2\n"
        "  line 4: has 1 cell, the header has 2\n"
    )
    assert ok(run("count")).splitlines()[-1].split() == ["total", "0"]
    out = ok(run("import", str(FIXTURES / "ragged.csv"), "--skip-invalid"))
    assert "  added: 2\n" in out and "  invalid, skipped: 2\n    line 3: has 3 cells" in out


def test_import_of_a_missing_file(run, tmp_path):
    result = run("import", str(tmp_path / "nope.csv"))
    assert result.exit_code == 1
    assert result.stderr == f"Error: {tmp_path / 'nope.csv'}: cannot read the file: No such file or directory\n"


@pytest.mark.sqlite_only  # two projects, and the PostgreSQL pass gives every project one database
def test_export_to_stdout_and_to_a_file_round_trips(run, runner, tmp_path):
    ok(run("import", str(FIXTURES / "formula.csv")))
    ok(run("unsubscribe", "formula.two@example.com"))
    csv_text = ok(run("export"))
    assert csv_text.splitlines()[0] == "email,name,status,created_at,updated_at,sections,frequency"
    assert "formula.three@example.com,'@SUM(A1:A2)," in csv_text
    assert ok(run("export", "-")) == csv_text

    target = tmp_path / "out"
    target.mkdir()
    assert ok(run("export", str(target / "list.csv"))) == f"Exported 4 subscribers to {target / 'list.csv'}\n"
    assert (target / "list.csv").read_text(encoding="utf-8") == csv_text
    assert [p.name for p in target.iterdir()] == ["list.csv"]

    other = tmp_path / "other"
    assert runner.invoke(app, ["init", str(other)]).exit_code == 0
    imported = runner.invoke(app, ["--project", str(other), "subscribers", "import", str(target / "list.csv")])
    assert "  added: 4\n" in ok(imported)
    again = runner.invoke(app, ["--project", str(other), "subscribers", "export"])
    assert ok(again) == csv_text


def test_export_json_by_status(run):
    ok(run("add", "ada@example.com"))
    ok(run("add", "bob@example.com"))
    ok(run("unsubscribe", "bob@example.com"))
    data = json.loads(ok(run("export", "--format", "json", "--status", "active")))
    assert [d["email"] for d in data] == ["ada@example.com"]


def test_subscribers_count_does_not_load_heavy_modules(project):
    probe = (
        "import sys\n"
        "from newsletter import cli\n"
        f"sys.argv = ['newsletter', '--project', {str(project)!r}, 'subscribers', 'count']\n"
        "try:\n"
        "    cli.main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('premailer', 'lxml', 'apscheduler', 'jinja2', 'cssutils') if m in sys.modules]\n"
        "print('heavy:', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "heavy: []"
    assert "total" in result.stdout


# ----------------------------------------------------------------------------- sections and frequency


def test_add_with_sections_and_weekly_then_set_them_and_list_by_section(run):
    # `newsletter init` writes sections = ["News", "Analysis"]; names match in any letter case
    assert ok(run("add", "ada@example.com", "--sections", "analysis", "--frequency", "weekly")) == (
        "Added ada@example.com (sections Analysis; weekly)\n")
    ok(run("add", "bob@example.com", "--sections", "News"))
    ok(run("add", "cy@example.com"))
    assert ok(run("add", "cy@example.com", "--frequency", "weekly")) == (
        "cy@example.com is already on the list (active); nothing changed\n"
        "  to change their sections or frequency: newsletter subscribers set cy@example.com …\n")
    shown = ok(run("show", "ada@example.com"))
    assert "receives: sections Analysis; weekly\n" in shown

    def listed(*args: str) -> list[str]:
        return [line.split()[0] for line in ok(run("list", *args)).splitlines()[1:-1]]

    assert listed("--section", "Analysis") == ["ada@example.com", "cy@example.com"]  # cy receives all
    assert listed("--section", "NEWS") == ["bob@example.com", "cy@example.com"]
    assert "weekly" in ok(run("list", "--section", "analysis")).splitlines()[1]

    assert ok(run("set", "bob@example.com", "--sections", "News, Analysis", "--frequency", "weekly")) == (
        "Set bob@example.com: sections Analysis, News; weekly\n")
    assert ok(run("set", "bob@example.com", "--frequency", "weekly")) == (
        "bob@example.com already has sections Analysis, News; weekly; nothing changed\n")
    assert ok(run("set", "ada@example.com", "--all-sections", "--frequency", "daily")) == (
        "Set ada@example.com: sections all; daily\n")
    shown = ok(run("show", "bob@example.com"))
    assert "receives: sections Analysis, News; weekly (chosen 20" in shown
    assert re.search(r"preferences\s+cli\s+sections: Analysis, News; frequency: weekly", shown)
    ok(run("set", "cy@example.com", "--sections", "Analysis"))
    assert ok(run("list", "--section", "News", "--format", "csv")).splitlines()[1:] == [
        line for line in ok(run("export")).splitlines()[1:] if not line.startswith("cy@")]


def test_an_unknown_section_is_an_error_naming_it_and_changes_nothing(run):
    ok(run("add", "ada@example.com", "--sections", "News"))
    for args in (("add", "bob@example.com", "--sections", "News,Sport"),
                 ("set", "ada@example.com", "--sections", "Sport"),
                 ("list", "--section", "Sport")):
        result = run(*args)
        assert result.exit_code == 1, args
        option = "--section" if args[0] == "list" else "--sections"
        assert result.stderr == (f"Error: {option}: 'Sport' is not a section of this newsletter; "
                                 "the sections are: News, Analysis\n"), args
    assert ok(run("list")).splitlines()[-1] == "(1 subscriber)"
    assert "receives: sections News; daily\n" in ok(run("show", "ada@example.com"))


def test_set_refuses_nothing_to_set_both_section_flags_an_unknown_frequency_and_an_unknown_address(run):
    ok(run("add", "ada@example.com"))
    assert run("set", "ada@example.com").stderr == "Error: nothing to set: pass --sections, --all-sections or --frequency\n"
    both = run("set", "ada@example.com", "--sections", "News", "--all-sections")
    assert both.exit_code == 1 and both.stderr == "Error: --sections and --all-sections: pass one of them, not both\n"
    monthly = run("set", "ada@example.com", "--frequency", "monthly")
    assert monthly.exit_code == 2 and "monthly" in monthly.stderr
    nobody = run("set", "nobody@example.com", "--frequency", "weekly")
    assert nobody.exit_code == 1 and nobody.stderr == "Error: nobody@example.com is not on the list\n"
