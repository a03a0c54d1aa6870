"""Readers get only their sections: one copy per set of sections readers chose, sent exactly once.

Each test makes a project with `newsletter init`, readers who chose sections, and one day of
articles in two of its three sections, runs the real CLI, and reads back the real `.eml` files.
"""

from __future__ import annotations

import email
import email.policy
import re
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from newsletter import store, subscribers, variants
from newsletter.cli import app
from newsletter.models import Frequency

from conftest import fill_postal_address
from paused_send import send_command, start_paused

DAY = "2026-11-26"
SECTIONS = ("Nuclear", "Chemical", "Biological")
ARTICLES = {  # file: (section, priority, title)
    "orlund": ("Nuclear", 1, "Orlund plant resumes enrichment"),
    "reactor": ("Nuclear", 5, "Research reactor license renewed"),
    "sarin": ("Chemical", 2, "Stockpile destruction passes half-way"),
}
READERS = {  # address: sections chosen ('' = all)
    "all@example.org": (),
    "nuclear@example.org": ("Nuclear",),
    "chemical@example.org": ("Chemical",),
    "both@example.org": ("Chemical", "Nuclear"),
    "every@example.org": SECTIONS,  # every section chosen: the full issue
    "bio@example.org": ("Biological",),  # nothing today
}
NOTE, FEATURE = "A holiday schedule note", "Country profile: Veska"


def make_project(folder: Path, *, empty_policy: str = "skip", batch_size: int = 500) -> Path:
    result = CliRunner().invoke(app, ["init", str(folder)])
    assert result.exit_code == 0, result.output
    config = fill_postal_address(folder) / "newsletter.toml"
    text = config.read_text(encoding="utf-8")
    for old, new in (('sections = ["News", "Analysis"]', f"sections = {list(SECTIONS)!r}".replace("'", '"')),
                     ('default_section = "News"', 'default_section = "Nuclear"'),
                     ('empty_policy = "skip"', f'empty_policy = "{empty_policy}"'),
                     ('subject = "{name}, {long_date}"', 'subject = "{short_name}: {lead_title}"'),
                     ("batch_size = 500", f"batch_size = {batch_size}")):
        assert old in text, old
        text = text.replace(old, new)
    config.write_text(text, encoding="utf-8")
    day = folder / "articles" / DAY
    day.mkdir(parents=True)
    for slug, (section, priority, title) in ARTICLES.items():
        (day / f"{slug}.md").write_text(
            f"---\ntitle: {title}\nsection: {section}\npriority: {priority}\nsummary: About {title.lower()}.\n"
            f"---\nThe body of the article on {title.lower()} (Interfax, November 25).\n", encoding="utf-8")
    (day / "_note.md").write_text(f"---\ntitle: {NOTE}\n---\nWe do not publish on Friday.\n", encoding="utf-8")
    (day / "_feature.md").write_text(f'---\ntitle: "{FEATURE}"\nlink: https://example.org/veska\n---\n'
                                     "Veska is a small mountainous country.\n", encoding="utf-8")
    return folder


def database(project: Path) -> sqlite3.Connection:
    return store.connect(project / "subscribers" / "newsletter.db")


def add_readers(project: Path, readers: dict[str, tuple[str, ...]], frequency: str = "daily") -> None:
    conn = database(project)
    try:
        for address, chosen in readers.items():
            subscribers.add(conn, address, sections=chosen, frequency=Frequency(frequency))
    finally:
        conn.close()


def choose(project: Path, address: str, chosen: tuple[str, ...]) -> None:
    """Change a reader's sections as the preferences page does."""
    conn = database(project)
    try:
        subscribers.set_preferences(conn, subscribers.get(conn, address).id, sections=chosen, source="web")
    finally:
        conn.close()


def cli(project: Path, *args: str):
    return CliRunner().invoke(app, ["--project", str(project), *args])


