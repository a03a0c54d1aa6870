"""The weekly digest, as a user meets it: the sample project sent day by day with the real CLI, readers
made weekly (or switched mid-week) in the real database, the digest sent with `newsletter send
--digest` into real outbox files, and each reader's .eml read back.

Week 2026-W48 is Monday November 23 to Sunday November 29; the sample has issues on the 23rd to 26th.
"""

from __future__ import annotations

import csv
import email
import email.policy
import re
import shutil
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from newsletter import digest, reputation, schedule, signing, store, subscribers
from newsletter.cli import app
from newsletter.models import Frequency
from newsletter.rules import GMAIL_CLIP_BYTES
from newsletter.settings import load_settings, secret_key
from newsletter.structure import ArticleEntry, SectionEntry
from newsletter.weeks import IsoWeek

from conftest import REPO

WEEK = "2026-W48"
DAYS = ("2026-11-23", "2026-11-24", "2026-11-25", "2026-11-26")
LATER = "2099-01-01T00:00:00+00:00"  # a preferences change after every issue of the test has started


@pytest.fixture
def sample(sample_project: Path, runner: CliRunner) -> Path:
    result = runner.invoke(app, ["--project", str(sample_project), "subscribers", "import",
                                 str(sample_project / "subscribers" / "sample.csv")])
    assert result.exit_code == 0, result.output
    return sample_project


def cli(project: Path, *args: str) -> str:
    result = CliRunner().invoke(app, ["--project", str(project), *args])
    assert result.exit_code == 0, result.output
    return result.output


def choose(project: Path, address: str, *, frequency: Frequency | None = None, sections=(), at: str = "") -> None:
    """Set a reader's FREQUENCY and SECTIONS (default: every section, whatever the sample list says)."""
    conn = store.connect(project / "subscribers" / "newsletter.db")
    try:
        reader = subscribers.get(conn, address)
        subscribers.set_preferences(conn, reader.id, frequency=frequency, sections=sections, source="test", at=at)
    finally:
        conn.close()


def addresses(project: Path, limit: int = 6) -> list[str]:
    conn = store.connect(project / "subscribers" / "newsletter.db")
    try:
        return [row[0] for row in conn.execute(
            "SELECT email FROM subscribers WHERE status = 'active' ORDER BY id LIMIT ?", (limit,))]
    finally:
        conn.close()


