"""The email services' webhooks: `newsletter serve` in its own process for each service's whole path
(a forged request changes nothing, a genuine one changes the list and the subscriber's history),
Starlette's TestClient for the details. Payloads in each service's documented format, signed with
keys the test makes (sns_parts.py)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import resource
import time
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from newsletter import events, store, subscribers
from newsletter.cli import app as cli
from newsletter.settings import load_settings
from newsletter.web.app import make_app
from newsletter.web.webhooks import BODY_LIMIT
from sent_project import copy_project, make_sent_project
from sns_parts import (  # noqa: F401
    TOPIC, authority, aws, confirmation, notification, ses_bounce, ses_complaint, signer,
)
from test_services import mailgun_event, postmark_bounce
from test_web_serve import Server

PASSWORD = "correct horse battery staple"
SIGNING_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"


@pytest.fixture(scope="module")
def sent(tmp_path_factory) -> Path:
    return make_sent_project(tmp_path_factory.mktemp("webhooks") / "project", days=("2026-11-25", "2026-11-26"))


@pytest.fixture
def project(sent, tmp_path, aws, monkeypatch) -> Path:
    """A sent project with all three webhooks on, their secrets in the environment."""
    project = copy_project(sent, tmp_path / "project")
    with (project / "newsletter.toml").open("a") as toml:
        toml.write(f"""
[webhooks.ses]
enabled = true
topics = ["{TOPIC}"]
cert_hosts = '127\\.0\\.0\\.1'
ca_file = "{aws.ca_file}"

[webhooks.postmark]
enabled = true

