"""The subscriber list: add, status changes, removal, listing and export (imports: importer.py).

Addresses are validated and normalized by email-validator (EMAIL.md rule 22) and deduplicated on
the case-folded normalized form, `email_key`. Every change is one `store.write` transaction.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import json
import logging
import os
import re
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO


from newsletter import addresses, events, store
from newsletter.events import Event, Kind
from newsletter.errors import SubscriberError
from newsletter.headers import clip, header_problem
from newsletter.models import Frequency, Subscriber, decode_sections, encode_sections

logger = logging.getLogger(__name__)

ACTIVE, UNSUBSCRIBED, BOUNCED = "active", "unsubscribed", "bounced"
PENDING = "pending"  # signed up on the web, not yet confirmed: receives no issue
STATUSES: tuple[str, ...] = (ACTIVE, UNSUBSCRIBED, BOUNCED, PENDING)
EXPORT_COLUMNS: tuple[str, ...] = ("email", "name", "status", "created_at", "updated_at", "sections", "frequency")
SECTIONS_SEPARATOR = ";"  # between a reader's sections in an export's cell (empty: all sections)
MAX_NAME_LENGTH = 200

_COLUMNS = "id, email, email_key, name, status, created_at, updated_at, sections, frequency, preferences_at"
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
    if problem := header_problem(name):
        raise SubscriberError(f"{field_name}: {clip(name)} {problem.what}; names go into email headers")
    if len(name) > MAX_NAME_LENGTH:
        raise SubscriberError(f"{field_name}: longer than {MAX_NAME_LENGTH} characters")
    return name


@contextlib.contextmanager
def writing(conn: sqlite3.Connection, what: str) -> Iterator[None]:
    """One store.write transaction; a database failure becomes a SubscriberError about WHAT."""
    try:
        with store.write(conn):
            yield
    except store.errors() as err:
        raise SubscriberError(f"{what}: the database refused the change, so nothing changed: {err}") from err


def _check_status(status: str) -> str:
    if status not in STATUSES:
        raise SubscriberError(f"status: {status!r} is not one of {', '.join(STATUSES)}")
    return status


# ----------------------------------------------------------------------------- the list's rules

# Which status may follow which. Every change of a subscriber's status is made in this module,
# along these edges, whoever asks: a command, a link, the sign-up, an import, feedback.py, the
# ledger recording a bounce. (`set_status`, the editors' override, alone sets any status.)
TRANSITIONS: dict[str, frozenset[str]] = {
    ACTIVE: frozenset({UNSUBSCRIBED, BOUNCED}),           # asked to leave; a hard bounce
    PENDING: frozenset({ACTIVE, UNSUBSCRIBED, BOUNCED}),  # confirmed or added by the editors; left; bounced
    UNSUBSCRIBED: frozenset({ACTIVE}),                    # resubscribed, or followed a rejoin link
    BOUNCED: frozenset({ACTIVE}),                         # resubscribed (the address works again)
}


def _allow(before: str, after: str) -> None:
    if after not in TRANSITIONS[before]:
        raise ValueError(f"the list does not let a subscriber go from {before} to {after}")


def imported_status(current: str, imported: str | None, resubscribe: bool) -> tuple[str, bool]:
    """Return the status a subscriber gets when an import says IMPORTED, and whether it kept them out.

    Leaving (unsubscribed, bounced) elsewhere wins over being on the list here; an import by the
    editors confirms a pending sign-up; a former subscriber comes back only with RESUBSCRIBE.
    """
    if imported in (UNSUBSCRIBED, BOUNCED) and current in (ACTIVE, PENDING):
        return imported, False
    if imported in (None, ACTIVE) and current == PENDING:
        return ACTIVE, False
    if imported in (None, ACTIVE) and current != ACTIVE:
        return (ACTIVE, False) if resubscribe else (current, True)
    return current, False


# ----------------------------------------------------------------------------- single changes


def _row(conn: sqlite3.Connection, key: str) -> Subscriber | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM subscribers WHERE email_key = ?", (key,)).fetchone()
    return Subscriber.from_row(row) if row else None


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
    return Subscriber.from_row(row) if row else None


def add(
    conn: sqlite3.Connection, email: str, name: str = "", resubscribe: bool = False, *,
    sections: Iterable[str] = (), frequency: Frequency = Frequency.DAILY,
) -> AddResult:
    """Add EMAIL; an address already there is left alone, and a former subscriber needs RESUBSCRIBE.

    SECTIONS (names already checked with `known_sections`; empty means all) and FREQUENCY are
    what a new subscriber starts with; an address already on the list keeps its own.
    """
    normalized, key = normalize_email(email)
    name = clean_name(name)
    with writing(conn, normalized):
        existing = _row(conn, key)
        if existing is None:
            now = store.now_iso()
            conn.execute(
                "INSERT INTO subscribers (email, email_key, name, status, created_at, updated_at, sections, frequency)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (normalized, key, name, ACTIVE, now, now, encode_sections(sections), Frequency(frequency).value),
            )
            added = _row(conn, key)
            events.record(conn, Event(added.id, Kind.SUBSCRIBED, events.CLI, now))  # type: ignore[union-attr]
            return AddResult(added, "added")  # type: ignore[arg-type]
        if existing.status == ACTIVE:
            return AddResult(existing, "unchanged")
        if existing.status == PENDING:
            # the editors add it by hand: that is the confirmation the web sign-up waits for
            change = _transition(conn, existing, ACTIVE, True, (Kind.CONFIRMED, events.CLI), name=name or existing.name)
            return AddResult(change.subscriber, "added")
        if not resubscribe:
            raise SubscriberError(
                f"{existing.email} is {existing.status}; if they asked to join again, "
                "add it with --resubscribe"
            )
        change = _transition(conn, existing, ACTIVE, True, (Kind.RESUBSCRIBED, events.CLI), name=name or existing.name)
        return AddResult(change.subscriber, "resubscribed")


def _transition(
    conn: sqlite3.Connection, subscriber: Subscriber, status: str, allowed: bool, event: tuple[Kind, str] | None,
    at: str = "", name: str | None = None,
) -> StatusChange:
    """Inside a write transaction: set SUBSCRIBER's STATUS (and NAME) if ALLOWED, recording EVENT (kind, source) if so.

    The one writer of a status: it refuses, as a bug, a move TRANSITIONS does not allow.
    """
    if not allowed:
        return StatusChange(subscriber, subscriber.status)
    _allow(subscriber.status, status)
    at = at or store.now_iso()
    conn.execute("UPDATE subscribers SET status = ?, name = ?, updated_at = ? WHERE id = ?",
                 (status, subscriber.name if name is None else name, at, subscriber.id))
    if event is not None:
        events.record(conn, Event(subscriber.id, event[0], event[1], at))
    return StatusChange(_row(conn, subscriber.email_key), subscriber.status)  # type: ignore[arg-type]


def _change_status(
    conn: sqlite3.Connection, email: str, status: str, only_from: tuple[str, ...], event: tuple[Kind, str],
) -> StatusChange:
    with writing(conn, _show(email.strip())):
        subscriber = _require(conn, email)
        return _transition(conn, subscriber, status, subscriber.status in only_from, event)


def unsubscribe(conn: sqlite3.Connection, email: str, source: str = events.CLI) -> StatusChange:
    """Unsubscribe EMAIL (an active or pending subscriber); a bounced or unsubscribed one stays as it is."""
    return _change_status(conn, email, UNSUBSCRIBED, (ACTIVE, PENDING), (Kind.UNSUBSCRIBED, source))


def resubscribe(conn: sqlite3.Connection, email: str) -> StatusChange:
    """Make an unsubscribed or bounced EMAIL active again (they asked to rejoin)."""
    return _change_status(conn, email, ACTIVE, (UNSUBSCRIBED, BOUNCED), (Kind.RESUBSCRIBED, events.CLI))


def known_sections(names: Iterable[str], settings_sections: Iterable[str]) -> frozenset[str]:
    """Return NAMES as `[issue] sections` spells them (matched ignoring letter case).

    Raises SubscriberError naming the first unknown name and listing the sections there are.
    """
    spelled = {section.casefold(): section for section in settings_sections}
    chosen = set()
    for name in names:
        name = name.strip()
        if not name:
            continue
        if name.casefold() not in spelled:
            close = difflib.get_close_matches(name, spelled.values(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SubscriberError(f"{name!r} is not a section of this newsletter{hint}; "
                                  f"the sections are: {', '.join(spelled.values())}")
        chosen.add(spelled[name.casefold()])
    return frozenset(chosen)


def preferences_detail(sections: Iterable[str], frequency: Frequency) -> str:
    """Return what a `preferences` event says a reader chose: `sections: Chemical, Nuclear; frequency: weekly`."""
    return f"sections: {', '.join(sorted(sections)) or 'all'}; frequency: {Frequency(frequency).value}"


def set_preferences(
    conn: sqlite3.Connection, subscriber_id: int, *,
    sections: Iterable[str] | None = None, frequency: Frequency | None = None, source: str, at: str = "",
) -> bool:
    """Set a reader's SECTIONS and/or FREQUENCY (None leaves it as it is); return whether anything changed.

    SECTIONS are names already checked with `known_sections` (empty means all). A change is
    recorded with its time (`preferences_at` and a `preferences` event saying what it became);
    it applies from the next issue whose send has not started (a frozen ledger row keeps what it
    was frozen with). An erased subscriber: SubscriberError.
    """
    with writing(conn, f"subscriber {subscriber_id}"):
        current = get_id(conn, subscriber_id)
        if current is None:
            raise SubscriberError(f"subscriber {subscriber_id} is not on the list")
        new_sections = current.sections if sections is None else frozenset(sections)
        new_frequency = current.frequency if frequency is None else Frequency(frequency)
        if (new_sections, new_frequency) == (current.sections, current.frequency):
            return False
        at = at or store.now_iso()
        conn.execute(
            "UPDATE subscribers SET sections = ?, frequency = ?, preferences_at = ?, updated_at = ? WHERE id = ?",
            (encode_sections(new_sections), new_frequency.value, at, at, subscriber_id),
        )
        events.record(conn, Event(subscriber_id, Kind.PREFERENCES, source, at,
                                  detail=preferences_detail(new_sections, new_frequency)))
        return True


def chosen_sections(conn: sqlite3.Connection, *, on_the_list: bool = True) -> dict[str, int]:
    """Return how many readers chose each section, by name: those on the list (active or pending), or all."""
    where = " AND status IN ('active', 'pending')" if on_the_list else ""
    counts: dict[str, int] = {}
    for text, readers in conn.execute(f"SELECT sections, count(*) FROM subscribers WHERE sections != ''{where}"
                                      " GROUP BY sections"):
        for name in decode_sections(text):
            counts[name] = counts.get(name, 0) + readers
    return counts


def rename_section(conn: sqlite3.Connection, old: str, new: str, settings_sections: Iterable[str]) -> int:
    """Move every reader who chose OLD (any letter case) to NEW, a section of SETTINGS_SECTIONS, in one transaction.

    For a section renamed or removed in `[issue] sections`. Returns how many readers changed, each
    with a `preferences` event; `preferences_at` stays (it is the reader's own last change).
    SubscriberError, changing nothing, when no reader chose OLD or NEW is not a section.
    """
    (target,) = known_sections([new], settings_sections) or (None,)
    if target is None:
        raise SubscriberError("rename-section: name the section the readers get instead")
    at = store.now_iso()
    changed = 0
    with writing(conn, f"rename-section {old} {new}"):
        for subscriber_id, text in conn.execute("SELECT id, sections FROM subscribers WHERE sections != ''").fetchall():
            names = decode_sections(text)
            matched = {name for name in names if name.casefold() == old.strip().casefold()}
            if not matched:
                continue
            conn.execute("UPDATE subscribers SET sections = ?, updated_at = ? WHERE id = ?",
                         (encode_sections((names - matched) | {target}), at, subscriber_id))
            events.record(conn, Event(subscriber_id, Kind.PREFERENCES, events.CLI, at,
                                      detail=f"section {', '.join(sorted(matched))} renamed {target} by the editors"))
            changed += 1
        if not changed:
            counts = chosen_sections(conn, on_the_list=False)
            listed = ", ".join(f"{name} ({count:,})" for name, count in sorted(counts.items())) or "none"
            raise SubscriberError(f"rename-section: no reader chose a section named {old!r}; "
                                  f"the sections readers chose: {listed}")
    return changed


def find_in(conn: sqlite3.Connection, email: str = "", subscriber_id: int | None = None) -> Subscriber | None:
    """Return the subscriber with SUBSCRIBER_ID, else with EMAIL (any letter case), or None; never raises."""
    if subscriber_id is not None:
        return get_id(conn, subscriber_id)
    try:
        _, key = normalize_email(email)
    except SubscriberError:
        return None
    return _row(conn, key)


def leave_in(conn: sqlite3.Connection, subscriber: Subscriber, status: str, at: str) -> StatusChange:
    """Inside a write transaction: move an active or pending SUBSCRIBER to BOUNCED or UNSUBSCRIBED.

    The caller (feedback.py) records the event that says why; a subscriber already gone stays as
    they are (a bounce does not turn an unsubscribe into a bounce, nor the other way round).
    """
    if status not in (BOUNCED, UNSUBSCRIBED):
        raise ValueError(f"{status!r}: a subscriber leaves as bounced or unsubscribed")
    return _transition(conn, subscriber, status, subscriber.status in (ACTIVE, PENDING), None, at)


def record_bounce(conn: sqlite3.Connection, subscriber_id: int, *, now: str) -> bool:
    """Inside the caller's write transaction: mark an active SUBSCRIBER_ID bounced (a hard bounce while sending).

    Later issues skip them; someone unsubscribed, pending or already bounced stays as they are.
    Return whether the status changed.
    """
    subscriber = get_id(conn, subscriber_id)
    if subscriber is None:
        return False
    return _transition(conn, subscriber, BOUNCED, subscriber.status == ACTIVE, None, now).changed


def set_status(conn: sqlite3.Connection, subscriber_id: int, status: str) -> bool:
    """Set the status of the subscriber with SUBSCRIBER_ID, whatever it was (the editors' override); return whether it changed."""
    _check_status(status)
    with writing(conn, f"subscriber {subscriber_id}"):
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
    conn: sqlite3.Connection, subscriber_id: int, status: str, only_from: tuple[str, ...],
    event: tuple[Kind, str], also: Callable[[Subscriber], bool] = lambda subscriber: False,
) -> StatusChange | None:
    with writing(conn, f"subscriber {subscriber_id}"):
        subscriber = get_id(conn, subscriber_id)
        if subscriber is None:
            return None
        return _transition(conn, subscriber, status, subscriber.status in only_from or also(subscriber), event)


def unsubscribe_id(conn: sqlite3.Connection, subscriber_id: int, source: str = events.LINK) -> StatusChange | None:
    """Unsubscribe the subscriber with SUBSCRIBER_ID (an unsubscribe link); None if they were erased."""
    return _change_status_by_id(conn, subscriber_id, UNSUBSCRIBED, (ACTIVE, PENDING), (Kind.UNSUBSCRIBED, source))


def confirm_id(conn: sqlite3.Connection, subscriber_id: int, *, unsubscribed_at: str = "") -> StatusChange | None:
    """Make the pending subscriber SUBSCRIBER_ID active (a confirmed sign-up); None if they were erased.

    With UNSUBSCRIBED_AT (a rejoin link's moment), an unsubscribed subscriber whose record still
    says that moment becomes active too: they asked to come back and pressed the button.
    """
    def rejoins(subscriber: Subscriber) -> bool:
        return bool(unsubscribed_at) and (subscriber.status, subscriber.updated_at) == (UNSUBSCRIBED, unsubscribed_at)

    return _change_status_by_id(conn, subscriber_id, ACTIVE, (PENDING,), (Kind.CONFIRMED, events.WEB), also=rejoins)


def sign_up(conn: sqlite3.Connection, email: str) -> AddResult:
    """Record EMAIL as pending (a web sign-up); an address already on the list is left as it is.

    The outcome is "pending" for a new address, "unchanged" otherwise: the caller sends a
    confirmation only when the subscriber is pending, whatever the outcome.
    """
    normalized, key = normalize_email(email)
    with writing(conn, normalized):
        existing = _row(conn, key)
        if existing is not None:
            return AddResult(existing, "unchanged")
        now = store.now_iso()
        conn.execute(
            "INSERT INTO subscribers (email, email_key, name, status, created_at, updated_at)"
            " VALUES (?, ?, '', ?, ?, ?)",
            (normalized, key, PENDING, now, now),
        )
        added = _row(conn, key)
        events.record(conn, Event(added.id, Kind.SUBSCRIBED, events.WEB, now))  # type: ignore[union-attr]
        return AddResult(added, "pending")  # type: ignore[arg-type]


def remove(conn: sqlite3.Connection, email: str) -> Subscriber:
    """Erase EMAIL and their delivery records (a deletion request); return what was erased."""
    with writing(conn, _show(email.strip())):
        subscriber = _require(conn, email)
        conn.execute("DELETE FROM deliveries WHERE subscriber_id = ?", (subscriber.id,))
        events.erase(conn, subscriber.id)
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


def _like(text: str) -> str:
    return re.sub(r"([\\%_])", r"\\\1", text)


def _filters(status: str | None, search: str | None, section: str | None = None) -> tuple[str, list[object]]:
    clauses: list[str] = []
    params: list[object] = []
    if status is not None:
        clauses.append("status = ?")
        params.append(_check_status(status))
    if search:
        pattern = "%" + _like(search.strip().casefold()) + "%"
        clauses.append("(email_key LIKE ? ESCAPE '\\' OR name LIKE ? ESCAPE '\\')")
        params += [pattern, pattern]
    if section is not None:
        # who receives SECTION: a reader who chose it, or one who chose none (all); one name a line
        clauses.append("(sections = '' OR ? || sections || ? LIKE ? ESCAPE '\\')")
        params += ["\n", "\n", "%\n" + _like(section) + "\n%"]
    return "".join(f" AND {c}" for c in clauses), params


def iter_subscribers(
    conn: sqlite3.Connection, status: str | None = None, search: str | None = None, batch_size: int = 1000,
    section: str | None = None,
) -> Iterator[Subscriber]:
    """Yield subscribers in id order, BATCH_SIZE at a time (keyset pagination: memory stays flat).

    With SECTION (a name as `[issue] sections` spells it), only those who receive it: who chose it or chose all.
    """
    where, params = _filters(status, search, section)
    last_id = 0
    while True:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM subscribers WHERE id > ?{where} ORDER BY id LIMIT ?",
            [last_id, *params, batch_size],
        ).fetchall()
        for row in rows:
            yield Subscriber.from_row(row)
        if len(rows) < batch_size:
            return
        last_id = rows[-1]["id"]


