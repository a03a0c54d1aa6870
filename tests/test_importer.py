"""Imports: each tool's export recognized, bad rows named by line, unsubscribes never wiped, one transaction."""

from __future__ import annotations

import pytest

from newsletter import importer, subscribers
from newsletter.errors import ImportFileError, SubscriberError

from list_helpers import FIXTURES, people, snapshot, write


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
    report = importer.import_file(conn, FIXTURES / fixture)
    assert report.source_format == source
    assert report.added == len(expected) and report.rows == len(expected)
    assert people(conn) == expected


def test_import_keeps_created_times_from_the_file(conn):
    importer.import_file(conn, FIXTURES / "ghost.csv")
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
    importer.import_file(conn, path)
    assert [p[2] for p in people(conn)] == ["active", "bounced", "unsubscribed", "bounced", "active"]


def test_import_refuses_a_status_it_does_not_know(conn, tmp_path):
    path = write(tmp_path, "email,status\na@example.com,paused\n")
    with pytest.raises(ImportFileError, match="line 2: status: 'paused' is not a status the importer knows"):
        importer.import_file(conn, path)


def test_import_reads_semicolon_separated_files(conn, tmp_path):
    path = write(tmp_path, "E-Mail;Name\nada@example.com;Lovelace, Ada\n")
    importer.import_file(conn, path)
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
        importer.import_file(conn, path)
    assert "\n  line 5: broken-address: not a valid email address" in str(caught.value)


def test_import_reports_every_bad_row_with_its_line(conn):
    with pytest.raises(ImportFileError) as caught:
        importer.import_file(conn, FIXTURES / "bad_rows.csv")
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
    report = importer.import_file(conn, FIXTURES / "bad_rows.csv", skip_invalid=True)
    assert people(conn) == [("good@example.com", "Good", "active"), ("after@example.com", "After", "active")]
    assert [p.line for p in report.invalid] == [3, 4, 5, 7, 8]
    assert report.added == 2


def test_import_error_lists_the_first_lines_and_the_total(conn, tmp_path):
    rows = "".join(f"bad{i}\n" for i in range(15))
    path = write(tmp_path, "email\n" + rows)
    with pytest.raises(ImportFileError) as caught:
        importer.import_file(conn, path)
    message = str(caught.value)
    assert ": 15 rows are invalid, so nothing was imported" in message
    assert "line 11: bad9" in message and "line 12:" not in message
    assert message.endswith("\n  … and 5 more")


def test_import_rejects_ragged_rows_with_their_lines(conn):
    with pytest.raises(ImportFileError) as caught:
        importer.import_file(conn, FIXTURES / "ragged.csv")
    assert str(caught.value).endswith(
        "\n  line 3: has 3 cells, the header has 2\n  line 4: has 1 cell, the header has 2"
    )
    report = importer.import_file(conn, FIXTURES / "ragged.csv", skip_invalid=True)
    assert report.added == 2 and [p.line for p in report.invalid] == [3, 4]


def test_import_names_the_line_of_bytes_not_in_the_encoding(conn):
    with pytest.raises(ImportFileError) as caught:
        importer.import_file(conn, FIXTURES / "cp1252.csv")
    assert str(caught.value) == (
        f"{FIXTURES / 'cp1252.csv'}:2: not valid utf-8 (bytes e9: invalid continuation byte); "
        "if the file uses another encoding, pass it with --encoding (for example cp1252)"
    )
    assert snapshot(conn) == []
    importer.import_file(conn, FIXTURES / "cp1252.csv", encoding="cp1252")
    assert people(conn) == [
        ("rene@example.com", "René Descartes", "active"),
        ("zoe@example.com", "Zoë \u201cZ\u201d Smith", "active"),
    ]


def test_import_finds_a_bad_byte_far_into_a_large_file(conn, tmp_path):
    path = tmp_path / "big.csv"
    body = b"".join(b"p%d@example.com,Person %d\r\n" % (i, i) for i in range(20_000))
    path.write_bytes(b"email,name\r\n" + body + b"late@example.com,Caf\xe9\r\n")
    with pytest.raises(ImportFileError, match=r"big.csv:20002: not valid utf-8"):
        importer.import_file(conn, path)


def test_import_rejects_an_unknown_encoding(conn):
    with pytest.raises(ImportFileError, match="^--encoding 'klingon': unknown encoding$"):
        importer.import_file(conn, FIXTURES / "plain.csv", encoding="klingon")


def test_import_names_the_columns_of_a_header_without_email(conn):
    with pytest.raises(ImportFileError) as caught:
        importer.import_file(conn, FIXTURES / "wrong_header.csv")
    assert str(caught.value) == (
        f"{FIXTURES / 'wrong_header.csv'}:1: the header has no email column (found: 'address', 'full name'); "
        "expected a column named email or Email Address"
    )


