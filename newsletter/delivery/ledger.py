"""The delivery ledger: one frozen issue per day and one row per (issue, subscriber).

Every change below is its own short `store.write` transaction (BEGIN IMMEDIATE), so a kill at any
moment leaves the ledger at a commit point that `recover` in a transport can resolve
(RELIABILITY.md). No function here loads the whole list: rows are claimed in batches.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from newsletter import store, subscribers
from newsletter.delivery import recipients
from newsletter.delivery.recipients import content_sha256  # noqa: F401 - the ledger's name for it too
from newsletter.delivery.states import (  # noqa: F401 - the ledger's names for them too
    CLAIMED, DATA_SENT, FAILED, IN_DOUBT, IN_DOUBT_POLICIES, ISSUE_DONE, ISSUE_PAUSED, ISSUE_SENDING, NOT_STARTED,
    PENDING, REASON_BOUNCED, REASON_EXPIRED, REASON_REJECTED, RETRY, SENT, SKIPPED, STATES, TRANSITIONS,
    UNFINISHED, InDoubt, IssueState, Reason, State,
)
from newsletter.models import Subscriber
from newsletter.variants import Variant
from newsletter.weeks import DIGEST_KEY_LIKE, ledger_key

_SUBSCRIBER_FIELDS = tuple(Subscriber.__dataclass_fields__)


@dataclass(frozen=True)
class FrozenIssue:
    """The version of a day's issue that its subscribers get, as stored at the first send."""

    day: date
    number: int
    status: IssueState
    subject: str
    html: str
    text: str
    sha256: str
    created_at: str
    structure: str | None = None  # structure.py's JSON; None for issues frozen before it was kept

    @property
    def date_header(self) -> datetime:
        """The Date of every message of this issue: the moment it was frozen, so rewrites match."""
        return datetime.fromisoformat(self.created_at)


@dataclass(frozen=True)
class Claimed:
    """A claimed row: who gets the message and the Message-ID it carries."""

    subscriber: Subscriber
    message_id: str
    attempts: int = 1  # this attempt's number (the claim counts it)
    last_reply: str = ""  # what the previous attempt recorded
    variant: str = ""  # the variant of the issue the row gets (variants.py): '' is the full issue


@dataclass(frozen=True)
class Claim:
    """One batch: the rows now `claimed`, and how many were `skipped` (no longer active)."""

    rows: tuple[Claimed, ...]
    skipped: int


@dataclass(frozen=True)
class Problem:
    """A row a person should look at: failed, in doubt, or delivered after an attempt in doubt."""

    email: str
    state: State
    reason: str  # failed: bounced, rejected, expired, unbuildable; else ""
    reply: str  # the server's last reply, or what went wrong
    attempts: int
    doubted: int  # times the outcome was in doubt: a row with doubted > 0 may have two copies
    updated_at: str

    def to_dict(self) -> dict[str, object]:
        return {"email": self.email, "state": self.state, "reason": self.reason, "reply": self.reply,
                "attempts": self.attempts, "doubted": self.doubted, "updated_at": self.updated_at}


@dataclass(frozen=True)
class IssueStatus:
    """A day's issue as the ledger sees it: its state and the number of rows in each state."""

    day: date
    state: IssueState
    subject: str = ""
    number: int = 0
    counts: dict[State, int] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()
    next_retry_at: str | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, object]:
        """Return the status as plain JSON-ready values."""
        return {
            "day": self.day.isoformat(),
            "state": self.state,
            "subject": self.subject,
            "number": self.number,
            "total": self.total,
            "deliveries": {state: self.counts.get(state, 0) for state in STATES},
            "next_retry_at": self.next_retry_at,
            "problems": [p.to_dict() for p in self.problems],
        }


def frozen_issue(conn: sqlite3.Connection, day: date) -> FrozenIssue | None:
    """Return DAY's frozen issue, or None when its sending has not started."""
    row = conn.execute(
        "SELECT i.number, i.status, i.subject, i.html, i.text, i.sha256, i.created_at, s.structure"
        " FROM issues i LEFT JOIN issue_structures s ON s.day = i.day WHERE i.day = ?",
        (day.isoformat(),),
    ).fetchone()
    if row is None:
        return None
    return FrozenIssue(day, row["number"], IssueState(row["status"]), row["subject"], row["html"], row["text"],
                       row["sha256"], row["created_at"], row["structure"])


