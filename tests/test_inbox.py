"""`newsletter inbox`: bounces, complaints, auto-replies and mailto unsubscribes read from a Maildir,
an mbox and standard input, as the CLI runs them (the IMAP server: test_inbox_imap.py)."""

from __future__ import annotations

import io
import mailbox
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings
from hypothesis import strategies as st
from typer.testing import CliRunner

from newsletter import events, inbox, subscribers
from newsletter.cli import app
from newsletter.inbox.reading import Category, Reader
from newsletter.settings import secret_key

from inbox_helpers import BOUNCE_ADDRESS, EXPECTED, add_everyone, configure, personal, status

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(params=["verp", "no-verp"])
def setup(request, project):
    settings = configure(project, bounce_address=BOUNCE_ADDRESS if request.param == "verp" else "")
    conn = add_everyone(settings)
    yield settings, conn
    conn.close()


def maildir_of(folder: Path, messages: list[bytes]) -> Path:
    box = mailbox.Maildir(folder, create=True)
    for raw in messages:
        box.add(raw)
    return folder


def run_cli(project: Path, *args: str, input: bytes | None = None):
    return CliRunner().invoke(app, ["--project", str(project), "inbox", *args], input=input)


# ----------------------------------------------------------------------------- what each message means


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_kind_of_message_leaves_its_subscriber_in_the_right_state(setup, name):
    settings, conn = setup
    address, expected = EXPECTED[name]
    box = maildir_of(settings.root / "box", [personal(name, settings, conn)])
    summary = inbox.run(conn, settings, secret_key(settings), inbox.open_source(settings, maildir=box), NOW)
    assert summary.read == 1
    assert status(conn, address) == expected, summary.line()


def test_bounces_are_told_apart_from_auto_replies_and_counted_in_one_line(setup):
    settings, conn = setup
    names = ["postfix_permanent.eml", "gmail_quota.eml", "postfix_delayed.eml", "out_of_office_outlook.eml",
             "vacation_gmail.eml", "arf_yahoo.eml", "mailto_unsubscribe.eml", "mailto_no_token.eml", "question.eml"]
    box = maildir_of(settings.root / "box", [personal(n, settings, conn) for n in names])
    result = run_cli(settings.root, "--maildir", str(box))
    assert result.exit_code == 0, result.output
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith(f"{box}: read 9 messages: 2 bounces (1 permanent, 1 temporary), 1 complaint, "
                           "1 unsubscribe, 3 auto-replies ignored, 2 left for a human; 3 subscribers changed")
    assert "left for a human: an unsubscribe request without a valid token" in result.stdout
    assert "left for a human: not a bounce, complaint or unsubscribe request" in result.stdout


def test_a_permanent_bounce_keeps_its_status_code_and_diagnostic_in_the_history(setup):
    settings, conn = setup
    raw = personal("postfix_permanent.eml", settings, conn)
    verdict = Reader(settings, secret_key(settings)).read(raw)
    assert verdict.category is Category.BOUNCE
    inbox.run(conn, settings, secret_key(settings),
              inbox.open_source(settings, maildir=maildir_of(settings.root / "box", [raw])), NOW)
    last = events.history(conn, subscribers.get(conn, "gone@example.net").id)[-1]
    assert (last.kind, last.source, last.status) == ("bounced", "dsn", "5.1.1")
    assert "User unknown in virtual mailbox table" in last.detail


def test_temporary_bounces_on_three_days_mark_the_address_bounced(setup):
    settings, conn = setup
    reader_key = secret_key(settings)
    for day in (1, 2, 3):
        raw = personal("gmail_quota.eml", settings, conn, day=NOW.date().replace(day=day))
        raw = raw.replace(b"quota.42", f"quota.{day}".encode())  # three reports, three Message-IDs
        when = NOW.replace(day=day)
        inbox.run(conn, settings, reader_key,
                  inbox.open_source(settings, maildir=maildir_of(settings.root / f"box{day}", [raw])), when)
    assert status(conn, "full@example.net") == "bounced"


# ----------------------------------------------------------------------------- hostile and odd input


