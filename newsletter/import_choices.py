"""What an import file says each reader chose: sections and frequency (importer.py reads the rest).

Sections come from the columns each tool writes them in: our export's `sections`, Ghost's
`newsletters`, listmonk's `lists`, Mailchimp's `TAGS` and group columns (a group category is a
column titled with the category's name). A name becomes a section when it matches one of
`[issue] sections` ignoring letter case; the others are counted and reported, never guessed.
A Mailchimp column other than its own fixed ones counts as a group column only if some value in
it names a section (a merge field such as Company stays out of the report).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from newsletter.errors import SubscriberError
from newsletter.models import Frequency

# Mailchimp's own columns (their header keys, as importer._header_key writes them): not groups.
_MAILCHIMP_FIXED = frozenset({
    "email address", "first name", "last name", "address", "phone number", "birthday", "company",
    "member rating", "optin time", "optin ip", "confirm time", "confirm ip", "latitude", "longitude",
    "gmtoff", "dstoff", "timezone", "cc", "region", "last changed", "leid", "euid", "notes", "tags",
    "unsub time", "unsub campaign title", "unsub campaign id", "unsub reason", "unsub reason other",
    "clean time", "clean campaign title", "clean campaign id",
})
# Columns that carry section names, by the tool that wrote the file; every file may have `sections`.
_SECTION_COLUMNS = {"Ghost": ("newsletters",), "listmonk": ("lists",), "Mailchimp": ("tags",)}
_FREQUENCY_COLUMNS = ("frequency",)


@dataclass
class Choices:
    """Where one file's rows say sections and frequency, and the names that matched no section."""

    columns: tuple[int, ...]          # cells always read for sections
    candidates: tuple[int, ...]       # Mailchimp columns that are groups if a value names a section
    frequency: int | None
    spelled: dict[str, str]           # casefolded section name -> as [issue] sections spells it
    headers: tuple[str, ...]
    unmatched: dict[int, Counter] = field(default_factory=dict)  # column -> name -> rows
    matched_in: set[int] = field(default_factory=set)

    @property
    def present(self) -> bool:
        return bool(self.columns or self.candidates or self.frequency is not None)

    def sections(self, cells: list[str]) -> frozenset[str] | None:
        """Return the sections a row names (None: the file says nothing for this row)."""
        found: set[str] = set()
        said = False
        for column in (*self.columns, *self.candidates):
            names = split_names(cells[column], self.spelled)
            said = said or bool(names)
            for name in names:
                spelled = self.spelled.get(name.casefold())
                if spelled is None:
                    self.unmatched.setdefault(column, Counter())[name] += 1
                else:
                    found.add(spelled)
                    self.matched_in.add(column)
        if not said:
            return None
        return frozenset(found) if found else None  # names but none of ours: the reader keeps all

    def frequency_of(self, cells: list[str]) -> Frequency | None:
        """Return the frequency a row says, None if it says none; SubscriberError for another word."""
        if self.frequency is None:
            return None
        value = cells[self.frequency].strip().casefold()
        if not value:
            return None
        try:
            return Frequency(value)
        except ValueError:
            raise SubscriberError(f"frequency: {cells[self.frequency].strip()!r} is not daily or weekly") from None

    def not_matched(self) -> dict[str, int]:
        """Return each name that matched no section and in how many rows (group candidates only if they matched)."""
        total: Counter = Counter()
        for column, names in self.unmatched.items():
            if column in self.columns or column in self.matched_in:
                total.update(names)
        return dict(sorted(total.items(), key=lambda item: (-item[1], item[0].casefold())))


def choices(source_format: str, header: Sequence[str], keys: Sequence[str], sections: Iterable[str]) -> Choices:
    """Return where a file with HEADER (and its KEYS) from SOURCE_FORMAT says sections and frequency."""
    wanted = ("sections", *_SECTION_COLUMNS.get(source_format, ()))
    columns = tuple(i for i, key in enumerate(keys) if key in wanted)
    candidates: tuple[int, ...] = ()
    if source_format == "Mailchimp":
        candidates = tuple(i for i, key in enumerate(keys) if key not in _MAILCHIMP_FIXED and i not in columns)
    frequency = next((i for i, key in enumerate(keys) if key in _FREQUENCY_COLUMNS), None)
    return Choices(columns=columns, candidates=candidates, frequency=frequency,
                   spelled={name.casefold(): name for name in sections}, headers=tuple(header))


def split_names(cell: str, spelled: dict[str, str]) -> list[str]:
    """Return the names in one cell: a JSON list (of names, or of objects with a name), or names
    separated by newlines or ';', and by ',' inside a piece that is not itself a known name."""
    cell = cell.strip()
    if not cell:
        return []
    if cell.casefold() in spelled:
        return [cell]
    if cell.startswith("["):
        try:
            items = json.loads(cell)
        except ValueError:
            items = None
        listed = [item.get("name") if isinstance(item, dict) else item for item in items or ()]
        if isinstance(items, list) and all(isinstance(name, str) for name in listed):
            return [name.strip() for name in listed if name.strip()]  # type: ignore[union-attr]
    names: list[str] = []
    for piece in cell.replace(";", "\n").split("\n"):
        piece = piece.strip()
        if piece.casefold() in spelled:
            names.append(piece)
            continue
        names += [part.strip().strip('"').strip() for part in piece.split(",")]
    return [name for name in names if name]


__all__ = ["Choices", "choices", "split_names"]
