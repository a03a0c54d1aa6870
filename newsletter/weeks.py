"""ISO weeks, and the ledger key of one variant of a week's digest.

A digest goes through the same ledger as the daily issues, which keys everything by a `date`
(`issues.day`, `deliveries.issue_day`, the outbox folder, Message-IDs). `DigestKey` is such a date
(the week's Monday) whose text is `2026-W48.1`: week 48's digest, variant 1. So a digest's rows
never share a key with a daily issue, and the one send path takes it unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

from newsletter.errors import NewsletterError

_WEEK = re.compile(r"(\d{4})-W(\d{2})")
# a digest's key as the ledger stores it: YYYY-Www.N (N: the variant, from 1)
DIGEST_KEY = re.compile(r"(\d{4})-W(\d{2})\.(\d+)")
# the SQL pattern of every digest key (and of no daily key, YYYY-MM-DD)
DIGEST_KEY_LIKE = "%-W%"
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True, order=True)
class IsoWeek:
    """One ISO 8601 week: Monday to Sunday, named like 2026-W48."""

    year: int
    week: int

    @classmethod
    def parse(cls, text: str) -> IsoWeek:
        """Read '2026-W48'; raise NewsletterError naming TEXT when it is no such week."""
        match = _WEEK.fullmatch(text.strip())
        if match:
            try:
                return cls.of(date.fromisocalendar(int(match[1]), int(match[2]), 1))
            except ValueError:
                pass
        raise NewsletterError(f"--week {text!r}: not an ISO week such as 2026-W48 (a year, -W, a week of 01 to 53 "
                              "that the year has)")

    @classmethod
    def of(cls, day: date) -> IsoWeek:
        """Return the week DAY is in."""
        year, week, _ = date(day.year, day.month, day.day).isocalendar()
        return cls(year, week)

    @property
    def monday(self) -> date:
        return date.fromisocalendar(self.year, self.week, 1)

    @property
    def sunday(self) -> date:
        return self.monday + timedelta(days=6)

    @property
    def days(self) -> tuple[date, ...]:
        return tuple(self.monday + timedelta(days=n) for n in range(7))

    def previous(self) -> IsoWeek:
        return IsoWeek.of(self.monday - timedelta(days=7))

    def following(self) -> IsoWeek:
        return IsoWeek.of(self.monday + timedelta(days=7))

    def dates(self, language: str = "en") -> str:
        """Return the week's days as CLDR writes a span in LANGUAGE: 'Nov 23 – 29, 2026', '23–29 nov. 2026'."""
        from babel.dates import format_interval

        from newsletter.i18n import locale_of

        return format_interval(self.monday, self.sunday, "yMMMd", locale=locale_of(language))

    def key(self, variant: int) -> DigestKey:
        """Return the ledger key of this week's digest VARIANT."""
        return DigestKey.of(self, variant)

    def like(self) -> str:
        """The SQL pattern of every variant key of this week."""
        return f"{self}.%"

    def __str__(self) -> str:
        return f"{self.year}-W{self.week:02d}"


class DigestKey(date):
    """The ledger key of one variant of a week's digest: as a date, the week's Monday; as text, 2026-W48.1."""

    variant: int = 1

    @classmethod
    def of(cls, week: IsoWeek, variant: int) -> DigestKey:
        monday = week.monday
        key = cls(monday.year, monday.month, monday.day)
        key.variant = variant
        return key

    @property
    def week(self) -> IsoWeek:
        return IsoWeek.of(self)

    def isoformat(self) -> str:  # what the ledger's columns and the outbox folder hold
        # variant 0 is the whole week as a preview shows it, never in the ledger: outbox/2026-W48/
        return f"{self.week}.{self.variant}" if self.variant else str(self.week)

    def __str__(self) -> str:
        return self.isoformat()

    def __repr__(self) -> str:
        return f"DigestKey({self.isoformat()!r})"

    def __format__(self, spec: str) -> str:
        # any date format (Message-IDs use %Y%m%d) gives a compact form that no day has: 2026W48v1
        return f"{self.week.year}W{self.week.week:02d}v{self.variant}" if spec else self.isoformat()

    def as_day(self) -> date:
        """The week's Monday as a plain date."""
        return date(self.year, self.month, self.day)

    # arithmetic leaves the digest: `key - timedelta(days=2)` is a plain day, as for a daily issue
    def __add__(self, other):
        return self.as_day() + other

    __radd__ = __add__

    def __sub__(self, other):
        return self.as_day() - (other.as_day() if isinstance(other, DigestKey) else other)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DigestKey):
            return (self.toordinal(), self.variant) == (other.toordinal(), other.variant)
        return False if isinstance(other, date) else NotImplemented

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash((self.toordinal(), self.variant, "digest"))


def ledger_key(text: str) -> date:
    """Return the ledger's key TEXT as a date: a day (YYYY-MM-DD) or a digest's DigestKey."""
    match = DIGEST_KEY.fullmatch(text)
    if match:
        return IsoWeek(int(match[1]), int(match[2])).key(int(match[3]))
    return date.fromisoformat(text)


__all__ = ["DIGEST_KEY", "DIGEST_KEY_LIKE", "DigestKey", "IsoWeek", "WEEKDAYS", "ledger_key"]
