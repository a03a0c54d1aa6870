"""The web application through Starlette's test client: unsubscribe, sign-up, confirmation, limits,
the archive it serves, the confirmation message, and the live preview."""

from __future__ import annotations

import email
import email.policy
import os
import re
import time
import urllib.parse
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from starlette.testclient import TestClient
from typer.testing import CliRunner

from newsletter import archive, importer, messages, store, subscribers
from newsletter.cli import app as cli
from newsletter.delivery.single import confirmations_maildir, send_single
from newsletter.errors import NewsletterError
from newsletter.settings import load_settings, secret_key
from newsletter.renderer import make_environment
from newsletter.web import outgoing, signup
from newsletter.web.app import FORM_LIMIT, make_app
from newsletter.web.preview import make_preview_app
from sent_project import copy_project, make_sent_project

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=timezone.utc)
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture(scope="module")
def sent(tmp_path_factory) -> Path:
    return make_sent_project(tmp_path_factory.mktemp("web") / "project", days=("2026-11-25", "2026-11-26"))


@pytest.fixture
def project(sent, tmp_path) -> Path:
    return copy_project(sent, tmp_path / "project")


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def config(project):
    return load_settings(project)


@pytest.fixture
def conn(config):
    connection = store.connect(config.database_path)
    yield connection
    connection.close()


@pytest.fixture
def client(config, conn, clock) -> TestClient:
    site = config.outbox_dir / "site"
    archive.build_site(conn, config, site, NOW)
    return TestClient(make_app(config, site, now=clock))


def token_for(config, conn, address: str) -> str:
    person = subscribers.get(conn, address)
    return messages.unsubscribe_token(secret_key(config), person.id, config.sender.list_id)


def status(conn, address: str) -> str:
    return subscribers.get(conn, address).status


def confirmations(config, clock) -> list[email.message.EmailMessage]:
    """Run the mail worker over the queue (as `serve` does in its thread), then read what it sent."""
    with store.connect(config.database_path) as queue:
        outgoing.process_due(queue, config, make_environment(config), secret_key(config), clock, send_single)
    folder = confirmations_maildir(config) / "new"
    if not folder.is_dir():
        return []
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in sorted(folder.iterdir())]


# --------------------------------------------------------------------------- unsubscribe


def test_get_shows_the_address_and_one_button_and_unsubscribes_nobody(client, config, conn):
    token = token_for(config, conn, "mara.ilves@example.org")
    for _ in range(2):
        page = client.get(f"/u/{token}")
        assert page.status_code == 200
        assert "mara.ilves@example.org" in page.text
        assert f'<form method="post" action="{token}">' in page.text
        assert page.text.count("<button") == 1
    assert client.head(f"/u/{token}").status_code == 200
    assert status(conn, "mara.ilves@example.org") == "active"
    assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"


def test_one_click_post_unsubscribes_at_once_and_twice_is_fine(client, config, conn):
    token = token_for(config, conn, "mara.ilves@example.org")
    for _ in range(2):
        answer = client.post(f"/u/{token}", data=ONE_CLICK, follow_redirects=False)
        assert answer.status_code == 200
        assert "You are unsubscribed" in answer.text and "set-cookie" not in answer.headers
    assert status(conn, "mara.ilves@example.org") == "unsubscribed"


def test_one_click_post_as_multipart_form_data_unsubscribes(client, config, conn):
    token = token_for(config, conn, "analyst+ssb@example.org")
    answer = client.post(f"/u/{token}", files={"List-Unsubscribe": (None, "One-Click")})
    assert answer.request.headers["content-type"].startswith("multipart/form-data")
    assert answer.status_code == 200
    assert status(conn, "analyst+ssb@example.org") == "unsubscribed"


def test_the_button_of_the_page_sends_what_one_click_sends(client, config, conn):
    token = token_for(config, conn, "mara.ilves@example.org")
    page = client.get(f"/u/{token}").text
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]+)">', page))
    assert fields == ONE_CLICK
    assert client.post(f"/u/{token}", data=fields).status_code == 200
    assert status(conn, "mara.ilves@example.org") == "unsubscribed"


