"""DKIM (EMAIL.md rule 20): every message signed over its final bytes, verified offline with dkimpy."""

from __future__ import annotations

import base64
import email
import email.policy
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import dkim
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from newsletter import messages
from newsletter.delivery.smtp import WireMessages, stuff
from newsletter.dkim import DkimSigner
from newsletter.errors import SettingsError
from newsletter.models import GREETING_PLACEHOLDER, NAME_PLACEHOLDER, TOKEN_PLACEHOLDER, Frequency, Issue, RenderedIssue, Subscriber
from newsletter.settings import Settings, load_settings

WHEN = datetime(2026, 11, 26, 5, 0, tzinfo=timezone.utc)
KEY = b"k" * 32
CANONICALIZATIONS = ("relaxed/simple", "relaxed/relaxed", "simple/simple", "simple/relaxed")
ADA = Subscriber(3, "ada@example.net", "ada@example.net", "Ada Lovelace", "active", "", "")
BOB = Subscriber(4, "bob@example.net", "bob@example.net", "Bob", "active", "", "")


@dataclass(frozen=True)
class Keys:
    """Two test keys and the DNS TXT records that publish their public halves."""

    rsa: Path
    rsa_record: bytes
    ed25519: Path
    ed25519_record: bytes


def openssl(*args: str) -> bytes:
    return subprocess.run(["openssl", *args], check=True, capture_output=True).stdout


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Keys:
    """A 2048-bit RSA key and an Ed25519 key, made by openssl, with their DNS records."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test key")
    folder = tmp_path_factory.mktemp("dkim")
    rsa, ed = folder / "dkim.pem", folder / "ed25519.pem"
    openssl("genrsa", "-out", str(rsa), "2048")
    openssl("genpkey", "-algorithm", "ed25519", "-out", str(ed))
    rsa_public = openssl("rsa", "-in", str(rsa), "-pubout", "-outform", "DER")
    ed_public = openssl("pkey", "-in", str(ed), "-pubout", "-outform", "DER")[-32:]  # the raw key ends the DER
    return Keys(rsa, b"v=DKIM1; k=rsa; p=" + base64.b64encode(rsa_public),
                ed, b"v=DKIM1; k=ed25519; p=" + base64.b64encode(ed_public))


def signed_settings(project: Path, keys: Keys, *, ed25519: bool = False, **dkim_values: str) -> Settings:
    shutil.copy(keys.rsa, project / "dkim.pem")
    shutil.copy(keys.ed25519, project / "ed25519.pem")
    values = {"selector": "news2026", "domain": "newsletter.example.org", "key_file": "dkim.pem"}
    if ed25519:
        values |= {"ed25519_selector": "ed2026", "ed25519_key_file": "ed25519.pem"}
    return load_settings(project).replace("dkim", **(values | dkim_values))


def dns_for(keys: Keys, domain: str = "newsletter.example.org"):
    """A DNS lookup that knows two records: the RSA key at news2026 and the Ed25519 key at ed2026."""
    records = {f"news2026._domainkey.{domain}.".encode(): keys.rsa_record,
               f"ed2026._domainkey.{domain}.".encode(): keys.ed25519_record}

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)
    return lookup


def verified(raw: bytes, keys: Keys, domain: str = "newsletter.example.org") -> list[bool]:
    """Return whether each DKIM-Signature of RAW verifies with dkimpy, top one first."""
    count = len(re.findall(rb"(?mi)^DKIM-Signature:", raw[: raw.index(b"\r\n\r\n")]))
    results = []
    for n in range(count):
        try:
            results.append(dkim.DKIM(raw).verify(idx=n, dnsfunc=dns_for(keys, domain)))
        except dkim.ValidationError:  # a body hash that does not match is raised, not returned
            results.append(False)
    return results


def rendered(lines: tuple[str, ...] = ("Talks  \t  resumed,   in   runs of spaces.",)) -> RenderedIssue:
    """A small issue; LINES go into both parts, between the greeting and the unsubscribe link."""
    issue = Issue(day=WHEN.date(), number=7, subject="MDB November 26: Talks resume", preheader="Talks",
                  sections=(), archive_url="https://newsletter.example.org/2026-11-26/")
    middle = "\n".join(lines)
    html = (f"<p>{GREETING_PLACEHOLDER}</p>\n<p>Talks.</p>\n{middle}\n"
            f"<a href=\"https://newsletter.example.org/u/{TOKEN_PLACEHOLDER}\">x</a>\n")
    text = (f"{GREETING_PLACEHOLDER}\n\n.Talks resumed.\n{middle}\n\n"
            f"https://newsletter.example.org/u/{TOKEN_PLACEHOLDER}\n")
    return RenderedIssue(issue, html, text)


def signed_message(settings: Settings, person: Subscriber = ADA) -> bytes:
    template = messages.MessageTemplate.build(rendered(), settings, KEY, WHEN, signer=messages.dkim_signer(settings))
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


@pytest.mark.parametrize("canonicalization", CANONICALIZATIONS)
@pytest.mark.parametrize("tamper", [
    (b"Subject: MDB November 26: Talks resume", b"Subject: MDB November 26: Talks ended"),
    (b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: List-Unsubscribe=Nope"),
    (b"Talks resumed.", b"Talks resumer."),
    (b"Good morning, Ada Lovelace.", b"Good morning, Eve Lovelace."),  # a personal body line
    (b"To: Ada Lovelace <ada@example.net>", b"To: Ada Lovelace <eve@example.net>"),
    (b"\r\nList-Id: ", b"\r\nReply-To: eve@example.com\r\nList-Id: "),  # signed as absent
])
def test_a_tampered_message_fails_verification(project, keys, tamper, canonicalization):
    raw = signed_message(signed_settings(project, keys, ed25519=True, canonicalization=canonicalization))
    assert tamper[0] in raw and verified(raw, keys) == [True, True]

    assert verified(raw.replace(tamper[0], tamper[1], 1), keys) == [False, False]


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


# --- OpenSSL signing: both keys, every canonicalization, every path ---------------------------------

def fixed_clock(signer: DkimSigner) -> DkimSigner:
    """SIGNER with a clock that does not move, so two paths write the same t= and so the same bytes."""
    return DkimSigner(signer.domain.decode(), signer.keys, signer.canon.value, clock=lambda: 1_796_000_000)


@pytest.mark.parametrize("canonicalization", CANONICALIZATIONS)
def test_every_path_signs_with_both_keys_and_each_signature_verifies(project, keys, canonicalization):
    settings = signed_settings(project, keys, ed25519=True, canonicalization=canonicalization)
    signer = messages.dkim_signer(settings)
    template = messages.MessageTemplate.build(rendered(), settings, KEY, WHEN, signer=signer)
    fast = template.personalize(ADA)
    wire = WireMessages(template).data(ADA)
    reference = messages.build_reference(rendered(), ADA, settings, KEY, WHEN, signer=signer)
    by_dkimpy = messages.build_reference(rendered(), ADA, settings, KEY, WHEN,
                                         signer=messages.dkim_signer(settings, reference=True))

    assert wire == stuff(fast)
    for raw in (fast, reference, by_dkimpy):
        assert verified(raw, keys) == [True, True]
        signatures = email.message_from_bytes(raw, policy=email.policy.default).get_all("DKIM-Signature")
        assert [re.search(r"\ba=([^;]+);", s)[1] for s in signatures] == ["rsa-sha256", "ed25519-sha256"]
        assert all(f"c={canonicalization};" in s for s in signatures)
    assert fast.split(b"\r\nFrom: ", 1)[1] == by_dkimpy.split(b"\r\nFrom: ", 1)[1]  # the same message under it


@pytest.mark.parametrize("canonicalization", CANONICALIZATIONS)
def test_the_spliced_signature_is_the_signature_of_the_whole_message(project, keys, canonicalization):
    """The body hashed once per issue and resumed per reader gives the bytes signing each message whole gives."""
    settings = signed_settings(project, keys, ed25519=True, canonicalization=canonicalization)
    signer = fixed_clock(messages.dkim_signer(settings))
    unsigned = messages.MessageTemplate.build(rendered(), settings, KEY, WHEN)
    signed = messages.MessageTemplate.build(rendered(), settings, KEY, WHEN, signer=signer)

    assert signed.signs_spliced
    for person in (ADA, BOB):
        assert signed.personalize(person) == signer(unsigned.personalize(person))


body_lines = st.lists(st.one_of(
    st.text(st.sampled_from(list(" \t.=-aZé“😀<>&")), max_size=120),
    st.sampled_from(["", " ", ".", "..dot", "   indented", "trailing   ", "\t", f"Hello {NAME_PLACEHOLDER}  !  ",
                     f"  {GREETING_PLACEHOLDER}\t"]),
), max_size=8)
readers = st.builds(
    lambda id, local, name: Subscriber(id, f"{local}@example.net", f"{local}@example.net", name, "active", "", ""),
    st.integers(min_value=1, max_value=10**9), st.from_regex(r"[a-z0-9]{1,10}([.+-][a-z0-9]{1,6})?", fullmatch=True),
    st.one_of(st.just(""), st.text(st.sampled_from(list('ab Z"\',.<>@éß漢')), max_size=80)),
)


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(person=readers, lines=body_lines, canonicalization=st.sampled_from(CANONICALIZATIONS))
def test_any_reader_and_body_get_signatures_that_verify(project, keys, person, lines, canonicalization):
    settings = signed_settings(project, keys, ed25519=True, canonicalization=canonicalization)
    signer = fixed_clock(messages.dkim_signer(settings))
    issue = rendered(tuple(lines))
    unsigned = messages.MessageTemplate.build(issue, settings, KEY, WHEN)
    raw = messages.MessageTemplate.build(issue, settings, KEY, WHEN, signer=signer).personalize(person)

    assert raw == signer(unsigned.personalize(person))
    assert verified(raw, keys) == [True, True]


def test_proof_copies_are_signed(project, keys):
    from factories import make_rendered

    from newsletter.delivery import send_proofs

    report = send_proofs(signed_settings(project, keys, ed25519=True), make_rendered(), ["editor@example.org"],
                         transport="outbox")

    assert verified(report.files[0].read_bytes(), keys) == [True, True]


def test_a_signed_outbox_send_writes_every_reader_but_the_broken_ones_and_every_file_verifies(project, keys):
    """Messages are signed ahead in chunks: a reader whose message cannot be made fails alone, mid-chunk."""
    from factories import make_rendered, send_unchecked

    from newsletter import store

    settings = signed_settings(project, keys, ed25519=True)
    conn = store.connect(settings.database_path)
    now = store.now_iso()
    names = [f"Reader {n}" for n in range(30)]
    names[5] = names[6] = "Broken\r\nBcc: x@example.net"  # two in a row, inside one chunk of made-ahead messages
    with store.write(conn):
        conn.executemany("INSERT INTO subscribers (email, email_key, name, status, created_at, updated_at)"
                         " VALUES (?, ?, ?, 'active', ?, ?)",
                         [(f"r{n}@example.net", f"r{n}@example.net", name, now, now) for n, name in enumerate(names)])
    report = send_unchecked(conn, settings.replace("delivery", batch_size=12), make_rendered())
    conn.close()

    files = sorted((settings.outbox_dir / "2026-11-26" / "mail" / "new").glob("*.eml"))
    assert (report.written, report.failed) == (28, 2)
    assert len(files) == 28
    for path in files:
        assert verified(path.read_bytes(), keys) == [True, True], path


def test_a_signer_running_for_days_stamps_each_moment_and_keeps_one_prefix_per_key(project, keys):
    """`serve` signs confirmations for months: each signature carries its own t=, and nothing piles up."""
    start = int(time.time()) - 600 * 3600  # dkimpy refuses a t= in the future
    moments = iter(range(start, start + 500 * 3600, 3600))
    signer = DkimSigner("newsletter.example.org", messages.dkim_signer(signed_settings(project, keys, ed25519=True)).keys,
                        clock=lambda: next(moments))
    raw = messages.MessageTemplate.build(rendered(), signed_settings(project, keys), KEY, WHEN).personalize(ADA)

    signed = [signer(raw) for _ in range(500)]

    assert [int(re.search(rb" t=(\d+);", each)[1]) for each in signed[::100]] == list(
        range(start, start + 500 * 3600, 100 * 3600))
    assert verified(signed[-1], keys) == [True, True]
    assert len(signer._prefixes) == len(signer.keys)  # one moment kept per key, not one per second signed


def test_a_key_from_dknewkey_a_base64_seed_signs_too(project, keys):
    seed = openssl("pkey", "-in", str(keys.ed25519), "-outform", "DER")[-32:]
    settings = signed_settings(project, keys, ed25519=True)
    (project / "ed25519.pem").write_bytes(base64.b64encode(seed) + b"\n")

    assert verified(signed_message(settings), keys) == [True, True]


def test_an_rsa_key_under_2048_bits_is_refused(project, keys):
    settings = signed_settings(project, keys)
    openssl("genrsa", "-out", str(project / "dkim.pem"), "1024")

    with pytest.raises(SettingsError, match=r"key_file '.*dkim.pem': an RSA key of 1024 bits; DKIM keys need 2048 bits"):
        messages.dkim_signer(settings)


@pytest.mark.parametrize("values, message", [
    ({"ed25519_selector": "ed2026"}, r"\[dkim\] is half configured: set both ed25519_selector and ed25519_key_file"),
    ({"ed25519_selector": "News2026", "ed25519_key_file": "ed25519.pem"},
     r"ed25519_selector 'News2026' is the RSA selector: each key needs a DNS record of its own"),
    ({"ed25519_selector": "ed2026", "ed25519_key_file": "dkim.pem"},
     r"ed25519_key_file '.*dkim.pem': not an Ed25519 private key"),
    ({"key_file": "ed25519.pem"}, r"key_file '.*ed25519.pem': not an RSA private key"),
    ({"canonicalization": "relaxed"}, r"canonicalization 'relaxed' is not one of relaxed/relaxed, relaxed/simple"),
])
def test_a_bad_ed25519_or_canonicalization_setting_is_an_error_naming_it(project, keys, values, message):
    with pytest.raises(SettingsError, match=message):
        messages.dkim_signer(signed_settings(project, keys, **values))


@pytest.mark.slow
def test_every_daily_and_digest_file_of_a_signed_week_verifies(sample_project, keys, runner):
    """The outbox send (signing ahead in two threads) and the weekly digest go through the same signer."""
    from test_digest import DAYS, WEEK, addresses, choose, cli

    from newsletter.cli import app

    shutil.copy(keys.rsa, sample_project / "dkim.pem")
    shutil.copy(keys.ed25519, sample_project / "ed25519.pem")
    with (sample_project / "newsletter.toml").open("a", encoding="utf-8") as config:
        config.write('\n[dkim]\nselector = "news2026"\ndomain = "ssb.newsletter.example.org"\nkey_file = "dkim.pem"\n'
                     'ed25519_selector = "ed2026"\ned25519_key_file = "ed25519.pem"\ncanonicalization = "relaxed/relaxed"\n')
    imported = runner.invoke(app, ["--project", str(sample_project), "subscribers", "import",
                                   str(sample_project / "subscribers" / "sample.csv")])
    assert imported.exit_code == 0, imported.output
    weekly = addresses(sample_project, 1)[0]
    choose(sample_project, weekly, frequency=Frequency.WEEKLY)
    for day in DAYS:
        cli(sample_project, "send", "--date", day)
    cli(sample_project, "send", "--digest", "--week", WEEK)

    files = sorted((sample_project / "outbox").glob("*/mail/new/*.eml"))
    digest_files = [path for path in files if path.parts[-4].startswith(WEEK)]
    assert len(digest_files) == 1 and len(files) > 4 * 20
    for path in files:
        assert verified(path.read_bytes(), keys, "ssb.newsletter.example.org") == [True, True], path