def freeze_and_snapshot(
    conn: sqlite3.Connection,
    day: date,
    *,
    number: int,
    subject: str,
    html: str,
    text: str,
    message_id: Callable[[int], str],
    now: str,
    structure: str | None = None,
    variants: Sequence[Variant] = (),
    all_sections: Sequence[str] = (),
) -> FrozenIssue:
    """Store DAY's issue and a `pending` row for every daily reader, in one transaction.

    A subscriber who joins after this moment gets the next issue, not this one: the snapshot is
    taken only here, when the issue row is created. Each row names its reader's variant (the key
    of their sections among ALL_SECTIONS); VARIANTS are frozen beside the issue
    (recipients.snapshot, which raises VariantsChangedError for a variant not prepared). Two senders that start the day at once (on
    several hosts sharing PostgreSQL) freeze it once: the second finds the first one's issue.
    """
    sha = content_sha256(html, text)
    key = day.isoformat()
    with store.write(conn):
        created = conn.execute(
            "INSERT INTO issues (day, number, status, subject, html, text, sha256, created_at, updated_at, started)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, (SELECT coalesce(max(started), 0) + 1 FROM issues))"
            " ON CONFLICT (day) DO NOTHING",
            (key, number, ISSUE_SENDING, subject, html, text, sha, now, now),
        ).rowcount
        if created:
            _store_structure(conn, day, structure)
            recipients.snapshot(conn, day, now=now, all_sections=all_sections, variants=variants,
                                message_id=message_id)
    if not created:
        issue = frozen_issue(conn, day)
        assert issue is not None
        return issue
    return FrozenIssue(day, number, ISSUE_SENDING, subject, html, text, sha, now, structure)


def refreeze(
    conn: sqlite3.Connection, day: date, *, number: int, subject: str, html: str, text: str, now: str,
    structure: str | None = None, variants: Sequence[Variant] = (),
) -> FrozenIssue:
    """Replace DAY's frozen content (a `--rebuild`): rows not yet written get the new version.

    The Date of the issue (created_at) stays, and nobody is added to or removed from the snapshot;
    of VARIANTS, those already frozen are replaced.
    """
    sha = content_sha256(html, text)
    frozen = recipients.frozen_variants(conn, day)
    with store.write(conn):
        conn.execute(
            "UPDATE issues SET number = ?, subject = ?, html = ?, text = ?, sha256 = ?, updated_at = ?"
            " WHERE day = ?",
            (number, subject, html, text, sha, now, day.isoformat()),
        )
        _store_structure(conn, day, structure)
        for variant in variants:
            if variant.key in frozen and variant.rendered is not None:
                recipients.store_variant(conn, day, variant)
    issue = frozen_issue(conn, day)
    assert issue is not None
    return issue


def _store_structure(conn: sqlite3.Connection, day: date, structure: str | None) -> None:
    if structure is not None:
        conn.execute(
            "INSERT INTO issue_structures (day, structure) VALUES (?, ?)"
            " ON CONFLICT (day) DO UPDATE SET structure = excluded.structure",
            (day.isoformat(), structure),
        )


@dataclass(frozen=True)
class Lease:
    """Whose claims they are (a number each send run draws, held as a PostgreSQL advisory lock for
    as long as the run lives) and until when they stay its own without another claim from it."""

    owner: str = ""
    until: str = ""


def claim_batch(
    conn: sqlite3.Connection, day: date, limit: int, *, sha256: str, now: str,
    variant_sha256: Mapping[str, str] | None = None, lease: Lease = Lease(),
) -> Claim:
    """Claim up to LIMIT rows that are pending (or due for a retry) in one transaction.

    A row whose subscriber is no longer active (unsubscribed or bounced after the snapshot, or
    removed) becomes `skipped`; the others become `claimed` with the content fingerprint they get
    (their variant's in VARIANT_SHA256, else SHA256, the full issue's).
    Several senders claim at once on PostgreSQL: each passes over the rows another is claiming.
    """
    with store.write(conn, rows_locked=True, batched=True):
        return _claim(conn, day.isoformat(), limit, sha256=sha256, now=now, variant_sha256=variant_sha256,
                      lease=lease)


