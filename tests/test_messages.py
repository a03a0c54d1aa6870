"""messages.py: the fast path gives the reference's message; tokens, ids and header checks hold."""

from __future__ import annotations

import email
import email.policy
import re
import textwrap
from datetime import date, datetime, timedelta, timezone
from email import quoprimime
from email.header import decode_header, make_header
from email.utils import getaddresses

import pytest
from hypothesis import HealthCheck, assume, given, settings as hsettings, strategies as st

from newsletter.errors import BuildError, HeaderError
from newsletter.messages import (
    _qp_line,
    MessageTemplate,
    ascii_address,
    build_reference,
    check_header_value,
    message_id,
    personal_html,
    public_html,
    unsubscribe_token,
    verify_token,
)
from newsletter.models import (
    GREETING_PLACEHOLDER,
    NAME_PLACEHOLDER,
    PREFERENCES_PLACEHOLDER,
    TOKEN_PLACEHOLDER,
    Issue,
    RenderedIssue,
    Subscriber,
)
from newsletter.settings import load_settings
from newsletter.signing import preferences_token, verify_preferences_token

KEY = b"0123456789abcdef0123456789abcdef"
DAY = date(2026, 11, 26)
SENT_AT = datetime(2026, 11, 26, 6, 0, tzinfo=timezone(timedelta(hours=1)))
BASE = "https://ssb.newsletter.example.org"
PARSE = email.policy.default

CONFIG = textwrap.dedent("""\
    [newsletter]
    name = "The Sample Security Bulletin, Daily"
    base_url = "https://ssb.newsletter.example.org"

    [sender]
    from = "Sample Bülletin <bulletin@ssb.newsletter.example.org>"
    reply_to = "editors@ssb.newsletter.example.org"
    list_id = "ssb.newsletter.example.org"
    unsubscribe_mailto = "unsubscribe@ssb.newsletter.example.org"

    [issue]
    greeting = "Good morning, {name}!"
    greeting_fallback = "Good morning, reader!"
""")


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    (root / "newsletter.toml").write_text(CONFIG, encoding="utf-8")
    return load_settings(root)


def make_issue(subject: str = "SSB 26 November: Ministers “clash” over interceptors — é ü 🚀") -> Issue:
    return Issue(day=DAY, number=214, subject=subject, preheader="Interceptor guarantees and more",
                 sections=(), archive_url=f"{BASE}/2026/11/26/")


def realistic_issue(subject: str | None = None) -> RenderedIssue:
    """A rendered issue the size of a real one: long lines, non-ASCII, '=' signs, trailing spaces."""
    paragraph = (
        "Ministers clashed on Tuesday over “interceptor guarantees” (Interfax, June 2); the café "
        "owner in Zürich said 2+2=4 and x == y, and the Ünal report — 🚀 — was cited (see SSB, May 18). "
    )
    text_lines = ["THE SAMPLE SECURITY BULLETIN", "", GREETING_PLACEHOLDER, ""]
    html_lines = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>SSB</title></head>',
        '<body style="margin:0;padding:0;background-color:#ffffff;">',
        '<p style="font-size:16px;color:#111111;">',
        GREETING_PLACEHOLDER,
        "</p>",
    ]
    for n in range(60):
        text_lines += [f"{n}. Headline number {n} — “quoted” = sign   ", paragraph * 3, "trailing space ", ""]
        html_lines += [
            f'<tr><td style="padding:0 24px;font-family:Georgia,serif;font-size:16px;line-height=1.5;">'
            f"<h2 id=\"a{n}\">Headline number {n} — “quoted”</h2><p>{paragraph * 4}</p></td></tr>",
            "<p>a line ending in a tab\t</p>\t",
        ]
    text_lines += [
        "Dear " + NAME_PLACEHOLDER + ", to stop receiving this bulletin:",
        f"name = {NAME_PLACEHOLDER} ",  # '=' and a trailing space on a short personal line
        f"{BASE}/p/{PREFERENCES_PLACEHOLDER}",
        f"{BASE}/u/{TOKEN_PLACEHOLDER}",
    ]
    html_lines += [
        f'<b class="n">{NAME_PLACEHOLDER}</b>\t',
        f'<p><a href="{BASE}/p/{PREFERENCES_PLACEHOLDER}">Choose your sections</a></p>',
        f'<p>Sent to {NAME_PLACEHOLDER}. <a href="{BASE}/u/{TOKEN_PLACEHOLDER}"',
        'style="color:#555555;">Unsubscribe</a></p></body></html>',
    ]
    text, html = "\n".join(text_lines) + "\n", "\n".join(html_lines) + "\n"
    assert 50_000 < len(text.encode()) + len(html.encode()) < 150_000
    return RenderedIssue(issue=make_issue(subject) if subject else make_issue(), html=html, text=text)


