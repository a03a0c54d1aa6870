"""`newsletter db copy`: a list with its whole history moved to another database (SQLite to
PostgreSQL, or back), in one transaction on the target, the row counts checked before it commits."""

from __future__ import annotations

import logging
import typing
from dataclasses import dataclass

from newsletter import store
from newsletter.errors import StoreError

logger = logging.getLogger(__name__)

BATCH = 5000
# parents before the tables that refer to them; a table another helper adds later is copied after
# these, in name order
ORDER = ("subscribers", "issues", "issue_structures", "deliveries", "subscriber_events", "signup_requests",
         "outgoing_mail")
_NOT_COPIED = ("newsletter_schema",)  # PostgreSQL's schema version: each side keeps its own


@dataclass(frozen=True)
class CopyReport:
    """What was copied: rows per table, the same on both sides."""

    target: str
    rows: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def tables(conn: typing.Any) -> list[str]:
    """Return the list's tables in copying order."""
    if store.is_postgres(conn):
        names = [row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            " AND table_type = 'BASE TABLE'")]
    else:
        names = [row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    names = [name for name in names if name not in _NOT_COPIED]
    return [name for name in ORDER if name in names] + sorted(set(names) - set(ORDER))


def _columns(conn: typing.Any, table: str) -> list[str]:
    cursor = conn.execute(f"SELECT * FROM {table} LIMIT 0")
    cursor.fetchall()
    return [column[0] for column in cursor.description]


def copy(source: typing.Any, target: typing.Any, target_name: str) -> CopyReport:
    """Copy every row of SOURCE into the empty TARGET (both at the latest schema) and check the counts.

    Nothing is written to TARGET unless every table arrives whole: a failure rolls it all back.
    """
    names = tables(source)
    missing = sorted(set(names) - set(tables(target)))
    if missing:
        raise StoreError(f"{target_name}: has no table {', '.join(missing)}; is it an older version of newsletter?")
    rows: dict[str, int] = {}
    # one snapshot of the source: a list in use while it is copied still arrives whole and consistent
    source.execute("BEGIN ISOLATION LEVEL REPEATABLE READ" if store.is_postgres(source) else "BEGIN")
    try:
        with store.write(target):
            _copy_all(source, target, target_name, names, rows)
    finally:
        source.execute("ROLLBACK")
    logger.info("copied %d rows to %s", sum(rows.values()), target_name)
    return CopyReport(target_name, rows)


def _copy_all(source: typing.Any, target: typing.Any, target_name: str, names: list[str],
              rows: dict[str, int]) -> None:
    """Copy the tables NAMES into an empty TARGET, counting into ROWS, and check what arrived."""
    for table in names:
        if held := target.execute(f"SELECT count(*) FROM {table}").fetchone()[0]:
            raise StoreError(f"{target_name}: table {table} already holds {held} rows; copy only into an empty "
                             "database, so nothing is merged by mistake")
    for table in names:
        rows[table] = _copy_table(source, target, table)
    if store.is_postgres(target):
        from newsletter.postgres import reset_sequences

        reset_sequences(target, [t for t in names if "id" in _columns(target, t) and _has_identity(target, t)])
    for table in names:  # the check, inside the transaction: a short copy commits nothing
        arrived = target.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        if arrived != rows[table]:
            raise StoreError(f"{target_name}: table {table} received {arrived} rows of {rows[table]}; nothing "
                             "was copied")


def _has_identity(conn: typing.Any, table: str) -> bool:
    row = conn.execute("SELECT pg_get_serial_sequence(?, 'id')", (table,)).fetchone()
    return row[0] is not None


def _copy_table(source: typing.Any, target: typing.Any, table: str) -> int:
    columns = _columns(source, table)
    wanted = set(_columns(target, table))
    if unknown := [c for c in columns if c not in wanted]:
        raise StoreError(f"the target's table {table} has no column {', '.join(unknown)}")
    names = ", ".join(columns)
    insert = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"
    cursor = source.execute(f"SELECT {names} FROM {table}")
    count = 0
    while batch := cursor.fetchmany(BATCH):
        target.executemany(insert, [tuple(row) for row in batch])
        count += len(batch)
    source_count = source.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    if source_count != count:
        raise StoreError(f"table {table} changed while it was copied ({count} rows read, {source_count} now); "
                         "stop the senders and the web server, then copy again")
    return count


__all__ = ["CopyReport", "copy", "tables"]