def test_a_forged_verp_tag_changes_nothing_and_the_summary_says_why(project):
    settings = configure(project)
    conn = add_everyone(settings)
    raw = personal("postfix_permanent.eml", settings, conn)
    tag_start = raw.index(b"bounces+") + len(b"bounces+")
    forged = raw[:tag_start] + raw[tag_start:].replace(raw[tag_start:tag_start + 8], b"20261201", 1)
    result = run_cli(project, "--stdin", input=forged)
    assert result.exit_code == 0, result.output
    assert status(conn, "gone@example.net") == "active"
    assert "nothing changed for 1 (1 forged VERP tag)" in result.stdout


def test_the_verp_tag_wins_over_the_address_the_bounce_names(project):
    settings = configure(project)
    conn = add_everyone(settings)
    raw = personal("postfix_permanent.eml", settings, conn, about="ada@example.com")  # the body names gone@
    summary = inbox.run(conn, settings, secret_key(settings),
                        inbox.open_source(settings, stdin=io.BytesIO(raw)), NOW)
    assert (status(conn, "ada@example.com"), status(conn, "gone@example.net")) == ("bounced", "active")
    assert summary.changed == 1


def test_a_bounce_for_an_address_not_on_the_list_changes_nothing(project):
    settings = configure(project, bounce_address="")
    conn = add_everyone(settings)
    subscribers.remove(conn, "gone@example.net")
    result = run_cli(project, "--stdin", input=personal("exim_permanent.eml", settings, conn, about="ada@example.com"))
    assert "nothing changed for 1 (1 not on the list)" in result.stdout
    assert conn.execute("SELECT count(*) FROM subscriber_events WHERE kind = 'bounced'").fetchone()[0] == 0


def test_a_complaint_about_another_list_changes_nothing_and_says_so(project):
    settings = configure(project, bounce_address="")
    conn = add_everyone(settings)
    result = run_cli(project, "--stdin", input=personal("arf_other_list.eml", settings, conn))
    assert "1 complaint" in result.stdout and "(1 about another list)" in result.stdout
    assert status(conn, "ada@example.com") == "active"


def test_a_30_mb_message_is_refused_unread_and_kept_nowhere(project):
    settings = configure(project)
    conn = add_everyone(settings)
    huge = personal("postfix_permanent.eml", settings, conn) + b"x" * (30 * 1024 * 1024)
    box = maildir_of(project / "box", [huge, personal("postfix_permanent.eml", settings, conn, about="ada@example.com")])
    result = run_cli(project, "--maildir", str(box))
    assert result.exit_code == 0, result.output
    assert f"left for a human: larger than {settings.inbox.max_message_bytes} bytes: not read" in result.stdout
    assert status(conn, "gone@example.net") == "active" and status(conn, "ada@example.com") == "bounced"
    result = run_cli(project, "--stdin", input=huge)
    assert "nothing changed for 1 (1 larger than" in result.stdout
    assert not (project / "inbox" / "for-a-human").exists()


def test_processing_the_same_message_twice_changes_nothing_the_second_time(setup):
    settings, conn = setup
    mbox_path = settings.root / "bounces.mbox"
    box = mailbox.mbox(mbox_path)
    box.add(personal("gmail_quota.eml", settings, conn))
    box.close()
    assert "1 temporary" in run_cli(settings.root, "--mbox", str(mbox_path)).stdout
    second = run_cli(settings.root, "--mbox", str(mbox_path)).stdout
    assert "nothing changed for 1 (1 already processed)" in second
    assert len([e for e in events.history(conn, subscribers.get(conn, "full@example.net").id)
                if e.kind == "bounce_soft"]) == 1


def test_a_maildir_is_read_once_and_messages_for_a_human_are_flagged(project):
    settings = configure(project)
    conn = add_everyone(settings)
    box = maildir_of(project / "box", [personal("question.eml", settings, conn),
                                       personal("postfix_permanent.eml", settings, conn)])
    assert "read 2 messages" in run_cli(project, "--maildir", str(box)).stdout
    assert "read 0 messages" in run_cli(project, "--maildir", str(box)).stdout
    flags = sorted(file.name.partition(":2,")[2] for file in (box / "cur").iterdir())
    assert flags == ["FS", "S"] and not list((box / "new").iterdir())


def test_stdin_keeps_a_message_for_a_human_in_the_project(project):
    settings = configure(project)
    conn = add_everyone(settings)
    raw = personal("mailto_no_token.eml", settings, conn)
    result = run_cli(project, "--stdin", input=raw)
    assert "1 left for a human" in result.stdout
    kept = mailbox.Maildir(project / "inbox" / "for-a-human", create=False)
    assert [m.as_bytes() for m in kept] and kept.get_bytes(next(iter(kept.keys()))) == raw