ISSUE = realistic_issue()


@pytest.fixture(scope="module")
def template(settings):
    return MessageTemplate.build(ISSUE, settings, KEY, SENT_AT)


def subscriber(email_address: str, name: str = "", id: int = 7) -> Subscriber:
    return Subscriber(id=id, email=email_address, email_key=email_address.casefold(), name=name,
                      status="active", created_at="2026-01-01T00:00:00Z", updated_at="2026-01-01T00:00:00Z")


def parsed(raw: bytes):
    msg = email.message_from_bytes(raw, policy=PARSE)
    headers = [(name, str(value)) for name, value in msg.items()]
    return (headers, msg.get_body(("plain",)).get_content(), msg.get_body(("html",)).get_content())


def raw_header(raw: bytes, name: bytes) -> bytes:
    head = raw.split(b"\r\n\r\n", 1)[0]
    found = re.findall(rb"^" + name + rb": ([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", head, re.MULTILINE | re.IGNORECASE)
    assert len(found) == 1, found
    return found[0]


def addressee(raw: bytes) -> tuple[str, str]:
    """Read To as an RFC 2047 reader does: Python 3.11's new parser puts a space between adjacent
    encoded words and folds runs of Unicode whitespace, so it cannot judge long or spaced names."""
    [(phrase, address)] = getaddresses([raw_header(raw, b"To").decode("ascii").replace("\r\n", "")])
    return str(make_header(decode_header(phrase))), address


# --- strategies ------------------------------------------------------------------------------------

safe_chars = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"))
names = st.one_of(
    st.just(""),
    st.from_regex(r"[A-Z][a-z]{1,10}( [A-Z][a-z'-]{1,12}){0,2}", fullmatch=True),
    st.text(safe_chars, max_size=40),
    st.text(st.sampled_from(list('abZ "\',\\().<>@;:[]=éüß“”😀Ω漢\u00a0')), min_size=60, max_size=200),
    st.sampled_from([
        'Smith, John', 'O\'Brien "Bo"', "A=B", "x" * 80, 'back\\slash', 'J. R. R. Tolkien', "Zoë Ünal", "  padded  ",
        GREETING_PLACEHOLDER, f"{NAME_PLACEHOLDER} {TOKEN_PLACEHOLDER}", "<b>Tom & Jerry</b>",
    ]),
).filter(lambda name: not re.search(r"=\?.*\?=", name, re.DOTALL))
local_parts = st.from_regex(r"[A-Za-z0-9]{1,12}([._+-][A-Za-z0-9]{1,8}){0,3}", fullmatch=True)
domains = st.sampled_from([
    "example.org", "bücher.example", "mail.Example.COM", "xn--bcher-kva.example", "例え.jp",
    "sub-domain.example.co.uk", "ÉCOLE.example.fr",
])
subscribers = st.builds(
    lambda local, domain, name, id: subscriber(f"{local}@{domain}", name, id),
    local_parts, domains, names, st.integers(min_value=1, max_value=10**12),
)
controls = st.sampled_from(
    [chr(c) for c in range(0x20)] + ["\x7f", "\x85", "\u2028", "\u2029", "=?utf-8?q?x=0AX-Evil:_1?="]
)


# --- the fast path against the reference ------------------------------------------------------------

@pytest.mark.slow
@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(person=subscribers)
def test_fast_message_parses_to_the_reference_message(settings, template, person):
    reference = build_reference(ISSUE, person, settings, KEY, SENT_AT)
    fast = template.personalize(person)

    assert parsed(fast) == parsed(reference)
    assert fast.isascii()
    assert b"\r" not in fast.replace(b"\r\n", b"") and b"\n" not in fast.replace(b"\r\n", b"")
    assert max(len(line) for line in fast.split(b"\r\n")) <= 998
    # and the reference says what it should: this person, by name, at the ASCII address
    assert addressee(reference) == (person.name.strip(), ascii_address(person.email))
    assert ascii_address(person.email).isascii()


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(person=subscribers)
def test_fast_message_is_byte_for_byte_the_reference(settings, template, person):
    assert template.personalize(person) == build_reference(ISSUE, person, settings, KEY, SENT_AT)