def digests(project: Path) -> dict[str, email.message.EmailMessage]:
    """Every digest of WEEK in the outbox, by recipient (and each one's variant folder in `variants`)."""
    found: dict[str, email.message.EmailMessage] = {}
    for path in sorted((project / "outbox").glob(f"{WEEK}.*/mail/new/*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        address = message["To"].addresses[0].addr_spec
        assert address not in found, f"{address} got two digests of {WEEK}"
        found[address] = message
        variants[address] = path.parent.parent.parent.name
    return found


variants: dict[str, str] = {}  # recipient -> the variant folder of the digests() last read


def dailies(project: Path, day: str) -> set[str]:
    return {email.message_from_bytes(p.read_bytes(), policy=email.policy.default)["To"].addresses[0].addr_spec
            for p in (project / "outbox" / day / "mail" / "new").glob("*.eml")}


def text_of(message: email.message.EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()


def html_of(message: email.message.EmailMessage) -> str:
    return message.get_body(("html",)).get_content()


def headlines(project: Path, day: str) -> dict[str, str]:
    """The day's headlines by section, from the frozen structure (what the archive reads)."""
    conn = store.connect(project / "subscribers" / "newsletter.db")
    try:
        week = digest.week_issues(conn, IsoWeek.parse(WEEK))
    finally:
        conn.close()
    issue = next(i for i in week if i.day.isoformat() == day)
    return {a.headline: a.section for a in issue.content.articles}


def archive_link(day: str) -> str:
    return f"https://ssb.newsletter.example.org/archive/{day.replace('-', '/')}/"


def test_a_weekly_reader_gets_no_daily_and_one_digest_with_every_headline_of_the_week(sample):
    weekly, daily = addresses(sample, 2)
    choose(sample, weekly, frequency=Frequency.WEEKLY)
    for day in DAYS:
        cli(sample, "send", "--date", day)

    out = cli(sample, "send", "--digest", "--week", WEEK)

    assert all(weekly not in dailies(sample, day) and daily in dailies(sample, day) for day in DAYS)
    got = digests(sample)
    assert set(got) == {weekly}, out
    message = got[weekly]
    assert message["Subject"] == "SSB weekly, Nov 23 – 29, 2026"  # the sample's [digest] subject (spaces made plain)
    assert message["List-Unsubscribe"] and message["Message-ID"].startswith("<2026W48v1.")
    text, html = text_of(message), html_of(message)
    for day in DAYS:
        assert archive_link(day) in html
        for headline in headlines(sample, day):
            assert " ".join(headline.split()) in " ".join(text.split())
    assert "Note to our readers" in text  # the editors' note of the 24th, in short
    assert len(html.encode()) < GMAIL_CLIP_BYTES
    assert f"outbox/{WEEK}.1/mail/new/" in out


def test_readers_get_only_their_sections_and_share_one_render_per_set_of_sections(sample):
    first, second, everything = addresses(sample, 3)
    for reader in (first, second):
        choose(sample, reader, frequency=Frequency.WEEKLY, sections=["Nuclear", "Chemical"])
    choose(sample, everything, frequency=Frequency.WEEKLY)
    for day in DAYS:
        cli(sample, "send", "--date", day)

    cli(sample, "send", "--digest", "--week", WEEK)

    folders = sorted(p.name for p in (sample / "outbox").glob(f"{WEEK}.*"))
    assert folders == [f"{WEEK}.1", f"{WEEK}.2"]  # two distinct sets of sections, two renders
    got = digests(sample)
    assert set(got) == {first, second, everything}
    assert variants[first] == variants[second] != variants[everything]
    chosen = " ".join(text_of(got[first]).split())
    full = " ".join(text_of(got[everything]).split())
    for day in DAYS:
        for headline, section in headlines(sample, day).items():
            headline = " ".join(headline.split())
            assert (headline in chosen) == (section in ("Nuclear", "Chemical")), (day, headline, section)
            assert headline in full


def test_a_reader_who_switches_mid_week_gets_every_issue_once_as_a_daily_or_in_the_digest(sample):
    to_weekly, to_daily, daily = addresses(sample, 3)
    choose(sample, to_daily, frequency=Frequency.WEEKLY)
    for day in DAYS[:2]:
        cli(sample, "send", "--date", day)
    choose(sample, to_weekly, frequency=Frequency.WEEKLY)
    choose(sample, to_daily, frequency=Frequency.DAILY)
    for day in DAYS[2:]:
        cli(sample, "send", "--date", day)

    cli(sample, "send", "--digest", "--week", WEEK)

    got = digests(sample)
    assert set(got) == {to_weekly, to_daily}  # the daily reader was sent everything as dailies
    for reader in (to_weekly, to_daily):
        html = html_of(got[reader])
        for day in DAYS:
            as_daily = reader in dailies(sample, day)
            in_digest = archive_link(day) in html
            assert as_daily != in_digest, (reader, day, as_daily, in_digest)
    assert all(to_weekly in dailies(sample, day) for day in DAYS[:2])
    assert all(to_daily in dailies(sample, day) for day in DAYS[2:])


def test_a_week_is_sent_once_a_week_not_over_is_refused_and_status_shows_the_variants(sample, runner):
    reader = addresses(sample, 1)[0]
    choose(sample, reader, frequency=Frequency.WEEKLY)
    for day in DAYS:
        cli(sample, "send", "--date", day)
    cli(sample, "send", "--digest", "--week", WEEK)

    again = cli(sample, "send", "--digest", "--week", WEEK)
    checked = cli(sample, "check", "--digest", "--week", WEEK)
    not_over = runner.invoke(app, ["--project", str(sample), "send", "--digest", "--week", "2099-W02"])
    bad = runner.invoke(app, ["--project", str(sample), "send", "--digest", "--week", "2026-W54"])
    status = cli(sample, "status", "--digest", "--week", WEEK)
    archive = cli(sample, "archive")
    conn = store.connect(sample / "subscribers" / "newsletter.db")
    window = reputation.complaint_rate(conn, datetime.now(ZoneInfo("UTC")).date())
    daily_rows = conn.execute("SELECT count(*) FROM deliveries WHERE state = 'sent' AND issue_day BETWEEN ? AND ?",
                              (window.first.isoformat(), window.last.isoformat())).fetchone()[0]
    conn.close()

    assert f"{WEEK}.1: already sent to 1; nothing to do" in again
    assert f"Issue of {WEEK}.1" in checked and "no problems found" in checked  # the frozen variant
    assert len(digests(sample)) == 1
    assert not_over.exit_code == 1
    assert "Error: 2099-W02: the week is not over until the end of Sunday 2099-01-11" in not_over.output
    assert bad.exit_code == 1 and "Error: --week '2026-W54': not an ISO week" in bad.output
    assert f"{WEEK}.1: done:" in status and "1 sent" in status
    assert "Archive of 4 issues" in archive  # the daily issues; a digest is no archive page
    assert window.sent == daily_rows + 1  # the complaint rate counts the digest sent today too


def test_preview_shows_the_whole_week_or_what_one_reader_is_owed(sample):
    reader = addresses(sample, 1)[0]
    choose(sample, reader, frequency=Frequency.WEEKLY, sections=["Chemical"])
    for day in DAYS:
        cli(sample, "send", "--date", day)

    whole = cli(sample, "preview", "--digest", "--week", WEEK, "--text")
    own = cli(sample, "preview", "--digest", "--week", WEEK, "--text", "--subscriber", reader)

    all_headlines = {h: s for day in DAYS for h, s in headlines(sample, day).items()}
    assert all(" ".join(h.split()) in " ".join(whole.split()) for h in all_headlines)
    assert {h for h, s in all_headlines.items() if " ".join(h.split()) in " ".join(own.split())} == \
        {h for h, s in all_headlines.items() if s == "Chemical"}
    assert digests(sample) == {}  # a preview sends nothing


def test_a_digest_that_fails_the_check_freezes_nothing_and_sends_nothing(sample, runner):
    reader = addresses(sample, 1)[0]
    choose(sample, reader, frequency=Frequency.WEEKLY)
    for day in DAYS:
        cli(sample, "send", "--date", day)
    (sample / "templates").mkdir(exist_ok=True)
    (sample / "templates" / "digest.html.j2").write_text(
        '{% extends "partials/layout.html.j2" %}{% block content %}<p>{{ undefined_thing }}</p>{% endblock %}')

    checked = runner.invoke(app, ["--project", str(sample), "check", "--digest", "--week", WEEK])
    result = runner.invoke(app, ["--project", str(sample), "send", "--digest", "--week", WEEK])

    assert checked.exit_code == 1 and "undefined_thing" in checked.output
    assert result.exit_code == 1
    assert "Error:" in result.output and "undefined_thing" in result.output
    conn = store.connect(sample / "subscribers" / "newsletter.db")
    assert conn.execute("SELECT count(*) FROM issues WHERE day LIKE '2026-W48%'").fetchone()[0] == 0
    assert digests(sample) == {}


def test_the_scheduler_sends_the_digest_at_the_monday_slot_once(sample):
    reader = addresses(sample, 1)[0]
    choose(sample, reader, frequency=Frequency.WEEKLY)
    for day in DAYS:
        cli(sample, "send", "--date", day)
    settings = load_settings(sample)  # [digest] weekday = "monday", send_time 06:00 Europe/Vienna
    vienna = ZoneInfo("Europe/Vienna")

    sunday = schedule.run_slot(settings, datetime(2026, 11, 29, 6, 0, 5, tzinfo=vienna))
    assert digests(sample) == {}  # the week is not over on its Sunday
    monday = schedule.run_slot(settings, datetime(2026, 11, 30, 6, 0, 5, tzinfo=vienna))
    tuesday = schedule.run_slot(settings, datetime(2026, 12, 1, 6, 0, 5, tzinfo=vienna))

    assert sunday is not None and monday is not None and tuesday is not None
    assert set(digests(sample)) == {reader}
    assert monday.ok and tuesday.ok
    assert schedule.digest_week_due(date(2026, 11, 30), settings) == IsoWeek(2026, 48)
    friday = settings.replace("digest", weekday="friday")
    assert schedule.digest_week_due(date(2026, 12, 3), friday) is None
    assert schedule.digest_week_due(date(2026, 12, 4), friday) == IsoWeek(2026, 48)


def test_a_week_too_long_for_gmail_is_sent_with_headlines_only(sample):
    settings = load_settings(sample)
    summary = "A summary long enough to weigh on the message, repeated to make the week heavy. " * 3
    days = tuple(
        digest.DigestDay(date(2026, 11, 23 + n), n + 1, f"Day {n}", archive_link(f"2026-11-{23 + n}"), tuple(
            SectionEntry(section, section.lower(), tuple(
                ArticleEntry(section, f"Headline {n}-{section}-{k}", summary, f"a-{n}-{k}", f"s-{k}")
                for k in range(12)))
            for section in settings.issue.sections))
        for n in range(7))
    week = digest.make_digest(IsoWeek(2026, 48).key(1), frozenset(), days, settings)

    rendered = digest.render(week, settings)

    assert len(rendered.html.encode()) < GMAIL_CLIP_BYTES
    assert "Headline 6-Policy-11" in rendered.text and "repeated to make the week heavy" not in rendered.text


@pytest.mark.parametrize("old, new, message", [
    ('weekday = "monday"', 'weekday = "someday"', "digest.weekday must be one of monday,"),
    ('subject = "{name}: the week of {dates}"', 'subject = "{name} {long_date}"',
     "digest.subject uses unknown key {long_date}; allowed keys: {name},"),
])
def test_a_bad_digest_setting_names_the_file_and_key(project, runner, old, new, message):
    config = project / "newsletter.toml"
    assert old in config.read_text()  # as `newsletter init` writes it
    config.write_text(config.read_text().replace(old, new))

    result = runner.invoke(app, ["--project", str(project), "check"])

    assert result.exit_code == 1
    assert f"{config}: {message}" in result.output


def test_a_digest_expires_only_an_older_weeks_digest_and_a_daily_issue_only_an_older_day(tmp_path):
    from factories import make_rendered

    from newsletter.delivery import digests as frozen, ledger
    from newsletter.models import RenderedIssue, Issue

    settings = load_settings(_init(tmp_path))
    conn = store.connect(settings.database_path)
    for n in range(4):
        subscribers.add(conn, f"reader{n}@example.org")
    daily = ledger.freeze_and_snapshot(conn, date(2026, 11, 26), number=4, subject="s", html="h", text="t",
                                       message_id=lambda sid: f"<d{sid}@x>", now="2026-11-26T05:00:00+00:00")

    def freeze(week: IsoWeek, readers: dict[int, tuple[int, ...]]) -> None:
        variants = []
        for variant, ids in readers.items():
            base = make_rendered()
            issue = Issue(day=week.key(variant), number=0, subject="d", preheader="p", sections=(),
                          archive_url=base.issue.archive_url)
            variants.append((RenderedIssue(issue, base.html, base.text), "{}", ids))
        assert frozen.freeze_week(conn, settings, week, variants, now="2026-11-30T05:00:00+00:00")

    freeze(IsoWeek(2026, 48), {1: (1, 2), 2: (3,)})
    assert ledger.expire_superseded(conn, now="2026-11-30T05:00:01+00:00") == {}
    assert not frozen.freeze_week(conn, settings, IsoWeek(2026, 48), [], now="2026-11-30T05:00:02+00:00")
    ledger.freeze_and_snapshot(conn, date(2026, 11, 27), number=5, subject="s", html="h", text="t",
                               message_id=lambda sid: f"<e{sid}@x>", now="2026-11-27T05:00:00+00:00")
    assert ledger.expire_superseded(conn, now="2026-11-30T05:00:03+00:00") == {daily.day: 4}
    freeze(IsoWeek(2026, 49), {1: (1, 2, 3)})
    expired = ledger.expire_superseded(conn, now="2026-12-07T05:00:00+00:00")
    assert expired == {IsoWeek(2026, 48).key(1): 2, IsoWeek(2026, 48).key(2): 1}
    assert [str(k) for k in frozen.frozen_keys(conn, IsoWeek(2026, 48))] == ["2026-W48.1", "2026-W48.2"]
    conn.close()


def _init(tmp_path: Path) -> Path:
    from conftest import fill_postal_address

    folder = tmp_path / "p"
    assert CliRunner().invoke(app, ["init", str(folder)]).exit_code == 0
    return fill_postal_address(folder)


@pytest.mark.slow  # the six sample days and the digest, as `make demo` sends them
def test_make_demo_gives_each_sample_weekly_reader_one_digest_of_their_sections_and_no_daily(sample_project):
    shutil.copy(REPO / "subscribers" / "sample-weekly.csv", sample_project / "subscribers" / "sample-weekly.csv")
    days = sorted(p.name for p in (sample_project / "articles").iterdir())
    for args in (["subscribers", "import", "subscribers/sample.csv"],
                 ["subscribers", "import", "subscribers/sample-weekly.csv"],
                 *(["send", "--date", day] for day in days), ["send", "--digest", "--week", WEEK]):
        cli(sample_project, *args)

    with (REPO / "subscribers" / "sample-weekly.csv").open(encoding="utf-8", newline="") as handle:
        weekly = {row["email"]: row["sections"] for row in csv.DictReader(handle)}
    got = digests(sample_project)
    assert set(got) == set(weekly)
    assert all(not (set(weekly) & dailies(sample_project, day)) for day in days)
    every = {s.upper() for s in load_settings(sample_project).issue.sections}
    for address, sections in weekly.items():
        chosen = {s.upper() for s in sections.split(";") if s}
        shown = {line.strip() for line in text_of(got[address]).split("\n")} & every
        assert shown == (chosen or every), (address, shown)


def test_a_digests_temporary_bounces_leave_the_window_by_the_day_they_arrived(conn):
    from newsletter import events

    reader = subscribers.add(conn, "reader@example.org").subscriber
    with store.write(conn):
        for n, at in enumerate(("2026-11-02T07:00:00+00:00", "2026-11-30T07:00:00+00:00")):
            events.record(conn, events.Event(reader.id, events.Kind.BOUNCE_SOFT, "inbox", at,
                                             issue_day=IsoWeek(2026, 44 + 4 * n).key(1).isoformat()))

    assert events.soft_bounce_days(conn, reader.id, since="2026-11-16") == 1  # the week-44 one is too old
    assert events.soft_bounce_days(conn, reader.id, since="2026-10-01") == 2


def test_a_digest_links_its_reader_to_their_own_preferences_page_in_both_parts(sample):
    weekly = addresses(sample, 1)[0]
    choose(sample, weekly, frequency=Frequency.WEEKLY)
    for day in DAYS:
        cli(sample, "send", "--date", day)
    cli(sample, "send", "--digest", "--week", WEEK)
    message = digests(sample)[weekly]
    text = message.get_body(("plain",)).get_content()
    token = re.search(r"https://ssb\.newsletter\.example\.org/p/([0-9a-f.]+)\s", text)[1]
    assert f'href="https://ssb.newsletter.example.org/p/{token}"' in message.get_body(("html",)).get_content()
    settings = load_settings(sample)
    conn = store.connect(settings.database_path)
    try:
        reader = subscribers.get(conn, weekly)
    finally:
        conn.close()
    assert signing.verify_preferences_token(secret_key(settings), token, settings.sender.list_id) == reader.id


def test_the_sample_week_matches_the_golden_digest(sample):
    from test_renderer import check_golden

    for day in DAYS:
        cli(sample, "send", "--date", day)
    settings = load_settings(sample)
    conn = store.connect(settings.database_path)
    try:
        whole = digest.preview(conn, settings, IsoWeek.parse(WEEK))
    finally:
        conn.close()
    assert whole is not None

    rendered = digest.render(whole, settings)

    check_golden(f"digest-{WEEK}.html", rendered.html)
    check_golden(f"digest-{WEEK}.txt", rendered.text)
