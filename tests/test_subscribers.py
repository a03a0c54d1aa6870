"""The subscriber list: adding, status changes, erasing, streaming, import from other tools, export."""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from newsletter import store, subscribers
from newsletter.errors import ImportFileError, SubscriberError

FIXTURES = Path(__file__).parent / "fixtures" / "imports"


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    connection = store.connect(tmp_path / "subscribers" / "newsletter.db")
    yield connection
    connection.close()


def write(tmp_path: Path, text: str, name: str = "list.csv") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def snapshot(conn: sqlite3.Connection) -> list[tuple]:
    return [tuple(r) for r in conn.execute("SELECT * FROM subscribers ORDER BY id")]


def people(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    return [(s.email, s.name, s.status) for s in subscribers.iter_subscribers(conn)]


# ----------------------------------------------------------------------------- one at a time


def test_add_normalizes_the_domain_and_keeps_the_local_part(conn):
    result = subscribers.add(conn, "  Ada.Lovelace+News@Example.COM ", name=" Ada ")
    assert result.outcome == "added"
    assert result.subscriber.email == "Ada.Lovelace+News@example.com"
    assert result.subscriber.email_key == "ada.lovelace+news@example.com"
    assert result.subscriber.name == "Ada"
    assert result.subscriber.status == "active"


def test_adding_an_address_again_in_another_case_changes_nothing(conn):
    first = subscribers.add(conn, "ada@example.com", name="Ada")
    again = subscribers.add(conn, "ADA@EXAMPLE.com", name="Someone Else")
    assert again.outcome == "unchanged" and not again.changed
    assert again.subscriber == first.subscriber
    assert subscribers.count_by_status(conn) == {"active": 1, "unsubscribed": 0, "bounced": 0, "pending": 0}


def test_plus_tags_and_dots_make_different_subscribers(conn):
    for address in ("ada@example.com", "a.da@example.com", "ada+news@example.com"):
        assert subscribers.add(conn, address).outcome == "added"
    assert subscribers.count_by_status(conn)["active"] == 3


@pytest.mark.parametrize(
    "address, message",
    [
        ("a" * 65 + "@example.com", "a" * 65 + "@example.com: not a valid email address: The email address is too "
         "long before the @-sign (1 character too many)."),
        ("not-an-address", "not-an-address: not a valid email address: An email address must have an @-sign."),
        ("ada@localhost", "ada@localhost: not a valid email address: The part after the @-sign is not valid. "
         "It should have a period."),
        ("ada@example.com\r\nBcc: eve@example.com", "'ada@example.com\\r\\nBcc: eve@example.com': "
         "not a valid email address: "),
        ("   ", "email: the address is empty"),
    ],
)
def test_add_rejects_invalid_addresses_naming_them(conn, address, message):
    with pytest.raises(SubscriberError) as caught:
        subscribers.add(conn, address)
    assert str(caught.value).startswith(message)
    assert subscribers.count_by_status(conn)["active"] == 0


@pytest.mark.parametrize(
    "name", ["Eve\r\nBcc: all@example.com", "Eve\nX", "tab\there", "nul\x00", "line\u2028sep", "=?utf-8?q?Bcc=3A_x?="]
)
def test_add_rejects_names_that_could_forge_headers(conn, name):
    with pytest.raises(SubscriberError) as caught:
        subscribers.add(conn, "eve@example.com", name=name)
    assert str(caught.value).startswith("name: ")
    assert subscribers.count_by_status(conn)["active"] == 0


def test_adding_an_unsubscribed_address_needs_resubscribe(conn):
    subscribers.add(conn, "ada@example.com", name="Ada")
    subscribers.unsubscribe(conn, "ada@example.com")
    with pytest.raises(SubscriberError) as caught:
        subscribers.add(conn, "Ada@example.com")
    assert str(caught.value) == (
        "ada@example.com is unsubscribed; if they asked to join again, add it with --resubscribe"
    )
    assert subscribers.get(conn, "ada@example.com").status == "unsubscribed"
    result = subscribers.add(conn, "Ada@example.com", resubscribe=True)
    assert result.outcome == "resubscribed"
    assert result.subscriber.status == "active" and result.subscriber.name == "Ada"


def test_unsubscribe_then_resubscribe(conn):
    subscribers.add(conn, "ada@example.com")
    change = subscribers.unsubscribe(conn, "ADA@example.com")
    assert change.changed and change.before == "active" and change.subscriber.status == "unsubscribed"
    assert not subscribers.unsubscribe(conn, "ada@example.com").changed
    back = subscribers.resubscribe(conn, "ada@example.com")
    assert back.changed and back.before == "unsubscribed" and back.subscriber.status == "active"
    assert not subscribers.resubscribe(conn, "ada@example.com").changed


def test_unsubscribe_leaves_a_bounced_address_bounced(conn):
    person = subscribers.add(conn, "ada@example.com").subscriber
    assert subscribers.set_status(conn, person.id, "bounced")
    assert not subscribers.unsubscribe(conn, "ada@example.com").changed
    assert subscribers.get(conn, "ada@example.com").status == "bounced"


def test_set_status_checks_the_status_and_the_id(conn):
    person = subscribers.add(conn, "ada@example.com").subscriber
    assert not subscribers.set_status(conn, person.id, "active")
    with pytest.raises(SubscriberError, match="^status: 'paused' is not one of active, unsubscribed, bounced, pending$"):
        subscribers.set_status(conn, person.id, "paused")
    with pytest.raises(SubscriberError, match="^subscriber 999 does not exist$"):
        subscribers.set_status(conn, 999, "bounced")


def test_unknown_addresses_are_named(conn):
    for operation in (subscribers.get, subscribers.unsubscribe, subscribers.resubscribe, subscribers.remove):
        with pytest.raises(SubscriberError, match="^nobody@example.org is not on the list$"):
            operation(conn, "nobody@example.org")


def test_remove_erases_the_person_and_their_deliveries(conn):
    ada = subscribers.add(conn, "ada@example.com").subscriber
    bob = subscribers.add(conn, "bob@example.com").subscriber
    with store.write(conn):
        conn.execute(
            "INSERT INTO issues VALUES ('2026-11-26', 1, 'done', 's', 'h', 't', 'x', 'now', 'now')"
        )
        for person in (ada, bob):
            conn.execute(
                "INSERT INTO deliveries (issue_day, subscriber_id, state, message_id, email, updated_at)"
                " VALUES ('2026-11-26', ?, 'sent', ?, ?, 'now')",
                (person.id, f"<{person.id}@example.org>", person.email),
            )
    erased = subscribers.remove(conn, "ADA@example.com")
    assert erased == ada
    with pytest.raises(SubscriberError):
        subscribers.get(conn, "ada@example.com")
    left = conn.execute("SELECT email FROM deliveries").fetchall()
    assert [r["email"] for r in left] == ["bob@example.com"]
    assert conn.execute("SELECT count(*) FROM subscribers WHERE email_key LIKE 'ada%'").fetchone()[0] == 0


def test_a_database_failure_is_a_subscriber_error_and_changes_nothing(conn):
    subscribers.add(conn, "ada@example.com")
    conn.execute(
        "CREATE TRIGGER refuse BEFORE UPDATE ON subscribers BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
    )
    with pytest.raises(SubscriberError, match="^ada@example.com: the database refused the change.*disk says no"):
        subscribers.unsubscribe(conn, "ada@example.com")
    assert subscribers.get(conn, "ada@example.com").status == "active"


# ----------------------------------------------------------------------------- reading the list


def test_count_by_status_counts_every_status(conn):
    for i in range(5):
        subscribers.add(conn, f"p{i}@example.com")
    subscribers.unsubscribe(conn, "p1@example.com")
    subscribers.set_status(conn, subscribers.get(conn, "p2@example.com").id, "bounced")
    assert subscribers.count_by_status(conn) == {"active": 3, "unsubscribed": 1, "bounced": 1, "pending": 0}


def test_iter_subscribers_streams_in_keyset_batches(conn):
    for i in range(25):
        subscribers.add(conn, f"p{i:02}@example.com")
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    seen = list(subscribers.iter_subscribers(conn, batch_size=10))
    conn.set_trace_callback(None)
    assert [s.email for s in seen] == [f"p{i:02}@example.com" for i in range(25)]
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 3  # 10 + 10 + 5: one query per batch, never the whole list
    assert all("OFFSET" not in s.upper() and "id >" in s for s in selects)


def test_iter_subscribers_filters_by_status_and_search(conn):
    subscribers.add(conn, "ada@example.com", name="Ada Lovelace")
    subscribers.add(conn, "grace@example.org", name="Grace Hopper")
    subscribers.add(conn, "under_score@example.com", name="100% Real")
    subscribers.unsubscribe(conn, "grace@example.org")
    assert [s.email for s in subscribers.iter_subscribers(conn, status="active")] == [
        "ada@example.com", "under_score@example.com"]
    assert [s.email for s in subscribers.iter_subscribers(conn, search="HOPPER")] == ["grace@example.org"]
    assert [s.email for s in subscribers.iter_subscribers(conn, search="EXAMPLE.ORG")] == ["grace@example.org"]
    assert [s.email for s in subscribers.iter_subscribers(conn, search="_")] == ["under_score@example.com"]
    assert [s.email for s in subscribers.iter_subscribers(conn, search="%")] == ["under_score@example.com"]
    with pytest.raises(SubscriberError, match="^status: 'gone'"):
        list(subscribers.iter_subscribers(conn, status="gone"))


# ----------------------------------------------------------------------------- import formats


@pytest.mark.parametrize(
    "fixture, source, expected",
    [
        ("mailchimp_subscribed.csv", "Mailchimp", [
            ("ada.lovelace@example.com", "Ada Lovelace", "active"),
            ("Grace.Hopper@example.com", "Grace Hopper", "active"),
            ("alan@example.com", "", "active"),
        ]),
        ("mailchimp_unsubscribed.csv", "Mailchimp", [
            ("ada.lovelace@example.com", "Ada Lovelace", "unsubscribed"),
            ("edsger@example.com", "Edsger Dijkstra", "unsubscribed"),
        ]),
        ("substack.csv", "Substack", [
            ("barbara@example.com", "", "active"),
            ("donald@example.com", "", "active"),
            ("margaret@example.com", "", "unsubscribed"),
        ]),
        ("ghost.csv", "Ghost", [
            ("frances@example.com", "Frances Allen", "active"),
            ("john@example.com", "John Backus", "unsubscribed"),
            ("katherine@example.com", "Katherine Johnson", "active"),
        ]),
        ("listmonk.csv", "listmonk", [
            ("radia@example.com", "Radia Perlman", "active"),
            ("dennis@example.com", "Dennis Ritchie", "unsubscribed"),
            ("ken@example.com", "Ken Thompson", "unsubscribed"),
        ]),
        ("plain.csv", "plain", [("linus@example.com", "Linus", "active"), ("tim@example.com", "", "active")]),
        ("bom_crlf.csv", "plain", [
            ("bom.first@example.com", "Bom First", "active"),
            ("bom.second@example.com", "Bom Second", "active"),
        ]),
    ],
)
def test_import_reads_each_tools_export(conn, fixture, source, expected):
    report = subscribers.import_file(conn, FIXTURES / fixture)
    assert report.source_format == source
    assert report.added == len(expected) and report.rows == len(expected)
    assert people(conn) == expected


def test_import_keeps_created_times_from_the_file(conn):
    subscribers.import_file(conn, FIXTURES / "ghost.csv")
    assert subscribers.get(conn, "frances@example.com").created_at == "2024-01-05T08:00:00+00:00"


def test_import_maps_a_status_column(conn, tmp_path):
    path = write(tmp_path, """
        email,status
        a@example.com,subscribed
        b@example.com,Cleaned
        c@example.com,not_subscribed
        d@example.com,BOUNCED
        e@example.com,
        """)
    subscribers.import_file(conn, path)
    assert [p[2] for p in people(conn)] == ["active", "bounced", "unsubscribed", "bounced", "active"]


def test_import_refuses_a_status_it_does_not_know(conn, tmp_path):
    path = write(tmp_path, "email,status\na@example.com,paused\n")
    with pytest.raises(ImportFileError, match="line 2: status: 'paused' is not a status the importer knows"):
        subscribers.import_file(conn, path)


def test_import_reads_semicolon_separated_files(conn, tmp_path):
    path = write(tmp_path, "E-Mail;Name\nada@example.com;Lovelace, Ada\n")
    subscribers.import_file(conn, path)
    assert people(conn) == [("ada@example.com", "Lovelace, Ada", "active")]


def test_import_counts_lines_across_quoted_newlines(conn, tmp_path):
    path = write(tmp_path, """
        email,name,note
        one@example.com,One,"a note
        over three
        lines, with commas"
        broken-address,Two,
        """)
    with pytest.raises(ImportFileError) as caught:
        subscribers.import_file(conn, path)
    assert "\n  line 5: broken-address: not a valid email address" in str(caught.value)


def test_import_reports_every_bad_row_with_its_line(conn):
    with pytest.raises(ImportFileError) as caught:
        subscribers.import_file(conn, FIXTURES / "bad_rows.csv")
    message = str(caught.value)
    assert message.startswith(
        f"{FIXTURES / 'bad_rows.csv'}: 5 rows are invalid, so nothing was imported "
        "(fix them, or pass --skip-invalid to import the rest):\n"
    )
    lines = [line.split(":")[0].strip() for line in message.splitlines()[1:]]
    assert lines == ["line 3", "line 4", "line 5", "line 7", "line 8"]
    assert "line 3: " + "a" * 65 + "@example.com: not a valid email address: The email address is too long" in message
    assert "line 5: name: 'Eve\\nInjected' contains the control character U+000A" in message
    assert "line 7: name: '=?utf-8?q?Bcc=3A_x?=' looks like an RFC 2047 encoded word" in message
    assert "line 8: email: the address is empty" in message
    assert snapshot(conn) == []


def test_import_skip_invalid_imports_the_rest_and_reports_lines(conn):
    report = subscribers.import_file(conn, FIXTURES / "bad_rows.csv", skip_invalid=True)
    assert people(conn) == [("good@example.com", "Good", "active"), ("after@example.com", "After", "active")]
    assert [p.line for p in report.invalid] == [3, 4, 5, 7, 8]
    assert report.added == 2


def test_import_error_lists_the_first_lines_and_the_total(conn, tmp_path):
    rows = "".join(f"bad{i}\n" for i in range(15))
    path = write(tmp_path, "email\n" + rows)
    with pytest.raises(ImportFileError) as caught:
        subscribers.import_file(conn, path)
    message = str(caught.value)
    assert ": 15 rows are invalid, so nothing was imported" in message
    assert "line 11: bad9" in message and "line 12:" not in message
    assert message.endswith("\n  … and 5 more")


def test_import_rejects_ragged_rows_with_their_lines(conn):
    with pytest.raises(ImportFileError) as caught:
        subscribers.import_file(conn, FIXTURES / "ragged.csv")
    assert str(caught.value).endswith(
        "\n  line 3: has 3 cells, the header has 2\n  line 4: has 1 cell, the header has 2"
    )
    report = subscribers.import_file(conn, FIXTURES / "ragged.csv", skip_invalid=True)
    assert report.added == 2 and [p.line for p in report.invalid] == [3, 4]


def test_import_names_the_line_of_bytes_not_in_the_encoding(conn):
    with pytest.raises(ImportFileError) as caught:
        subscribers.import_file(conn, FIXTURES / "cp1252.csv")
    assert str(caught.value) == (
        f"{FIXTURES / 'cp1252.csv'}:2: not valid utf-8 (bytes e9: invalid continuation byte); "
        "if the file uses another encoding, pass it with --encoding (for example cp1252)"
    )
    assert snapshot(conn) == []
    subscribers.import_file(conn, FIXTURES / "cp1252.csv", encoding="cp1252")
    assert people(conn) == [
        ("rene@example.com", "René Descartes", "active"),
        ("zoe@example.com", "Zoë \u201cZ\u201d Smith", "active"),
    ]


def test_import_finds_a_bad_byte_far_into_a_large_file(conn, tmp_path):
    path = tmp_path / "big.csv"
    body = b"".join(b"p%d@example.com,Person %d\r\n" % (i, i) for i in range(20_000))
    path.write_bytes(b"email,name\r\n" + body + b"late@example.com,Caf\xe9\r\n")
    with pytest.raises(ImportFileError, match=r"big.csv:20002: not valid utf-8"):
        subscribers.import_file(conn, path)


def test_import_rejects_an_unknown_encoding(conn):
    with pytest.raises(ImportFileError, match="^--encoding 'klingon': unknown encoding$"):
        subscribers.import_file(conn, FIXTURES / "plain.csv", encoding="klingon")


def test_import_names_the_columns_of_a_header_without_email(conn):
    with pytest.raises(ImportFileError) as caught:
        subscribers.import_file(conn, FIXTURES / "wrong_header.csv")
    assert str(caught.value) == (
        f"{FIXTURES / 'wrong_header.csv'}:1: the header has no email column (found: 'address', 'full name'); "
        "expected a column named email or Email Address"
    )


def test_import_of_an_empty_or_missing_file_is_an_error(conn, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(ImportFileError, match="empty.csv:1: the file is empty"):
        subscribers.import_file(conn, empty)
    with pytest.raises(ImportFileError, match="missing.csv: cannot read the file: No such file"):
        subscribers.import_file(conn, tmp_path / "missing.csv")


def test_import_strips_the_formula_guard_from_names(conn):
    subscribers.import_file(conn, FIXTURES / "formula.csv")
    assert [p[1] for p in people(conn)] == [
        '=HYPERLINK("http://example.com/x")', "+cmd|' /C calc'!A0", "@SUM(A1:A2)", "-dash"]


# ----------------------------------------------------------------------------- import rules


def test_import_merges_case_only_duplicates_and_reports_them(conn):
    report = subscribers.import_file(conn, FIXTURES / "case_duplicates.csv")
    assert people(conn) == [("Mixed.Case@example.com", "Mixed", "active"), ("other@example.com", "Other", "active")]
    assert [str(m) for m in report.merged] == [
        "line 3: mixed.case@example.com merged with line 2",
        "line 4: MIXED.CASE@example.com merged with line 2",
    ]
    assert report.added == 2


def test_import_merges_case_only_duplicates_of_list_entries(conn, tmp_path):
    subscribers.add(conn, "Ada@example.com", name="Ada")
    report = subscribers.import_file(conn, write(tmp_path, "email,name\nada@EXAMPLE.com,Ada\n"))
    assert [str(m) for m in report.merged] == ["line 2: ada@example.com merged with the list entry Ada@example.com"]
    assert (report.added, report.unchanged) == (0, 1)
    assert people(conn) == [("Ada@example.com", "Ada", "active")]


def test_import_keeps_unsubscribed_status(conn):
    subscribers.add(conn, "ada.lovelace@example.com")
    subscribers.unsubscribe(conn, "ada.lovelace@example.com")
    subscribers.add(conn, "alan@example.com")
    subscribers.set_status(conn, subscribers.get(conn, "alan@example.com").id, "bounced")
    report = subscribers.import_file(conn, FIXTURES / "mailchimp_subscribed.csv")
    assert (report.added, report.kept_unsubscribed) == (1, 2)
    assert subscribers.get(conn, "ada.lovelace@example.com").status == "unsubscribed"
    assert subscribers.get(conn, "alan@example.com").status == "bounced"
    # the name still arrives: only the status is kept
    assert subscribers.get(conn, "ada.lovelace@example.com").name == "Ada Lovelace"

    again = subscribers.import_file(conn, FIXTURES / "mailchimp_subscribed.csv", resubscribe=True)
    assert (again.updated, again.unchanged, again.kept_unsubscribed) == (2, 1, 0)
    assert subscribers.get(conn, "ada.lovelace@example.com").status == "active"
    assert subscribers.get(conn, "alan@example.com").status == "active"


def test_resubscribe_does_not_override_an_unsubscribe_in_the_file(conn):
    report = subscribers.import_file(conn, FIXTURES / "mailchimp_unsubscribed.csv", resubscribe=True)
    assert report.added == 2
    assert {p[2] for p in people(conn)} == {"unsubscribed"}


def test_an_unsubscribe_in_the_file_wins_over_an_active_entry(conn):
    subscribers.import_file(conn, FIXTURES / "mailchimp_subscribed.csv")
    report = subscribers.import_file(conn, FIXTURES / "mailchimp_unsubscribed.csv")
    assert (report.added, report.updated) == (1, 1)
    assert subscribers.get(conn, "ada.lovelace@example.com").status == "unsubscribed"
    assert subscribers.get(conn, "edsger@example.com").status == "unsubscribed"
    assert subscribers.get(conn, "grace.hopper@example.com").status == "active"


def test_import_fills_and_changes_names_but_never_blanks_them(conn):
    subscribers.add(conn, "linus@example.com")
    subscribers.add(conn, "tim@example.com", name="Tim B-L")
    report = subscribers.import_file(conn, FIXTURES / "plain.csv")
    assert (report.updated, report.unchanged) == (1, 1)
    assert people(conn) == [("linus@example.com", "Linus", "active"), ("tim@example.com", "Tim B-L", "active")]


def test_failed_import_changes_nothing(conn, tmp_path):
    subscribers.add(conn, "linus@example.com", name="Old Name")
    subscribers.add(conn, "keep@example.com")
    before = snapshot(conn)
    with pytest.raises(ImportFileError):
        subscribers.import_file(conn, write(tmp_path, "email,name\nlinus@example.com,Linus\nnew@example.com,New\nbad,Bad\n"))
    assert snapshot(conn) == before
    # a failure while writing (the updates come after the inserts) rolls the inserts back too
    conn.execute("CREATE TRIGGER refuse BEFORE UPDATE ON subscribers BEGIN SELECT RAISE(ABORT, 'no updates'); END")
    with pytest.raises(SubscriberError, match="the database refused the change, so nothing changed"):
        subscribers.import_file(conn, write(tmp_path, "email,name\nnew@example.com,New\nlinus@example.com,Linus\n"))
    assert snapshot(conn) == before


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.glob("*.csv") if p.name not in (
    "bad_rows.csv", "ragged.csv", "cp1252.csv", "wrong_header.csv")))
