"""The reader's preferences page, /p/TOKEN, through Starlette's test client: what it shows, what its
form changes and records, cross-site posts, and tokens that are not ours."""

from __future__ import annotations

import re
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from starlette.testclient import TestClient

from newsletter import archive, events, signing, store, subscribers
from newsletter.models import Frequency
from newsletter.settings import load_settings, secret_key
from newsletter.web.app import make_app
from sent_project import copy_project, make_sent_project

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=timezone.utc)
READER = "mara.ilves@example.org"
SECTIONS = ["Nuclear", "Biological", "Chemical", "Missile Defense", "Terrorism", "Policy"]


@pytest.fixture(scope="module")
def sent(tmp_path_factory) -> Path:
    return make_sent_project(tmp_path_factory.mktemp("prefs") / "project", days=("2026-11-26",))


@pytest.fixture
def config(sent, tmp_path):
    return load_settings(copy_project(sent, tmp_path / "project"))


@pytest.fixture
def conn(config):
    connection = store.connect(config.database_path)
    yield connection
    connection.close()


@pytest.fixture
def client(config, conn) -> TestClient:
    site = config.outbox_dir / "site"
    archive.build_site(conn, config, site, NOW)
    return TestClient(make_app(config, site, now=lambda: NOW))


def link(config, conn, address: str = READER) -> str:
    person = subscribers.get(conn, address)
    return "/p/" + signing.preferences_token(secret_key(config), person.id, config.sender.list_id)


def ticked(page: str) -> list[str]:
    return re.findall(r'<input type="checkbox" name="section" value="([^"]+)" checked>', page)


def chosen_frequency(page: str) -> str:
    return re.search(r'<input type="radio" name="frequency" value="(\w+)" checked>', page)[1]


def preferences_events(conn, address: str = READER) -> list[events.Event]:
    person = subscribers.get(conn, address)
    return [e for e in events.history(conn, person.id) if e.kind == events.Kind.PREFERENCES]


def test_the_page_shows_every_section_ticked_and_daily_for_a_reader_who_never_chose(client, config, conn):
    page = client.get(link(config, conn))
    assert page.status_code == 200
    assert READER in page.text
    assert config.issue.sections == tuple(SECTIONS)
    assert ticked(page.text) == SECTIONS
    assert chosen_frequency(page.text) == "daily"
    assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"
    assert "<script" not in page.text


def test_a_get_changes_nothing(client, config, conn):
    before = subscribers.get(conn, READER)
    for _ in range(3):
        assert client.get(link(config, conn)).status_code == 200
    assert client.head(link(config, conn)).status_code == 200
    assert subscribers.get(conn, READER) == before
    assert preferences_events(conn) == []


def test_saving_sections_and_weekly_records_them_with_the_time(client, config, conn):
    url = link(config, conn)
    answer = client.post(url, data={"section": ["Nuclear", "Chemical"], "frequency": "weekly", "save": "yes"})
    assert answer.status_code == 200
    assert "Saved. From the next issue, you receive a weekly digest of Nuclear, Chemical." in answer.text
    person = subscribers.get(conn, READER)
    assert person.sections == frozenset({"Nuclear", "Chemical"}) and person.frequency is Frequency.WEEKLY
    assert person.preferences_at
    [event] = preferences_events(conn)
    assert event.source == events.WEB and event.at == person.preferences_at
    assert "Chemical, Nuclear" in event.detail and "weekly" in event.detail
    # the page shows what was saved
    page = client.get(url).text
    assert ticked(page) == ["Nuclear", "Chemical"] and chosen_frequency(page) == "weekly"
    # the same choice again changes nothing and records nothing
    again = client.post(url, data={"section": ["Chemical", "Nuclear"], "frequency": "weekly"})
    assert "Nothing changed" in again.text and len(preferences_events(conn)) == 1


def test_every_section_ticked_means_all_sections_new_ones_included(client, config, conn):
    url = link(config, conn)
    client.post(url, data={"section": ["Policy"], "frequency": "daily"})
    assert subscribers.get(conn, READER).sections == frozenset({"Policy"})
    client.post(url, data={"section": SECTIONS, "frequency": "daily"})
    assert subscribers.get(conn, READER).sections == frozenset()