@pytest.mark.sqlite_only  # the fault is a SQLite file made unreadable
def test_stdin_exits_75_on_a_fault_so_the_mta_tries_again(project):
    settings = configure(project)
    conn = add_everyone(settings)
    raw = personal("postfix_permanent.eml", settings, conn)
    conn.close()
    settings.database_path.write_bytes(b"not a database " * 1000)
    result = subprocess.run([sys.executable, "-m", "newsletter", "--project", str(project), "inbox", "--stdin"],
                            input=raw, capture_output=True, timeout=120)
    assert result.returncode == 75, result.stderr
    assert result.stderr.decode().startswith(f"Error: {settings.database_path}")


def test_without_a_source_the_cli_says_what_to_set(project):
    configure(project)
    result = run_cli(project)
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"Error: {project / 'newsletter.toml'}: [inbox] host is empty; set it to read "
                                     "an IMAP mailbox, or give --maildir, --mbox or --stdin")
    assert "give one of them" in run_cli(project, "--stdin", "--mbox", str(project / "x")).stderr


# ----------------------------------------------------------------------------- properties


@hsettings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(status=st.from_regex(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}", fullmatch=True),
       action=st.sampled_from(["failed", "delayed", "delivered", "relayed", "expanded", "Failed (bad)"]),
       diagnostic=st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=80),
       recipient=st.emails())
def test_any_dsn_fields_read_as_their_status_class_says(project, status, action, diagnostic, recipient):
    settings = configure(project, bounce_address="")
    reader = Reader(settings, b"k" * 32)
    raw = (
        "From: MAILER-DAEMON@mx.example.org\nTo: bounces@example.org\nSubject: x\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n--b\n'
        "Content-Type: text/plain\n\nA report.\n\n--b\nContent-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; mx.example.org\n\n"
        f"Final-Recipient: rfc822; {recipient}\nAction: {action}\nStatus: {status}\n"
        f"Diagnostic-Code: smtp; {' '.join(diagnostic.split())}\n\n--b--\n"
    ).encode("utf-8")
    verdict = reader.read(raw)
    if action.lower().startswith("delayed"):
        assert verdict.category is Category.IGNORED
    elif not action.lower().startswith("failed"):
        assert verdict.category is Category.IGNORED  # a success report is no bounce
    elif recipient.isascii():
        assert verdict.category is Category.BOUNCE
        (item,) = verdict.feedback
        assert item.status == status
        assert item.kind == {"5": "hard_bounce", "4": "soft_bounce"}.get(status[0], "hard_bounce")
    assert all(f.kind != "complaint" and f.kind != "unsubscribe" for f in verdict.feedback)


@hsettings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=3000))
def test_any_bytes_at_all_get_a_verdict_and_never_an_exception(project, raw):
    settings = configure(project)
    verdict = Reader(settings, b"k" * 32).read(raw)
    assert verdict.category in set(Category)


def test_a_mail_system_notice_naming_no_failure_is_left_for_a_human(project):
    settings = configure(project)
    conn = add_everyone(settings)
    raw = personal("question.eml", settings, conn, about="ada@example.com").replace(
        b"From: Fay <fay@example.com>", b"From: postmaster@mx.example.net")
    verdict = Reader(settings, secret_key(settings)).read(raw)
    assert verdict.category is Category.HUMAN
    failing = raw.replace(b"Where can I read", b"550 5.2.1 mailbox disabled. Where can I read")
    (item,) = Reader(settings, secret_key(settings)).read(failing).feedback
    assert (item.kind, item.status, item.subscriber_id) == ("hard_bounce", "5.2.1", subscribers.get(conn, "ada@example.com").id)


def test_a_bounce_without_the_verp_address_in_its_headers_is_told_by_the_copy_it_returns(project):
    settings = configure(project)
    conn = add_everyone(settings)
    raw = personal("postfix_permanent.eml", settings, conn, about="ada@example.com")
    headers, _, body = raw.partition(b"\n\n")
    stripped = b"\n".join(line for line in headers.split(b"\n")
                          if not line.startswith((b"Delivered-To", b"To:"))) + b"\n\n" + body
    (item,) = Reader(settings, secret_key(settings)).read(stripped).feedback
    assert item.subscriber_id == subscribers.get(conn, "ada@example.com").id