def test_the_next_send_skips_who_unsubscribed(client, config, conn, project):
    token = token_for(config, conn, "mara.ilves@example.org")
    person = subscribers.get(conn, "mara.ilves@example.org")
    assert client.post(f"/u/{token}", data=ONE_CLICK).status_code == 200
    result = CliRunner().invoke(cli, ["--project", str(project), "send", "--date", "2026-11-24"])
    assert result.exit_code == 0, result.output
    names = os.listdir(project / "outbox/2026-11-24/mail/new")
    assert len(names) == subscribers.count_by_status(conn)["active"]
    assert not [n for n in names if n.startswith(f"{person.id}.")]


def forged_tokens(config, conn) -> list[str]:
    real = token_for(config, conn, "mara.ilves@example.org")
    number, mac = real.split(".")
    other_list = messages.unsubscribe_token(secret_key(config), int(number), "other.example.org")
    other_key = messages.unsubscribe_token(b"not the key", int(number), config.sender.list_id)
    flipped = mac[:-1] + ("0" if mac[-1] != "0" else "1")
    return [f"{number}.{flipped}", other_list, other_key, f"{int(number) + 1}.{mac}"]


MALFORMED = ["1", "1.", ".abc", "1.xyz", "01." + "0" * 32, "1." + "0" * 31, "1." + "0" * 33,
             "-1." + "0" * 32, "9" * 19 + "." + "0" * 32, "1.%C3%A9" + "0" * 30, "%00"]


def test_a_forged_or_malformed_token_answers_400_changes_nothing_and_names_nobody(client, config, conn):
    before = subscribers.count_by_status(conn)
    for token in forged_tokens(config, conn) + MALFORMED:
        for answer in (client.get(f"/u/{token}"), client.post(f"/u/{token}", data=ONE_CLICK)):
            assert answer.status_code == 400, token
            assert "not one of ours" in answer.text
            assert "@example" not in answer.text
    assert subscribers.count_by_status(conn) == before


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=st.text(min_size=1, max_size=80))
def test_any_other_token_is_refused_without_a_change(client, conn, token):
    before = subscribers.count_by_status(conn)
    answer = client.post(f"/u/{urllib.parse.quote(token, safe='')}", data=ONE_CLICK)
    assert answer.status_code in (400, 404, 405)  # 404/405: a "/" in it leaves the route
    assert subscribers.count_by_status(conn) == before


def test_a_valid_token_of_an_erased_subscriber_gets_the_generic_page(client, config, conn):
    token = token_for(config, conn, "mara.ilves@example.org")
    subscribers.remove(conn, "mara.ilves@example.org")
    for answer in (client.get(f"/u/{token}"), client.post(f"/u/{token}", data=ONE_CLICK)):
        assert answer.status_code == 200
        assert "You are unsubscribed" in answer.text and "mara" not in answer.text


def test_a_post_without_one_click_is_refused(client, config, conn):
    token = token_for(config, conn, "mara.ilves@example.org")
    for data in ({}, {"List-Unsubscribe": "yes"}, {"something": "else"}):
        answer = client.post(f"/u/{token}", data=data)
        assert answer.status_code == 400 and "List-Unsubscribe=One-Click" in answer.text
    assert client.post(f"/u/{token}", content=b'{"List-Unsubscribe": "One-Click"}',
                       headers={"content-type": "application/json"}).status_code == 415
    assert status(conn, "mara.ilves@example.org") == "active"


def test_other_methods_are_not_allowed(client, config, conn):
    token = token_for(config, conn, "mara.ilves@example.org")
    for method in ("PUT", "DELETE", "PATCH"):
        answer = client.request(method, f"/u/{token}")
        assert answer.status_code == 405 and answer.headers["allow"] == "GET, HEAD, POST"
    assert client.put("/confirm/1.2.3").status_code == 405
    refused = client.get("/subscribe")
    assert refused.status_code == 405 and refused.headers["allow"] == "POST"
    assert status(conn, "mara.ilves@example.org") == "active"


