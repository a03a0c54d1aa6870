"""Imports: other tools' subscriber exports read into the list in one transaction, never wiping an
unsubscribe.

The header row says which tool wrote the file (Mailchimp, Substack, Ghost, listmonk, our own
export, or any file with an `email` column); status columns are honoured; sections and frequency
are read where the file has them (import_choices.py); every row is validated and reported by the
line it starts on; case-only duplicates merge; nothing changes unless the whole file can be applied.
"""

from __future__ import annotations

import codecs
import csv
import logging
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from newsletter import events, store
from newsletter.errors import ImportFileError, SubscriberError
from newsletter.events import Event, Kind
from newsletter.import_choices import Choices, choices
from newsletter.models import Frequency, decode_sections, encode_sections
from newsletter.subscribers import (
    ACTIVE, BOUNCED, EXPORT_COLUMNS, PENDING, UNSUBSCRIBED, clean_name, imported_status, normalize_email,
    preferences_detail, unescape_cell, writing,
)

logger = logging.getLogger(__name__)

SHOWN_PROBLEMS = 10  # invalid lines listed in an ImportFileError before "… and N more"


@dataclass(frozen=True)
class RowProblem:
    """One row of an import file that cannot be imported: the line it starts on and why."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class MergedRow:
    """A row whose address equals (ignoring case) an earlier row or a list entry, merged into it."""

    line: int
    email: str
    merged_into: str  # "line 3" or "the list entry alice@example.com"

    def __str__(self) -> str:
        return f"line {self.line}: {self.email} merged with {self.merged_into}"


@dataclass
class ImportReport:
    """The outcome of an import; every distinct address counts once in added/updated/unchanged/kept_unsubscribed."""

    path: Path
    source_format: str
    rows: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    kept_unsubscribed: int = 0
    merged: list[MergedRow] = field(default_factory=list)
    invalid: list[RowProblem] = field(default_factory=list)
    dry_run: bool = False
    with_sections: int = 0  # distinct addresses whose sections the file names (and that match ours)
    weekly: int = 0         # distinct addresses the file says receive the weekly digest
    unmatched_sections: dict[str, int] = field(default_factory=dict)  # a name that is no section -> rows


# ----------------------------------------------------------------------------- import: reading the file

_BREAK = re.compile(r"\r\n|\r|\n")
_CHUNK = 1 << 16


def _decoded_lines(path: Path, encoding: str, shown_encoding: str) -> Iterator[str]:
    """Yield the file's physical lines (ends kept), decoding strictly; a bad byte names its line."""
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    pending = ""
    line = 1  # the line `pending` starts on
    with path.open("rb") as raw:
        while True:
            chunk = raw.read(_CHUNK)
            final = not chunk
            try:
                text = decoder.decode(chunk, final)
            except UnicodeDecodeError as err:
                good = err.object[: err.start].decode(encoding, "replace")
                where = line + len(_BREAK.findall(pending + good))
                bad = err.object[err.start : err.end].hex(" ")
                raise ImportFileError(
                    f"{path}:{where}: not valid {shown_encoding} (bytes {bad}: {err.reason}); "
                    "if the file uses another encoding, pass it with --encoding (for example cp1252)"
                ) from err
            pending += text
            start = 0
            for match in _BREAK.finditer(pending):
                if not final and match.end() == len(pending) and match.group() == "\r":
                    break  # maybe the first half of a \r\n split across chunks
                yield pending[start : match.end()]
                line += 1
                start = match.end()
            pending = pending[start:]
            if final:
                if pending:
                    yield pending
                return


def _header_key(cell: str) -> str:
    return " ".join(cell.replace("\ufeff", "").replace("_", " ").replace("-", " ").casefold().split())


_EMAIL_HEADERS = ("email", "email address", "e mail", "e mail address", "mail")
_NAME_HEADERS = ("name", "full name")
_FIRST_HEADERS = ("first name", "firstname", "fname", "given name")
_LAST_HEADERS = ("last name", "lastname", "lname", "surname", "family name")

