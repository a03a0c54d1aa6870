"""ISO weeks and the ledger key of a digest variant."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter.errors import NewsletterError
from newsletter.weeks import DigestKey, IsoWeek, ledger_key

DAYS = st.dates(min_value=date(1000, 1, 8), max_value=date(9999, 12, 24))


@given(day=DAYS, variant=st.integers(1, 999))
def test_every_day_is_in_its_week_and_every_key_reads_back(day, variant):
    week = IsoWeek.of(day)
    assert week.monday <= day <= week.sunday and len(week.days) == 7 and week.monday.weekday() == 0
    assert IsoWeek.parse(str(week)) == week
    assert week.previous().following() == week and week.previous() < week
    key = week.key(variant)
    assert ledger_key(key.isoformat()) == key and key.week == week
    assert ledger_key(day.isoformat()) == day and not isinstance(ledger_key(day.isoformat()), DigestKey)
    assert key != week.monday and week.monday != key and key != week.key(variant + 1)
    assert key - timedelta(days=1) == week.monday - timedelta(days=1)  # arithmetic leaves the digest


def test_a_key_is_named_by_its_week_and_variant_wherever_the_ledger_writes_a_day():
    key = IsoWeek(2026, 48).key(2)
    assert (key.isoformat(), str(key), f"{key:%Y%m%d}") == ("2026-W48.2", "2026-W48.2", "2026W48v2")
    assert str(IsoWeek(2026, 48).key(0)) == "2026-W48"  # the preview's: the whole week, never in the ledger


@pytest.mark.parametrize("week, shown", [
    (IsoWeek(2026, 48), "Nov 23\u2009–\u200929, 2026"),
    (IsoWeek(2026, 49), "Nov 30\u2009–\u2009Dec 6, 2026"),
    (IsoWeek(2026, 53), "Dec 28, 2026\u2009–\u2009Jan 3, 2027"),
])
def test_a_week_says_its_days_as_a_reader_does(week, shown):
    assert week.dates() == shown
    assert IsoWeek(2026, 48).dates("fr") == "23–29 nov. 2026"


@pytest.mark.parametrize("text", ["2026-48", "2026-W5", "2025-W53", "2026-W00", "W48", ""])
def test_a_week_that_does_not_exist_is_refused_by_name(text):
    with pytest.raises(NewsletterError, match=rf"--week {text!r}: not an ISO week such as 2026-W48"):
        IsoWeek.parse(text)