_CLAIM_COLUMNS = (
    "d.subscriber_id AS delivery_id, d.message_id, d.attempts, d.last_reply, d.variant, s.id, s.email,"
    " s.email_key, s.name, s.status, s.created_at, s.updated_at, s.sections, s.frequency, s.preferences_at"
)


def _claim(conn: sqlite3.Connection, key: str, limit: int, *, sha256: str, now: str,
           variant_sha256: Mapping[str, str] | None = None, lease: Lease = Lease()) -> Claim:
    """Claim up to LIMIT due rows of the issue KEY inside the caller's transaction (see claim_batch)."""
    shas = variant_sha256 or {}
    claimed: list[Claimed] = []
    skipped: list[int] = []
    locked = store.skip_locked(conn, "d")
    # due retries first, then pending rows in snapshot order (the index on (issue_day, state,
    # subscriber_id) yields them in that order, so no sort over the remaining list per batch)
    # both asked before either is read: one round trip for the two in a batched write (postgres.py);
    # pending rows the retries leave no room for stay pending (on PostgreSQL, locked until the commit)
    retries = conn.execute(
        f"SELECT {_CLAIM_COLUMNS} FROM deliveries d LEFT JOIN subscribers s ON s.id = d.subscriber_id"
        " WHERE d.issue_day = ? AND d.state = 'retry' AND coalesce(d.next_attempt_at, '') <= ?"
        f" ORDER BY d.next_attempt_at LIMIT ?{locked}",
        (key, now, limit),
    )
    pending = conn.execute(
        f"SELECT {_CLAIM_COLUMNS} FROM deliveries d LEFT JOIN subscribers s ON s.id = d.subscriber_id"
        f" WHERE d.issue_day = ? AND d.state = 'pending' ORDER BY d.subscriber_id LIMIT ?{locked}",
        (key, limit),
    )
    rows = retries.fetchall()
    rows += pending.fetchall()[:limit - len(rows)]
    for row in rows:
        if row["id"] is None or row["status"] != "active":
            skipped.append(row["delivery_id"])
            continue
        subscriber = Subscriber.from_row({name: row[name] for name in _SUBSCRIBER_FIELDS})
        claimed.append(Claimed(subscriber, row["message_id"], row["attempts"] + 1, row["last_reply"] or "",
                               row["variant"]))
    conn.executemany(
        "UPDATE deliveries SET state = 'skipped', updated_at = ? WHERE issue_day = ? AND subscriber_id = ?",
        [(now, key, sid) for sid in skipped],
    )
    # the address used is recorded: it is the subscriber's current one, which may have changed
    conn.executemany(
        "UPDATE deliveries SET state = 'claimed', attempts = attempts + 1, sha256 = ?, email = ?,"
        " updated_at = ?, claimed_by = ?, lease_until = ? WHERE issue_day = ? AND subscriber_id = ?",
        [(shas.get(c.variant, sha256), c.subscriber.email, now, lease.owner, lease.until, key, c.subscriber.id)
         for c in claimed],
    )
    if lease.owner and claimed:  # a sender that claims is alive: its earlier claims stay its own
        conn.execute("UPDATE deliveries SET lease_until = ? WHERE issue_day = ? AND claimed_by = ?"
                     " AND state IN ('claimed', 'data_sent') AND lease_until < ?",
                     (lease.until, key, lease.owner, lease.until))
    return Claim(tuple(claimed), len(skipped))


def set_state(
    conn: sqlite3.Connection,
    day: date,
    subscriber_ids: Iterable[int],
    state: State,
    *,
    now: str,
    expected: State | None = None,
    reply: str | None = None,
    next_attempt_at: str | None = None,
) -> int:
    """Move rows of DAY to STATE in one transaction; with EXPECTED, only rows now in that state.

    Returns the number of rows changed. Refuses transitions the state machine does not allow.
    """
    if state not in STATES:
        raise ValueError(f"unknown delivery state {state!r}")
    if expected is not None and state not in TRANSITIONS[expected]:
        raise ValueError(f"a delivery cannot go from {expected!r} to {state!r}")
    sql = "UPDATE deliveries SET state = ?, updated_at = ?"
    extra: list[object] = []
    if reply is not None:
        sql += ", last_reply = ?"
        extra.append(reply)
    if state == RETRY:
        sql += ", next_attempt_at = ?"
        extra.append(next_attempt_at)
    sql += " WHERE issue_day = ? AND subscriber_id = ?"
    if expected is not None:
        sql += " AND state = ?"
    key = day.isoformat()
    params = [
        (state, now, *extra, key, sid, *((expected,) if expected is not None else ()))
        for sid in subscriber_ids
    ]
    with store.write(conn):
        before = conn.total_changes
        conn.executemany(sql, params)
        return conn.total_changes - before


