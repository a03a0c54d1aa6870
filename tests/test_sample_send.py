"""The sample project sent as a user would (`make demo`): every .eml in the outbox read back on its
own and held to the message rules of EMAIL.md (6-18), independently of `newsletter check`."""

from __future__ import annotations

import csv
import email
import email.policy
import html
import re
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter import messages, signing
from newsletter.cli import app
from newsletter.settings import load_settings, secret_key

DAY = "2026-11-26"


@pytest.fixture(scope="module")
def sent(tmp_path_factory) -> Path:
    """The sample project with its subscribers imported and DAY sent to the outbox."""
    import shutil

    from conftest import REPO

    project = tmp_path_factory.mktemp("sample") / "project"
    project.mkdir()
    shutil.copy(REPO / "newsletter.toml", project / "newsletter.toml")
    shutil.copytree(REPO / "articles", project / "articles")
    shutil.copytree(REPO / "feeds", project / "feeds")
    (project / "subscribers").mkdir()
    shutil.copy(REPO / "subscribers" / "sample.csv", project / "subscribers" / "sample.csv")
    runner = CliRunner()
    for args in (["subscribers", "import", "subscribers/sample.csv"], ["fetch", "--date", DAY], ["send", "--date", DAY]):
        result = runner.invoke(app, ["--project", str(project), *args])
        assert result.exit_code == 0, result.output
    return project


def test_the_sample_day_holds_the_sample_feeds_article_next_to_hand_written_ones(sent):
    folder = sent / "articles" / DAY
    fetched = folder / "norvalen-parliament-schedules-export-control-hearing.md"
    assert "Sample Policy Wire, Nov. 25" in fetched.read_text(encoding="utf-8")
    html_part = email.message_from_bytes(outbox(sent)[0], policy=email.policy.default).get_body(("html",)).get_content()
    assert "Norvalen Parliament Schedules Export-Control Hearing" in html_part
    assert "Drelland Passes Law Creating Independent Lab Inspectorate" in html_part  # a hand-written one


def sample_people(project: Path) -> dict[str, tuple[str, str]]:
    with (project / "subscribers" / "sample.csv").open(encoding="utf-8", newline="") as f:
        return {row["email"].lower(): (row["name"], row["status"]) for row in csv.DictReader(f)}


def outbox(project: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((project / "outbox" / DAY / "mail" / "new").iterdir())]


def raw_header(raw: bytes, name: str) -> str:
    """The header as it is on the wire (unfolded), not as a parser decodes it."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    match = re.search(rf"^{name}:(.*(?:\r\n[ \t].*)*)", head, re.M | re.I)
    assert match, f"no {name} header"
    return re.sub(r"\r\n[ \t]", " ", match[1]).strip()


def test_one_message_per_active_subscriber_and_none_for_the_others(sent: Path) -> None:
    people = sample_people(sent)
    active = {address for address, (_, status) in people.items() if status == "active"}
    recipients = [email.message_from_bytes(raw, policy=email.policy.default)["To"].addresses[0].addr_spec.lower()
                  for raw in outbox(sent)]
    assert sorted(recipients) == sorted(active)


def test_every_message_is_seven_bit_crlf_and_no_line_over_998_octets(sent: Path) -> None:
    for raw in outbox(sent):
        assert raw.isascii()
        assert b"\n" not in raw.replace(b"\r\n", b"")
        assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_every_message_is_text_then_html_both_utf8_quoted_printable(sent: Path) -> None:
    for raw in outbox(sent):
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert message.get_content_type() == "multipart/alternative"
        parts = list(message.iter_parts())
        assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
        for part in parts:
            assert part.get_content_charset() == "utf-8"
            assert part["Content-Transfer-Encoding"] == "quoted-printable"
        assert len(parts[1].get_content().encode("utf-8")) < 90_000  # Gmail clips at 102,000


def test_headers_name_the_reader_and_carry_a_working_one_click_unsubscribe(sent: Path) -> None:
    settings = load_settings(sent)
    key = secret_key(settings)
    people = sample_people(sent)
    ids: set[str] = set()
    subjects: set[str] = set()
    with (sent / "subscribers" / "sample.csv").open(encoding="utf-8", newline="") as f:
        sections = {row["email"].lower(): row["sections"] for row in csv.DictReader(f)}
    for raw in outbox(sent):
        message = email.message_from_bytes(raw, policy=email.policy.default)
        to = message["To"].addresses[0]
        name, _ = people[to.addr_spec.lower()]
        assert to.display_name == name
        assert message["From"].addresses[0].addr_spec == "bulletin@ssb.newsletter.example.org"
        assert parsedate_to_datetime(message["Date"]).tzinfo is not None
        assert message["MIME-Version"] == "1.0"
        assert message["Message-ID"].endswith("@ssb.newsletter.example.org>")
        ids.add(message["Message-ID"])
        if not sections[to.addr_spec.lower()]:  # a reader of every section: the full issue's subject
            subjects.add(message["Subject"])
        assert message["List-Id"].endswith("<ssb.newsletter.example.org>")
        assert message["Precedence"] == "bulk" and message["Auto-Submitted"] == "auto-generated"
        assert raw_header(raw, "List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
        unsubscribe = raw_header(raw, "List-Unsubscribe")
        assert "=?" not in unsubscribe  # an encoded word is not a URL to Gmail or Yahoo
        token = re.fullmatch(
            r"<https://ssb\.newsletter\.example\.org/u/([\w.-]+)>, "
            r"<mailto:unsubscribe@ssb\.newsletter\.example\.org\?subject=unsubscribe-\1>", unsubscribe)[1]
        subscriber_id = messages.verify_token(key, token, settings.sender.list_id)
        assert subscriber_id is not None
        html = message.get_body(("html",)).get_content()
        text = message.get_body(("plain",)).get_content()
        assert f"https://ssb.newsletter.example.org/u/{token}" in html
        assert f"https://ssb.newsletter.example.org/u/{token}" in text
        assert "https://ssb.newsletter.example.org/archive/2026/11/26/" in html  # view in browser
        # the reader's own preferences page, in both parts, a link of its own kind
        preferences = re.search(r"https://ssb\.newsletter\.example\.org/p/([0-9a-f.]+)\s", text)[1]
        assert f'href="https://ssb.newsletter.example.org/p/{preferences}"' in html
        assert signing.verify_preferences_token(key, preferences, settings.sender.list_id) == subscriber_id
    assert len(ids) == len(outbox(sent))
    assert len(subjects) == 1


def test_the_greeting_uses_the_name_escaped_in_html_or_a_default(sent: Path) -> None:
    people = sample_people(sent)
    for raw in outbox(sent):
        message = email.message_from_bytes(raw, policy=email.policy.default)
        name, _ = people[message["To"].addresses[0].addr_spec.lower()]
        text = message.get_body(("plain",)).get_content()
        page = message.get_body(("html",)).get_content()
        greeting = f"Good morning, {name}." if name else "Good morning."
        assert greeting in text
        assert html.escape(greeting) in page
        assert "NLX" not in text and "NLX" not in page  # no placeholder left


def test_sending_again_writes_nobody_twice(sent: Path) -> None:
    before = outbox(sent)
    result = CliRunner().invoke(app, ["--project", str(sent), "send", "--date", DAY])
    assert result.exit_code == 0, result.output
    assert "nothing to do" in result.output
    assert outbox(sent) == before
