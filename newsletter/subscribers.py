"""The subscriber list: add, status changes, removal, import from other tools' exports, export.

Addresses are validated and normalized by email-validator (EMAIL.md rule 22) and deduplicated on
the case-folded normalized form, `email_key`. Every change is one `store.write` transaction.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import json
import logging
import os
import re
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO


from newsletter import addresses, store
from newsletter.errors import ImportFileError, SubscriberError
from newsletter.models import Subscriber

logger = logging.getLogger(__name__)

ACTIVE, UNSUBSCRIBED, BOUNCED = "active", "unsubscribed", "bounced"
PENDING = "pending"  # signed up on the web, not yet confirmed: receives no issue
STATUSES: tuple[str, ...] = (ACTIVE, UNSUBSCRIBED, BOUNCED, PENDING)
EXPORT_COLUMNS: tuple[str, ...] = ("email", "name", "status", "created_at", "updated_at")
MAX_NAME_LENGTH = 200
SHOWN_PROBLEMS = 10  # invalid lines listed in an ImportFileError before "… and N more"

_COLUMNS = "id, email, email_key, name, status, created_at, updated_at"
# Unicode categories Cc (C0, DEL, C1), Zl and Zp: anything that can end or split a header line.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ENCODED_WORD = re.compile(r"=\?.*\?=", re.DOTALL)
# A spreadsheet treats a cell starting with one of these as a formula (or, for ', as a literal).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


# ----------------------------------------------------------------------------- values


@dataclass(frozen=True)
class AddResult:
    """What `add` did: `outcome` is "added", "unchanged" or "resubscribed"."""

    subscriber: Subscriber
    outcome: str

    @property
    def changed(self) -> bool:
        return self.outcome != "unchanged"


@dataclass(frozen=True)
class StatusChange:
    """What a status change did: the subscriber afterwards, their status before, and whether it changed."""

    subscriber: Subscriber
    before: str

    @property
    def changed(self) -> bool:
        return self.subscriber.status != self.before


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


# ----------------------------------------------------------------------------- validation


def _show(text: str) -> str:
    return text if text.isprintable() else repr(text)


def normalize_email(address: str) -> tuple[str, str]:
    """Return (normalized address, email_key) for ADDRESS, or raise SubscriberError saying why not."""
    stripped = address.strip()
    if not stripped:
        raise SubscriberError("email: the address is empty")
    try:
        normalized, _ = addresses.normalize(stripped)
    except addresses.EmailNotValidError as err:
        raise SubscriberError(f"{_show(stripped)}: not a valid email address: {err}") from err
    return normalized, normalized.casefold()


def clean_name(name: str, field_name: str = "name") -> str:
    """Return NAME stripped, or raise SubscriberError if it could break an email header (EMAIL.md rule 21)."""
    name = name.strip()
    control = _CONTROL.search(name)
    if control:
        raise SubscriberError(
            f"{field_name}: {_show(name)} contains the control character U+{ord(control.group()):04X}; "
            "names go into email headers"
        )
    if _ENCODED_WORD.search(name):
        raise SubscriberError(
            f"{field_name}: {name!r} looks like an RFC 2047 encoded word (=?…?=); names go into email headers"
        )
    if len(name) > MAX_NAME_LENGTH:
        raise SubscriberError(f"{field_name}: longer than {MAX_NAME_LENGTH} characters")
    return name


@contextlib.contextmanager
def _writing(conn: sqlite3.Connection, what: str) -> Iterator[None]:
    """One store.write transaction; a database failure becomes a SubscriberError about WHAT."""
    try:
        with store.write(conn):
            yield
    except sqlite3.Error as err:
        raise SubscriberError(f"{what}: the database refused the change, so nothing changed: {err}") from err


def _check_status(status: str) -> str:
    if status not in STATUSES:
        raise SubscriberError(f"status: {status!r} is not one of {', '.join(STATUSES)}")
    return status


# ----------------------------------------------------------------------------- single changes


def _row(conn: sqlite3.Connection, key: str) -> Subscriber | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM subscribers WHERE email_key = ?", (key,)).fetchone()
    return Subscriber(**dict(row)) if row else None


def _require(conn: sqlite3.Connection, address: str) -> Subscriber:
    _, key = normalize_email(address)
    found = _row(conn, key)
    if found is None:
        raise SubscriberError(f"{_show(address.strip())} is not on the list")
    return found


def get(conn: sqlite3.Connection, email: str) -> Subscriber:
    """Return the subscriber with EMAIL (in any letter case), or raise SubscriberError."""
    return _require(conn, email)


def get_id(conn: sqlite3.Connection, subscriber_id: int) -> Subscriber | None:
    """Return the subscriber with SUBSCRIBER_ID, or None if there is none (erased)."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM subscribers WHERE id = ?", (subscriber_id,)).fetchone()
    return Subscriber(**dict(row)) if row else None