@hsettings(max_examples=300, deadline=None)
@given(line=st.text(alphabet=st.sampled_from(list("ab/:?&.-_=09 \t~") + ["é", "“", "€", "\x0c", "\x7f", "\x85"]),
                   max_size=400))
def test_a_personal_line_is_encoded_as_the_email_package_encodes_it(line):
    # the fast paths (a long link with a token: soft breaks every 75 characters; a short line with a
    # name: binascii's encoder) and the slow one agree
    # with quoted-printable as the email package writes it inside a whole body
    expected = quoprimime.body_encode(line.encode("utf-8").decode("latin-1") + "\n", 76).replace("\n", "\r\n")
    assert _qp_line(line) == expected.encode("ascii")


def test_placeholders_inside_long_lines_still_match_the_reference(settings):
    filler = "é = “word” " * 300
    rendered = RenderedIssue(
        issue=make_issue(),
        text=f"{filler}{GREETING_PLACEHOLDER} {filler}\nUnsubscribe: {BASE}/u/{TOKEN_PLACEHOLDER} {filler}\n",
        html=f'<p>{filler}{GREETING_PLACEHOLDER}</p><a href="{BASE}/u/{TOKEN_PLACEHOLDER}">x</a>{filler} ',
    )
    template = MessageTemplate.build(rendered, settings, KEY, SENT_AT)
    for person in (subscriber("a@example.org", "Ann"), subscriber("b@bücher.example", "Zoë “Z” Ünal" * 9, 8)):
        assert template.personalize(person) == build_reference(rendered, person, settings, KEY, SENT_AT)


def test_parts_carry_greeting_name_and_token(settings, template):
    person = subscriber("tom+news@example.org", '<b>Tom & "Jerry"</b>', id=99)
    _, text, html = parsed(template.personalize(person))
    token = unsubscribe_token(KEY, 99, "ssb.newsletter.example.org")
    assert 'Good morning, <b>Tom & "Jerry"</b>!' in text
    assert "Good morning, &lt;b&gt;Tom &amp; &quot;Jerry&quot;&lt;/b&gt;!" in html
    assert "<b>Tom" not in html
    assert f"{BASE}/u/{token}" in text and f'href="{BASE}/u/{token}"' in html
    assert "NLX" not in text and "NLX" not in html
    # the plain-text part comes first, the HTML last
    msg = email.message_from_bytes(template.personalize(person), policy=PARSE)
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert all(p["Content-Transfer-Encoding"] == "quoted-printable" for p in msg.iter_parts())


def test_both_parts_link_to_the_readers_own_preferences_page(settings, template):
    _, text, html = parsed(template.personalize(subscriber("ann@example.org", "Ann", id=41)))
    token = re.search(rf"{BASE}/p/([0-9a-f.]+)\s", text)[1]
    assert f'href="{BASE}/p/{token}"' in html
    assert token == preferences_token(KEY, 41, "ssb.newsletter.example.org")
    assert verify_preferences_token(KEY, token, "ssb.newsletter.example.org") == 41
    # its own kind of link: an unsubscribe token opens no preferences page, nor the other way round
    assert token != unsubscribe_token(KEY, 41, "ssb.newsletter.example.org")
    assert verify_token(KEY, token, "ssb.newsletter.example.org") is None
    assert verify_preferences_token(KEY, unsubscribe_token(KEY, 41, "ssb.newsletter.example.org"),
                                    "ssb.newsletter.example.org") is None


def test_templates_without_a_preferences_link_still_send(settings):
    rendered = RenderedIssue(issue=make_issue(), text=f"hi\n{BASE}/u/{TOKEN_PLACEHOLDER}\n",
                             html=f'<p>hi</p>\n<a href="{BASE}/u/{TOKEN_PLACEHOLDER}">x</a>\n')
    template = MessageTemplate.build(rendered, settings, KEY, SENT_AT)
    person = subscriber("a@example.org", "Ann")
    assert template.personalize(person) == build_reference(rendered, person, settings, KEY, SENT_AT)


