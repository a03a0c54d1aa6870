"""The sample project sent in each shipped language, as a reader sees it: the email (subject, HTML, text),
the archive, the sign-up pages and the confirmation mail hold no English fixed string, and their
dates read as a native reader writes them."""

from __future__ import annotations

import email
import email.policy
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from newsletter import i18n, store, subscribers
from newsletter.cli import app
from newsletter.renderer import make_environment
from newsletter.settings import load_settings, secret_key
from newsletter.signing import preferences_token
from newsletter.web import signup
from newsletter.web.app import make_app

pytestmark = pytest.mark.slow  # two sends and an archive per language

REPO = Path(__file__).resolve().parent.parent
DAY = "2026-11-26"
NOW = datetime(2026, 11, 27, 8, 0, tzinfo=timezone.utc)
READER = "mara.ilves@example.org"  # active in subscribers/sample.csv
NATIVE = {  # the day, and the archive's month heading, as a reader of each language writes them
    "fr": ("jeudi 26 novembre 2026", "Novembre 2026"),
    "de": ("Donnerstag, 26. November 2026", "November 2026"),
    "es": ("jueves, 26 de noviembre de 2026", "Noviembre de 2026"),
    "pt": ("quinta-feira, 26 de novembro de 2026", "Novembro de 2026"),
    "ar": ("الخميس، 26 نوفمبر 2026", "نوفمبر 2026"),
}
_FIELD = re.compile(r"%\(\w+\)[sd]|\{\w+\}")


def _sample_text() -> str:
    """Everything the sample's own content says (articles, settings): English there is the editors', not ours."""
    parts = [p.read_text(encoding="utf-8") for p in (REPO / "articles").rglob("*") if p.is_file()]
    return "\n".join(parts + [(REPO / "newsletter.toml").read_text(encoding="utf-8")])


def english_fragments(language: str) -> list[str]:
    """Return the English words of each fixed string that LANGUAGE says otherwise (placeholders cut out)."""
    english = i18n.read_catalog(i18n.LOCALES_DIR / "en" / "LC_MESSAGES" / "messages.po", "en")
    translated = i18n.read_catalog(i18n.LOCALES_DIR / language / "LC_MESSAGES" / "messages.po", language)
    theirs = " ".join(" ".join(m.string) if isinstance(m.string, tuple) else m.string for m in translated if m.id)
    content = _sample_text()
    fragments = set()
    for message in english:
        for msgid in ([message.id] if isinstance(message.id, str) else list(message.id)):
            for piece in _FIELD.split(msgid):
                piece = piece.strip(" .,:;?!()\"'")
                if len(re.sub(r"[^A-Za-z]", "", piece)) >= 4 and piece not in theirs and piece not in content:
                    fragments.add(piece)
    return sorted(fragments)


def leftovers(text: str, fragments: list[str]) -> list[str]:
    return [f for f in fragments if f in text]


@pytest.fixture(scope="module", params=sorted(NATIVE))
def sent(request, tmp_path_factory) -> tuple[str, Path]:
    """The sample project in one language: its subscribers imported, two days sent, the archive built."""
    language = request.param
    folder = tmp_path_factory.mktemp(f"sample-{language}") / "project"
    folder.mkdir()
    config = (REPO / "newsletter.toml").read_text(encoding="utf-8")
    (folder / "newsletter.toml").write_text(config.replace('language = "en"', f'language = "{language}"'),
                                            encoding="utf-8")
    shutil.copytree(REPO / "articles", folder / "articles")
    (folder / "subscribers").mkdir()
    runner = CliRunner()
    for args in (["subscribers", "import", str(REPO / "subscribers" / "sample.csv")],
                 ["send", "--date", "2026-11-25"], ["send", "--date", DAY], ["archive"]):
        result = runner.invoke(app, ["--project", str(folder), *args])
        assert result.exit_code == 0, result.output
    return language, folder


def test_the_email_has_no_english_fixed_string_and_native_dates(sent):
    language, folder = sent
    fragments = english_fragments(language)
    assert "View in browser" in fragments and "In this issue" in fragments  # the test sees what it should
    mail = next((folder / "outbox" / DAY / "mail" / "new").iterdir())
    message = email.message_from_bytes(mail.read_bytes(), policy=email.policy.default)
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    day, _ = NATIVE[language]
    assert day in message["Subject"]
    assert day in html and day in text
    assert f'lang="{language}"' in html
    assert leftovers(html, fragments) == []
    assert leftovers(text, fragments) == []
    assert leftovers(message["Subject"], fragments) == []


def test_the_archive_has_no_english_fixed_string_and_native_dates(sent):
    language, folder = sent
    fragments = english_fragments(language)
    site = folder / "outbox" / "site"
    day, month = NATIVE[language]
    index = (site / "index.html").read_text(encoding="utf-8")
    page = (site / "archive" / "2026" / "11" / "26" / "index.html").read_text(encoding="utf-8")
    leave = (site / "unsubscribe" / "index.html").read_text(encoding="utf-8")
    assert day in index and f"<h3>{month}</h3>" in index
    assert day in page
    for html in (index, page, leave):
        assert leftovers(html, fragments) == []
    feed = (site / "feed.xml").read_text(encoding="utf-8")
    assert "<updated>2026-" in feed and day not in feed.split("<entry>")[0]  # the feed keeps ISO dates


def test_the_sign_up_flow_has_no_english_fixed_string(sent, tmp_path):
    language, source = sent
    folder = shutil.copytree(source, tmp_path / "project")
    settings = load_settings(folder)
    fragments = english_fragments(language)
    client = TestClient(make_app(settings, folder / "outbox" / "site", now=lambda: NOW))
    conn = store.connect(settings.database_path)
    try:
        reader = subscribers.get(conn, READER)
    finally:
        conn.close()
    token = preferences_token(secret_key(settings), reader.id, settings.sender.list_id)
    pages = [client.post("/subscribe", data={"email": "new.reader@example.com"}),
             client.post("/subscribe", data={"email": "not an address"}),
             client.get("/no/such/page"), client.get("/u/forged-token"),
             client.get(f"/p/{token}"), client.post(f"/p/{token}", data={"save": "yes", "frequency": "weekly"}),
             client.post(f"/p/{token}", data={"save": "yes", "frequency": "daily", "section": "Nuclear"})]
    assert [p.status_code for p in pages] == [200, 400, 404, 400, 200, 400, 200]
    for page in pages:
        assert leftovers(page.text, fragments) == [], page.text
    conn = store.connect(settings.database_path)
    try:
        person = subscribers.add(conn, "new.reader@example.com").subscriber
    finally:
        conn.close()
    env = make_environment(settings)
    for url in ("https://ssb.newsletter.example.org/confirm/TOKEN", ""):  # the confirmation, "already subscribed"
        raw = signup.confirmation_message(settings, env, person, url, NOW)
        message = email.message_from_bytes(raw, policy=email.policy.default)
        for part in (message["Subject"], message.get_body(("html",)).get_content(),
                     message.get_body(("plain",)).get_content()):
            assert leftovers(part, fragments) == [], part


def test_the_weekly_digest_has_no_english_fixed_string(sent):
    language, folder = sent
    result = CliRunner().invoke(app, ["--project", str(folder), "preview", "--digest", "--week", "2026-W48", "--text"])
    assert result.exit_code == 0, result.output
    assert leftovers(result.output, english_fragments(language)) == [], result.output
    assert NATIVE[language][0].upper() in result.output  # the days' dates, in capitals as the text part heads them