def add(conn: sqlite3.Connection, email: str, name: str = "", resubscribe: bool = False) -> AddResult:
    """Add EMAIL; an address already there is left alone, and a former subscriber needs RESUBSCRIBE."""
    normalized, key = normalize_email(email)
    name = clean_name(name)
    with _writing(conn, normalized):
        existing = _row(conn, key)
        if existing is None:
            now = store.now_iso()
            conn.execute(
                "INSERT INTO subscribers (email, email_key, name, status, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (normalized, key, name, ACTIVE, now, now),
            )
            return AddResult(_row(conn, key), "added")  # type: ignore[arg-type]
        if existing.status == ACTIVE:
            return AddResult(existing, "unchanged")
        if existing.status == PENDING:
            # the editors add it by hand: that is the confirmation the web sign-up waits for
            conn.execute(
                "UPDATE subscribers SET status = ?, name = ?, updated_at = ? WHERE id = ?",
                (ACTIVE, name or existing.name, store.now_iso(), existing.id),
            )
            return AddResult(_row(conn, key), "added")  # type: ignore[arg-type]
        if not resubscribe:
            raise SubscriberError(
                f"{existing.email} is {existing.status}; if they asked to join again, "
                "add it with --resubscribe"
            )
        conn.execute(
            "UPDATE subscribers SET status = ?, name = ?, updated_at = ? WHERE id = ?",
            (ACTIVE, name or existing.name, store.now_iso(), existing.id),
        )
        return AddResult(_row(conn, key), "resubscribed")  # type: ignore[arg-type]


def _change_status(conn: sqlite3.Connection, email: str, status: str, only_from: tuple[str, ...]) -> StatusChange:
    with _writing(conn, _show(email.strip())):
        subscriber = _require(conn, email)
        if subscriber.status in only_from:
            conn.execute(
                "UPDATE subscribers SET status = ?, updated_at = ? WHERE id = ?",
                (status, store.now_iso(), subscriber.id),
            )
            return StatusChange(_row(conn, subscriber.email_key), subscriber.status)  # type: ignore[arg-type]
        return StatusChange(subscriber, subscriber.status)


def unsubscribe(conn: sqlite3.Connection, email: str) -> StatusChange:
    """Unsubscribe EMAIL (an active or pending subscriber); a bounced or unsubscribed one stays as it is."""
    return _change_status(conn, email, UNSUBSCRIBED, only_from=(ACTIVE, PENDING))


def resubscribe(conn: sqlite3.Connection, email: str) -> StatusChange:
    """Make an unsubscribed or bounced EMAIL active again (they asked to rejoin)."""
    return _change_status(conn, email, ACTIVE, only_from=(UNSUBSCRIBED, BOUNCED))


def set_status(conn: sqlite3.Connection, subscriber_id: int, status: str) -> bool:
    """Set the status of the subscriber with SUBSCRIBER_ID; return whether it changed."""
    _check_status(status)
    with _writing(conn, f"subscriber {subscriber_id}"):
        row = conn.execute("SELECT status FROM subscribers WHERE id = ?", (subscriber_id,)).fetchone()
        if row is None:
            raise SubscriberError(f"subscriber {subscriber_id} does not exist")
        if row["status"] == status:
            return False
        conn.execute(
            "UPDATE subscribers SET status = ?, updated_at = ? WHERE id = ?",
            (status, store.now_iso(), subscriber_id),
        )
        return True


def _change_status_by_id(
    conn: sqlite3.Connection, subscriber_id: int, status: str, only_from: tuple[str, ...]
) -> StatusChange | None:
    with _writing(conn, f"subscriber {subscriber_id}"):
        row = conn.execute(f"SELECT {_COLUMNS} FROM subscribers WHERE id = ?", (subscriber_id,)).fetchone()
        if row is None:
            return None
        subscriber = Subscriber(**dict(row))
        if subscriber.status in only_from:
            conn.execute(
                "UPDATE subscribers SET status = ?, updated_at = ? WHERE id = ?",
                (status, store.now_iso(), subscriber_id),
            )
            return StatusChange(_row(conn, subscriber.email_key), subscriber.status)  # type: ignore[arg-type]
        return StatusChange(subscriber, subscriber.status)


def unsubscribe_id(conn: sqlite3.Connection, subscriber_id: int) -> StatusChange | None:
    """Unsubscribe the subscriber with SUBSCRIBER_ID (an unsubscribe link); None if they were erased."""
    return _change_status_by_id(conn, subscriber_id, UNSUBSCRIBED, only_from=(ACTIVE, PENDING))


def confirm_id(conn: sqlite3.Connection, subscriber_id: int) -> StatusChange | None:
    """Make the pending subscriber SUBSCRIBER_ID active (a confirmed sign-up); None if they were erased."""
    return _change_status_by_id(conn, subscriber_id, ACTIVE, only_from=(PENDING,))