def rows_in_state(conn: sqlite3.Connection, day: date, state: State, batch: int = 1000):
    """Yield (subscriber_id, message_id) of DAY's rows in STATE, reading BATCH rows at a time."""
    last = -1
    while True:
        rows = conn.execute(
            "SELECT subscriber_id, message_id FROM deliveries"
            " WHERE issue_day = ? AND state = ? AND subscriber_id > ? ORDER BY subscriber_id LIMIT ?",
            (day.isoformat(), state, last, batch),
        ).fetchall()
        if not rows:
            return
        for row in rows:
            yield row["subscriber_id"], row["message_id"]
        last = rows[-1]["subscriber_id"]


def counts(conn: sqlite3.Connection, day: date) -> dict[State, int]:
    """Return the number of DAY's rows in each state (zero for states no row is in)."""
    found = dict(conn.execute(
        "SELECT state, count(*) FROM deliveries WHERE issue_day = ? GROUP BY state", (day.isoformat(),)
    ).fetchall())
    return {state: found.get(state, 0) for state in STATES}


def finish_if_done(conn: sqlite3.Connection, day: date, *, now: str) -> bool:
    """Mark DAY's issue `done` when no row still owes a message; return whether it is done."""
    placeholders = ", ".join("?" for _ in UNFINISHED)
    with store.write(conn):
        left = conn.execute(
            f"SELECT count(*) FROM deliveries WHERE issue_day = ? AND state IN ({placeholders})",
            (day.isoformat(), *UNFINISHED),
        ).fetchone()[0]
        if left == 0:
            conn.execute(
                "UPDATE issues SET status = 'done', updated_at = ? WHERE day = ? AND status != 'done'",
                (now, day.isoformat()),
            )
    return left == 0


def issue_status(conn: sqlite3.Connection, day: date) -> IssueStatus:
    """Return DAY's issue state (not started, sending, paused, done), its count per delivery state,
    and the rows to look at (failed, in doubt) with the server's reply."""
    issue = frozen_issue(conn, day)
    if issue is None:
        return IssueStatus(day, NOT_STARTED, counts={state: 0 for state in STATES})
    return IssueStatus(day, issue.status, issue.subject, issue.number, counts(conn, day),
                       problems(conn, day), next_retry_at(conn, day))


# --- SMTP outcomes, recovery and policies ---------------------------------------------------------



@dataclass(frozen=True)
class Outcome:
    """The result of one SMTP attempt, as the ledger records it."""

    subscriber_id: int
    state: State  # SENT, RETRY, FAILED or IN_DOUBT
    reply: str = ""
    reason: str = ""  # FAILED: a Reason
    retry_at: str | None = None  # RETRY (and IN_DOUBT under the retry policy): when it is due
    bounce: bool = False  # also mark the subscriber bounced: later issues skip them