_STATUS_WORDS = {
    "active": ACTIVE, "subscribed": ACTIVE, "enabled": ACTIVE, "confirmed": ACTIVE,
    "unsubscribed": UNSUBSCRIBED, "unsubscribe": UNSUBSCRIBED, "not subscribed": UNSUBSCRIBED,
    "blocklisted": UNSUBSCRIBED, "blacklisted": UNSUBSCRIBED, "blocked": UNSUBSCRIBED,
    "disabled": UNSUBSCRIBED, "inactive": UNSUBSCRIBED, "opted out": UNSUBSCRIBED,
    "opt out": UNSUBSCRIBED, "unsubscribed by admin": UNSUBSCRIBED,
    # Mailchimp "cleans" addresses that bounce hard
    "bounced": BOUNCED, "bounce": BOUNCED, "hard bounce": BOUNCED, "cleaned": BOUNCED,
    "pending": PENDING, "unconfirmed": PENDING,
}
_TRUE = ("true", "yes", "y", "1", "t")
_FALSE = ("false", "no", "n", "0", "f")


@dataclass(frozen=True)
class _Layout:
    """Where the fields are in one file's rows, and what the file's header says about its rows."""

    source_format: str
    width: int
    email: int
    name: int | None
    first: int | None
    last: int | None
    status: int | None
    email_disabled: int | None  # Substack: true → unsubscribed
    subscribed_flag: int | None  # Ghost subscribed_to_emails: false → unsubscribed
    created_at: int | None
    updated_at: int | None
    file_status: str | None  # Mailchimp unsubscribed/cleaned exports: every row
    choices: Choices         # where the rows say sections and frequency


def _layout(path: Path, header: list[str], sections: Sequence[str] = ()) -> _Layout:
    keys = [_header_key(c) for c in header]

    def find(*names: str) -> int | None:
        for name in names:
            if name in keys:
                return keys.index(name)
        return None

    email = find(*_EMAIL_HEADERS)
    if email is None:
        found = ", ".join(repr(c.strip()) for c in header) or "none"
        raise ImportFileError(
            f"{path}:1: the header has no email column (found: {found}); "
            "expected a column named email or Email Address"
        )
    present = set(keys)
    if "email address" in present:
        source = "Mailchimp"
    elif present & {"active subscription", "email disabled"}:
        source = "Substack"
    elif "subscribed to emails" in present:
        source = "Ghost"
    elif "status" in present and present & {"uuid", "attributes"}:
        source = "listmonk"
    elif keys in ([_header_key(c) for c in EXPORT_COLUMNS], [_header_key(c) for c in EXPORT_COLUMNS[:5]]):
        source = "newsletter export"  # with sections and frequency, or as it was before them
    else:
        source = "plain"
    file_status = None
    if "clean time" in present:
        file_status = BOUNCED
    elif "unsub time" in present:
        file_status = UNSUBSCRIBED
    return _Layout(
        source_format=source,
        width=len(header),
        email=email,
        name=find(*_NAME_HEADERS),
        first=find(*_FIRST_HEADERS),
        last=find(*_LAST_HEADERS),
        status=find("status", "member status", "subscription status"),
        email_disabled=find("email disabled"),
        subscribed_flag=find("subscribed to emails", "subscribed"),
        created_at=find("created at", "created"),
        updated_at=find("updated at", "updated"),
        file_status=file_status,
        choices=choices(source, header, keys, sections),
    )


def _flag(value: str, column: str) -> bool | None:
    value = value.strip().casefold()
    if not value:
        return None
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SubscriberError(f"{column}: {value!r} is neither true nor false")


def _row_status(layout: _Layout, cells: list[str]) -> str | None:
    """Return the status the row asks for, or None when the file says nothing about it."""
    said: list[str] = []
    if layout.file_status:
        said.append(layout.file_status)
    if layout.status is not None:
        value = " ".join(cells[layout.status].replace("_", " ").casefold().split())
        if value:
            if value not in _STATUS_WORDS:
                raise SubscriberError(
                    f"status: {cells[layout.status].strip()!r} is not a status the importer knows "
                    "(subscribed, unsubscribed, cleaned, bounced, blocklisted, enabled, disabled…)"
                )
            said.append(_STATUS_WORDS[value])
    if layout.email_disabled is not None and _flag(cells[layout.email_disabled], "email_disabled"):
        said.append(UNSUBSCRIBED)
    if layout.subscribed_flag is not None:
        flag = _flag(cells[layout.subscribed_flag], "subscribed_to_emails")
        if flag is not None:
            said.append(ACTIVE if flag else UNSUBSCRIBED)
    return _strongest(said)


def _strongest(statuses: Iterable[str | None]) -> str | None:
    """Combine what several sources say: bounced beats unsubscribed beats active beats pending beats nothing."""
    said = set(statuses)
    for status in (BOUNCED, UNSUBSCRIBED, ACTIVE, PENDING):
        if status in said:
            return status
    return None


def _timestamp(value: str) -> str | None:
    value = value.strip()
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