def received(project: Path) -> dict[str, email.message.EmailMessage]:
    """Each reader's message in the outbox, by address."""
    found: dict[str, email.message.EmailMessage] = {}
    for path in (project / "outbox" / DAY / "mail" / "new").iterdir():
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        address = message["To"].addresses[0].addr_spec
        assert address not in found, f"{address} got two messages"
        found[address] = message
    return found


def titles_in(message) -> tuple[set[str], set[str]]:
    """The article titles in the text part and in the HTML part."""
    text = message.get_body(("plain",)).get_content()
    markup = message.get_body(("html",)).get_content()
    titles = {title for _, _, title in ARTICLES.values()}
    return {t for t in titles if t in text}, {t for t in titles if t in markup}


def deliveries(project: Path) -> dict[str, sqlite3.Row]:
    conn = database(project)
    try:
        return {row["email"]: row for row in conn.execute(
            "SELECT email, state, reason, last_reply, variant FROM deliveries WHERE issue_day = ?", (DAY,))}
    finally:
        conn.close()


def expected_titles(chosen: tuple[str, ...]) -> set[str]:
    return {title for section, _, title in ARTICLES.values() if not chosen or section in chosen}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = make_project(tmp_path / "p")
    add_readers(folder, READERS)
    return folder


def test_each_reader_gets_only_their_sections_and_the_subject_follows_their_lead(project: Path) -> None:
    result = cli(project, "send", "--date", DAY)

    assert result.exit_code == 0, result.output
    mail = received(project)
    assert set(mail) == set(READERS) - {"bio@example.org"}
    for address, message in mail.items():
        want = expected_titles(READERS[address])
        in_text, in_html = titles_in(message)
        assert in_text == want and in_html == want, address
    assert mail["chemical@example.org"]["Subject"] == "MDB: Stockpile destruction passes half-way"
    for address in ("nuclear@example.org", "both@example.org", "all@example.org", "every@example.org"):
        assert mail[address]["Subject"] == "MDB: Orlund plant resumes enrichment", address
    # the contents list only the reader's sections and articles, and the preheader follows the lead
    chemical = mail["chemical@example.org"].get_body(("html",)).get_content()
    assert re.findall(r'class="tsec"[^>]*>([^<]+)<', chemical) == ["Chemical"]
    assert "#a-sarin" in chemical and "#a-orlund" not in chemical
    assert re.search(r'class="pre"[^>]*>About stockpile destruction passes half-way', chemical)
    assert re.findall(r'class="tsec"[^>]*>([^<]+)<', mail["every@example.org"].get_body(("html",)).get_content()) \
        == ["Nuclear", "Chemical"]


def test_the_note_and_the_feature_go_to_everyone_and_the_archive_keeps_the_full_issue(project: Path) -> None:
    assert cli(project, "send", "--date", DAY).exit_code == 0

    for address, message in received(project).items():
        text = message.get_body(("plain",)).get_content()
        assert NOTE.upper() in text.upper() and FEATURE.upper() in text.upper(), address
    public = (project / "outbox" / DAY / "issue.html").read_text(encoding="utf-8")
    assert all(title in public for _, _, title in ARTICLES.values())
    assert cli(project, "archive").exit_code == 0
    page = (project / "outbox" / "site" / "archive" / "2026" / "11" / "26" / "index.html").read_text(encoding="utf-8")
    assert all(title in page for _, _, title in ARTICLES.values())


def test_a_reader_with_nothing_in_their_sections_gets_nothing_and_their_row_says_why(project: Path) -> None:
    result = cli(project, "send", "--date", DAY)

    assert result.exit_code == 0, result.output
    assert "no article in Biological; nothing sent to its readers (empty_policy = skip)" in result.output
    assert "bio@example.org" not in received(project)
    row = deliveries(project)["bio@example.org"]
    assert row["state"] == "skipped" and row["reason"] == "no_articles"
    assert "no article in Biological" in row["last_reply"]
    status = cli(project, "status", "--date", DAY)
    assert status.exit_code == 0 and "done" in status.output