def test_reimport_changes_nothing(conn, fixture):
    first = subscribers.import_file(conn, FIXTURES / fixture)
    before = snapshot(conn)
    again = subscribers.import_file(conn, FIXTURES / fixture)
    assert snapshot(conn) == before
    assert (again.added, again.updated, again.kept_unsubscribed) == (0, 0, 0)
    assert again.unchanged == first.added


def test_dry_run_reports_the_same_and_changes_nothing(conn):
    subscribers.import_file(conn, FIXTURES / "mailchimp_subscribed.csv")
    before = snapshot(conn)
    dry = subscribers.import_file(conn, FIXTURES / "mailchimp_unsubscribed.csv", dry_run=True)
    assert dry.dry_run and snapshot(conn) == before
    real = subscribers.import_file(conn, FIXTURES / "mailchimp_unsubscribed.csv")
    assert (dry.added, dry.updated, dry.unchanged, dry.kept_unsubscribed) == (
        real.added, real.updated, real.unchanged, real.kept_unsubscribed) == (1, 1, 0, 0)


# ----------------------------------------------------------------------------- export


def test_export_csv_guards_cells_against_formulas(conn):
    for email, name in [("-dash@example.com", "=1+1"), ("plus@example.com", "+SUM(A1)"),
                        ("at@example.com", "@cmd"), ("quote@example.com", "'=already"), ("ok@example.com", "O'Brien")]:
        subscribers.add(conn, email, name=name)
    out = io.StringIO()
    assert subscribers.export(conn, out) == 5
    rows = out.getvalue().splitlines()
    assert rows[0] == "email,name,status,created_at,updated_at"
    assert [r.split(",")[:2] for r in rows[1:]] == [
        ["'-dash@example.com", "'=1+1"], ["plus@example.com", "'+SUM(A1)"], ["at@example.com", "'@cmd"],
        ["quote@example.com", "''=already"], ["ok@example.com", "O'Brien"]]


