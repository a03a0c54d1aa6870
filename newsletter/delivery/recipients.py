"""Who gets a day's issue, and which variant of it (variants.py): the snapshot's one place.

The daily issue goes to active readers who take the daily (`DAILY`); a weekly reader gets the
digest instead. Each row of the snapshot names its variant, the key of the reader's sections as
they were at that moment; the variants themselves are frozen in `issue_variants` beside the full
issue (the `issues` row, variant ''), so a resumed send writes the same bytes to each reader even
after they changed their sections. Called inside the ledger's transactions (ledger.py).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

from newsletter import store
from newsletter.delivery.states import PENDING, SKIPPED, Reason
from newsletter.errors import DeliveryError
from newsletter.models import Frequency
from newsletter.variants import ALL, Variant, describe, key_sql



def readers_of(frequency: Frequency) -> str:
    """Return the SQL condition on `subscribers` of who gets the issues of FREQUENCY: its active readers."""
    return f"status = 'active' AND frequency = '{Frequency(frequency)}'"


# who gets the daily issue, the snapshot's choice (weekly readers get the digest: readers_of(WEEKLY))
DAILY = readers_of(Frequency.DAILY)


class VariantsChangedError(DeliveryError):
    """A reader chose a set of sections after the issue's variants were rendered: prepare it again."""


@dataclass(frozen=True)
class FrozenVariant:
    """The copy of a day's issue that one variant's readers get, as frozen at its first send."""

    key: str
    subject: str
    html: str
    text: str
    sha256: str


def content_sha256(html: str, text: str) -> str:
    """Return the fingerprint of an issue's content: the HTML and the text part."""
    digest = hashlib.sha256()
    digest.update(html.encode("utf-8"))
    digest.update(b"\0")
    digest.update(text.encode("utf-8"))
    return digest.hexdigest()


def variant_keys(conn: sqlite3.Connection, day: date, all_sections: Sequence[str],
                 where: str = DAILY) -> list[str]:
    """Return the variant keys DAY's issue has readers for: the snapshot's once it is taken, else the list's now."""
    found = conn.execute("SELECT DISTINCT variant FROM deliveries WHERE issue_day = ?", (day.isoformat(),)).fetchall()
    if found:
        return sorted(row[0] for row in found)
    expression, params = key_sql(all_sections)
    rows = conn.execute(f"SELECT DISTINCT {expression} FROM subscribers WHERE {where}", params).fetchall()
    return sorted(row[0] for row in rows)


_SNAPSHOT_BATCH = 5000
_SNAPSHOT_COLUMNS = ("issue_day", "subscriber_id", "state", "attempts", "message_id", "email", "updated_at", "variant")


def snapshot(conn: sqlite3.Connection, day: date, *, now: str, all_sections: Sequence[str],
             variants: Sequence[Variant], message_id: Callable[[int], str], where: str = DAILY) -> None:
    """Add a `pending` row for every reader WHERE selects, naming their variant; inside a transaction.

    The list is read a batch at a time (SQLite and PostgreSQL alike). Rows of a variant with nothing for its
    readers today are skipped with the reason. A reader whose variant was not prepared (they
    changed their sections meanwhile) raises VariantsChangedError: the caller's transaction rolls
    back and the issue is prepared again.
    """
    key = day.isoformat()
    expression, params = key_sql(all_sections)
    last = 0
    while rows := conn.execute(
        f"SELECT id, email, {expression} FROM subscribers WHERE {where} AND id > ? ORDER BY id LIMIT ?",
        (*params, last, _SNAPSHOT_BATCH),
    ).fetchall():
        # only for an issue row just made (freeze_and_snapshot): no row of this day exists yet
        store.insert_rows(conn, "deliveries", _SNAPSHOT_COLUMNS,
                          [(key, row[0], PENDING.value, 0, message_id(row[0]), row[1], now, row[2]) for row in rows])
        last = rows[-1][0]
    prepared = {variant.key: variant for variant in variants}
    found = [row[0] for row in conn.execute("SELECT DISTINCT variant FROM deliveries WHERE issue_day = ?", (key,))]
    missing = sorted(k for k in found if k != ALL and k not in prepared)
    if missing:
        raise VariantsChangedError(
            f"{day}: readers chose sections the issue was not prepared for ({'; '.join(map(describe, missing))}) "
            "after it was rendered; nothing was sent: prepare the issue again")
    for variant_key in found:
        variant = prepared.get(variant_key)
        if variant is None:
            continue
        if variant.rendered is None:
            conn.execute(
                "UPDATE deliveries SET state = ?, reason = ?, last_reply = ? WHERE issue_day = ? AND variant = ?",
                (SKIPPED, Reason.NOTHING_IN_SECTIONS, variant.skipped_reason, key, variant_key))
        else:
            store_variant(conn, day, variant)


def store_variant(conn: sqlite3.Connection, day: date, variant: Variant) -> None:
    """Freeze VARIANT's copy of DAY's issue (replacing an earlier one: a rebuild)."""
    rendered = variant.rendered
    assert rendered is not None
    conn.execute(
        "INSERT INTO issue_variants (day, variant, subject, html, text, sha256) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (day, variant) DO UPDATE SET subject = excluded.subject, html = excluded.html,"
        " text = excluded.text, sha256 = excluded.sha256",
        (day.isoformat(), variant.key, rendered.issue.subject, rendered.html, rendered.text,
         content_sha256(rendered.html, rendered.text)))


def frozen_variants(conn: sqlite3.Connection, day: date) -> dict[str, FrozenVariant]:
    """Return DAY's frozen variants by key (not the full issue, which is the `issues` row)."""
    rows = conn.execute("SELECT variant, subject, html, text, sha256 FROM issue_variants WHERE day = ?",
                        (day.isoformat(),)).fetchall()
    return {row[0]: FrozenVariant(*row) for row in rows}
