"""The services' payloads read into reports, Postmark's basic auth, Mailgun's signatures and replay guard."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.web import services
from newsletter.web.services import (
    COMPLAINT, HARD_BOUNCE, SOFT_BOUNCE, UNSUBSCRIBE, MailgunSignatures, Report, WebhookRefused,
)
from sns_parts import ses_bounce, ses_complaint

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)

# --------------------------------------------------------------------------- SES


def test_an_ses_permanent_bounce_is_a_hard_bounce_with_its_status_and_message_id():
    [report] = services.ses_reports(json.dumps(ses_bounce("Gone@Example.com", message_id="<20261126.7.abc@x.org>")))
    assert report == Report(HARD_BOUNCE, "Gone@Example.com", "ses", "ses:0100018c-bounce-0001:gone@example.com",
                            "5.1.1", "smtp; 550 5.1.1 <Gone@Example.com>... User unknown", "<20261126.7.abc@x.org>",
                            datetime(2026, 11, 26, 6, 0, 5, tzinfo=timezone.utc))


@pytest.mark.parametrize("bounce_type", ["Transient", "Undetermined"])
def test_an_ses_bounce_that_is_not_permanent_is_soft(bounce_type):
    [report] = services.ses_reports(json.dumps(ses_bounce("full@example.com", bounce_type, status="4.2.2")))
    assert report.kind == SOFT_BOUNCE and report.status == "4.2.2" and report.message_id == ""


def test_an_ses_bounce_of_several_recipients_is_one_report_each():
    notification = ses_bounce("a@example.com")
    notification["bounce"]["bouncedRecipients"].append({"emailAddress": "b@example.com", "status": "5.1.1"})
    assert [r.email for r in services.ses_reports(json.dumps(notification))] == ["a@example.com", "b@example.com"]


def test_an_ses_complaint_and_an_event_publishing_bounce():
    [complaint] = services.ses_reports(json.dumps(ses_complaint("angry@example.com")))
    assert (complaint.kind, complaint.email, complaint.diagnostic) == (COMPLAINT, "angry@example.com", "abuse")
    published = ses_bounce("gone@example.com")
    published["eventType"] = published.pop("notificationType")  # SES event publishing names it so
    assert [r.kind for r in services.ses_reports(json.dumps(published))] == [HARD_BOUNCE]


def test_ses_deliveries_and_not_spam_reports_say_nothing():
    assert services.ses_reports(json.dumps({"notificationType": "Delivery", "mail": {}, "delivery": {}})) == []
    not_spam = ses_complaint("fine@example.com")
    not_spam["complaint"]["complaintFeedbackType"] = "not-spam"
    assert services.ses_reports(json.dumps(not_spam)) == []


# --------------------------------------------------------------------------- Postmark


def postmark_bounce(kind: str = "HardBounce", email: str = "gone@example.com", **extra) -> dict:
    return {"RecordType": "Bounce", "ID": 4323372036854775807, "Type": kind, "TypeCode": 1,
            "Name": "Hard bounce", "Tag": "", "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
            "ServerID": 23, "MessageStream": "broadcast",
            "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
            "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
            "Email": email, "From": "bulletin@newsletter.example.org", "BouncedAt": "2026-11-26T06:01:10Z",
            "DumpAvailable": True, "Inactive": True, "CanActivate": True, "Subject": "The bulletin", **extra}


@pytest.mark.parametrize("kind, expected", [
    ("HardBounce", HARD_BOUNCE), ("BadEmailAddress", HARD_BOUNCE), ("SoftBounce", SOFT_BOUNCE),
    ("Transient", SOFT_BOUNCE), ("Unsubscribe", UNSUBSCRIBE),
])
def test_postmark_bounce_types(kind, expected):
    [report] = services.postmark_reports(postmark_bounce(kind))
    assert report.kind == expected and report.status == "5.1.1" and report.source == "postmark"
    assert report.at == datetime(2026, 11, 26, 6, 1, 10, tzinfo=timezone.utc)


def test_a_postmark_spam_complaint_and_an_auto_reply():
    complaint = postmark_bounce("SpamComplaint", RecordType="SpamComplaint", TypeCode=100001, Details="")
    assert [r.kind for r in services.postmark_reports(complaint)] == [COMPLAINT]
    assert services.postmark_reports(postmark_bounce("AutoResponder")) == []


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_auth_accepts_only_the_right_pair():
    services.check_basic_auth(basic("postmark", "s3cret:with colon"), "postmark", "s3cret:with colon")
    for header in (basic("postmark", "wrong"), basic("other", "s3cret"), "", "Basic !!!", "Bearer abc",
                   "Basic " + base64.b64encode(b"postmark").decode()):
        with pytest.raises(WebhookRefused) as refused:
            services.check_basic_auth(header, "postmark", "s3cret")
        assert refused.value.status == 401 and refused.value.headers["WWW-Authenticate"].startswith("Basic")


# --------------------------------------------------------------------------- Mailgun

KEY = b"key-test-signing-0123456789abcdef"


def mailgun_signature(timestamp: float, token: str = "a" * 50, key: bytes = KEY) -> dict:
    stamp = str(int(timestamp))
    return {"timestamp": stamp, "token": token,
            "signature": hmac.new(key, (stamp + token).encode(), hashlib.sha256).hexdigest()}


def test_a_mailgun_signature_is_checked_once_and_only_while_fresh():
    guard = MailgunSignatures(KEY, max_age=300)
    signature = mailgun_signature(NOW.timestamp() - 10)
    guard.check(signature, NOW)
    with pytest.raises(WebhookRefused, match="already used"):
        guard.check(signature, NOW + timedelta(seconds=5))
    with pytest.raises(WebhookRefused, match="stale or replayed"):
        guard.check(mailgun_signature(NOW.timestamp() - 301, token="b" * 50), NOW)
    with pytest.raises(WebhookRefused, match="does not match"):
        guard.check(mailgun_signature(NOW.timestamp(), token="c" * 50, key=b"another key"), NOW)
    with pytest.raises(WebhookRefused, match="does not match"):
        guard.check({}, NOW)


def test_mailgun_tokens_are_forgotten_after_the_window():
    guard = MailgunSignatures(KEY, max_age=300)
    for n in range(100):
        guard.check(mailgun_signature(NOW.timestamp(), token=f"{n:050d}"), NOW)
    guard.check(mailgun_signature(NOW.timestamp() + 400, token="z" * 50), NOW + timedelta(seconds=400))
    assert len(guard._seen) == 1


def mailgun_event(event: str = "failed", severity: str = "permanent", recipient: str = "gone@example.com") -> dict:
    return {"id": "G9Bn5sl1TC6nu79C8C0bwg", "timestamp": 1795683670.123, "log-level": "error", "event": event,
            "severity": severity, "reason": "bounce", "recipient": recipient, "recipient-domain": "example.com",
            "envelope": {"transport": "smtp", "sender": "bulletin@newsletter.example.org", "targets": recipient},
            "delivery-status": {"attempt-no": 1, "code": 550, "enhanced-code": "5.1.1",
                                "message": "5.1.1 The email account that you tried to reach does not exist",
                                "description": "", "session-seconds": 0.4},
            "message": {"headers": {"to": recipient, "message-id": "20261126.7.0123456789ab@newsletter.example.org",
                                    "from": "bulletin@newsletter.example.org", "subject": "The bulletin"},
                        "attachments": [], "size": 24570},
            "user-variables": {}, "tags": [], "campaigns": []}


def test_mailgun_events():
    [hard] = services.mailgun_reports(mailgun_event())
    assert (hard.kind, hard.status, hard.message_id) == (HARD_BOUNCE, "5.1.1", "<20261126.7.0123456789ab@newsletter.example.org>")
    assert services.mailgun_reports(mailgun_event(severity="temporary"))[0].kind == SOFT_BOUNCE
    assert services.mailgun_reports(mailgun_event("complained"))[0].kind == COMPLAINT
    assert services.mailgun_reports(mailgun_event("unsubscribed"))[0].kind == UNSUBSCRIBE
    assert services.mailgun_reports(mailgun_event("delivered")) == []


# --------------------------------------------------------------------------- anything at all

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=4),
                           max_leaves=20)
shaped = st.fixed_dictionaries({}, optional={
    "notificationType": st.sampled_from(["Bounce", "Complaint", "Delivery"]) | json_values,
    "bounce": json_values, "complaint": json_values, "mail": json_values,
    "RecordType": st.sampled_from(["Bounce", "SpamComplaint"]) | json_values,
    "Type": st.sampled_from(["HardBounce", "SoftBounce"]) | json_values, "Email": json_values,
    "event": st.sampled_from(["failed", "complained"]) | json_values, "severity": json_values,
    "recipient": json_values, "delivery-status": json_values, "message": json_values, "timestamp": json_values,
})


@settings(max_examples=150, deadline=None)
@given(payload=shaped)
def test_any_json_payload_gives_reports_or_a_refusal_and_nothing_else(payload):
    for read in (lambda p: services.ses_reports(json.dumps(p)), services.postmark_reports, services.mailgun_reports):
        try:
            reports = read(payload)
        except WebhookRefused as err:
            assert err.status == 400
            continue
        assert all(isinstance(r, Report) and isinstance(r.email, str) and r.kind in
                   (HARD_BOUNCE, SOFT_BOUNCE, COMPLAINT, UNSUBSCRIBE) for r in reports)


def test_a_forgotten_mailgun_token_may_come_again():
    guard = MailgunSignatures(KEY, max_age=300)
    signature = mailgun_signature(NOW.timestamp())
    token = guard.check(signature, NOW)
    guard.forget(token)  # the request failed with 503: Mailgun's retry must not look like a replay
    guard.check(signature, NOW)