def test_export_json_is_an_array_of_objects(conn):
    subscribers.add(conn, "ada@example.com", name='Ada "Countess" L\u00f8velace')
    subscribers.add(conn, "bob@example.com")
    subscribers.unsubscribe(conn, "bob@example.com")
    out = io.StringIO()
    subscribers.export(conn, out, format="json")
    data = json.loads(out.getvalue())
    assert [(d["email"], d["name"], d["status"]) for d in data] == [
        ("ada@example.com", 'Ada "Countess" L\u00f8velace', "active"), ("bob@example.com", "", "unsubscribed")]
    assert set(data[0]) == {"email", "name", "status", "created_at", "updated_at"}
    only = io.StringIO()
    subscribers.export(conn, only, format="json", status="bounced")
    assert json.loads(only.getvalue()) == []


def test_export_to_a_file_replaces_it_whole(conn, tmp_path):
    subscribers.add(conn, "ada@example.com")
    target = tmp_path / "list.csv"
    target.write_text("old contents\n", encoding="utf-8")
    with pytest.raises(SubscriberError):
        subscribers.export_to_path(conn, target, status="nonsense")
    assert target.read_text(encoding="utf-8") == "old contents\n"
    assert subscribers.export_to_path(conn, target) == 1
    assert target.read_text(encoding="utf-8").splitlines()[1].startswith("ada@example.com,,active,")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list.csv", "subscribers"]


