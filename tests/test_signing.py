"""signing.py: one HMAC for every signed link; links already mailed keep working."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter import signing

KEY = b"today-s key, 32 bytes long......"
LIST = "bulletin.example.org"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)

# Made by messages.unsubscribe_token and web/signup.confirm_token before signing.py existed (commit
# 1388152), under KEY: tokens like these are in mailboxes now and must keep verifying.
SENT_UNSUBSCRIBE = {
    "0.5f7a53481b7c4d4b982be35c8a800a53": (0, LIST),
    "4821.e3deb8c01dab1ad95e93d360d063b71b": (4821, LIST),
    "999999999999999999.00203a2dea8efa8c38e7051ba0a2ddbf": (10**18 - 1, "bülletin.example.org"),
}
SENT_CONFIRM = "4821.1796644800.d01d65b4ad17e98272fa34e80793428c"  # made at NOW, valid 7 days
# made by main's signup.confirm_token (commit b4ea2ec) at NOW for a subscriber unsubscribed at REJOIN
SENT_REJOIN = "4821.1796644800.f7afee7cdf18f248ee02539f067c12e8"
REJOIN = "2026-11-29T08:15:00+00:00"


def test_unsubscribe_tokens_already_mailed_still_verify():
    for token, (subscriber_id, list_id) in SENT_UNSUBSCRIBE.items():
        assert signing.verify_token(KEY, token, list_id) == subscriber_id
        assert signing.unsubscribe_token(KEY, subscriber_id, list_id) == token


def test_confirmation_token_already_mailed_still_verifies_until_it_expires():
    assert signing.confirm_token(KEY, 4821, LIST, NOW) == SENT_CONFIRM
    assert signing.verify_confirm_token(KEY, SENT_CONFIRM, LIST, NOW + timedelta(days=6)) == 4821
    assert signing.verify_confirm_token(KEY, SENT_CONFIRM, LIST, NOW + timedelta(days=7, seconds=1)) is None


def test_rejoin_link_already_mailed_still_verifies_while_bound_to_the_same_unsubscribe():
    assert signing.confirm_token(KEY, 4821, LIST, NOW, rejoin=REJOIN) == SENT_REJOIN
    assert signing.token_subscriber_id(SENT_REJOIN) == 4821
    assert signing.verify_confirm_token(KEY, SENT_REJOIN, LIST, NOW, rejoin=REJOIN) == 4821
    # unsubscribed again since (another moment), or not a rejoin at all: the link is void
    assert signing.verify_confirm_token(KEY, SENT_REJOIN, LIST, NOW, rejoin="2026-11-30T09:00:00+00:00") is None
    assert signing.verify_confirm_token(KEY, SENT_REJOIN, LIST, NOW) is None
    assert signing.token_subscriber_id("4821.x") is None


def test_a_token_of_one_purpose_is_refused_for_another():
    unsubscribe = signing.unsubscribe_token(KEY, 4821, LIST)
    confirm = signing.confirm_token(KEY, 4821, LIST, NOW)
    assert signing.verify_confirm_token(KEY, unsubscribe, LIST, NOW) is None
    assert signing.verify_token(KEY, confirm, LIST) is None
    # same numbers, same key and scope, another label: another MAC
    preferences = signing.Signer(KEY, "preferences", LIST)
    assert preferences.sign(4821) != unsubscribe
    assert preferences.verify(unsubscribe) is None


def test_a_later_link_carries_several_numbers_and_an_expiry():
    bounce = signing.Signer(KEY, "bounce", LIST, numbers=2, expiring=True)
    token = bounce.sign(20261130, 4821, expires=int(NOW.timestamp()) + 60)
    assert bounce.verify(token, NOW) == (20261130, 4821)
    assert bounce.verify(token.upper(), NOW) == (20261130, 4821)
    assert bounce.verify(token, NOW + timedelta(minutes=2)) is None
    assert bounce.verify(token) is None  # an expiring token needs a clock to be judged


def test_a_signer_refuses_what_it_cannot_sign():
    with pytest.raises(ValueError, match="non-empty secret key"):
        signing.Signer(b"", "unsubscribe", LIST)
    with pytest.raises(ValueError, match="purpose"):
        signing.Signer(KEY, "Un subscribe", LIST)
    signer = signing.Signer(KEY, "unsubscribe", LIST)
    for bad in (-1, 10**18, True, "7"):
        with pytest.raises(ValueError):
            signer.sign(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expiry"):
        signer.sign(1, expires=2)


@given(numbers=st.lists(st.integers(min_value=0, max_value=10**18 - 1), min_size=1, max_size=3),
       expiring=st.booleans(), purpose=st.sampled_from(["unsubscribe", "confirm", "bounce"]))
def test_every_signed_token_verifies_under_its_own_signer_only(numbers, expiring, purpose):
    signer = signing.Signer(KEY, purpose, LIST, numbers=len(numbers), expiring=expiring)
    expires = int(NOW.timestamp()) + 1 if expiring else None
    token = signer.sign(*numbers, expires=expires)
    assert signer.verify(token, NOW) == tuple(numbers)
    assert signing.Signer(b"another key", purpose, LIST, numbers=len(numbers), expiring=expiring).verify(token, NOW) is None
    assert signing.Signer(KEY, purpose, "other.example.org", numbers=len(numbers),
                          expiring=expiring).verify(token, NOW) is None


def test_verp_tags_already_sent_still_verify_through_the_one_signer():
    """Made by verp.py's own HMAC before it used signing.Signer (commit d08e948)."""
    from newsletter.verp import Forged, Verp

    verp = Verp(KEY, LIST, "bounces@example.org")
    sent = "bounces+20261130-4821-4b7e7cea5eed4a837af8@example.org"
    assert verp.address(date(2026, 11, 30), 4821) == sent
    found = verp.read(sent.upper())
    assert found is not None and (found.day, found.subscriber_id) == (date(2026, 11, 30), 4821)
    with pytest.raises(Forged, match="signature"):
        verp.read("bounces+20261130-4822-4b7e7cea5eed4a837af8@example.org")
    # a VERP tag is no unsubscribe or confirmation token, whatever its numbers
    assert signing.Signer(KEY, "unsubscribe", LIST, numbers=2, separator="-", mac_bytes=10).verify(
        sent[len("bounces+"):sent.index("@")]) is None
