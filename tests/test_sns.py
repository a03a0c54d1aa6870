"""SNS message verification against a signing certificate fetched over HTTPS from a server of the
test's own, its certificate issued by a CA the test makes (sns_parts.py)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from newsletter.web.services import WebhookRefused
from newsletter.web.sns import AWS_HOSTS, SnsVerifier, https_fetcher
from sns_parts import TOPIC, Authority, authority, aws, confirmation, notification, ses_bounce, signer  # noqa: F401

LOCAL = r"127\.0\.0\.1"


def verifier(aws, hosts: str = LOCAL, topics=(TOPIC,)) -> SnsVerifier:
    return SnsVerifier(topics, https_fetcher(aws.ca_file), hosts)


def body(fields: dict) -> bytes:
    return json.dumps(fields).encode()


NOW = datetime.now(timezone.utc)


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_signed_notification_is_believed_with_either_signature_version(aws, signer, version):
    message = notification(ses_bounce("gone@example.com"), aws.cert_url, signer[0], version)
    verified = verifier(aws).verify(body(message), NOW)
    assert verified.type == "Notification" and verified.topic_arn == TOPIC
    assert json.loads(verified.message)["bounce"]["bouncedRecipients"][0]["emailAddress"] == "gone@example.com"


@pytest.mark.parametrize("field, value", [
    ("Message", json.dumps(ses_bounce("someone.else@example.com"))),
    ("MessageId", "another-id"),
    ("Timestamp", "2020-01-01T00:00:00.000Z"),
    ("Type", "SubscriptionConfirmation"),
])
def test_a_notification_changed_after_signing_is_refused(aws, signer, field, value):
    message = notification(ses_bounce("gone@example.com"), aws.cert_url, signer[0]) | {field: value}
    with pytest.raises(WebhookRefused) as refused:
        verifier(aws).verify(body(message), NOW)
    assert refused.value.status in (400, 403)


def test_a_notification_signed_by_another_key_is_refused(aws, authority):
    stranger, _ = authority.issue("sns.eu-west-1.amazonaws.com")
    message = notification(ses_bounce("gone@example.com"), aws.cert_url, stranger)
    with pytest.raises(WebhookRefused, match="signature does not match") as refused:
        verifier(aws).verify(body(message), NOW)
    assert refused.value.status == 403


def test_a_certificate_url_off_the_allowed_hosts_is_never_fetched(aws, signer):
    message = notification(ses_bounce("gone@example.com"), aws.cert_url, signer[0])
    with pytest.raises(WebhookRefused, match="not an https URL on an SNS host") as refused:
        verifier(aws, hosts=AWS_HOSTS).verify(body(message), NOW)  # the AWS rule: 127.0.0.1 is not SNS
    assert refused.value.status == 403 and aws.requests == []
    plain = notification(ses_bounce("gone@example.com"), aws.cert_url.replace("https:", "http:"), signer[0])
    with pytest.raises(WebhookRefused, match="not an https URL"):
        verifier(aws).verify(body(plain), NOW)
    assert aws.requests == []


@pytest.mark.parametrize("host, allowed", [
    ("sns.eu-west-1.amazonaws.com", True),
    ("sns.cn-north-1.amazonaws.com.cn", True),
    ("sns.eu-west-1.amazonaws.com.evil.example", False),
    ("evil.example", False),
    ("sns.eu-west-1.amazonaws.com@evil.example", False),
    ("s3.amazonaws.com", False),
])
def test_the_aws_host_rule(host, allowed):
    check = SnsVerifier((TOPIC,), fetch=lambda url: b"", hosts=AWS_HOSTS).check_url
    if allowed:
        check(f"https://{host}/SimpleNotificationService-abc.pem", "SigningCertURL")
    else:
        with pytest.raises(WebhookRefused):
            check(f"https://{host}/SimpleNotificationService-abc.pem", "SigningCertURL")


def test_a_topic_not_configured_is_refused_before_any_fetch(aws, signer):
    message = notification(ses_bounce("gone@example.com"), aws.cert_url, signer[0],
                           topic="arn:aws:sns:eu-west-1:999999999999:someone-else")
    with pytest.raises(WebhookRefused, match="not in \\[webhooks.ses\\] topics"):
        verifier(aws).verify(body(message), NOW)
    assert aws.requests == []


def test_the_certificate_is_fetched_once_for_many_messages(aws, signer):
    check = verifier(aws)
    for n in range(5):
        check.verify(body(notification(ses_bounce(f"r{n}@example.com"), aws.cert_url, signer[0])), NOW)
    assert aws.requests == ["/SimpleNotificationService-test.pem"]


def test_an_expired_signing_certificate_is_refused(aws, signer):
    message = notification(ses_bounce("gone@example.com"), aws.cert_url, signer[0])
    with pytest.raises(WebhookRefused, match="is not valid at"):
        verifier(aws).verify(body(message), NOW + timedelta(days=60))


def test_a_certificate_server_the_ca_does_not_vouch_for_is_not_believed(aws, signer, tmp_path):
    other = Authority().write(tmp_path / "other-ca.pem")
    message = notification(ses_bounce("gone@example.com"), aws.cert_url, signer[0])
    with pytest.raises(WebhookRefused) as refused:
        SnsVerifier((TOPIC,), https_fetcher(other), LOCAL).verify(body(message), NOW)
    assert refused.value.status == 503  # TLS failed: nothing believed, SNS tries again later


def test_a_subscription_is_confirmed_at_its_url_only_on_an_allowed_host(aws, signer):
    check = verifier(aws)
    message = check.verify(body(confirmation(aws.url + "/confirm?Action=ConfirmSubscription&Token=abc",
                                             aws.cert_url, signer[0])), NOW)
    check.confirm(message)
    assert aws.requests[-1] == "/confirm?Action=ConfirmSubscription&Token=abc"
    elsewhere = check.verify(body(confirmation("https://evil.example/confirm", aws.cert_url, signer[0])), NOW)
    with pytest.raises(WebhookRefused, match="SubscribeURL"):
        check.confirm(elsewhere)
    assert len(aws.requests) == 2  # the certificate and the one good confirmation


@pytest.mark.parametrize("payload", [b"not json", b"[]", b'{"Type": "Notification"}', b'{"Type": "Other"}'])
def test_a_body_that_is_not_an_sns_message_is_a_bad_request(aws, payload):
    with pytest.raises(WebhookRefused) as refused:
        verifier(aws).verify(payload, NOW)
    assert refused.value.status == 400 and aws.requests == []