formula_names = st.sampled_from(["=1+1", "+x", "-y", "@z", "'", "''", "'=q", "a, b", 'say "hi"', "x;y", "  pad  "])
free_names = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=25).filter(
    lambda n: "=?" not in n or "?=" not in n)
prefixes = st.sampled_from(["", "-", "+", "=", "'", "o'", "a.b"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(prefixes, formula_names | free_names, st.sampled_from(subscribers.STATUSES)),
                max_size=8))
def test_export_then_import_round_trips(entries):
    with tempfile.TemporaryDirectory() as folder:
        source = store.connect(Path(folder) / "a.db")
        for i, (prefix, name, status) in enumerate(entries):
            person = subscribers.add(source, f"{prefix}{i}@example.com", name=name).subscriber
            subscribers.set_status(source, person.id, status)
        exported = Path(folder) / "export.csv"
        subscribers.export_to_path(source, exported)
        target = store.connect(Path(folder) / "b.db")
        report = subscribers.import_file(target, exported)
        assert report.added == len(entries) and not report.invalid
        assert snapshot(target) == snapshot(source)
        source.close()
        target.close()


@settings(max_examples=150, deadline=None)
@given(st.emails() | st.text(max_size=40))
def test_addresses_are_accepted_whole_or_refused_with_a_reason(address):
    try:
        normalized, key = subscribers.normalize_email(address)
    except SubscriberError as err:
        assert str(err)
        return
    assert key == normalized.casefold()
    assert normalized.isprintable() and " " not in normalized
    assert subscribers.normalize_email(normalized) == (normalized, key)
    if normalized.isascii():
        assert subscribers.normalize_email(normalized.swapcase())[1] == key