def record(
    conn: sqlite3.Connection,
    day: date,
    *,
    data_sent: Iterable[int] = (),
    outcomes: Iterable[Outcome] = (),
    now: str,
    in_doubt: InDoubt = InDoubt.RETRY,
    claim: int = 0,
    sha256: str = "",
    variant_sha256: Mapping[str, str] | None = None,
    lease: Lease = Lease(),
) -> Claim:
    """Record, in one transaction, rows about to get their body (`data_sent`) and attempts' results.

    An IN_DOUBT outcome counts one more doubt; under the `retry` policy a row in doubt for the first
    time goes straight back to `retry` (due at its retry_at), keeping its Message-ID. With CLAIM,
    up to that many due rows are claimed too, as `claim_batch` does (SHA256 and VARIANT_SHA256 are their
    content), in the same transaction: one commit instead of two. Returns what was claimed.
    """
    key = day.isoformat()
    data_sent, outcomes = list(data_sent), list(outcomes)
    # batched: on PostgreSQL the whole commit is one round trip (two with a claim: its rows are read first).
    # It changes only rows this send holds, each guarded by its state, and waits for no other writer
    # (rows_locked): senders on other hosts commit alongside. A bounce changes a subscriber, which
    # the web also writes: then it takes its turn with every writer.
    bounces = any(outcome.bounce for outcome in outcomes)
    with store.write(conn, batched=True, rows_locked=not bounces):
        if data_sent:
            conn.executemany(
                "UPDATE deliveries SET state = 'data_sent', updated_at = ?"
                " WHERE issue_day = ? AND subscriber_id = ? AND state = 'claimed'",
                [(now, key, sid) for sid in data_sent],
            )
        doubted = [outcome for outcome in outcomes if outcome.state == IN_DOUBT]
        ended = [outcome for outcome in outcomes if outcome.state != IN_DOUBT]
        if doubted:
            # a row's first doubt is retried under that policy, a second one stays in doubt; the
            # guard on `data_sent` leaves the second statement the rows the first did not take
            # (one statement per state: PostgreSQL's `state` is an enum, which text cannot be set to)
            steps = ((RETRY, " AND doubted = 0"),) if in_doubt == InDoubt.RETRY else ()
            for state, first in (*steps, (IN_DOUBT, "")):
                conn.executemany(
                    f"UPDATE deliveries SET state = '{state}', doubted = doubted + 1, last_reply = ?, updated_at = ?,"
                    " next_attempt_at = ?"
                    f" WHERE issue_day = ? AND subscriber_id = ? AND state = 'data_sent'{first}",
                    [(o.reply, now, o.retry_at or now, key, o.subscriber_id) for o in doubted],
                )
        if ended:
            if any(outcome.state not in (SENT, RETRY, FAILED) for outcome in ended):
                raise ValueError(f"an attempt cannot end in {[o.state for o in ended]!r}")
            conn.executemany(  # one statement for all of them: most commits record several
                "UPDATE deliveries SET state = ?, last_reply = ?, reason = ?, next_attempt_at = ?, updated_at = ?"
                " WHERE issue_day = ? AND subscriber_id = ? AND state IN ('claimed', 'data_sent')",
                [(o.state, o.reply, o.reason, o.retry_at if o.state == RETRY else None, now, key, o.subscriber_id)
                 for o in ended],
            )
        for outcome in ended:
            if outcome.bounce:
                subscribers.record_bounce(conn, outcome.subscriber_id, now=now)
        if claim <= 0:
            return Claim((), 0)
        return _claim(conn, key, claim, sha256=sha256, now=now, variant_sha256=variant_sha256, lease=lease)


def release(conn: sqlite3.Connection, day: date, subscriber_ids: Iterable[int], *, now: str) -> int:
    """Put rows that were never attempted back to `pending` (a stop or a pause before them): claimed ones,
    and data_sent ones whose data_sent was recorded ahead with their connection's previous message (pool.py)."""
    key = day.isoformat()
    with store.write(conn):
        before = conn.total_changes
        conn.executemany(
            "UPDATE deliveries SET state = 'pending', attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END,"
            " updated_at = ?"
            " WHERE issue_day = ? AND subscriber_id = ? AND state IN ('claimed', 'data_sent')",
            [(now, key, sid) for sid in subscriber_ids],
        )
        return conn.total_changes - before


def recover_interrupted(conn: sqlite3.Connection, day: date, *, now: str, owner: str = "") -> tuple[int, int]:
    """Resolve rows a killed SMTP send left behind; return (claimed → retry, data_sent → in_doubt).

    A claimed row never had the end of its message sent: it is retried at once. A data_sent row may
    or may not have reached its reader (RELIABILITY.md): it is in doubt, and the policy decides.
    On SQLite one send runs at a time (the send lock), so every such row is a dead send's. On
    PostgreSQL other senders may be at work: only rows whose sender is gone (its advisory lock is
    free) or has not claimed for its lease are taken, never OWNER's own.
    """
    key = day.isoformat()
    with store.write(conn):
        whose, values = _abandoned(conn, key, now, owner)
        if not whose:
            return 0, 0
        retried = conn.execute(
            "UPDATE deliveries SET state = 'retry', next_attempt_at = ?, updated_at = ?, claimed_by = ''"
            f" WHERE issue_day = ? AND state = 'claimed'{whose}", (now, now, key, *values)).rowcount
        doubted = conn.execute(
            "UPDATE deliveries SET state = 'in_doubt', doubted = doubted + 1, updated_at = ?, claimed_by = '',"
            " last_reply = 'the send was interrupted after the server accepted the recipient'"
            f" WHERE issue_day = ? AND state = 'data_sent'{whose}", (now, key, *values)).rowcount
    return retried, doubted