@dataclass
class _Wanted:
    """One distinct address as the file describes it, merged over its rows."""

    line: int
    email: str
    key: str
    name: str
    status: str | None
    created_at: str | None
    updated_at: str | None
    sections: frozenset[str] | None = None  # None: the file does not say
    frequency: Frequency | None = None


def _parse_row(layout: _Layout, cells: list[str], line: int) -> _Wanted:
    normalized, key = normalize_email(unescape_cell(cells[layout.email]))
    if layout.name is not None:
        name = unescape_cell(cells[layout.name])
    else:
        parts = [unescape_cell(cells[i]).strip() for i in (layout.first, layout.last) if i is not None]
        name = " ".join(p for p in parts if p)
    return _Wanted(
        line=line,
        email=normalized,
        key=key,
        name=clean_name(name),
        status=_row_status(layout, cells),
        created_at=_timestamp(cells[layout.created_at]) if layout.created_at is not None else None,
        updated_at=_timestamp(cells[layout.updated_at]) if layout.updated_at is not None else None,
        frequency=layout.choices.frequency_of([unescape_cell(c) for c in cells]),
        sections=layout.choices.sections([unescape_cell(c) for c in cells]),
    )


def _cells(n: int) -> str:
    return "1 cell" if n == 1 else f"{n} cells"


def _read_import(path: Path, codec: str, encoding: str, report: ImportReport,
                 sections: Sequence[str] = ()) -> dict[str, _Wanted]:
    """Read PATH into one _Wanted per distinct address, recording invalid rows and merges in REPORT."""
    lines = _decoded_lines(path, codec, encoding)
    first = next(lines, None)
    if first is None:
        raise ImportFileError(f"{path}:1: the file is empty; expected a header row with an email column")
    delimiter = max(",;\t", key=first.count) if any(d in first for d in ",;\t") else ","

    def all_lines() -> Iterator[str]:
        yield first
        yield from lines

    reader = csv.reader(all_lines(), delimiter=delimiter)
    wanted: dict[str, _Wanted] = {}
    line = 1
    try:
        header = next(reader)
        layout = _layout(path, header, sections)
        report.source_format = layout.source_format
        line = reader.line_num + 1
        for cells in reader:
            start, line = line, reader.line_num + 1
            if not any(c.strip() for c in cells):
                continue
            report.rows += 1
            if len(cells) != layout.width:
                report.invalid.append(
                    RowProblem(start, f"has {_cells(len(cells))}, the header has {layout.width}")
                )
                continue
            try:
                row = _parse_row(layout, cells, start)
            except SubscriberError as err:
                report.invalid.append(RowProblem(start, str(err)))
                continue
            earlier = wanted.get(row.key)
            if earlier is None:
                wanted[row.key] = row
                continue
            report.merged.append(MergedRow(start, row.email, f"line {earlier.line}"))
            earlier.name = earlier.name or row.name
            earlier.status = _strongest((earlier.status, row.status))
            earlier.sections = earlier.sections if earlier.sections is not None else row.sections
            earlier.frequency = earlier.frequency or row.frequency
    except csv.Error as err:
        raise ImportFileError(f"{path}:{line}: not readable as CSV: {err}") from err
    report.unmatched_sections = layout.choices.not_matched()
    report.with_sections = sum(1 for row in wanted.values() if row.sections)
    report.weekly = sum(1 for row in wanted.values() if row.frequency == Frequency.WEEKLY)
    return wanted


# ----------------------------------------------------------------------------- import: applying it


def _existing(conn: sqlite3.Connection, keys: list[str]) -> dict[str, sqlite3.Row]:
    found: dict[str, sqlite3.Row] = {}
    for i in range(0, len(keys), 500):
        batch = keys[i : i + 500]
        marks = ",".join("?" * len(batch))
        for row in conn.execute(
            f"SELECT id, email, email_key, name, status, sections, frequency, preferences_at FROM subscribers "
            f"WHERE email_key IN ({marks})", batch
        ):
            found[row["email_key"]] = row
    return found


def _change_kind(before: str, after: str) -> Kind:
    if after == ACTIVE:
        return Kind.CONFIRMED if before == PENDING else Kind.RESUBSCRIBED
    return Kind.BOUNCED if after == BOUNCED else Kind.UNSUBSCRIBED