def longest_email(conn: sqlite3.Connection, status: str | None = None, search: str | None = None,
                  section: str | None = None) -> int:
    """Return the length of the longest address that `iter_subscribers` would yield (for table columns)."""
    where, params = _filters(status, search, section)
    row = conn.execute(f"SELECT max(length(email)) FROM subscribers WHERE 1 = 1{where}", params).fetchone()
    return row[0] or 0


def sections_cell(subscriber: Subscriber) -> str:
    """Return SUBSCRIBER's sections as an export writes them: `Chemical;Nuclear`, '' for all."""
    return SECTIONS_SEPARATOR.join(sorted(subscriber.sections))


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
    section: str | None = None,
) -> int:
    """Write the list (or those with STATUS, matching SEARCH, receiving SECTION) to OUT_STREAM as CSV or JSON.

    Both carry each reader's sections and frequency; JSON carries each subscriber's history too
    (events.py); CSV stays what `import` reads back. Return the count.
    """
    if format not in ("csv", "json"):
        raise SubscriberError(f"format: {format!r} is not csv or json")
    count = 0
    if format == "csv":
        writer = csv.writer(out_stream, lineterminator="\n")
        writer.writerow(EXPORT_COLUMNS)
        for s in iter_subscribers(conn, status=status, search=search, section=section):
            writer.writerow([escape_cell(v) for v in (s.email, s.name, s.status, s.created_at, s.updated_at,
                                                      sections_cell(s), s.frequency.value)])
            count += 1
        return count
    out_stream.write("[")
    for s in iter_subscribers(conn, status=status, search=search, section=section):
        record = {"email": s.email, "name": s.name, "status": s.status,
                  "created_at": s.created_at, "updated_at": s.updated_at,
                  "sections": sorted(s.sections), "frequency": s.frequency.value, "preferences_at": s.preferences_at,
                  "events": [{"at": e.at, "kind": str(e.kind), "source": e.source, "status": e.status,
                              "detail": e.detail, "issue_day": e.issue_day} for e in events.history(conn, s.id)]}
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
