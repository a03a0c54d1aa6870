"""Batched writes on PostgreSQL: a commit of the SMTP send goes to the server in one round trip, and
reads nothing wrong and loses nothing on the way (store.write(conn, batched=True), postgres.py)."""

from __future__ import annotations

import contextlib
import socket
import threading
from datetime import date
from urllib.parse import urlsplit, urlunsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter import postgres, store, subscribers
from newsletter.delivery import ledger
from newsletter.errors import StoreError

pytestmark = pytest.mark.postgres_only
DAY = date(2026, 11, 26)
NOW = "2026-11-26T06:00:00+00:00"


class RoundTrips:
    """A relay between the client and the PostgreSQL server at URL that counts round trips: each time
    the client speaks again after the server has answered."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.target = (parts.hostname, parts.port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        host = parts.netloc.rsplit("@", 1)[0] + "@127.0.0.1:" + str(self.listener.getsockname()[1])
        self.url = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
        self.count = 0
        self._last: dict[socket.socket, str] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.target)
                self._last[client] = "server"
                threading.Thread(target=self._relay, args=(client, server, client, "client"), daemon=True).start()
                threading.Thread(target=self._relay, args=(server, client, client, "server"), daemon=True).start()

    def _relay(self, source: socket.socket, sink: socket.socket, session: socket.socket, side: str) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                with self._lock:  # counted before it is passed on: the answer cannot come before it
                    if side == "client" and self._last[session] == "server":
                        self.count += 1
                    self._last[session] = side
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def pg(database_backend):
    with contextlib.closing(store.connect_url(database_backend)) as conn:
        yield conn


@pytest.fixture
def relayed(database_backend):
    relay = RoundTrips(database_backend)
    with contextlib.closing(store.connect_url(relay.url)) as conn:
        yield relay, conn
    relay.close()


def claimed_rows(conn, readers: int, claim: int) -> tuple[ledger.FrozenIssue, list[ledger.Claimed]]:
    for n in range(readers):
        subscribers.add(conn, f"reader{n}@example.org")
    frozen = ledger.freeze_and_snapshot(conn, DAY, number=1, subject="s", html="h", text="t",
                                        message_id=lambda sid: f"<{sid}@example.org>", now=NOW)
    return frozen, list(ledger.claim_batch(conn, DAY, claim, sha256=frozen.sha256, now=NOW).rows)


def test_a_commit_of_the_smtp_send_is_one_round_trip_and_two_with_a_claim(relayed):
    relay, conn = relayed
    frozen, rows = claimed_rows(conn, 8, 4)
    ids = [row.subscriber.id for row in rows]
    ledger.record(conn, DAY, data_sent=ids[:2], now=NOW)

    before = relay.count
    ledger.record(conn, DAY, data_sent=ids[2:], now=NOW,
                  outcomes=[ledger.Outcome(sid, ledger.SENT, f"250 2.0.0 queued as {sid}") for sid in ids[:2]])
    assert relay.count - before == 1  # BEGIN, the lock, every change and COMMIT at once

    before = relay.count
    claim = ledger.record(conn, DAY, now=NOW, claim=3, sha256=frozen.sha256,
                          outcomes=[ledger.Outcome(sid, ledger.SENT, "250 ok") for sid in ids[2:]])
    assert relay.count - before == 2  # the rows to claim are read, then claimed with the commit
    assert len(claim.rows) == 3
    assert ledger.counts(conn, DAY)[ledger.SENT] == 4 and ledger.counts(conn, DAY)[ledger.CLAIMED] == 3
    assert conn.execute("SELECT last_reply FROM deliveries WHERE subscriber_id = ?",
                        (ids[0],)).fetchone()[0] == f"250 2.0.0 queued as {ids[0]}"


def test_a_claim_with_retries_due_takes_them_first_in_the_same_round_trip(relayed):
    relay, conn = relayed
    frozen, rows = claimed_rows(conn, 6, 2)
    retried = [row.subscriber.id for row in rows]
    ledger.record(conn, DAY, now=NOW, outcomes=[ledger.Outcome(sid, ledger.RETRY, "451 later", retry_at=NOW)
                                                for sid in retried])
    before = relay.count
    claim = ledger.record(conn, DAY, now=NOW, claim=3, sha256=frozen.sha256)
    assert relay.count - before == 2
    assert [row.subscriber.id for row in claim.rows][:2] == retried and len(claim.rows) == 3
    assert ledger.counts(conn, DAY)[ledger.PENDING] == 3  # the pending rows read beyond the claim stay so


def test_a_statement_failing_in_a_batched_write_is_an_error_naming_the_host_and_records_nothing(pg):
    subscribers.add(pg, "ann@example.com")
    with pytest.raises(StoreError) as err:
        with store.write(pg, batched=True):
            pg.execute("UPDATE subscribers SET name = 'changed'")
            pg.execute("UPDATE subscribers SET status = 'no such status'")  # the CHECK refuses it at COMMIT
    assert str(err.value).startswith(f"{postgres.shown(pg.url)}: cannot write the subscriber database: ")
    assert str(err.value).endswith("nothing of this change was recorded")
    assert subscribers.get(pg, "ann@example.com").name == ""
    with store.write(pg, batched=True):  # the connection is fit for the next write
        pg.execute("UPDATE subscribers SET name = 'next'")
    assert subscribers.get(pg, "ann@example.com").name == "next"


def test_an_error_in_the_code_of_a_batched_write_sends_none_of_it(pg):
    subscribers.add(pg, "ann@example.com")
    with pytest.raises(RuntimeError):
        with store.write(pg, batched=True):
            pg.execute("UPDATE subscribers SET name = 'changed'")
            raise RuntimeError("stop")
    assert subscribers.get(pg, "ann@example.com").name == ""


def test_a_batched_write_reads_its_own_changes_and_counts_them(pg):
    for name in ("ann", "bob", "cy"):
        subscribers.add(pg, f"{name}@example.com")
    with store.write(pg, batched=True):
        before = pg.total_changes
        renamed = pg.execute("UPDATE subscribers SET name = 'x' WHERE email LIKE ?", ("%@example.com",))
        pg.execute("UPDATE subscribers SET name = 'y' WHERE email = ?", ("cy@example.com",))
        names = [row["name"] for row in pg.execute("SELECT name FROM subscribers ORDER BY email")]
        assert names == ["x", "x", "y"] and renamed.rowcount == 3
        assert pg.total_changes - before == 4
    assert [row[0] for row in pg.execute("SELECT name FROM subscribers ORDER BY email")] == ["x", "x", "y"]


TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=60)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(TEXT, st.binary(max_size=40) | st.none(),
                               st.integers(min_value=-2**31, max_value=2**31 - 1)), min_size=1, max_size=4))
def test_values_bound_in_a_batched_write_are_stored_exactly_as_given(pg, rows):
    with store.write(pg, batched=True):
        pg.execute("DELETE FROM outgoing_mail")
        pg.executemany("INSERT INTO outgoing_mail (email, requested_at, raw, attempts, next_attempt_at)"
                       " VALUES (?, 't', ?, ?, 'LIKE ? %s')", rows)
        pg.execute("UPDATE outgoing_mail SET last_error = email || ? WHERE id = (SELECT min(id) FROM outgoing_mail)",
                   ("%s'?",))
    stored = pg.execute("SELECT email, raw, attempts, next_attempt_at, last_error FROM outgoing_mail ORDER BY id")
    stored = stored.fetchall()
    assert [tuple(row[:3]) for row in stored] == rows
    assert {row[3] for row in stored} == {"LIKE ? %s"} and stored[0][4] == rows[0][0] + "%s'?"


def prepared_here(conn) -> list[str]:
    """The statements this connection's server session holds prepared by a batched write."""
    return [row[0] for row in conn.execute(
        "SELECT statement FROM pg_prepared_statements WHERE name LIKE 'newsletter!_%' ESCAPE '!' ORDER BY statement")]