def _abandoned(conn: sqlite3.Connection, key: str, now: str, owner: str) -> tuple[str, list[str]]:
    """Return the condition (and its values) that picks the claims of senders that are gone; "" for none."""
    if not store.is_postgres(conn):
        return " AND 1 = 1", []
    owners = {row[0] for row in conn.execute(
        "SELECT DISTINCT claimed_by FROM deliveries WHERE issue_day = ? AND state IN ('claimed', 'data_sent')",
        (key,))} - {owner or None}
    if not owners:
        return "", []
    gone = [o for o in owners if not o.isdigit() or conn.holder_gone(int(o))]  # type: ignore[attr-defined]
    mine, values = (" AND claimed_by <> ?", [owner]) if owner else ("", [])
    if gone:
        return f"{mine} AND (lease_until < ? OR claimed_by IN ({', '.join('?' * len(gone))}))", [*values, now, *gone]
    return f"{mine} AND lease_until < ?", [*values, now]


def held_elsewhere(conn: sqlite3.Connection, day: date, owner: str) -> int:
    """Return how many of DAY's rows other senders hold (claimed, or with their body being sent)."""
    return conn.execute("SELECT count(*) FROM deliveries WHERE issue_day = ? AND state IN ('claimed', 'data_sent')"
                        " AND claimed_by <> ?", (day.isoformat(), owner)).fetchone()[0]


def apply_in_doubt_policy(conn: sqlite3.Connection, day: date, policy: InDoubt | str, *, now: str) -> int:
    """Under `retry`, send rows in doubt for the first time again (same Message-ID); return how many.

    Under `skip` they stay `in_doubt` (at most once) and are reported; a later send with
    `--in-doubt retry` may still retry them.
    """
    if policy not in IN_DOUBT_POLICIES:
        raise ValueError(f"in-doubt policy must be 'retry' or 'skip', not {policy!r}")
    if policy == InDoubt.SKIP:
        return 0
    with store.write(conn):
        return conn.execute(
            "UPDATE deliveries SET state = 'retry', next_attempt_at = ?, updated_at = ?"
            " WHERE issue_day = ? AND state = 'in_doubt' AND doubted = 1", (now, now, day.isoformat())).rowcount


def retry_now(conn: sqlite3.Connection, day: date, *, now: str) -> int:
    """Make every `retry` row of DAY due now, whatever its backoff said; return how many."""
    with store.write(conn):
        return conn.execute(
            "UPDATE deliveries SET next_attempt_at = ? WHERE issue_day = ? AND state = 'retry'",
            (now, day.isoformat())).rowcount


# failed rows that `send --retry-failed` may send again: not bounced (the address is gone) nor
# expired (a later issue replaced this one): those stay as they are
RETRYABLE_FAILURES = "state = 'failed' AND reason NOT IN ('bounced', 'expired')"


def retry_failed(conn: sqlite3.Connection, day: date, *, now: str) -> int:
    """Put DAY's failed rows of still-active subscribers back to `retry`, due now; return how many.

    For a day whose rows failed by a cause now fixed (a relay that refused everyone): bounced and
    expired rows stay failed, rows of subscribers no longer active stay as they are, and the issue
    is sending again when any row moved.
    """
    key = day.isoformat()
    with store.write(conn):
        moved = conn.execute(
            "UPDATE deliveries SET state = 'retry', reason = '', next_attempt_at = ?, updated_at = ?"
            f" WHERE issue_day = ? AND {RETRYABLE_FAILURES}"
            " AND subscriber_id IN (SELECT id FROM subscribers WHERE status = 'active')",
            (now, now, key)).rowcount
        if moved:
            conn.execute("UPDATE issues SET status = 'sending', updated_at = ? WHERE day = ?", (now, key))
    return moved


