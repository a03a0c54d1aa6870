"""Sections and frequency in exports and imports: our own CSV and JSON, Ghost newsletters, listmonk
lists, Mailchimp groups and tags; names matched ignoring case, the others reported."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from typer.testing import CliRunner

from newsletter import events, importer, store, subscribers
from newsletter.cli import app
from newsletter.errors import ImportFileError
from newsletter.models import Frequency

from list_helpers import write

SECTIONS = ("Nuclear", "Biological", "Chemical", "Missile Defense", "Terrorism", "Policy")


def chosen(conn, address: str) -> tuple[frozenset[str], Frequency]:
    person = subscribers.get(conn, address)
    return person.sections, person.frequency


def test_ghost_newsletters_become_sections_matched_ignoring_case_and_the_rest_are_reported(conn, tmp_path):
    path = write(tmp_path, """
        id,email,name,note,subscribed_to_emails,complimentary_plan,stripe_customer_id,created_at,deleted_at,labels,tiers,newsletters
        64a1,frances@example.com,Frances Allen,,true,false,,2024-01-05T08:00:00.000Z,,,,"nuclear, CHEMICAL, Podcast"
        64a2,john@example.com,John Backus,,true,false,,2024-01-06T08:00:00.000Z,,vip,,
        64a3,kat@example.com,Katherine Johnson,,true,false,,2024-01-07T08:00:00.000Z,,,,Podcast
    """)
    report = importer.import_file(conn, path, sections=SECTIONS)
    assert report.source_format == "Ghost"
    assert chosen(conn, "frances@example.com") == (frozenset({"Nuclear", "Chemical"}), Frequency.DAILY)
    assert chosen(conn, "john@example.com") == (frozenset(), Frequency.DAILY)  # says nothing: every section
    assert chosen(conn, "kat@example.com") == (frozenset(), Frequency.DAILY)   # none of ours: every section
    assert report.with_sections == 1 and report.unmatched_sections == {"Podcast": 2}


def test_listmonk_lists_as_json_or_names_become_sections(conn, tmp_path):
    path = write(tmp_path, """
        uuid,email,name,attributes,status,created_at,updated_at,lists
        3f2a-1,radia@example.com,Radia Perlman,{},enabled,2024-02-01 10:00:00+00:00,2024-02-01 10:00:00+00:00,"[{""id"": 1, ""name"": ""Missile defense""}, {""id"": 2, ""name"": ""Opinion""}]"
        3f2a-2,ken@example.com,Ken Thompson,{},enabled,2024-02-04 10:00:00+00:00,2024-02-04 10:00:00+00:00,Terrorism;Policy
    """)
    report = importer.import_file(conn, path, sections=SECTIONS)
    assert report.source_format == "listmonk"
    assert chosen(conn, "radia@example.com")[0] == frozenset({"Missile Defense"})
    assert chosen(conn, "ken@example.com")[0] == frozenset({"Terrorism", "Policy"})
    assert report.unmatched_sections == {"Opinion": 1}


def test_mailchimp_groups_and_tags_become_sections_and_merge_fields_stay_out_of_the_report(conn, tmp_path):
    path = write(tmp_path, '''
        Email Address,First Name,Last Name,City,Topics of interest,MEMBER_RATING,LEID,EUID,NOTES,TAGS
        ada@example.com,Ada,Lovelace,Vienna,"Nuclear, Missile Defense",2,1,a,,"""Navy"",Policy"
        grace@example.com,Grace,Hopper,Arlington,"Cooking",3,2,b,,
        alan@example.com,Alan,Turing,Wilmslow,,2,3,c,,
    ''')
    report = importer.import_file(conn, path, sections=SECTIONS)
    assert report.source_format == "Mailchimp"
    assert chosen(conn, "ada@example.com")[0] == frozenset({"Nuclear", "Missile Defense", "Policy"})
    assert chosen(conn, "grace@example.com")[0] == frozenset()
    assert chosen(conn, "alan@example.com")[0] == frozenset()
    # the group column named a section, so its other values are reported; the City column did not
    assert report.unmatched_sections == {"Cooking": 1, "Navy": 1}


def test_a_frequency_other_than_daily_or_weekly_is_an_invalid_row_named_by_its_line(conn, tmp_path):
    path = write(tmp_path, """
        email,name,sections,frequency
        ada@example.com,Ada,Nuclear,Weekly
        bob@example.com,Bob,,monthly
    """)
    with pytest.raises(ImportFileError, match=r"line 3: frequency: 'monthly' is not daily or weekly"):
        importer.import_file(conn, path, sections=SECTIONS)
    assert subscribers.count_by_status(conn)["active"] == 0
    report = importer.import_file(conn, path, sections=SECTIONS, skip_invalid=True)
    assert report.added == 1 and report.weekly == 1
    assert chosen(conn, "ada@example.com") == (frozenset({"Nuclear"}), Frequency.WEEKLY)


def test_an_import_changes_what_an_existing_reader_chose_records_it_and_a_silent_file_keeps_it(conn, tmp_path):
    subscribers.add(conn, "ada@example.com", sections={"Policy"})
    importer.import_file(conn, write(tmp_path, "email,sections,frequency\nada@example.com,nuclear;chemical,weekly\n"),
                         sections=SECTIONS)
    assert chosen(conn, "ada@example.com") == (frozenset({"Nuclear", "Chemical"}), Frequency.WEEKLY)
    person = subscribers.get(conn, "ada@example.com")
    [event] = [e for e in events.history(conn, person.id) if e.kind == events.Kind.PREFERENCES]
    assert event.source == events.IMPORT and event.detail == "sections: Chemical, Nuclear; frequency: weekly"
    assert person.preferences_at == event.at
    again = importer.import_file(conn, write(tmp_path, "email,name\nada@example.com,Ada\n", "names.csv"),
                                 sections=SECTIONS)
    assert again.updated == 1  # the name, and nothing else
    assert chosen(conn, "ada@example.com") == (frozenset({"Nuclear", "Chemical"}), Frequency.WEEKLY)


def test_a_dry_run_reports_the_sections_and_changes_nothing(conn, tmp_path):
    subscribers.add(conn, "ada@example.com")
    path = write(tmp_path, "email,sections\nada@example.com,Nuclear;Astrology\nbob@example.com,Policy\n")
    report = importer.import_file(conn, path, sections=SECTIONS, dry_run=True)
    assert (report.added, report.updated, report.with_sections) == (1, 1, 2)
    assert report.unmatched_sections == {"Astrology": 1}
    assert chosen(conn, "ada@example.com") == (frozenset(), Frequency.DAILY)
    assert subscribers.count_by_status(conn)["active"] == 1


def test_an_export_made_before_sections_is_still_our_own_format(conn, tmp_path):
    path = write(tmp_path, "email,name,status,created_at,updated_at\nada@example.com,Ada,active,,\n")
    assert importer.import_file(conn, path, sections=SECTIONS).source_format == "newsletter export"


def test_the_cli_import_says_which_names_are_no_section(runner: CliRunner, project: Path, tmp_path):
    path = write(tmp_path, "email,sections,frequency\nada@example.com,news;Sport,weekly\nbob@example.com,Sport,\n")
    result = runner.invoke(app, ["--project", str(project), "subscribers", "import", str(path)])
    assert result.exit_code == 0, result.output
    assert "  with chosen sections: 1\n  weekly digest: 1\n" in result.stdout
    assert ("  not a section of this newsletter, left out: 1 (the sections are: News, Analysis)\n"
            "    Sport (2 rows)\n") in result.stdout


def test_the_json_export_carries_sections_and_frequency(conn):
    subscribers.add(conn, "ada@example.com", sections={"Policy", "Nuclear"}, frequency=Frequency.WEEKLY)
    out = io.StringIO()
    subscribers.export(conn, out, format="json")
    [record] = json.loads(out.getvalue())
    assert (record["sections"], record["frequency"]) == (["Nuclear", "Policy"], "weekly")


# ----------------------------------------------------------------------------- the round trip

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp"), exclude_characters=";,\""),
                min_size=1, max_size=12).map(str.strip).filter(bool)
section_lists = st.lists(names, min_size=1, max_size=6, unique_by=str.casefold)
readers = st.lists(st.tuples(st.integers(0, 2**6 - 1), st.sampled_from(list(Frequency))), min_size=1, max_size=8)


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sections=section_lists, wanted=readers)
def test_export_then_import_round_trips_sections_and_frequency(sections, wanted):
    with tempfile.TemporaryDirectory() as folder:
        first = store.connect(Path(folder) / "one.db")
        for n, (mask, frequency) in enumerate(wanted):
            picked = {name for i, name in enumerate(sections) if mask >> i & 1}
            subscribers.add(first, f"reader{n}@example.org", sections=picked, frequency=frequency)
        exported = Path(folder) / "list.csv"
        subscribers.export_to_path(first, exported)
        second = store.connect(Path(folder) / "two.db")
        report = importer.import_file(second, exported, sections=sections)
        assert report.unmatched_sections == {} and report.added == len(wanted)
        expected = [(s.email, s.sections, s.frequency) for s in subscribers.iter_subscribers(first)]
        assert [(s.email, s.sections, s.frequency) for s in subscribers.iter_subscribers(second)] == expected
        first.close()
        second.close()