def test_an_oversized_body_answers_413_and_changes_nothing(client, config, conn):
    token = token_for(config, conn, "mara.ilves@example.org")
    padding = "x" * FORM_LIMIT
    answer = client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click", "pad": padding})
    assert answer.status_code == 413

    def chunks():  # no Content-Length: the limit holds on the bytes read
        yield b"List-Unsubscribe=One-Click&pad="
        for _ in range(20):
            yield b"x" * 1024

    answer = client.post(f"/u/{token}", content=chunks(),
                         headers={"content-type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 413
    assert client.post("/subscribe", data={"email": "a@example.com", "pad": padding}).status_code == 413
    assert status(conn, "mara.ilves@example.org") == "active"


# --------------------------------------------------------------------------- sign-up


def confirm_link(message) -> str:
    text = message.get_body(("plain",)).get_content()
    return re.search(r"https://ssb\.newsletter\.example\.org(/confirm/\S+)", text)[1]


def test_sign_up_records_pending_and_sends_a_confirmation_that_activates(client, config, conn, clock):
    answer = client.post("/subscribe", data={"email": "New.Reader@Example.com"})
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    [message] = confirmations(config, clock)
    assert status(conn, "new.reader@example.com") == "pending"
    assert message["To"] == "New.Reader@example.com"
    assert message["From"] == config.sender.from_address
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["Message-ID"].endswith("@ssb.newsletter.example.org>") and message["Date"]
    path = confirm_link(message)
    assert f'href="https://ssb.newsletter.example.org{path}"' in message.get_body(("html",)).get_content()

    page = client.get(path)
    assert page.status_code == 200 and "Confirm your subscription" in page.text and "<button" in page.text
    assert status(conn, "new.reader@example.com") == "pending"  # a GET confirms nothing
    done = client.post(path, data={"confirm": "yes"})
    assert done.status_code == 200 and "You are subscribed" in done.text
    assert status(conn, "new.reader@example.com") == "active"
    assert client.post(path, data={"confirm": "yes"}).status_code == 200  # twice is fine


def test_sign_up_looks_the_same_for_everyone_and_mails_what_fits_each(client, config, conn, clock):
    subscribers.unsubscribe(conn, "zoe.akesson@example.com")
    subscribers.set_status(conn, subscribers.get(conn, "lukasz.wrobel@example.net").id, "bounced")
    fresh = client.post("/subscribe", data={"email": "fresh@example.com"}).text
    for address in ("mara.ilves@example.org", "zoe.akesson@example.com", "lukasz.wrobel@example.net"):
        page = client.post("/subscribe", data={"email": address})
        assert page.status_code == 200
        assert page.text.replace(address, "ADDRESS") == fresh.replace("fresh@example.com", "ADDRESS")
    sent = {m["To"]: m["Subject"] for m in confirmations(config, clock)}
    name = config.newsletter.name
    assert sent == {"fresh@example.com": f"Confirm your subscription to {name}",
                    "mara.ilves@example.org": f"You are already subscribed to {name}",
                    "zoe.akesson@example.com": f"Confirm your subscription to {name}"}
    assert "/confirm/" not in [m for m in confirmations(config, clock) if m["To"] == "mara.ilves@example.org"][0] \
        .get_body(("plain",)).get_content()
    assert (status(conn, "mara.ilves@example.org"), status(conn, "lukasz.wrobel@example.net")) == ("active", "bounced")


def test_who_unsubscribed_rejoins_only_by_the_new_confirmation_button(client, config, conn, clock):
    subscribers.unsubscribe(conn, "zoe.akesson@example.com")
    client.post("/subscribe", data={"email": "zoe.akesson@example.com"})
    [message] = confirmations(config, clock)
    # anyone can type their address: until the button, the record still says they left
    assert status(conn, "zoe.akesson@example.com") == "unsubscribed"
    path = confirm_link(message)
    assert client.get(path).status_code == 200
    assert status(conn, "zoe.akesson@example.com") == "unsubscribed"
    assert client.post(path, data={"confirm": "yes"}).status_code == 200
    assert status(conn, "zoe.akesson@example.com") == "active"


def test_a_stranger_typing_an_unsubscribed_address_lets_no_import_bring_it_back(client, config, conn, clock, tmp_path):
    subscribers.unsubscribe(conn, "zoe.akesson@example.com")
    client.post("/subscribe", data={"email": "zoe.akesson@example.com"})
    path = confirm_link(confirmations(config, clock)[0])
    old_list = tmp_path / "old.csv"
    old_list.write_text("email,status\nzoe.akesson@example.com,subscribed\n")
    importer.import_file(conn, old_list)
    assert status(conn, "zoe.akesson@example.com") == "unsubscribed"
    assert client.post(path, data={"confirm": "yes"}).status_code == 200  # their own button still works
    assert status(conn, "zoe.akesson@example.com") == "active"


def test_sign_up_refuses_a_missing_or_invalid_address(client, conn):
    before = subscribers.count_by_status(conn)
    assert client.post("/subscribe", data={}).status_code == 400
    assert client.post("/subscribe", data={"email": "   "}).status_code == 400
    for bad in ("not an address", "a@b", "x@example.com\r\nBcc: victim@example.org", "=?utf-8?q?a?=@example.com"):
        answer = client.post("/subscribe", data={"email": bad})
        assert answer.status_code == 400, bad
        assert "not a valid" in answer.text and "Check the address" in answer.text
    assert subscribers.count_by_status(conn) == before


def test_one_address_gets_at_most_three_mails_a_day_but_the_page_never_refuses(client, config, conn, clock):
    first = None
    for n in range(signup.ADDRESS_LIMIT + 3):
        clock.now = NOW + timedelta(hours=n)
        page = client.post("/subscribe", data={"email": "FLOOD@example.com" if n % 2 else "flood@example.com"})
        assert page.status_code == 200, n  # an attacker's requests cannot lock the owner out of the page
        first = first or page.text.replace("FLOOD", "flood")
        assert page.text.replace("FLOOD", "flood") == first
        confirmations(config, clock)
    # the same for an address already active: the limit tells nothing about the list
    for _ in range(signup.ADDRESS_LIMIT + 1):
        assert client.post("/subscribe", data={"email": "mara.ilves@example.org"}).status_code == 200
    sent = [m["To"].lower() for m in confirmations(config, clock)]
    assert sent.count("flood@example.com") == sent.count("mara.ilves@example.org") == signup.ADDRESS_LIMIT
    # a rolling window in the server's clock: 24 hours after the first mail, one more may go
    clock.now = NOW + timedelta(hours=24, seconds=1)
    client.post("/subscribe", data={"email": "flood@example.com"})
    assert len(confirmations(config, clock)) == 2 * signup.ADDRESS_LIMIT + 1


def test_one_client_gets_a_bounded_number_of_sign_ups_an_hour(client, conn):
    for n in range(signup.IP_LIMIT):
        assert client.post("/subscribe", data={"email": f"reader{n}@example.com"}).status_code == 200
    refused = client.post("/subscribe", data={"email": "one.more@example.com"})
    assert refused.status_code == 429 and "your network" in refused.text
    with pytest.raises(subscribers.SubscriberError):
        subscribers.get(conn, "one.more@example.com")


def test_confirmation_tokens_are_signed_expire_and_differ_from_unsubscribe_tokens(client, config, conn, clock):
    client.post("/subscribe", data={"email": "late@example.com"})
    path = confirm_link(confirmations(config, clock)[0])
    person = subscribers.get(conn, "late@example.com")
    unsubscribe = messages.unsubscribe_token(secret_key(config), person.id, config.sender.list_id)
    number, expires, mac = path.rsplit("/", 1)[1].split(".")
    forged = [f"{number}.{int(expires) + 86400}.{mac}", f"{int(number) + 1}.{expires}.{mac}", unsubscribe,
              "1.2.3", "x"]
    for token in forged:
        assert client.get(f"/confirm/{token}").status_code == 400, token
        assert client.post(f"/confirm/{token}").status_code == 400, token
    # and the other way round: the confirmation token does not unsubscribe
    assert client.post(f"/u/{path.rsplit('/', 1)[1]}", data=ONE_CLICK).status_code == 400
    clock.now = NOW + timedelta(days=signup.CONFIRM_DAYS, seconds=1)
    expired = client.post(path)
    assert expired.status_code == 400 and "expired" in expired.text
    assert status(conn, "late@example.com") == "pending"


def test_an_old_confirmation_link_does_not_bring_back_who_unsubscribed(client, config, conn, clock):
    client.post("/subscribe", data={"email": "gone@example.com"})
    path = confirm_link(confirmations(config, clock)[0])
    subscribers.unsubscribe(conn, "gone@example.com")
    assert client.post(path).status_code == 400
    assert status(conn, "gone@example.com") == "unsubscribed"


def test_pending_subscribers_receive_no_issue_and_the_cli_shows_them(client, config, conn, project, clock):
    client.post("/subscribe", data={"email": "waiting@example.com"})
    confirmations(config, clock)
    person = subscribers.get(conn, "waiting@example.com")
    runner = CliRunner()
    result = runner.invoke(cli, ["--project", str(project), "send", "--date", "2026-11-24"])
    assert result.exit_code == 0, result.output
    assert not [n for n in os.listdir(project / "outbox/2026-11-24/mail/new") if n.startswith(f"{person.id}.")]
    listed = runner.invoke(cli, ["--project", str(project), "subscribers", "list", "--status", "pending"])
    assert listed.exit_code == 0 and "waiting@example.com" in listed.output and "(1 subscriber)" in listed.output
    counted = runner.invoke(cli, ["--project", str(project), "subscribers", "count"])
    assert "pending              1" in counted.output
    shown = runner.invoke(cli, ["--project", str(project), "subscribers", "show", "waiting@example.com"])
    assert "status:   pending" in shown.output


# --------------------------------------------------------------------------- the archive it serves


def test_the_archive_is_served_with_its_pages_feed_and_a_404_page(client):
    assert "Past issues" in client.get("/").text
    issue = client.get("/archive/2026/11/26/")
    assert issue.status_code == 200 and "Negotiators Agree Outline" in issue.text
    assert client.get("/feed.xml").headers["content-type"].startswith(("application/xml", "text/xml"))
    assert "personal unsubscribe link" in client.get("/unsubscribe/").text
    missing = client.get("/archive/2026/11/20/")
    assert missing.status_code == 404 and "<main" in missing.text and 'href="../../../../"' in missing.text
    assert missing.headers["x-content-type-options"] == "nosniff"


# --------------------------------------------------------------------------- one message, outside an issue


def test_send_single_writes_a_maildir_message_atomically(config):
    path = send_single(config, b"Subject: hi\r\n\r\nbody\r\n", "a@example.com")
    maildir = confirmations_maildir(config)
    assert path.parent == maildir / "new" and path.read_bytes().startswith(b"Subject: hi")
    assert (maildir / "cur").is_dir() and list((maildir / "tmp").iterdir()) == []


# --------------------------------------------------------------------------- live preview


ARTICLE = """---
title: {title}
section: Nuclear
summary: A short summary for the table of contents.
---
Body of the article, a paragraph long.
"""


def test_preview_shows_the_issue_and_rebuilds_when_an_article_changes(config):
    day_folder = config.articles_dir / "2026-11-27"
    day_folder.mkdir()
    article = day_folder / "one.md"
    article.write_text(ARTICLE.format(title="First Title Of The Day"))
    preview = TestClient(make_preview_app(config, datetime(2026, 11, 27).date()))
    page = preview.get("/")
    assert page.status_code == 200 and "First Title Of The Day" in page.text
    assert 'fetch("/version"' in page.text and page.text.index("<script>") < page.text.index("</body>")
    assert preview.get("/version").text == "1" and preview.get("/version").text == "1"

    article.write_text(ARTICLE.format(title="Second Title After Saving"))
    later = time.time() + 5
    os.utime(article, (later, later))
    assert preview.get("/version").text == "2"
    assert "Second Title After Saving" in preview.get("/").text

    article.write_text("---\nsection: Nuclear\n---\nNo title here.\n")
    os.utime(article, (later + 5, later + 5))
    broken = preview.get("/")
    assert broken.status_code == 500
    assert "one.md" in broken.text and "title" in broken.text and 'fetch("/version"' in broken.text
    assert preview.get("/version").text == "3"


def test_preview_rebuilds_when_a_template_changes(config):
    preview = TestClient(make_preview_app(config, datetime(2026, 11, 26).date()))
    assert preview.get("/version").text == "1"
    (config.templates_dir / "partials").mkdir(parents=True)
    (config.templates_dir / "partials" / "box.html.j2").write_text("{{ undefined_name_in_box }}")
    assert preview.get("/version").text == "2"


def test_the_reload_script_is_in_the_preview_only_never_in_emails(sent):
    for path in (sent / "outbox").rglob("*"):
        if path.suffix in (".eml", ".html") and path.is_file():
            assert b"<script" not in path.read_bytes(), path


# --------------------------------------------------------------------------- [web] settings


@pytest.mark.parametrize("line, named", [
    ('allowed_origins = ["https://example.org/signup"]', "web.allowed_origins: 'https://example.org/signup'"),
    ('allowed_origins = ["example.org"]', "web.allowed_origins: 'example.org'"),
    ('trusted_proxies = ["10.0.0.300"]', "web.trusted_proxies: '10.0.0.300'"),
    ("request_timeout = 0", "web.request_timeout"),
])
def test_a_bad_web_setting_is_named_with_the_file(tmp_path, line, named):
    (tmp_path / "newsletter.toml").write_text(f"[web]\n{line}\n")
    with pytest.raises(NewsletterError) as caught:
        load_settings(tmp_path)
    assert str(caught.value).startswith(f"{tmp_path / 'newsletter.toml'}: {named}")
