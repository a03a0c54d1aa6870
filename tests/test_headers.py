"""headers.py: one check decides what may go into a mail header, for every kind of input."""

from __future__ import annotations

import email
import email.policy
import textwrap
from datetime import date
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from newsletter import headers, readers, store, subscribers
from newsletter.errors import ArticleError, HeaderError, SubscriberError
from newsletter.messages import WIRE_POLICY
from newsletter.settings import load_settings

HEADERISH = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80) | st.sampled_from([
    "Eve\r\nBcc: all@example.com", "=?utf-8?q?Bcc=3A_x?=", "Ann\u2028Bcc: x", "x\x85y", "plain name", "Zoë Ünal",
])


@hsettings(max_examples=300)
@given(value=HEADERISH)
def test_a_value_the_check_accepts_cannot_add_a_header(value):
    # Python 3.11.7 writes a newline inside a value as it is (CVE-2024-6923): the check must stop it
    if headers.header_problem(value) is not None:
        with pytest.raises(HeaderError):
            headers.check_header_value("subject", value)
        return
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["Subject"] = value
    msg["X-After"] = "1"
    msg.set_content("body")
    parsed = email.message_from_bytes(msg.as_bytes(policy=WIRE_POLICY), policy=email.policy.default)
    assert [k for k in parsed.keys() if k not in ("Content-Type", "Content-Transfer-Encoding", "MIME-Version")] \
        == ["Subject", "X-After"]


@hsettings(max_examples=200)
@given(value=HEADERISH)
def test_a_subscriber_name_is_judged_by_the_same_check(value):
    name = value.strip()
    try:
        subscribers.clean_name(value)
    except SubscriberError as err:
        assert headers.header_problem(name) is not None or len(name) > subscribers.MAX_NAME_LENGTH
        assert str(err).startswith("name: ")
    else:
        assert headers.header_problem(name) is None


def test_a_name_with_a_lone_surrogate_is_refused_when_added_not_when_sent(tmp_path: Path):
    conn = store.connect(tmp_path / "list.db")
    with pytest.raises(SubscriberError, match=r"^name: .* U\+DC80"):
        subscribers.add(conn, "ann@example.org", name="Ann \udc80")
    assert conn.execute("SELECT count(*) FROM subscribers").fetchone()[0] == 0
    conn.close()


def test_an_article_title_shaped_like_an_encoded_word_or_with_a_control_is_refused(tmp_path: Path):
    (tmp_path / "newsletter.toml").write_text('[newsletter]\nname = "Bulletin"\n', encoding="utf-8")
    settings = load_settings(tmp_path)
    folder = tmp_path / "articles" / "2026-11-30"
    folder.mkdir(parents=True)
    for stem, title in (("a", "=?utf-8?b?SGk=?="), ("b", "Ann\\x07Bob")):
        (folder / f"{stem}.md").write_text(textwrap.dedent(f"""\
            ---
            title: "{title}"
            ---
            Text.
            """), encoding="utf-8")
    with pytest.raises(ArticleError) as caught:
        readers.read_day(tmp_path / "articles", date(2026, 11, 30), settings)
    text = str(caught.value)
    assert "field 'title': looks like an RFC 2047 encoded word" in text
    assert "field 'title': contains the control character U+0007" in text


def test_mailbox_writes_plain_quoted_and_encoded_names():
    assert headers.mailbox("Ann Lee", "ann@example.org") == "Ann Lee <ann@example.org>"
    assert headers.mailbox('Lee, "Ann"', "ann@example.org") == '"Lee, \\"Ann\\"" <ann@example.org>'
    assert headers.mailbox("Zoë", "z@example.org") == "=?utf-8?b?Wm/Dqw==?= <z@example.org>"
    assert headers.mailbox("", "z@example.org") == "z@example.org"