def _plan(
    conn: sqlite3.Connection, wanted: dict[str, _Wanted], resubscribe: bool, report: ImportReport
) -> tuple[list[tuple], list[tuple], list[Event]]:
    """Compare the file with the list; count the outcome in REPORT; return (inserts, updates, their events)."""
    now = store.now_iso()
    existing = _existing(conn, list(wanted))
    inserts: list[tuple] = []
    updates: list[tuple] = []
    changes: list[Event] = []
    for key, row in wanted.items():
        current = existing.get(key)
        if current is None:
            created = row.created_at or now
            inserts.append((row.email, key, row.name, row.status or ACTIVE, created, row.updated_at or created,
                            encode_sections(row.sections or ()), (row.frequency or Frequency.DAILY).value))
            report.added += 1
            continue
        if current["email"] != row.email:
            report.merged.append(MergedRow(row.line, row.email, f"the list entry {current['email']}"))
        status, kept = imported_status(current["status"], row.status, resubscribe)
        name = row.name or current["name"]
        # what the file says a reader chose replaces what the list holds; where it says nothing, it stays
        before = (decode_sections(current["sections"]), Frequency(current["frequency"]))
        chosen = (before[0] if row.sections is None else row.sections, row.frequency or before[1])
        preferences_at = now if chosen != before else current["preferences_at"]
        changed = status != current["status"] or name != current["name"] or chosen != before
        if changed:
            updates.append((name, status, encode_sections(chosen[0]), chosen[1].value, preferences_at, now,
                            current["id"]))
        if status != current["status"]:
            changes.append(Event(current["id"], _change_kind(current["status"], status), events.IMPORT, now))
        if chosen != before:
            changes.append(Event(current["id"], Kind.PREFERENCES, events.IMPORT, now,
                                 detail=preferences_detail(*chosen)))
        if kept:
            report.kept_unsubscribed += 1
        elif changed:
            report.updated += 1
        else:
            report.unchanged += 1
    report.merged.sort(key=lambda m: m.line)
    return inserts, updates, changes


def _invalid_error(path: Path, problems: list[RowProblem]) -> ImportFileError:
    shown = "\n".join(f"  {p}" for p in problems[:SHOWN_PROBLEMS])
    more = f"\n  … and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
    rows = "row is" if len(problems) == 1 else "rows are"
    return ImportFileError(
        f"{path}: {len(problems)} {rows} invalid, so nothing was imported "
        f"(fix them, or pass --skip-invalid to import the rest):\n{shown}{more}"
    )


def import_file(
    conn: sqlite3.Connection,
    path: Path,
    dry_run: bool = False,
    resubscribe: bool = False,
    skip_invalid: bool = False,
    encoding: str = "utf-8",
    sections: Sequence[str] = (),
) -> ImportReport:
    """Import the subscribers in the CSV file PATH in one transaction, and report what changed.

    SECTIONS are the newsletter's `[issue] sections`: the names a file gives readers (our export's
    sections, Ghost newsletters, listmonk lists, Mailchimp groups and tags) become theirs where they
    match one, ignoring letter case; the report counts the others by name.
    """
    path = Path(path)
    try:
        codec = codecs.lookup(encoding).name
    except LookupError as err:
        raise ImportFileError(f"--encoding {encoding!r}: unknown encoding") from err
    if codec == "utf-8":
        codec = "utf-8-sig"  # tolerate the byte order mark Excel writes
    report = ImportReport(path=path, source_format="plain", dry_run=dry_run)
    try:
        wanted = _read_import(path, codec, encoding, report, sections)
    except OSError as err:
        raise ImportFileError(f"{path}: cannot read the file: {err.strerror}") from err
    if report.invalid and not skip_invalid:
        raise _invalid_error(path, report.invalid)
    if dry_run:
        _plan(conn, wanted, resubscribe, report)
        return report
    with writing(conn, str(path)):
        inserts, updates, changes = _plan(conn, wanted, resubscribe, report)
        last_id = conn.execute("SELECT coalesce(max(id), 0) FROM subscribers").fetchone()[0]
        conn.executemany(
            "INSERT INTO subscribers (email, email_key, name, status, created_at, updated_at, sections, frequency)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            inserts,
        )
        conn.executemany("UPDATE subscribers SET name = ?, status = ?, sections = ?, frequency = ?, "
                         "preferences_at = ?, updated_at = ? WHERE id = ?", updates)
        now = store.now_iso()
        added = conn.execute("SELECT id FROM subscribers WHERE id > ?", (last_id,))
        events.record_many(conn, [*changes, *(Event(row[0], Kind.IMPORTED, events.IMPORT, now) for row in added)])
    logger.info("imported %s: %d added, %d updated", path, report.added, report.updated)
    return report