def test_a_short_non_ascii_name_reads_back_with_the_standard_parser(template):
    msg = email.message_from_bytes(template.personalize(subscriber("z@bücher.example", "Zoë “Z” Ünal")), policy=PARSE)
    assert msg["To"].addresses[0].display_name == "Zoë “Z” Ünal"
    assert msg["To"].addresses[0].addr_spec == "z@xn--bcher-kva.example"


def test_subscriber_without_name_gets_the_fallback_greeting(template):
    _, text, html = parsed(template.personalize(subscriber("anon@example.org", "   ")))
    assert "Good morning, reader!" in text and "Good morning, reader!" in html
    assert parsed(template.personalize(subscriber("anon@example.org")))[0][1] == ("To", "anon@example.org")


def test_headers_of_a_message(template):
    raw = template.personalize(subscriber("ann@bücher.example", "Ann Lee", id=5))
    msg = email.message_from_bytes(raw, policy=PARSE)
    assert msg["To"] == "Ann Lee <ann@xn--bcher-kva.example>"
    assert msg["From"].addresses[0].display_name == "Sample Bülletin"
    assert msg["Subject"] == make_issue().subject
    assert msg["Date"].datetime == SENT_AT
    assert msg["Message-ID"] == message_id(DAY, 5, "ssb.newsletter.example.org")
    assert msg["Reply-To"] == "editors@ssb.newsletter.example.org"
    assert msg["MIME-Version"] == "1.0"
    assert msg["List-Id"] == '"The Sample Security Bulletin, Daily" <ssb.newsletter.example.org>'
    assert msg["Precedence"] == "bulk" and msg["Auto-Submitted"] == "auto-generated"
    assert msg.get_content_type() == "multipart/alternative"
    assert b"=?utf-8?" in raw_header(raw, b"Subject")  # non-ASCII subject is RFC 2047-encoded


def test_list_unsubscribe_is_written_as_plain_urls(template):
    raw = template.personalize(subscriber("ann@example.org", "Ann", id=123456))
    token = unsubscribe_token(KEY, 123456, "ssb.newsletter.example.org")
    line = raw_header(raw, b"List-Unsubscribe")
    assert b"=?" not in line and b"\r\n" not in line
    assert line.decode() == (
        f"<{BASE}/u/{token}>, <mailto:unsubscribe@ssb.newsletter.example.org?subject=unsubscribe-{token}>"
    )
    assert raw_header(raw, b"List-Unsubscribe-Post") == b"List-Unsubscribe=One-Click"


def test_a_message_written_again_is_the_same_bytes(settings, template):
    person = subscriber("ann@example.org", "Ann", id=3)
    again = MessageTemplate.build(realistic_issue(), settings, KEY, SENT_AT)
    assert again.personalize(person) == template.personalize(person)


def test_preview_html_is_the_html_part_and_archive_html_is_nobodys(settings, template):
    person = subscriber("ann@example.org", "Ann & Bo", id=11)
    html_part = parsed(template.personalize(person))[2].replace("\r\n", "\n")
    assert personal_html(ISSUE, person, settings, KEY) == html_part
    archive = public_html(ISSUE, settings)
    assert "NLX" not in archive and "/u/" not in archive and "/p/" not in archive
    assert f'href="{BASE}/unsubscribe/"' in archive and "Good morning, reader!" in archive


# --- tokens --------------------------------------------------------------------------------------

def test_token_round_trip_and_shape():
    token = unsubscribe_token(KEY, 42, "ssb.newsletter.example.org")
    assert re.fullmatch(r"42\.[0-9a-f]{32}", token)
    assert verify_token(KEY, token, "ssb.newsletter.example.org") == 42
    # a mail system that upper-cases the mailto subject does not break it
    assert verify_token(KEY, token.upper(), "ssb.newsletter.example.org") == 42


def test_tokens_differ_per_subscriber_key_and_list():
    token = unsubscribe_token(KEY, 42, "a.example.org")
    assert unsubscribe_token(KEY, 43, "a.example.org").split(".")[1] != token.split(".")[1]
    assert verify_token(b"another key", token, "a.example.org") is None
    assert verify_token(KEY, token, "b.example.org") is None
    assert verify_token(KEY, "43." + token.split(".")[1], "a.example.org") is None  # another id
    assert verify_token(KEY, "042." + token.split(".")[1], "a.example.org") is None
    assert verify_token(KEY, token + "\n", "a.example.org") is None
    assert verify_token(b"", token, "a.example.org") is None