def test_under_the_notice_policy_a_reader_with_nothing_in_their_sections_gets_the_notice(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", empty_policy="notice")
    add_readers(project, READERS)

    result = cli(project, "send", "--date", DAY)

    assert result.exit_code == 0, result.output
    mail = received(project)
    notice = mail["bio@example.org"]
    assert "no issue today" in notice["Subject"]
    assert titles_in(notice) == (set(), set())
    assert titles_in(mail["nuclear@example.org"])[0] == expected_titles(("Nuclear",))
    assert deliveries(project)["bio@example.org"]["state"] == "sent"


def test_weekly_readers_get_no_daily_issue(project: Path) -> None:
    add_readers(project, {"weekly@example.org": ()}, frequency="weekly")

    assert cli(project, "send", "--date", DAY).exit_code == 0

    assert "weekly@example.org" not in received(project)
    assert "weekly@example.org" not in deliveries(project)


def test_the_issue_is_rendered_once_per_set_of_sections_not_per_reader(project: Path) -> None:
    add_readers(project, {f"n{k}@example.org": ("Nuclear",) for k in range(20)})

    assert cli(project, "send", "--date", DAY).exit_code == 0

    rows = deliveries(project)
    assert Counter(row["variant"] for row in rows.values()) == {
        "": 2, "Nuclear": 21, "Chemical": 1, "Chemical\nNuclear": 1, "Biological": 1}
    conn = database(project)
    try:
        frozen = [row[0] for row in conn.execute("SELECT variant FROM issue_variants WHERE day = ? ORDER BY 1", (DAY,))]
    finally:
        conn.close()
    assert frozen == ["Chemical", "Chemical\nNuclear", "Nuclear"]  # Biological had nothing to freeze


def test_check_refuses_a_section_readers_chose_that_the_settings_no_longer_have(project: Path) -> None:
    config = project / "newsletter.toml"
    config.write_text(config.read_text(encoding="utf-8").replace('"Chemical"', '"Chem"'), encoding="utf-8")
    (project / "articles" / DAY / "sarin.md").write_text(
        (project / "articles" / DAY / "sarin.md").read_text(encoding="utf-8").replace("section: Chemical",
                                                                                       "section: Chem"))

    checked = cli(project, "check", "--date", DAY)
    refused = cli(project, "send", "--date", DAY)

    assert checked.exit_code != 0
    assert "[issue] sections has no section 'Chemical', which 3 readers chose" in checked.output
    assert "newsletter subscribers rename-section Chemical NEW" in checked.output
    assert refused.exit_code != 0 and not (project / "outbox" / DAY / "mail").exists()

    renamed = cli(project, "subscribers", "rename-section", "chemical", "chem")

    assert renamed.exit_code == 0, renamed.output
    assert "for 3 readers" in renamed.output
    assert cli(project, "check", "--date", DAY).exit_code == 0
    assert cli(project, "send", "--date", DAY).exit_code == 0
    assert titles_in(received(project)["chemical@example.org"])[0] == {"Stockpile destruction passes half-way"}


def test_rename_section_refuses_an_unknown_old_or_new_name_and_changes_nothing(project: Path) -> None:
    before = deliveries(project), _sections(project)

    unknown_old = cli(project, "subscribers", "rename-section", "Radiological", "Nuclear")
    unknown_new = cli(project, "subscribers", "rename-section", "Chemical", "Chem")

    assert unknown_old.exit_code == 1
    assert "no reader chose a section named 'Radiological'" in unknown_old.output
    assert "Chemical (3)" in unknown_old.output
    assert unknown_new.exit_code == 1 and "Chem" in unknown_new.output and "Nuclear" in unknown_new.output
    assert (deliveries(project), _sections(project)) == before


def _sections(project: Path) -> dict[str, str]:
    conn = database(project)
    try:
        return dict(conn.execute("SELECT email, sections FROM subscribers").fetchall())
    finally:
        conn.close()


@pytest.mark.slow
def test_a_send_killed_mid_way_resumes_with_each_row_in_the_variant_it_was_frozen_with(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", batch_size=10)
    readers = {f"r{k}@example.org": ("Nuclear",) if k % 2 else ("Chemical",) for k in range(200)}
    add_readers(project, readers)

    process, done = start_paused(project, DAY, 50)
    # a reader not yet written changes their sections while the send is stopped: their row keeps
    # the variant it was frozen with
    conn = database(project)
    try:
        unwritten = conn.execute("SELECT email FROM deliveries WHERE issue_day = ? AND state = 'pending'"
                                 " AND variant = 'Chemical' ORDER BY subscriber_id DESC LIMIT 1", (DAY,)).fetchone()[0]
    finally:
        conn.close()
    choose(project, unwritten, ("Nuclear",))
    process.kill()
    process.communicate()
    assert 50 <= done < 200

    final = subprocess.run(send_command(project, DAY), capture_output=True, text=True, timeout=120)

    assert final.returncode == 0, final.stderr
    mail = received(project)
    assert set(mail) == set(readers)
    for address, message in mail.items():
        assert titles_in(message)[0] == expected_titles(readers[address]), address
    assert Counter(row["state"] for row in deliveries(project).values()) == {"sent": 200}


@given(st.sets(st.sampled_from(("A", "B", "C", "D", "Long name", "Ünïcode"))))
def test_a_variant_key_gives_back_the_sections_chosen_unless_they_are_all_or_none(chosen: set[str]) -> None:
    every = ("A", "B", "C", "D", "Long name", "Ünïcode")
    key = variants.key_of(chosen, every)
    if not chosen or chosen == set(every):
        assert key == variants.ALL
    else:
        assert variants.sections_of(key) == chosen
        assert variants.key_of(variants.sections_of(key), every) == key


class _Inbox:
    """An aiosmtpd handler that keeps each message it accepts, by recipient."""

    def __init__(self) -> None:
        self.messages: dict[str, list[bytes]] = {}

    async def handle_DATA(self, server, session, envelope):
        for address in envelope.rcpt_tos:
            self.messages.setdefault(address, []).append(envelope.content)
        return "250 OK"


def test_over_smtp_each_reader_gets_their_own_variant(project: Path) -> None:
    from datetime import date

    from factories import LoopbackController
    from newsletter import sending
    from newsletter.settings import load_settings

    inbox = _Inbox()
    controller = LoopbackController(inbox, hostname="127.0.0.1", port=0)
    controller.start()
    try:
        settings = load_settings(project).replace("delivery", transport="smtp", concurrency=2, batch_size=2)
        settings = settings.replace("smtp", host="127.0.0.1", port=controller.port, security="none", timeout=5.0)
        done = sending.send_day(settings, date.fromisoformat(DAY))
    finally:
        controller.stop()

    assert done.sent is not None and done.sent.written == len(READERS) - 1
    assert set(inbox.messages) == set(READERS) - {"bio@example.org"}
    for address, copies in inbox.messages.items():
        assert len(copies) == 1, address
        message = email.message_from_bytes(copies[0], policy=email.policy.default)
        assert titles_in(message)[0] == expected_titles(READERS[address]), address


def test_a_reader_who_changes_sections_while_the_issue_is_prepared_gets_the_new_ones(project: Path) -> None:
    from datetime import date

    from newsletter import sending
    from newsletter.settings import load_settings

    def change(prepared, report) -> None:  # after the check, before the snapshot
        choose(project, "bio@example.org", ("Biological", "Chemical"))

    done = sending.send_day(load_settings(project), date.fromisoformat(DAY), on_checked=change)

    assert done.sent is not None and done.sent.written == len(READERS)
    assert "Biological\nChemical" in {variant.key for variant in done.prepared.variants}
    assert titles_in(received(project)["bio@example.org"])[0] == {"Stockpile destruction passes half-way"}


def test_a_rebuild_mid_send_gives_the_readers_not_yet_written_the_new_version_of_their_variant(tmp_path: Path) -> None:
    import threading
    from datetime import date

    from newsletter import sending
    from newsletter.settings import load_settings

    project = make_project(tmp_path / "p", batch_size=5)
    readers = {f"r{k:02d}@example.org": ("Chemical",) for k in range(30)}
    add_readers(project, readers)
    stop = threading.Event()
    first = sending.send_day(load_settings(project), date.fromisoformat(DAY), stop=stop,
                             progress=lambda done, total: stop.set() if done >= 10 else None)
    assert first.sent is not None and 10 <= first.sent.written < 30
    article = project / "articles" / DAY / "sarin.md"
    article.write_text(article.read_text(encoding="utf-8").replace("passes half-way", "is complete"), encoding="utf-8")

    refused = cli(project, "send", "--date", DAY)
    rebuilt = cli(project, "send", "--date", DAY, "--rebuild")

    assert refused.exit_code == 1 and "--rebuild" in refused.output
    assert rebuilt.exit_code == 0, rebuilt.output
    subjects = Counter(message["Subject"] for message in received(project).values())
    assert subjects == {"MDB: Stockpile destruction passes half-way": first.sent.written,
                        "MDB: Stockpile destruction is complete": 30 - first.sent.written}


def test_the_check_holds_every_variant_to_the_rules_and_says_whose_copy_a_problem_is_in(project: Path) -> None:
    import dataclasses
    from datetime import date

    from newsletter.check import check_rendered
    from newsletter.pipeline import prepare_issue
    from newsletter.settings import load_settings

    settings = load_settings(project)
    prepared = prepare_issue(settings, date.fromisoformat(DAY), ["Chemical", "Nuclear"])
    assert check_rendered(prepared, settings).ok
    # the Chemical copy loses its preheader (as a broken template might for one set of sections)
    chemical = next(v for v in prepared.variants if v.key == "Chemical")
    assert chemical.rendered is not None
    broken = dataclasses.replace(chemical.rendered, html=chemical.rendered.html.replace(
        chemical.rendered.issue.preheader, ""))
    prepared = dataclasses.replace(prepared, variants=tuple(
        dataclasses.replace(v, rendered=broken) if v is chemical else v for v in prepared.variants))

    report = check_rendered(prepared, settings)

    assert [f.message for f in report.errors] == [
        "the preheader is not in the HTML: inbox lists show the first words of the body instead "
        "(in the copy for readers of Chemical)"]


def test_preview_of_a_reader_shows_the_copy_of_their_sections(project: Path) -> None:
    chemical = cli(project, "preview", "--date", DAY, "--subscriber", "chemical@example.org", "--text")
    biological = cli(project, "preview", "--date", DAY, "--subscriber", "bio@example.org", "--text")
    everyone = cli(project, "preview", "--date", DAY, "--text")

    assert chemical.exit_code == 0, chemical.output
    assert {t for _, _, t in ARTICLES.values() if t in chemical.output} == {"Stockpile destruction passes half-way"}
    assert biological.exit_code == 0 and "no article in Biological" in biological.output
    assert {t for _, _, t in ARTICLES.values() if t in everyone.output} == expected_titles(())


def test_a_day_without_articles_sends_the_notice_to_every_reader_whatever_their_sections(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", empty_policy="notice")
    add_readers(project, READERS)
    for article in (project / "articles" / DAY).glob("[!_]*.md"):
        article.unlink()

    result = cli(project, "send", "--date", DAY)

    assert result.exit_code == 0, result.output
    mail = received(project)
    assert set(mail) == set(READERS)
    assert all("no issue today" in message["Subject"] for message in mail.values())
