"""The one address validation: the fast path for plain addresses says exactly what email-validator says."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings
from hypothesis import strategies as st

from newsletter import addresses

locals_ = st.from_regex(r"[A-Za-z0-9_+-]{1,70}(\.[A-Za-z0-9_+-]{1,10}){0,2}", fullmatch=True)
domains = st.from_regex(
    r"([a-zA-Z0-9-]{1,12}\.){1,3}[a-zA-Z0-9-]{1,8}|[a-z]+\.(test|invalid)|B\u00fccher\.de|[a-z]{60,70}\.org",
    fullmatch=True,
)


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(local=locals_ | st.text(min_size=1, max_size=20), domain=domains)
@example(local="WWW", domain="B\u00fccher.de")  # an RFC 2142 role name is lowercased
@example(local="PostMaster", domain="example.org")
def test_normalize_agrees_with_email_validator(local: str, domain: str) -> None:
    address = f"{local}@{domain}"
    try:
        expected = validate_email(address, check_deliverability=False, strict=True)
    except EmailNotValidError:
        with pytest.raises(EmailNotValidError):
            addresses.normalize(address)
    else:
        assert addresses.normalize(address) == (expected.normalized, expected.ascii_email)


def test_tags_dots_and_case_of_the_local_part_are_kept() -> None:
    assert addresses.normalize("Ana.Lyst+SSB@Example.ORG") == ("Ana.Lyst+SSB@example.org", "Ana.Lyst+SSB@example.org")


def test_idn_domain_has_an_ascii_form_and_a_non_ascii_local_part_has_none() -> None:
    assert addresses.normalize("leser@bücher.example") == ("leser@bücher.example", "leser@xn--bcher-kva.example")
    assert addresses.normalize("zoë@example.org") == ("zoë@example.org", None)


def test_an_invalid_address_says_why() -> None:
    with pytest.raises(EmailNotValidError, match="@"):
        addresses.normalize("no-at-sign.example.org")


@settings(max_examples=300, deadline=None)
@given(domain=st.from_regex(r"([a-z0-9\u00df\u00e4\u00f6\u00fc\u00e9\u03c3\u03c2\u0436-]{1,12}\.){1,2}[a-z\u00fc]{2,6}",
                            fullmatch=True))
def test_ascii_domain_is_the_form_email_validator_gives_an_address(domain: str) -> None:
    """One IDNA conversion: a domain the tool writes (Message-ID, From, d=) matches the reader's To."""
    try:
        expected = validate_email(f"postmaster@{domain}", check_deliverability=False, strict=True).ascii_domain
    except EmailNotValidError:
        return
    assert addresses.ascii_domain(domain) == expected


def test_sharp_s_keeps_its_own_ascii_form():
    assert addresses.ascii_domain("straße.de") == "xn--strae-oqa.de"  # IDNA 2003 would say strasse.de
    assert addresses.ascii_address("leser@straße.de") == "leser@xn--strae-oqa.de"
    assert addresses.ascii_mailbox("Bülletin <b@Straße.de>") == "Bülletin <b@xn--strae-oqa.de>"
    assert addresses.ascii_mailbox("Name <b@example.org>") == "Name <b@example.org>"