def sign_up(conn: sqlite3.Connection, email: str) -> AddResult:
    """Record EMAIL as pending (a web sign-up); an address already on the list is left as it is.

    The outcome is "pending" for a new address, "unchanged" otherwise: the caller sends a
    confirmation only when the subscriber is pending, whatever the outcome.
    """
    normalized, key = normalize_email(email)
    with _writing(conn, normalized):
        existing = _row(conn, key)
        if existing is not None:
            return AddResult(existing, "unchanged")
        now = store.now_iso()
        conn.execute(
            "INSERT INTO subscribers (email, email_key, name, status, created_at, updated_at)"
            " VALUES (?, ?, '', ?, ?, ?)",
            (normalized, key, PENDING, now, now),
        )
        return AddResult(_row(conn, key), "pending")  # type: ignore[arg-type]


def remove(conn: sqlite3.Connection, email: str) -> Subscriber:
    """Erase EMAIL and their delivery records (a deletion request); return what was erased."""
    with _writing(conn, _show(email.strip())):
        subscriber = _require(conn, email)
        conn.execute("DELETE FROM deliveries WHERE subscriber_id = ?", (subscriber.id,))
        conn.execute("DELETE FROM subscribers WHERE id = ?", (subscriber.id,))
    logger.info("erased subscriber %s", subscriber.id)
    return subscriber


# ----------------------------------------------------------------------------- reading the list


def count_by_status(conn: sqlite3.Connection) -> dict[str, int]:
    """Return the number of subscribers in each status (every status present, zero or not)."""
    counts = dict.fromkeys(STATUSES, 0)
    for row in conn.execute("SELECT status, count(*) AS n FROM subscribers GROUP BY status"):
        counts[row["status"]] = row["n"]
    return counts


def _filters(status: str | None, search: str | None) -> tuple[str, list[object]]:
    clauses: list[str] = []
    params: list[object] = []
    if status is not None:
        clauses.append("status = ?")
        params.append(_check_status(status))
    if search:
        pattern = "%" + re.sub(r"([\\%_])", r"\\\1", search.strip().casefold()) + "%"
        clauses.append("(email_key LIKE ? ESCAPE '\\' OR name LIKE ? ESCAPE '\\')")
        params += [pattern, pattern]
    return "".join(f" AND {c}" for c in clauses), params


def iter_subscribers(
    conn: sqlite3.Connection, status: str | None = None, search: str | None = None, batch_size: int = 1000
) -> Iterator[Subscriber]:
    """Yield subscribers in id order, BATCH_SIZE at a time (keyset pagination: memory stays flat)."""
    where, params = _filters(status, search)
    last_id = 0
    while True:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM subscribers WHERE id > ?{where} ORDER BY id LIMIT ?",
            [last_id, *params, batch_size],
        ).fetchall()
        for row in rows:
            yield Subscriber(**dict(row))
        if len(rows) < batch_size:
            return
        last_id = rows[-1]["id"]


def longest_email(conn: sqlite3.Connection, status: str | None = None, search: str | None = None) -> int:
    """Return the length of the longest address that `iter_subscribers` would yield (for table columns)."""
    where, params = _filters(status, search)
    row = conn.execute(f"SELECT max(length(email)) FROM subscribers WHERE 1{where}", params).fetchone()
    return row[0] or 0


# ----------------------------------------------------------------------------- export