# ----------------------------------------------------------------------------- the store as a state machine

LOCALS = ["ann", "Bob.Smith", "c+tag", "cbtag"]


class SubscriberListMachine(RuleBasedStateMachine):
    """Drive the real list and a dict side by side; after every step they must agree."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.TemporaryDirectory()
        self.conn = store.connect(Path(self.folder.name) / "list.db")
        self.model: dict[str, dict[str, str]] = {}  # key → {email, name, status}

    def teardown(self) -> None:
        self.conn.close()
        self.folder.cleanup()

    addresses = st.tuples(st.sampled_from(LOCALS), st.lists(st.booleans(), min_size=16, max_size=16)).map(
        lambda t: "".join(c.upper() if up else c.lower() for c, up in zip(t[0] + "@example.com", t[1] + [False] * 20))
    )
    names = st.sampled_from(["", "Ann", "Zoë", "B. Smith"])

    @staticmethod
    def key(address: str) -> str:
        return address.casefold()

    @staticmethod
    def normalized(address: str) -> str:
        local, domain = address.rsplit("@", 1)
        return f"{local}@{domain.lower()}"

    @rule(address=addresses, name=names, resubscribe=st.booleans())
    def add(self, address: str, name: str, resubscribe: bool) -> None:
        entry = self.model.get(self.key(address))
        if entry is not None and entry["status"] != "active" and not resubscribe:
            with pytest.raises(SubscriberError, match="--resubscribe"):
                subscribers.add(self.conn, address, name=name)
            return
        result = subscribers.add(self.conn, address, name=name, resubscribe=resubscribe)
        if entry is None:
            assert result.outcome == "added"
            self.model[self.key(address)] = {"email": self.normalized(address), "name": name, "status": "active"}
        elif entry["status"] == "active":
            assert result.outcome == "unchanged"
        else:
            assert result.outcome == "resubscribed"
            entry["status"], entry["name"] = "active", name or entry["name"]

    @rule(address=addresses)
    def unsubscribe(self, address: str) -> None:
        entry = self.model.get(self.key(address))
        if entry is None:
            with pytest.raises(SubscriberError, match="is not on the list"):
                subscribers.unsubscribe(self.conn, address)
            return
        change = subscribers.unsubscribe(self.conn, address)
        assert change.changed == (entry["status"] == "active")
        if entry["status"] == "active":
            entry["status"] = "unsubscribed"

    @rule(address=addresses)
    def resubscribe(self, address: str) -> None:
        entry = self.model.get(self.key(address))
        if entry is None:
            with pytest.raises(SubscriberError, match="is not on the list"):
                subscribers.resubscribe(self.conn, address)
            return
        assert subscribers.resubscribe(self.conn, address).changed == (entry["status"] != "active")
        entry["status"] = "active"

    @rule(address=addresses)
    def bounce(self, address: str) -> None:
        entry = self.model.get(self.key(address))
        if entry is not None:
            person = subscribers.get(self.conn, address)
            assert subscribers.set_status(self.conn, person.id, "bounced") == (entry["status"] != "bounced")
            entry["status"] = "bounced"

    @rule(address=addresses)
    def remove(self, address: str) -> None:
        if self.model.pop(self.key(address), None) is None:
            with pytest.raises(SubscriberError, match="is not on the list"):
                subscribers.remove(self.conn, address)
        else:
            subscribers.remove(self.conn, address)

    @rule(rows=st.lists(st.tuples(addresses, names), min_size=1, max_size=4), resubscribe=st.booleans())
    def import_rows(self, rows: list[tuple[str, str]], resubscribe: bool) -> None:
        path = Path(self.folder.name) / "rows.csv"
        path.write_text("email,name\n" + "".join(f"{a},{n}\n" for a, n in rows), encoding="utf-8")
        subscribers.import_file(self.conn, path, resubscribe=resubscribe)
        merged: dict[str, tuple[str, str]] = {}
        for address, name in rows:
            first = merged.setdefault(self.key(address), (address, name))
            if not first[1] and name:
                merged[self.key(address)] = (first[0], name)
        for key, (address, name) in merged.items():
            entry = self.model.get(key)
            if entry is None:
                self.model[key] = {"email": self.normalized(address), "name": name, "status": "active"}
                continue
            entry["name"] = name or entry["name"]
            if resubscribe:
                entry["status"] = "active"

    @invariant()
    def list_matches_model(self) -> None:
        expected = dict.fromkeys(subscribers.STATUSES, 0)
        for entry in self.model.values():
            expected[entry["status"]] += 1
        assert subscribers.count_by_status(self.conn) == expected
        for key, entry in self.model.items():
            person = subscribers.get(self.conn, key.upper())
            assert (person.email, person.name, person.status) == (entry["email"], entry["name"], entry["status"])


SubscriberListMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=15, deadline=None)
test_subscriber_list_matches_a_dict_model = SubscriberListMachine.TestCase


# ----------------------------------------------------------------------------- two processes at once

WORKER = """
import sys
from pathlib import Path
from newsletter import store, subscribers