def test_import_of_an_empty_or_missing_file_is_an_error(conn, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(ImportFileError, match="empty.csv:1: the file is empty"):
        importer.import_file(conn, empty)
    with pytest.raises(ImportFileError, match="missing.csv: cannot read the file: No such file"):
        importer.import_file(conn, tmp_path / "missing.csv")


def test_import_strips_the_formula_guard_from_names(conn):
    importer.import_file(conn, FIXTURES / "formula.csv")
    assert [p[1] for p in people(conn)] == [
        '=HYPERLINK("http://example.com/x")', "+cmd|' /C calc'!A0", "@SUM(A1:A2)", "-dash"]


# ----------------------------------------------------------------------------- import rules


def test_import_merges_case_only_duplicates_and_reports_them(conn):
    report = importer.import_file(conn, FIXTURES / "case_duplicates.csv")
    assert people(conn) == [("Mixed.Case@example.com", "Mixed", "active"), ("other@example.com", "Other", "active")]
    assert [str(m) for m in report.merged] == [
        "line 3: mixed.case@example.com merged with line 2",
        "line 4: MIXED.CASE@example.com merged with line 2",
    ]
    assert report.added == 2


def test_import_merges_case_only_duplicates_of_list_entries(conn, tmp_path):
    subscribers.add(conn, "Ada@example.com", name="Ada")
    report = importer.import_file(conn, write(tmp_path, "email,name\nada@EXAMPLE.com,Ada\n"))
    assert [str(m) for m in report.merged] == ["line 2: ada@example.com merged with the list entry Ada@example.com"]
    assert (report.added, report.unchanged) == (0, 1)
    assert people(conn) == [("Ada@example.com", "Ada", "active")]


def test_import_keeps_unsubscribed_status(conn):
    subscribers.add(conn, "ada.lovelace@example.com")
    subscribers.unsubscribe(conn, "ada.lovelace@example.com")
    subscribers.add(conn, "alan@example.com")
    subscribers.set_status(conn, subscribers.get(conn, "alan@example.com").id, "bounced")
    report = importer.import_file(conn, FIXTURES / "mailchimp_subscribed.csv")
    assert (report.added, report.kept_unsubscribed) == (1, 2)
    assert subscribers.get(conn, "ada.lovelace@example.com").status == "unsubscribed"
    assert subscribers.get(conn, "alan@example.com").status == "bounced"
    # the name still arrives: only the status is kept
    assert subscribers.get(conn, "ada.lovelace@example.com").name == "Ada Lovelace"

    again = importer.import_file(conn, FIXTURES / "mailchimp_subscribed.csv", resubscribe=True)
    assert (again.updated, again.unchanged, again.kept_unsubscribed) == (2, 1, 0)
    assert subscribers.get(conn, "ada.lovelace@example.com").status == "active"
    assert subscribers.get(conn, "alan@example.com").status == "active"


def test_resubscribe_does_not_override_an_unsubscribe_in_the_file(conn):
    report = importer.import_file(conn, FIXTURES / "mailchimp_unsubscribed.csv", resubscribe=True)
    assert report.added == 2
    assert {p[2] for p in people(conn)} == {"unsubscribed"}


def test_an_unsubscribe_in_the_file_wins_over_an_active_entry(conn):
    importer.import_file(conn, FIXTURES / "mailchimp_subscribed.csv")
    report = importer.import_file(conn, FIXTURES / "mailchimp_unsubscribed.csv")
    assert (report.added, report.updated) == (1, 1)
    assert subscribers.get(conn, "ada.lovelace@example.com").status == "unsubscribed"
    assert subscribers.get(conn, "edsger@example.com").status == "unsubscribed"
    assert subscribers.get(conn, "grace.hopper@example.com").status == "active"


def test_import_fills_and_changes_names_but_never_blanks_them(conn):
    subscribers.add(conn, "linus@example.com")
    subscribers.add(conn, "tim@example.com", name="Tim B-L")
    report = importer.import_file(conn, FIXTURES / "plain.csv")
    assert (report.updated, report.unchanged) == (1, 1)
    assert people(conn) == [("linus@example.com", "Linus", "active"), ("tim@example.com", "Tim B-L", "active")]


@pytest.mark.sqlite_only  # a SQLite trigger makes the failure
def test_failed_import_changes_nothing(conn, tmp_path):
    subscribers.add(conn, "linus@example.com", name="Old Name")
    subscribers.add(conn, "keep@example.com")
    before = snapshot(conn)
    with pytest.raises(ImportFileError):
        importer.import_file(conn, write(tmp_path, "email,name\nlinus@example.com,Linus\nnew@example.com,New\nbad,Bad\n"))
    assert snapshot(conn) == before
    # a failure while writing (the updates come after the inserts) rolls the inserts back too
    conn.execute("CREATE TRIGGER refuse BEFORE UPDATE ON subscribers BEGIN SELECT RAISE(ABORT, 'no updates'); END")
    with pytest.raises(SubscriberError, match="the database refused the change, so nothing changed"):
        importer.import_file(conn, write(tmp_path, "email,name\nnew@example.com,New\nlinus@example.com,Linus\n"))
    assert snapshot(conn) == before


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.glob("*.csv") if p.name not in (
    "bad_rows.csv", "ragged.csv", "cp1252.csv", "wrong_header.csv")))
def test_reimport_changes_nothing(conn, fixture):
    first = importer.import_file(conn, FIXTURES / fixture)
    before = snapshot(conn)
    again = importer.import_file(conn, FIXTURES / fixture)
    assert snapshot(conn) == before
    assert (again.added, again.updated, again.kept_unsubscribed) == (0, 0, 0)
    assert again.unchanged == first.added


def test_dry_run_reports_the_same_and_changes_nothing(conn):
    importer.import_file(conn, FIXTURES / "mailchimp_subscribed.csv")
    before = snapshot(conn)
    dry = importer.import_file(conn, FIXTURES / "mailchimp_unsubscribed.csv", dry_run=True)
    assert dry.dry_run and snapshot(conn) == before
    real = importer.import_file(conn, FIXTURES / "mailchimp_unsubscribed.csv")
    assert (dry.added, dry.updated, dry.unchanged, dry.kept_unsubscribed) == (
        real.added, real.updated, real.unchanged, real.kept_unsubscribed) == (1, 1, 0, 0)