@given(position=st.integers(min_value=0), char=st.sampled_from("0123456789abcdef.x"))
def test_a_token_with_one_character_changed_is_refused(position, char):
    token = unsubscribe_token(KEY, 42, "a.example.org")
    position %= len(token)
    assume(token[position].lower() != char)
    changed = token[:position] + char + token[position + 1:]
    assert verify_token(KEY, changed, "a.example.org") is None


@given(garbage=st.one_of(st.text(), st.text(min_size=1000, max_size=5000), st.binary().map(repr)))
def test_garbage_tokens_are_refused(garbage):
    assert verify_token(KEY, garbage, "a.example.org") is None


# --- Message-ID ----------------------------------------------------------------------------------

def test_message_id_is_stable_per_issue_and_subscriber(settings):
    first = message_id(DAY, 5, settings.sender_domain)
    assert first == message_id(DAY, 5, settings.sender_domain)
    assert re.fullmatch(r"<20261126\.5\.[0-9a-f]+@ssb\.newsletter\.example\.org>", first)
    assert message_id(DAY + timedelta(days=1), 5, settings.sender_domain) != first
    assert message_id(DAY, 6, settings.sender_domain) != first


# --- refusing bad input --------------------------------------------------------------------------

@given(before=st.text(safe_chars, max_size=20), bad=controls, after=st.text(safe_chars, max_size=20))
def test_control_characters_and_encoded_words_are_refused_in_headers(before, bad, after):
    with pytest.raises(HeaderError, match=r"^reply-to: "):
        check_header_value("reply-to", before + bad + after)


@hsettings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=controls)
def test_injected_subject_is_refused_naming_the_subject(settings, bad):
    rendered = realistic_issue(subject=f"Daily news{bad}Bcc: everyone@example.org")
    with pytest.raises(HeaderError, match="subject"):
        MessageTemplate.build(rendered, settings, KEY, SENT_AT)
    with pytest.raises(HeaderError, match="subject"):
        build_reference(rendered, subscriber("a@example.org"), settings, KEY, SENT_AT)


@hsettings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=controls)
def test_injected_name_is_refused_naming_the_name(settings, template, bad):
    person = subscriber("a@example.org", f"Ann{bad}Bcc: everyone@example.org", id=9)
    with pytest.raises(HeaderError, match="subscriber 9 name"):
        template.personalize(person)
    with pytest.raises(HeaderError, match="subscriber 9 name"):
        build_reference(ISSUE, person, settings, KEY, SENT_AT)


def test_non_ascii_local_part_needs_smtputf8(settings, template):
    person = subscriber("zoë@example.org", "Zoë")
    with pytest.raises(HeaderError, match="SMTPUTF8"):
        template.personalize(person)
    with pytest.raises(HeaderError, match="SMTPUTF8"):
        build_reference(ISSUE, person, settings, KEY, SENT_AT)


def test_placeholder_in_subject_is_refused_at_build(settings):
    with pytest.raises(BuildError, match="2026-11-26"):
        MessageTemplate.build(realistic_issue(subject=f"News {TOKEN_PLACEHOLDER}"), settings, KEY, SENT_AT)


def test_issue_without_unsubscribe_link_is_refused(settings):
    rendered = RenderedIssue(issue=make_issue(), text=f"hi\n{BASE}/u/{TOKEN_PLACEHOLDER}\n", html="<p>hi</p>")
    with pytest.raises(BuildError, match="HTML part has no unsubscribe link"):
        MessageTemplate.build(rendered, settings, KEY, SENT_AT)


def test_date_without_time_zone_is_refused(settings):
    with pytest.raises(BuildError, match="time zone"):
        MessageTemplate.build(ISSUE, settings, KEY, datetime(2026, 11, 26, 6, 0))


def test_greeting_with_unknown_field_is_refused(settings):
    broken = settings.replace("issue", greeting="Hello {first_name}")
    with pytest.raises(BuildError, match=r"issue\.greeting"):
        MessageTemplate.build(ISSUE, broken, KEY, SENT_AT)