[webhooks.mailgun]
enabled = true
""")
    monkeypatch.setenv("NEWSLETTER_POSTMARK_PASSWORD", PASSWORD)
    monkeypatch.setenv("NEWSLETTER_MAILGUN_SIGNING_KEY", SIGNING_KEY)
    return project


@pytest.fixture
def serve(project):
    servers: list[Server] = []
    yield lambda: servers.append(Server(project)) or servers[-1]
    for server in servers:
        server.stop()


@pytest.fixture
def client(project) -> TestClient:
    # the real clock: the certificates and Mailgun's timestamps are made now
    return TestClient(make_app(load_settings(project)))


def person(project: Path, address: str) -> tuple[str, list[events.Event]]:
    """Return the status and the history of ADDRESS."""
    with contextlib.closing(store.connect(project / "subscribers" / "newsletter.db")) as conn:
        found = subscribers.get(conn, address)
        return found.status, events.history(conn, found.id)


def message_id(project: Path, address: str, day: str) -> str:
    with contextlib.closing(store.connect(project / "subscribers" / "newsletter.db")) as conn:
        return conn.execute("SELECT message_id FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id"
                            " WHERE s.email = ? AND d.issue_day = ?", (address, day)).fetchone()[0]


def sns_post(client, fields: dict):
    return client.post("/webhooks/ses", content=json.dumps(fields),
                       headers={"Content-Type": "text/plain; charset=UTF-8",
                                "x-amz-sns-message-type": fields["Type"]})


def mailgun_payload(event: dict, timestamp: float | None = None, token: str = "f" * 50, key: str = SIGNING_KEY) -> dict:
    stamp = str(int(time.time() if timestamp is None else timestamp))
    signature = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    return {"signature": {"timestamp": stamp, "token": token, "signature": signature}, "event-data": event}


# --------------------------------------------------------------------------- through `newsletter serve`


def test_ses_through_serve_confirms_the_topic_refuses_a_forgery_and_applies_a_bounce(serve, project, aws, signer,
                                                                                       authority):
    server = serve()
    confirm_url = aws.url + "/confirm?Action=ConfirmSubscription&TopicArn=x&Token=2336412f"
    assert sns_post(server.client, confirmation(confirm_url, aws.cert_url, signer[0])).status_code == 200
    assert "/confirm?Action=ConfirmSubscription&TopicArn=x&Token=2336412f" in aws.requests

    address = "mara.ilves@example.org"
    bounce = ses_bounce(address, message_id=message_id(project, address, "2026-11-25"))
    forger, _ = authority.issue("sns.eu-west-1.amazonaws.com")  # a key the certificate does not hold
    assert sns_post(server.client, notification(bounce, aws.cert_url, forger)).status_code == 403
    tampered = notification(ses_bounce("someone@example.com"), aws.cert_url, signer[0]) | {"Message": json.dumps(bounce)}
    assert sns_post(server.client, tampered).status_code == 403
    status, history = person(project, address)
    assert status == "active" and not [e for e in history if e.source.startswith("webhook")]

    answer = sns_post(server.client, notification(bounce, aws.cert_url, signer[0], version="1"))
    assert answer.status_code == 200, answer.text
    status, history = person(project, address)
    [event] = [e for e in history if e.source == "webhook:ses"]
    assert status == "bounced"
    assert (event.kind, event.status, event.issue_day) == (events.Kind.BOUNCED, "5.1.1", "2026-11-25")
    assert "User unknown" in event.detail


def test_postmark_through_serve_wants_its_password(serve, project):
    server = serve()
    complaint = postmark_bounce("SpamComplaint", email="zoe.akesson@example.com", RecordType="SpamComplaint")
    anonymous = server.client.post("/webhooks/postmark", json=complaint)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Basic")
    assert server.client.post("/webhooks/postmark", json=complaint, auth=("postmark", "guess")).status_code == 401
    assert person(project, "zoe.akesson@example.com")[0] == "active"

    answer = server.client.post("/webhooks/postmark", json=complaint, auth=("postmark", PASSWORD))
    assert answer.status_code == 200, answer.text
    status, history = person(project, "zoe.akesson@example.com")
    assert status == "unsubscribed"
    assert [(e.kind, e.source) for e in history if e.source.startswith("webhook")] == [
        (events.Kind.COMPLAINT, "webhook:postmark")]


def test_mailgun_through_serve_refuses_forged_stale_and_replayed_signatures(serve, project):
    server = serve()
    address = "lukasz.wrobel@example.net"
    event = mailgun_event(recipient=address)
    event["message"]["headers"]["message-id"] = message_id(project, address, "2026-11-26").strip("<>")
    post = lambda payload: server.client.post("/webhooks/mailgun", json=payload)  # noqa: E731
    assert post(mailgun_payload(event, key="key-of-someone-else")).status_code == 403
    assert post(mailgun_payload(event, timestamp=time.time() - 3600, token="s" * 50)).status_code == 403
    assert person(project, address)[0] == "active"

    genuine = mailgun_payload(event)
    assert post(genuine).status_code == 200
    assert post(genuine).status_code == 403  # the same token again: a replay
    status, history = person(project, address)
    [bounced] = [e for e in history if e.source == "webhook:mailgun"]
    assert status == "bounced" and bounced.issue_day == "2026-11-26" and bounced.status == "5.1.1"
    assert not any("Traceback" in line for line in server.log), "".join(server.log)


# --------------------------------------------------------------------------- details, in process


def test_a_service_not_enabled_has_no_endpoint(sent, tmp_path):
    plain = TestClient(make_app(load_settings(copy_project(sent, tmp_path / "plain"))))
    for service in ("ses", "postmark", "mailgun"):
        assert plain.post(f"/webhooks/{service}", content=b"{}").status_code == 404


def test_serve_will_not_start_with_a_webhook_whose_secret_is_missing(project, monkeypatch):
    monkeypatch.delenv("NEWSLETTER_MAILGUN_SIGNING_KEY")
    result = CliRunner().invoke(cli, ["--project", str(project), "serve", "--port", "9"])
    assert result.exit_code == 1
    assert "Error: [webhooks.mailgun] is enabled but NEWSLETTER_MAILGUN_SIGNING_KEY is not set" in result.output


def test_the_same_event_twice_an_unknown_address_and_a_soft_bounce(client, project, aws, signer):
    again = notification(ses_complaint("analyst+ssb@example.org"), aws.cert_url, signer[0])
    assert "active -> unsubscribed" in sns_post(client, again).text
    assert "already processed" in sns_post(client, again).text  # SNS delivers at least once
    unknown = notification(ses_bounce("nobody@example.com"), aws.cert_url, signer[0])
    answer = sns_post(client, unknown)
    assert answer.status_code == 200 and "not on the list" in answer.text
    soft = mailgun_payload(mailgun_event(severity="temporary", recipient="mara.ilves@example.org"))
    answer = client.post("/webhooks/mailgun", json=soft)
    assert answer.status_code == 200 and "temporary bounce counted" in answer.text
    assert person(project, "mara.ilves@example.org")[0] == "active"


@pytest.mark.parametrize("bounced_at, issue", [
    ("2026-11-25T10:00:00Z", "2026-11-25"),  # before the 26th was sent
    ("2026-11-27T10:00:00Z", "2026-11-26"),  # the latest issue delivered before it
])
def test_a_report_without_our_message_id_is_about_the_latest_issue_sent_before_it(client, project, bounced_at, issue):
    payload = postmark_bounce(email="zoe.akesson@example.com", BouncedAt=bounced_at)
    assert client.post("/webhooks/postmark", json=payload, auth=("postmark", PASSWORD)).status_code == 200
    [event] = [e for e in person(project, "zoe.akesson@example.com")[1] if e.source == "webhook:postmark"]
    assert event.issue_day == issue


def test_bodies_that_are_too_large_or_not_json(client):
    huge = client.post("/webhooks/mailgun", content=b"{" + b" " * BODY_LIMIT + b"}")
    assert huge.status_code == 413
    assert client.post("/webhooks/mailgun", content=b"event=failed").status_code == 400
    assert client.post("/webhooks/postmark", content=b"[1]", auth=("postmark", PASSWORD)).status_code == 400


def test_an_endpoint_refuses_other_methods(client):
    assert client.get("/webhooks/ses").status_code in (404, 405)
    assert httpx.codes.is_error(client.put("/webhooks/mailgun", content=b"{}").status_code)

@pytest.mark.sqlite_only  # a full disk under the SQLite file
def test_a_mailgun_event_refused_for_a_full_disk_is_taken_when_mailgun_retries_it(serve, project):
    server = serve()
    genuine = mailgun_payload(mailgun_event(recipient="zoe.akesson@example.com"), token="r" * 50)
    soft, hard = resource.prlimit(server.process.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(server.process.pid, resource.RLIMIT_FSIZE, (0, hard))  # no file of serve's may grow
    try:
        refused = server.client.post("/webhooks/mailgun", json=genuine)
    finally:
        resource.prlimit(server.process.pid, resource.RLIMIT_FSIZE, (soft, hard))
    assert refused.status_code == 503 and person(project, "zoe.akesson@example.com")[0] == "active"
    retried = server.client.post("/webhooks/mailgun", json=genuine)  # the same signed request, again
    assert retried.status_code == 200, retried.text
    assert person(project, "zoe.akesson@example.com")[0] == "bounced"