conn = store.connect(Path(sys.argv[1]))
prefix, imports = sys.argv[2], Path(sys.argv[3])
sys.stdin.read()  # the parent closes stdin to start both workers together
for i in range(60):
    subscribers.add(conn, f"{prefix}{i}@example.com", name=f"{prefix} {i}")
    if i % 3 == 0:
        subscribers.unsubscribe(conn, f"{prefix}{i}@example.com")
    if i % 10 == 0:
        subscribers.import_file(conn, imports / f"{prefix}{i}.csv")
    subscribers.unsubscribe(conn, "shared@example.com")
    subscribers.add(conn, "shared@example.com", resubscribe=True)
print("done")
"""


def test_two_processes_change_the_list_at_once_without_losing_updates(tmp_path):
    database = tmp_path / "list.db"
    first = store.connect(database)
    subscribers.add(first, "shared@example.com")
    first.close()
    for prefix in ("a", "b"):
        for i in range(0, 60, 10):
            (tmp_path / f"{prefix}{i}.csv").write_text(
                "email,name\n" + "".join(f"{prefix}imp{i}-{j}@example.com,Imported\n" for j in range(25)),
                encoding="utf-8",
            )
    workers = {
        prefix: subprocess.Popen(
            [sys.executable, "-c", WORKER, str(database), prefix, str(tmp_path)],
            stdin=subprocess.PIPE, stdout=(tmp_path / f"{prefix}.out").open("w"),
            stderr=(tmp_path / f"{prefix}.err").open("w"),
        )
        for prefix in ("a", "b")
    }
    for worker in workers.values():
        worker.stdin.close()
    for prefix, worker in workers.items():
        worker.wait(timeout=120)
        err = (tmp_path / f"{prefix}.err").read_text()
        assert worker.returncode == 0 and (tmp_path / f"{prefix}.out").read_text() == "done\n", err
        assert "locked" not in err
    conn = store.connect(database)
    for prefix in ("a", "b"):
        for i in range(60):
            person = subscribers.get(conn, f"{prefix}{i}@example.com")
            assert person.status == ("unsubscribed" if i % 3 == 0 else "active"), person
    assert subscribers.get(conn, "shared@example.com").status == "active"
    # 2 × 60 added one by one, 2 × 6 files × 25 imported, and the shared address
    assert subscribers.count_by_status(conn) == {"active": 2 * 40 + 2 * 150 + 1, "unsubscribed": 2 * 20, "bounced": 0, "pending": 0}
    conn.close()


# ----------------------------------------------------------------------------- web sign-up: pending


def test_sign_up_records_a_new_address_as_pending_and_leaves_others_alone(conn):
    subscribers.add(conn, "ada@example.com")
    subscribers.add(conn, "bob@example.com")
    subscribers.unsubscribe(conn, "bob@example.com")
    new = subscribers.sign_up(conn, "Carol@Example.com")
    assert new.outcome == "pending" and new.subscriber.status == "pending" and new.subscriber.name == ""
    for address, status in (("ADA@example.com", "active"), ("bob@example.com", "unsubscribed"),
                            ("carol@example.com", "pending")):
        again = subscribers.sign_up(conn, address)
        assert again.outcome == "unchanged" and again.subscriber.status == status
    assert subscribers.count_by_status(conn) == {"active": 1, "unsubscribed": 1, "bounced": 0, "pending": 1}


def test_confirm_id_activates_only_a_pending_subscriber(conn):
    pending = subscribers.sign_up(conn, "carol@example.com").subscriber
    left = subscribers.add(conn, "bob@example.com").subscriber
    subscribers.unsubscribe(conn, "bob@example.com")
    change = subscribers.confirm_id(conn, pending.id)
    assert change.changed and change.before == "pending" and change.subscriber.status == "active"
    assert not subscribers.confirm_id(conn, pending.id).changed
    assert not subscribers.confirm_id(conn, left.id).changed
    assert subscribers.get(conn, "bob@example.com").status == "unsubscribed"
    assert subscribers.confirm_id(conn, 999) is None


def test_unsubscribe_id_stops_active_and_pending_and_keeps_bounced(conn):
    active = subscribers.add(conn, "ada@example.com").subscriber
    pending = subscribers.sign_up(conn, "carol@example.com").subscriber
    bounced = subscribers.add(conn, "dan@example.com").subscriber
    subscribers.set_status(conn, bounced.id, "bounced")
    assert subscribers.unsubscribe_id(conn, active.id).subscriber.status == "unsubscribed"
    assert subscribers.unsubscribe_id(conn, pending.id).subscriber.status == "unsubscribed"
    assert subscribers.unsubscribe_id(conn, bounced.id).subscriber.status == "bounced"
    assert subscribers.unsubscribe_id(conn, 999) is None
    assert subscribers.get_id(conn, active.id).email == "ada@example.com"
    assert subscribers.get_id(conn, 999) is None


def test_adding_or_importing_a_pending_address_confirms_it(conn, tmp_path):
    subscribers.sign_up(conn, "carol@example.com")
    subscribers.sign_up(conn, "erin@example.com")
    assert subscribers.add(conn, "carol@example.com", name="Carol").subscriber.status == "active"
    subscribers.import_file(conn, write(tmp_path, "email\nerin@example.com\n"))
    assert subscribers.get(conn, "erin@example.com").status == "active"


def test_a_pending_export_imports_back_as_pending(conn, tmp_path):
    subscribers.sign_up(conn, "carol@example.com")
    exported = tmp_path / "list.csv"
    subscribers.export_to_path(conn, exported)
    other = store.connect(tmp_path / "other" / "newsletter.db")
    subscribers.import_file(other, exported)
    assert subscribers.get(other, "carol@example.com").status == "pending"


def test_a_version_2_database_gains_the_pending_status_and_keeps_its_ids(tmp_path):
    path = tmp_path / "old.db"
    old = sqlite3.connect(path, isolation_level=None)
    for migration in store.MIGRATIONS[:2]:
        old.executescript(migration)
    old.execute("PRAGMA user_version = 2")
    old.execute("INSERT INTO subscribers (id, email, email_key, name, status, created_at, updated_at)"
                " VALUES (7, 'ada@example.com', 'ada@example.com', 'Ada', 'active', 'x', 'x'),"
                " (42, 'bob@example.com', 'bob@example.com', '', 'unsubscribed', 'x', 'x')")
    with pytest.raises(sqlite3.IntegrityError):
        old.execute("INSERT INTO subscribers (email, email_key, status, created_at, updated_at)"
                    " VALUES ('c@example.com', 'c@example.com', 'pending', 'x', 'x')")
    old.close()
    conn = store.connect(path)
    assert [(p[0], p[1]) for p in conn.execute("SELECT id, email FROM subscribers ORDER BY id")] == [
        (7, "ada@example.com"), (42, "bob@example.com")]
    assert subscribers.sign_up(conn, "c@example.com").subscriber.status == "pending"
    assert conn.execute("SELECT count(*) FROM signup_requests").fetchone()[0] == 0
