"""DKIM (EMAIL.md rule 20): every message signed over its final bytes, verified offline with dkimpy."""

from __future__ import annotations

import base64
import email
import email.policy
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import dkim
import pytest

from newsletter import messages
from newsletter.delivery.smtp import WireMessages, stuff
from newsletter.errors import SettingsError
from newsletter.models import GREETING_PLACEHOLDER, TOKEN_PLACEHOLDER, Issue, RenderedIssue, Subscriber
from newsletter.settings import Settings, load_settings

WHEN = datetime(2026, 11, 26, 5, 0, tzinfo=timezone.utc)
ADA = Subscriber(3, "ada@example.net", "ada@example.net", "Ada Lovelace", "active", "", "")
BOB = Subscriber(4, "bob@example.net", "bob@example.net", "Bob", "active", "", "")


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> tuple[Path, bytes]:
    """A 2048-bit RSA key (PEM file) and the DNS TXT record that publishes its public half."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test key")
    folder = tmp_path_factory.mktemp("dkim")
    private = folder / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(private), "2048"], check=True, capture_output=True)
    public = subprocess.run(["openssl", "rsa", "-in", str(private), "-pubout", "-outform", "DER"],
                            check=True, capture_output=True).stdout
    return private, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def signed_settings(project: Path, keys, **dkim_values: str) -> Settings:
    shutil.copy(keys[0], project / "dkim.pem")
    values = {"selector": "news2026", "domain": "newsletter.example.org", "key_file": "dkim.pem", **dkim_values}
    return load_settings(project).replace("dkim", **values)


def dns_for(keys, selector: str = "news2026", domain: str = "newsletter.example.org"):
    """A DNS lookup that knows one record: the public key at SELECTOR._domainkey.DOMAIN."""
    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return keys[1] if name == f"{selector}._domainkey.{domain}.".encode() else None
    return lookup


def rendered() -> RenderedIssue:
    issue = Issue(day=WHEN.date(), number=7, subject="MDB November 26: Talks resume", preheader="Talks",
                  sections=(), archive_url="https://newsletter.example.org/2026-11-26/")
    html = f"<p>{GREETING_PLACEHOLDER}</p>\n<p>Talks.</p>\n<a href=\"https://newsletter.example.org/u/{TOKEN_PLACEHOLDER}\">x</a>\n"
    text = f"{GREETING_PLACEHOLDER}\n\n.Talks resumed.\n\nhttps://newsletter.example.org/u/{TOKEN_PLACEHOLDER}\n"
    return RenderedIssue(issue, html, text)


def signed_message(settings: Settings, person: Subscriber = ADA) -> bytes:
    template = messages.MessageTemplate.build(rendered(), settings, b"k" * 32, WHEN,
                                              signer=messages.dkim_signer(settings))
    return template.personalize(person)


def test_a_signed_message_verifies_with_the_published_key(project, keys):
    raw = signed_message(signed_settings(project, keys))

    assert raw.startswith(b"DKIM-Signature: ")
    assert dkim.verify(raw, dnsfunc=dns_for(keys))


def test_the_signature_covers_the_list_headers_and_the_personal_ones(project, keys):
    raw = signed_message(signed_settings(project, keys))
    header = raw[: raw.index(b"\r\n\r\n")].decode("ascii")
    signature = re.search(r"^DKIM-Signature: (.*?)\r\n(?! )", header, re.S | re.M)[1]
    signed = {name.strip() for name in re.search(r"\bh=([^;]*)", re.sub(r"\s+", "", signature))[1].split(":")}

    assert {"from", "to", "subject", "date", "message-id", "list-id", "list-unsubscribe",
            "list-unsubscribe-post"} <= signed
    assert re.search(r"\bd=newsletter\.example\.org;", signature)
    assert re.search(r"\bs=news2026;", signature)


@pytest.mark.parametrize("tamper", [
    (b"Subject: MDB November 26: Talks resume", b"Subject: MDB November 26: Talks ended"),
    (b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: List-Unsubscribe=Nope"),
    (b"Talks resumed.", b"Talks resumer."),
    (b"To: Ada Lovelace <ada@example.net>", b"To: Ada Lovelace <eve@example.net>"),
])
def test_a_tampered_message_fails_verification(project, keys, tamper):
    raw = signed_message(signed_settings(project, keys))
    assert tamper[0] in raw

    assert not dkim.verify(raw.replace(tamper[0], tamper[1], 1), dnsfunc=dns_for(keys))


def test_each_subscribers_bytes_are_signed_on_the_fast_path(project, keys):
    settings = signed_settings(project, keys)
    template = messages.MessageTemplate.build(rendered(), settings, b"k" * 32, WHEN,
                                              signer=messages.dkim_signer(settings))
    ada, bob = template.personalize(ADA), template.personalize(BOB)
    wire = WireMessages(template).data(BOB)

    assert dkim.verify(ada, dnsfunc=dns_for(keys)) and dkim.verify(bob, dnsfunc=dns_for(keys))
    signature = re.compile(rb"\bb=([^;]*)$", re.S)
    head = lambda raw: raw[: raw.index(b"\r\nFrom: ")]  # noqa: E731 - the DKIM-Signature header
    assert signature.search(head(ada))[1] != signature.search(head(bob))[1]  # a signature of their own
    # what goes over SMTP is the signed message, dot-stuffed
    assert wire.startswith(b"DKIM-Signature: ") and wire.endswith(b"\r\n.\r\n") and b"\r\n..Talks resumed." in wire
    unstuffed = wire[:-3].replace(b"\r\n..", b"\r\n.")
    assert dkim.verify(unstuffed, dnsfunc=dns_for(keys))
    assert stuff(unstuffed) == wire


def test_a_domain_other_than_the_from_domain_is_an_error_at_start(project, keys):
    settings = signed_settings(project, keys, domain="mailer.example.com")

    with pytest.raises(SettingsError, match=r"\[dkim\] domain 'mailer.example.com' is not the From domain "
                                            r"'newsletter.example.org'"):
        messages.dkim_signer(settings)


@pytest.mark.parametrize("values, message", [
    ({"selector": ""}, r"\[dkim\] is half configured: selector missing"),
    ({"selector": "bad selector"}, r"selector 'bad selector' is not a DNS label"),
    ({"key_file": "missing.pem"}, r"key_file '.*missing.pem': cannot read it"),
])
def test_a_bad_dkim_setting_is_an_error_naming_it(project, keys, values, message):
    with pytest.raises(SettingsError, match=message):
        messages.dkim_signer(signed_settings(project, keys, **values))


def test_a_key_file_that_is_not_a_private_key_is_an_error(project, keys):
    settings = signed_settings(project, keys)
    (project / "dkim.pem").write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")

    with pytest.raises(SettingsError, match=r"key_file '.*dkim.pem': not a usable PEM private key"):
        messages.dkim_signer(settings)


def test_without_dkim_settings_messages_are_not_signed(project):
    settings = load_settings(project)

    assert messages.dkim_signer(settings) is messages.sign
    assert not signed_message(settings).startswith(b"DKIM-Signature")


def test_a_confirmation_mail_is_signed_like_an_issue(project, keys):
    from newsletter.renderer import make_environment
    from newsletter.web.signup import confirmation_message

    settings = signed_settings(project, keys)
    person = Subscriber(5, "new@example.net", "new@example.net", "", "pending", "", "")
    raw = confirmation_message(settings, make_environment(settings), person,
                               "https://newsletter.example.org/confirm/x", WHEN)

    assert raw.startswith(b"DKIM-Signature: ")
    assert dkim.verify(raw, dnsfunc=dns_for(keys))
    unsigned = confirmation_message(load_settings(project), make_environment(settings), person,
                                    "https://newsletter.example.org/confirm/x", WHEN)
    assert b"DKIM-Signature" not in unsigned


def test_a_domain_with_sharp_s_has_one_ascii_form_in_every_header(project, keys):
    """IDNA 2008 everywhere: `straße.de` is xn--strae-oqa.de in From, To, Message-ID, mailto and d=.

    (IDNA 2003, Python's "idna" codec, makes it strasse.de: another domain, and DMARC would fail.)
    """
    from newsletter.renderer import make_environment
    from newsletter.web.signup import confirmation_message

    settings = signed_settings(project, keys, domain="straße.de").replace(
        "sender", from_address="Bülletin <bulletin@Straße.de>", reply_to="redaktion@straße.de",
        unsubscribe_mailto="abmelden@straße.de")
    reader = Subscriber(5, "leser@straße.de", "leser@straße.de", "Leser", "active", "", "")
    ascii_form = "xn--strae-oqa.de"
    issue = signed_message(settings, reader)
    confirmation = confirmation_message(settings, make_environment(settings), reader,
                                        "https://newsletter.example.org/confirm/x", WHEN)
    for raw in (issue, confirmation):
        head = raw[:raw.index(b"\r\n\r\n")].decode("ascii")
        assert "strasse" not in head.lower() and "?q?stra" not in head.lower()
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        for field in ("From", "To", "Reply-To"):
            assert [a.domain for a in parsed[field].addresses] == [ascii_form], field
        assert parsed["Message-ID"].endswith(f"@{ascii_form}>")
        assert re.search(rf"\bd={re.escape(ascii_form)};", parsed["DKIM-Signature"])
        assert dkim.verify(raw, dnsfunc=dns_for(keys, domain=ascii_form))
    assert f"<mailto:abmelden@{ascii_form}?subject=unsubscribe-5." in issue.decode("ascii")