def escape_cell(value: str) -> str:
    """Prefix a cell that a spreadsheet would run as a formula with a single quote."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def unescape_cell(value: str) -> str:
    """Undo `escape_cell`: drop a single quote that precedes a formula start."""
    return value[1:] if value.startswith("'") and value[1:].startswith(_FORMULA_START) else value


def export(
    conn: sqlite3.Connection,
    out_stream: TextIO,
    format: str = "csv",
    status: str | None = None,
    search: str | None = None,
) -> int:
    """Write the list (or those with STATUS, matching SEARCH) to OUT_STREAM as CSV or JSON; return the count."""
    if format not in ("csv", "json"):
        raise SubscriberError(f"format: {format!r} is not csv or json")
    count = 0
    if format == "csv":
        writer = csv.writer(out_stream, lineterminator="\n")
        writer.writerow(EXPORT_COLUMNS)
        for s in iter_subscribers(conn, status=status, search=search):
            writer.writerow([escape_cell(v) for v in (s.email, s.name, s.status, s.created_at, s.updated_at)])
            count += 1
        return count
    out_stream.write("[")
    for s in iter_subscribers(conn, status=status, search=search):
        record = {"email": s.email, "name": s.name, "status": s.status,
                  "created_at": s.created_at, "updated_at": s.updated_at}
        out_stream.write(("\n  " if count == 0 else ",\n  ") + json.dumps(record, ensure_ascii=False))
        count += 1
    out_stream.write("\n]\n" if count else "]\n")
    return count


def export_to_path(conn: sqlite3.Connection, path: Path, format: str = "csv", status: str | None = None) -> int:
    """Export to PATH atomically (a temp file beside it, fsync, os.replace); return the count."""
    path = Path(path)
    try:
        handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise SubscriberError(f"{path}: cannot write the export: {err.strerror}") from err
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            count = export(conn, out, format=format, status=status)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp_name, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        if isinstance(err, OSError):
            raise SubscriberError(f"{path}: cannot write the export: {err.strerror}") from err
        raise
    return count


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


def _layout(path: Path, header: list[str]) -> _Layout:
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
    elif keys == [_header_key(c) for c in EXPORT_COLUMNS]:
        source = "newsletter export"
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
    )


def _cells(n: int) -> str:
    return "1 cell" if n == 1 else f"{n} cells"


def _read_import(path: Path, codec: str, encoding: str, report: ImportReport) -> dict[str, _Wanted]:
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
        layout = _layout(path, header)
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
    except csv.Error as err:
        raise ImportFileError(f"{path}:{line}: not readable as CSV: {err}") from err
    return wanted


# ----------------------------------------------------------------------------- import: applying it


def _existing(conn: sqlite3.Connection, keys: list[str]) -> dict[str, sqlite3.Row]:
    found: dict[str, sqlite3.Row] = {}
    for i in range(0, len(keys), 500):
        batch = keys[i : i + 500]
        marks = ",".join("?" * len(batch))
        for row in conn.execute(
            f"SELECT id, email, email_key, name, status FROM subscribers WHERE email_key IN ({marks})", batch
        ):
            found[row["email_key"]] = row
    return found


def _plan(
    conn: sqlite3.Connection, wanted: dict[str, _Wanted], resubscribe: bool, report: ImportReport
) -> tuple[list[tuple], list[tuple]]:
    """Compare the file with the list; count the outcome in REPORT and return (inserts, updates)."""
    now = store.now_iso()
    existing = _existing(conn, list(wanted))
    inserts: list[tuple] = []
    updates: list[tuple] = []
    for key, row in wanted.items():
        current = existing.get(key)
        if current is None:
            created = row.created_at or now
            inserts.append(
                (row.email, key, row.name, row.status or ACTIVE, created, row.updated_at or created)
            )
            report.added += 1
            continue
        if current["email"] != row.email:
            report.merged.append(MergedRow(row.line, row.email, f"the list entry {current['email']}"))
        status, kept = current["status"], False
        if row.status in (UNSUBSCRIBED, BOUNCED) and current["status"] in (ACTIVE, PENDING):
            status = row.status  # the person asked to leave (or bounced) elsewhere: that wins
        elif row.status in (None, ACTIVE) and current["status"] == PENDING:
            status = ACTIVE  # the editors import it: that is the confirmation the sign-up waits for
        elif row.status in (None, ACTIVE) and current["status"] != ACTIVE:
            if resubscribe:
                status = ACTIVE
            else:
                kept = True
        name = row.name or current["name"]
        if status != current["status"] or name != current["name"]:
            updates.append((name, status, now, current["id"]))
        if kept:
            report.kept_unsubscribed += 1
        elif status != current["status"] or name != current["name"]:
            report.updated += 1
        else:
            report.unchanged += 1
    report.merged.sort(key=lambda m: m.line)
    return inserts, updates


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
) -> ImportReport:
    """Import the subscribers in the CSV file PATH in one transaction, and report what changed."""
    path = Path(path)
    try:
        codec = codecs.lookup(encoding).name
    except LookupError as err:
        raise ImportFileError(f"--encoding {encoding!r}: unknown encoding") from err
    if codec == "utf-8":
        codec = "utf-8-sig"  # tolerate the byte order mark Excel writes
    report = ImportReport(path=path, source_format="plain", dry_run=dry_run)
    try:
        wanted = _read_import(path, codec, encoding, report)
    except OSError as err:
        raise ImportFileError(f"{path}: cannot read the file: {err.strerror}") from err
    if report.invalid and not skip_invalid:
        raise _invalid_error(path, report.invalid)
    if dry_run:
        _plan(conn, wanted, resubscribe, report)
        return report
    with _writing(conn, str(path)):
        inserts, updates = _plan(conn, wanted, resubscribe, report)
        conn.executemany(
            "INSERT INTO subscribers (email, email_key, name, status, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            inserts,
        )
        conn.executemany("UPDATE subscribers SET name = ?, status = ?, updated_at = ? WHERE id = ?", updates)
    logger.info("imported %s: %d added, %d updated", path, report.added, report.updated)
    return report