def test_the_statements_of_a_commit_of_the_smtp_send_are_planned_once_per_connection(pg):
    frozen, rows = claimed_rows(pg, 12, 8)
    ids = [row.subscriber.id for row in rows]
    ledger.record(pg, DAY, data_sent=ids[:4], now=NOW)
    ledger.record(pg, DAY, data_sent=ids[4:], now=NOW,
                  outcomes=[ledger.Outcome(sid, ledger.SENT, "250 ok") for sid in ids[:4]])
    prepared = prepared_here(pg)
    assert any("'data_sent'" in text and "$3" in text for text in prepared)  # prepared, with its parameters
    for _ in range(3):  # later commits and claims run what is prepared: nothing more is planned from scratch
        claim = ledger.record(pg, DAY, now=NOW, claim=2, sha256=frozen.sha256,
                              outcomes=[ledger.Outcome(sid, ledger.SENT, "250 ok") for sid in ids[4:]])
    assert prepared_here(pg) == prepared
    assert len(claim.rows) == 0 and ledger.counts(pg, DAY)[ledger.SENT] == 8
    assert ledger.counts(pg, DAY)[ledger.CLAIMED] == 4


def test_a_batched_write_that_fails_or_is_dropped_leaves_the_next_one_its_statements(pg):
    subscribers.add(pg, "ann@example.com")
    ann = subscribers.get(pg, "ann@example.com").id
    rename = "UPDATE subscribers SET name = ? WHERE id = ?"
    with pytest.raises(RuntimeError), store.write(pg, batched=True):
        pg.execute(rename, ("dropped", ann))  # queued with its PREPARE, never sent
        raise RuntimeError("stop")
    with pytest.raises(StoreError), store.write(pg, batched=True):
        pg.execute(rename, ("first", ann))  # prepared, then the transaction fails
        pg.execute("UPDATE subscribers SET status = 'no such status'")
        pg.execute("UPDATE subscribers SET status = ? WHERE id = ?", ("active", ann))  # its PREPARE never ran
    with store.write(pg, batched=True):
        pg.execute(rename, ("next", ann))
        pg.execute("UPDATE subscribers SET status = ? WHERE id = ?", ("bounced", ann))
    ann_now = subscribers.get(pg, "ann@example.com")
    assert (ann_now.name, ann_now.status) == ("next", "bounced")
