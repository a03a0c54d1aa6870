"""Whom an SMTP refusal blames (RFC 3463): only a reply about this recipient's mailbox bounces them."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from newsletter.delivery.replies import Blame, RefusalStreak, classify, enhanced_code

MAILBOX_WORDS = ("user unknown", "no such user", "does not exist", "mailbox unavailable")
CONTENT_WORDS = ("spam", "virus", "content rejected", "message rejected")

codes = st.integers(min_value=400, max_value=599)
texts = st.text(max_size=80)
# replies as servers write them: an enhanced code (sometimes of the wrong class), then words
replies = st.one_of(texts, st.builds(
    lambda klass, subject, detail, words, rest: f"{klass}.{subject}.{detail} {words} {rest}",
    st.integers(2, 5), st.integers(0, 9), st.integers(0, 30),
    st.sampled_from(MAILBOX_WORDS + CONTENT_WORDS + ("relay access denied", "sender rejected", "")), texts))


@pytest.mark.parametrize(("code", "text", "blame"), [
    (550, "5.1.1 <ada@example.net>: Recipient address rejected: User unknown in virtual mailbox table",
     Blame.MAILBOX),
    (550, "5.1.2 Host unknown: no such domain", Blame.MAILBOX),
    (550, "5.1.10 Recipient address has null MX", Blame.MAILBOX),
    (550, "No such user here", Blame.MAILBOX),
    (553, "mailbox unavailable", Blame.MAILBOX),
    (553, "5.1.8 <news@example.org>: Sender address rejected: Domain not found", Blame.OURS),
    (553, "5.1.7 The sender address is malformed", Blame.OURS),
    (554, "5.7.1 <ada@example.net>: Relay access denied", Blame.OURS),
    (530, "5.7.0 Authentication required", Blame.OURS),
    (535, "5.7.8 Authentication credentials invalid", Blame.OURS),
    (550, "5.7.26 This mail is unauthenticated (DMARC)", Blame.OURS),
    (554, "5.3.0 Mail system error", Blame.OURS),
    (550, "5.4.6 Routing loop detected", Blame.OURS),
    (503, "5.5.1 Error: need MAIL command", Blame.OURS),
    (550, "Relaying denied", Blame.OURS),
    (553, "sorry, that domain isn't in my list of allowed rcpthosts", Blame.OURS),
    (550, "Message rejected as spam", Blame.MESSAGE),
    (554, "5.7.1 content rejected", Blame.MESSAGE),
    (550, "5.7.1 Message content rejected", Blame.MESSAGE),
    (550, "mailbox unavailable: message rejected as spam", Blame.MESSAGE),
    (552, "5.2.2 Mailbox full", Blame.MESSAGE),
    (550, "5.7.1 Our policy refuses this message", Blame.MESSAGE),
    (550, "Requested action not taken", Blame.MESSAGE),
    (550, "4.1.1 a class that disagrees with the code is not trusted", Blame.MESSAGE),
    (451, "4.7.1 Greylisted", Blame.TRANSIENT),
    (421, "4.3.2 Service shutting down", Blame.TRANSIENT),
])
def test_each_kind_of_refusal_blames_whom_it_says(code, text, blame):
    assert classify(code, text) is blame


@given(codes, replies)
def test_any_reply_is_classified_and_a_temporary_one_blames_nobody_for_long(code, text):
    blame = classify(code, text)
    assert isinstance(blame, Blame)
    assert (blame is Blame.TRANSIENT) == (code < 500)


@given(codes, replies)
def test_only_a_reply_about_the_mailbox_itself_may_bounce_the_subscriber(code, text):
    if classify(code, text) is not Blame.MAILBOX:
        return
    found = enhanced_code(code, text)
    if found is not None and 1 <= found[1] <= 7:  # a defined subject decides
        assert found[1:] in ((1, 1), (1, 2), (1, 10))
    else:
        assert code in (550, 551, 553)
        assert any(words in text.lower() for words in ("unknown", "no such", "exist", "unavailable",
                                                       "not found", "invalid"))


@given(st.sampled_from([550, 551, 553, 554]), st.sampled_from(("1.7", "1.8", "3.0", "3.4", "4.1", "4.4", "5.1",
                                                                 "5.2", "7.8")),
       st.sampled_from(MAILBOX_WORDS), texts)
def test_a_reply_that_blames_our_side_is_an_outage_whatever_its_words(code, subject_detail, words, rest):
    assert classify(code, f"5.{subject_detail} {words} {rest}") is Blame.OURS


@given(st.sampled_from([550, 551, 553, 554]), st.sampled_from(MAILBOX_WORDS), st.sampled_from(CONTENT_WORDS),
       texts, st.booleans())
def test_a_spam_or_content_refusal_never_bounces(code, mailbox_words, content_words, rest, content_first):
    text = f"{content_words} {mailbox_words} {rest}" if content_first else f"{mailbox_words} {rest} {content_words}"
    assert classify(code, text) is not Blame.MAILBOX


@given(st.sampled_from([550, 551, 553]), st.sampled_from(MAILBOX_WORDS), texts)
def test_a_bare_refusal_that_names_the_sender_never_bounces(code, words, rest):
    # words about content anywhere in the reply make it MESSAGE (that one message fails): never a bounce
    assert classify(code, f"Sender address {words} {rest}") is not Blame.MAILBOX
    assert classify(code, f"Sender address {words}") is Blame.OURS


@given(st.sampled_from([550, 551, 553]), st.sampled_from(MAILBOX_WORDS))
def test_the_words_of_a_missing_mailbox_bounce_in_any_case(code, words):
    assert classify(code, f"<ada@example.net>: {words.upper()}") is Blame.MAILBOX
    assert classify(code, f"5.1.1 {words}") is Blame.MAILBOX


@given(st.lists(st.sampled_from(["a.example", "b.example", "c.example", "d.example"]), min_size=1, max_size=12))
def test_the_streak_trips_only_after_five_first_tries_at_three_domains(domains):
    streak: RefusalStreak[int] = RefusalStreak()
    for n, domain in enumerate(domains):
        assert streak.add(550, "5.7.1 policy", domain, n, first_try=True) == []
    assert streak.tripped == (len(domains) >= 5 and len(set(domains)) >= 3)
    assert streak.release() == list(range(len(domains)))


def test_a_different_refusal_ends_the_streak_and_rows_tried_before_do_not_count():
    streak: RefusalStreak[str] = RefusalStreak()
    for n in range(4):
        streak.add(550, "5.1.1 user unknown", f"d{n}.example", f"dead{n}", first_try=True)
    assert streak.add(552, "5.2.2 mailbox full", "e.example", "full", first_try=True) == [f"dead{n}" for n in range(4)]
    streak.release()
    for n in range(8):
        streak.add(550, "5.1.1 user unknown", f"d{n}.example", n, first_try=False)
    assert not streak.tripped  # the same rows refused again after a resume are not new evidence