def expire_superseded(conn: sqlite3.Connection, *, now: str) -> dict[date, int]:
    """Fail the pending and retry rows of every unfinished issue a later day's issue has superseded.

    A daily issue stops being retried when the next day's issue starts: those rows become `failed`
    with reason `expired`, and their issue is done. Rows in doubt stay as they are (they may have
    been delivered). Returns the number of rows expired per day.
    """
    expired: dict[date, int] = {}
    with store.write(conn):
        # superseded: a later day's issue started after this one did (so an older day sent by hand
        # after newer ones is not expired at its own start)
        # a daily issue by a later day's, a digest by a later week's (not by another variant of its week)
        superseded = conn.execute(
            f"SELECT i.day, max(j.day) FROM issues i JOIN issues j"
            f" ON {_EDITION.format(t='j')} > {_EDITION.format(t='i')} AND j.started > i.started"
            f" AND (i.day LIKE '{DIGEST_KEY_LIKE}') = (j.day LIKE '{DIGEST_KEY_LIKE}')"
            " WHERE i.status != 'done' GROUP BY i.day").fetchall()
        for key, newest in superseded:
            count = conn.execute(
                "UPDATE deliveries SET state = 'failed', reason = ?, updated_at = ?,"
                " last_reply = CASE WHEN last_reply = '' THEN ? ELSE last_reply END"
                " WHERE issue_day = ? AND state IN ('pending', 'retry')",
                (REASON_EXPIRED, now, f"expired: the issue of {newest} started", key)).rowcount
            left = conn.execute(
                "SELECT count(*) FROM deliveries WHERE issue_day = ? AND state IN ('claimed', 'data_sent')",
                (key,)).fetchone()[0]
            if left == 0:
                conn.execute("UPDATE issues SET status = 'done', updated_at = ? WHERE day = ?", (now, key))
            if count:
                expired[ledger_key(key)] = count
    return expired


# what one issue supersedes by: a daily issue its day, a digest's variant its week (2026-W48)
_EDITION = f"CASE WHEN {{t}}.day LIKE '{DIGEST_KEY_LIKE}' THEN substr({{t}}.day, 1, 8) ELSE {{t}}.day END"


def set_issue_state(conn: sqlite3.Connection, day: date, state: IssueState, *, now: str) -> None:
    """Mark DAY's issue `sending` or `paused` (a done issue stays done)."""
    if state not in (ISSUE_SENDING, ISSUE_PAUSED):
        raise ValueError(f"an issue cannot be set to {state!r}")
    with store.write(conn):
        conn.execute("UPDATE issues SET status = ?, updated_at = ? WHERE day = ? AND status != 'done'",
                     (state, now, day.isoformat()))


def next_retry_at(conn: sqlite3.Connection, day: date) -> str | None:
    """Return when DAY's earliest `retry` row is due, or None when there is none."""
    return conn.execute(
        "SELECT min(coalesce(next_attempt_at, '')) FROM deliveries WHERE issue_day = ? AND state = 'retry'",
        (day.isoformat(),)).fetchone()[0]


def problems(conn: sqlite3.Connection, day: date) -> tuple[Problem, ...]:
    """Return DAY's failed and in-doubt rows, and rows sent after an attempt in doubt, by address."""
    rows = conn.execute(
        "SELECT email, state, reason, last_reply, attempts, doubted, updated_at FROM deliveries"
        " WHERE issue_day = ? AND (state IN ('failed', 'in_doubt') OR doubted > 0) ORDER BY email",
        (day.isoformat(),)).fetchall()
    return tuple(Problem(row[0], State(row[1]), *row[2:]) for row in rows)


def sent_since(conn: sqlite3.Connection, since: str, *, from_day: date, limit: int) -> list[str]:
    """Return when the latest LIMIT messages sent since SINCE were recorded (issues from FROM_DAY on)."""
    rows = conn.execute(
        "SELECT updated_at FROM deliveries WHERE issue_day >= ? AND state = 'sent' AND updated_at >= ?"
        " ORDER BY updated_at DESC LIMIT ?", (from_day.isoformat(), since, limit)).fetchall()
    return [row[0] for row in rows]