def test_a_form_with_no_section_an_unknown_one_or_no_frequency_is_refused_and_changes_nothing(client, config, conn):
    url = link(config, conn)
    before = subscribers.get(conn, READER)
    for data, said in (({"frequency": "daily"}, "Tick at least one section"),
                       ({"section": ["Nuclear", "Astrology"], "frequency": "daily"}, "Astrology"),
                       ({"section": "Nuclear"}, "Choose how often"),
                       ({"section": "Nuclear", "frequency": "hourly"}, "Choose how often")):
        answer = client.post(url, data=data)
        assert answer.status_code == 400, data
        assert said in answer.text and "Nothing was changed" in answer.text
        assert ticked(answer.text) == SECTIONS  # the form again, as it is saved
    assert subscribers.get(conn, READER) == before


def test_the_unsubscribe_button_posts_the_readers_one_click_unsubscribe(client, config, conn):
    page = client.get(link(config, conn)).text
    action = re.search(r'<form method="post" action="(\.\./u/[^"]+)">', page)[1]
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]+)">', page))
    assert fields["List-Unsubscribe"] == "One-Click"
    answer = client.post(urllib.parse.urljoin(link(config, conn), action), data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200 and "You are unsubscribed" in answer.text
    assert subscribers.get(conn, READER).status == "unsubscribed"
    # now the page says so, and its form is gone
    after = client.get(link(config, conn))
    assert after.status_code == 200 and "You are not subscribed" in after.text and "checkbox" not in after.text
    refused = client.post(link(config, conn), data={"section": "Nuclear", "frequency": "weekly"})
    assert "You are not subscribed" in refused.text
    assert subscribers.get(conn, READER).sections == frozenset()


def test_a_cross_site_post_is_refused_and_the_own_form_is_not(client, config, conn):
    url = link(config, conn)
    data = {"section": "Nuclear", "frequency": "weekly"}
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": "null", "Sec-Fetch-Site": "cross-site"}):
        assert client.post(url, data=data, headers=headers).status_code == 403, headers
    assert subscribers.get(conn, READER).sections == frozenset()
    own = client.post(url, data=data, headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"})
    assert own.status_code == 200
    assert subscribers.get(conn, READER).sections == frozenset({"Nuclear"})


def forged(config, conn) -> list[str]:
    token = link(config, conn)[3:]
    number, mac = token.split(".")
    flipped = mac[:-1] + ("0" if mac[-1] != "0" else "1")
    person = subscribers.get(conn, READER)
    return [
        f"{number}.{flipped}",
        f"{int(number) + 1}.{mac}",
        signing.unsubscribe_token(secret_key(config), person.id, config.sender.list_id),  # another kind of link
        signing.preferences_token(secret_key(config), person.id, "other.example.org"),
        signing.preferences_token(b"not the key", person.id, config.sender.list_id),
        "1", "1.", "1.xyz", "%00",
    ]


def test_a_forged_or_tampered_token_gets_a_clear_400_page_naming_nobody(client, config, conn):
    before = subscribers.get(conn, READER)
    for token in forged(config, conn):
        for answer in (client.get(f"/p/{token}"), client.post(f"/p/{token}", data={"section": "Nuclear",
                                                                                     "frequency": "weekly"})):
            assert answer.status_code == 400, token
            assert "This preferences link is not one of ours" in answer.text
            assert "@example" not in answer.text and "checkbox" not in answer.text
    assert subscribers.get(conn, READER) == before


@hsettings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=st.text(min_size=1, max_size=80))
def test_any_other_token_changes_nothing(client, conn, token):
    before = subscribers.get(conn, READER)
    answer = client.post(f"/p/{urllib.parse.quote(token, safe='')}", data={"section": "Nuclear", "frequency": "weekly"})
    assert answer.status_code in (400, 404, 405)  # 404/405: a "/" in it leaves the route
    assert subscribers.get(conn, READER) == before


def test_an_erased_reader_gets_a_page_that_names_nobody(client, config, conn):
    url = link(config, conn)
    subscribers.remove(conn, READER)
    for answer in (client.get(url), client.post(url, data={"section": "Nuclear", "frequency": "weekly"})):
        assert answer.status_code == 200 and "no longer on the list" in answer.text and "mara" not in answer.text


def test_other_methods_are_not_allowed(client, config, conn):
    for method in ("PUT", "DELETE", "PATCH"):
        answer = client.request(method, link(config, conn))
        assert answer.status_code == 405 and answer.headers["allow"] == "GET, HEAD, POST"
