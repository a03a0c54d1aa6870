"""SMTP delivery against a real server (aiosmtpd on 127.0.0.1) that injects RELIABILITY.md's faults.

Every test asserts what the server received, not only what our ledger says: each active
subscriber once, except rows the ledger reports as in doubt.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import shutil
import socket
import sqlite3
import subprocess
import threading
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, AuthResult
from hypothesis import given, settings as hypothesis_settings, strategies as st
from typer.testing import CliRunner

from newsletter import messages, store
from newsletter.cli import app
from newsletter.delivery import issue_status, send_proofs
from factories import send_unchecked as send_issue
from newsletter.delivery.smtp import RetryPolicy, Throttle, WireMessages, send_one, stuff
from newsletter.errors import DeliveryError, SettingsError
from newsletter.models import GREETING_PLACEHOLDER, RenderedIssue, Subscriber
from newsletter.settings import Settings, load_settings

from factories import DAY, LoopbackController, make_rendered
REPO = Path(__file__).resolve().parent.parent
# retries due at once, so no test waits for a backoff
FAST = RetryPolicy(rate_limit_first=0.0, rate_limit_max=0.0, drop_first=0.0, drop_next=0.0, drop_max=0.0)


# ----------------------------------------------------------------------------- the server


class FaultyServer:
    """What the server received, and the faults it injects (each given once per address unless kept)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[tuple[str, str, bytes]] = []  # (recipient, Message-ID, raw)
        self.rcpt_replies: dict[str, list[str]] = {}
        self.data_replies: dict[str, list[str]] = {}
        self.drop_at_rcpt: set[str] = set()
        self.drop_at_data: set[str] = set()
        self.drop_after_dot: set[str] = set()
        self.hang_after_dot: set[str] = set()
        self.sessions = 0
        self.pipelining = False
        self.accept_login = True
        self.ends_with_commands = 0  # packets holding a message's final "." and the next MAIL FROM
        self.on_received: Callable[[int], object] | None = None  # told how many messages arrived, at each

    def take(self, where: set[str] | dict[str, list[str]], address: str):
        with self.lock:
            if isinstance(where, set):
                if address in where:
                    where.discard(address)
                    return True
                return False
            replies = where.get(address)
            return replies.pop(0) if replies else None

    def copies(self) -> Counter:
        with self.lock:
            return Counter(rcpt for rcpt, _, _ in self.received)

    # aiosmtpd hooks
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.take(self.drop_at_rcpt, address):
            server.transport.close()
            return "421 closing"
        if reply := self.take(self.rcpt_replies, address):
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        address = envelope.rcpt_tos[0]
        raw = envelope.content
        message_id = email.message_from_bytes(raw, policy=email.policy.default)["Message-ID"]
        if reply := self.take(self.data_replies, address):
            return reply
        with self.lock:
            self.received.append((address, message_id, raw))
            count = len(self.received)
        if self.on_received is not None:
            self.on_received(count)
        if self.take(self.drop_after_dot, address):
            server.transport.close()
        elif self.take(self.hang_after_dot, address):
            await asyncio.sleep(3)
        return "250 2.0.0 queued"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        return AuthResult(success=self.accept_login, handled=False)  # aiosmtpd answers 235 or 535


class _FaultySMTP(SMTP):
    def connection_made(self, transport):
        self.event_handler.sessions += 1
        super().connection_made(transport)

    def data_received(self, data):
        self.event_handler.ends_with_commands += data.count(b".\r\nMAIL FROM:")
        super().data_received(data)

    async def smtp_DATA(self, arg):
        if self.envelope.rcpt_tos and self.event_handler.take(self.event_handler.drop_at_data,
                                                              self.envelope.rcpt_tos[0]):
            self.transport.close()
            return
        await super().smtp_DATA(arg)


class _Controller(LoopbackController):
    """aiosmtpd on a free port of 127.0.0.1, speaking through the fault-injecting SMTP class."""

    def factory(self):
        return _FaultySMTP(self.handler, **self.SMTP_kwargs)


@pytest.fixture
def server():
    handler = FaultyServer()
    controller = _Controller(handler, hostname="127.0.0.1", port=0)
    controller.start()
    handler.port = controller.port
    handler.sessions = 0  # the controller's own check at start
    yield handler
    controller.stop()


class GreetingGate:
    """A TCP proxy to the server on PORT that holds its first connection back, the server's greeting
    with it, until RELEASE is set; the others pass at once. `carried` counts what each connection sent."""

    def __init__(self, port: int, release: threading.Event) -> None:
        self.upstream, self.release = port, release
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.carried: list[int] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            self.carried.append(0)
            threading.Thread(target=self._serve, args=(client, len(self.carried) - 1), daemon=True).start()

    def _serve(self, client: socket.socket, number: int) -> None:
        if number == 0:
            self.release.wait()
        with client, socket.create_connection(("127.0.0.1", self.upstream)) as upstream:
            back = threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True)
            back.start()
            self._pump(client, upstream, number)
            back.join()

    def _pump(self, source: socket.socket, target: socket.socket, number: int | None) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if number is not None:
                    self.carried[number] += len(data)
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- the project


def add_subscribers(conn: sqlite3.Connection, count: int, start: int = 0) -> list[str]:
    now = store.now_iso()
    emails = [f"reader{n}@example.org" for n in range(start, start + count)]
    with store.write(conn):
        conn.executemany(
            "INSERT INTO subscribers (email, email_key, name, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            [(e, e, f"Reader {n}", "active", now, now) for n, e in zip(range(start, start + count), emails)])
    return emails


def smtp_settings(project: Path, port: int, **smtp: object) -> Settings:
    loaded = load_settings(project).replace("delivery", transport="smtp", concurrency=3, batch_size=4)
    return loaded.replace("smtp", **{"host": "127.0.0.1", "port": port, "security": "none", "timeout": 2.0, **smtp})


@pytest.fixture
def conn(project: Path):
    connection = store.connect(project / "subscribers" / "newsletter.db")
    yield connection
    connection.close()


def rows(conn: sqlite3.Connection, day: date = DAY) -> dict[str, sqlite3.Row]:
    return {row["email"]: row for row in conn.execute(
        "SELECT email, state, reason, last_reply, doubted, message_id FROM deliveries WHERE issue_day = ?",
        (day.isoformat(),))}


def subscriber_status(conn: sqlite3.Connection, address: str) -> str:
    return conn.execute("SELECT status FROM subscribers WHERE email = ?", (address,)).fetchone()[0]


# ----------------------------------------------------------------------------- sending


@pytest.mark.parametrize("pipelining", [False, True])
def test_every_subscriber_gets_one_message_over_a_few_reused_connections(project, conn, server, pipelining):
    server.pipelining = pipelining
    everyone = add_subscribers(conn, 30)

    report = send_issue(conn, smtp_settings(project, server.port), make_rendered(), policy=FAST)

    assert report.status == "done" and report.written == 30 and report.transport == "smtp"
    assert server.copies() == Counter({address: 1 for address in everyone})
    assert server.sessions <= 3  # [delivery] concurrency, reused across the 30 messages
    ledger_ids = {address: row["message_id"] for address, row in rows(conn).items()}
    for address, message_id, raw in server.received:
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert parsed["To"].addresses[0].addr_spec == address
        assert message_id == ledger_ids[address]
        assert parsed["Subject"] == "MDB November 26: Talks resume"


def transactions(statements: list[str]) -> list[list[str]]:
    """Group traced SQL STATEMENTS by write transaction (BEGIN IMMEDIATE … COMMIT)."""
    grouped: list[list[str]] = []
    for statement in statements:
        if statement.startswith("BEGIN IMMEDIATE"):
            grouped.append([])
        elif grouped and statement != "COMMIT":
            grouped[-1].append(statement)
    return grouped

@pytest.mark.sqlite_only  # SQLite's trace callback counts the commits

def test_a_busy_send_claims_rows_in_the_commits_that_record_data_sent_not_in_commits_of_their_own(
        project, conn, server):
    # every commit is an fsync: claims riding with the data_sent commits save one per batch
    everyone = add_subscribers(conn, 120)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        report = send_issue(conn, smtp_settings(project, server.port), make_rendered(), policy=FAST)
    finally:
        conn.set_trace_callback(None)

    assert report.written == 120 and server.copies() == Counter({address: 1 for address in everyone})
    claiming = [t for t in transactions(statements) if any("SET state = 'claimed'" in s for s in t)]
    # alone: a transaction that records nothing else (neither data_sent nor a result)
    alone = [t for t in claiming if not any("SET state = 'data_sent'" in s or "last_reply = '" in s for s in t)]
    assert len(claiming) >= 120 // 32 and len(alone) == 1  # the first claim, before any message


def test_with_pipelining_a_final_dot_goes_out_with_the_next_messages_commands_one_round_trip_less(
        project, conn, server):
    server.pipelining = True
    everyone = add_subscribers(conn, 12)

    report = send_issue(conn, smtp_settings(project, server.port), make_rendered(), policy=FAST)

    assert report.written == 12 and server.copies() == Counter({address: 1 for address in everyone})
    assert server.ends_with_commands >= 12 - 3  # all but each connection's last message


def test_greylisted_messages_wait_for_a_later_send_and_arrive_once(project, conn, server):
    everyone = add_subscribers(conn, 6)
    for address in everyone[:2]:
        server.rcpt_replies[address] = ["451 4.7.1 Greylisted, please try again later"]
    settings = smtp_settings(project, server.port)

    first = send_issue(conn, settings, make_rendered())
    assert first.written == 4 and first.waiting_retries == 2 and first.status == "sending"
    assert first.next_retry_at > datetime.now(timezone.utc).isoformat()  # minutes away, not seconds
    again = send_issue(conn, settings, make_rendered())
    assert again.written == 0  # not due yet
    forced = send_issue(conn, settings, make_rendered(), retry_now=True)

    assert forced.written == 2 and forced.status == "done"
    assert server.copies() == Counter({address: 1 for address in everyone})


def test_a_rate_limit_reply_is_retried_within_the_same_run(project, conn, server):
    everyone = add_subscribers(conn, 6)
    for address in everyone[::2]:
        server.rcpt_replies[address] = ["450 4.7.1 Too many messages, slow down"]

    report = send_issue(conn, smtp_settings(project, server.port), make_rendered(), policy=FAST)

    assert report.status == "done" and report.written == 6 and report.deferred == 3
    assert server.copies() == Counter({address: 1 for address in everyone})


def test_550_at_rcpt_fails_the_row_and_bounces_the_subscriber_for_later_issues(project, conn, server):
    everyone = add_subscribers(conn, 4)
    gone = everyone[1]
    server.rcpt_replies[gone] = ["550 5.1.1 <reader1@example.org>: no such user"] * 5
    settings = smtp_settings(project, server.port)

    report = send_issue(conn, settings, make_rendered())
    later = send_issue(conn, settings, make_rendered(DAY.replace(day=27)))

    assert report.failed == 1 and report.bounced == 1 and report.status == "done"
    row = rows(conn)[gone]
    assert (row["state"], row["reason"]) == ("failed", "bounced")
    assert "5.1.1" in row["last_reply"]
    assert subscriber_status(conn, gone) == "bounced"
    assert gone not in rows(conn, DAY.replace(day=27))  # the next snapshot leaves them out
    assert later.written == 3
    assert server.copies()[gone] == 0


@pytest.mark.parametrize("pipelining", [False, True])
def test_550_after_data_fails_only_this_issue(project, conn, server, pipelining):
    server.pipelining = pipelining
    everyone = add_subscribers(conn, 3)
    server.data_replies[everyone[0]] = ["550 5.7.1 Message content rejected"]
    settings = smtp_settings(project, server.port)

    report = send_issue(conn, settings, make_rendered())
    send_issue(conn, settings, make_rendered(DAY.replace(day=27)))

    assert report.failed == 1 and report.bounced == 0
    assert (rows(conn)[everyone[0]]["state"], rows(conn)[everyone[0]]["reason"]) == ("failed", "rejected")
    assert subscriber_status(conn, everyone[0]) == "active"
    assert server.copies()[everyone[0]] == 1  # the next day's issue only


@pytest.mark.parametrize("pipelining", [False, True])
def test_a_drop_before_the_end_of_data_is_retried_and_delivered_once(project, conn, server, pipelining):
    server.pipelining = pipelining
    everyone = add_subscribers(conn, 6)
    server.drop_at_rcpt.add(everyone[1])
    server.drop_at_data.add(everyone[3])

    report = send_issue(conn, smtp_settings(project, server.port), make_rendered(), policy=FAST)

    assert report.status == "done" and report.in_doubt == 0
    assert server.copies() == Counter({address: 1 for address in everyone})
    assert all(row["state"] == "sent" and row["doubted"] == 0 for row in rows(conn).values())


@pytest.mark.parametrize("pipelining", [False, True])
def test_a_drop_after_the_final_dot_is_in_doubt_and_retried_once_with_the_same_message_id(project, conn, server, pipelining):
    server.pipelining = pipelining
    everyone = add_subscribers(conn, 4)
    server.drop_after_dot.add(everyone[2])

    report = send_issue(conn, smtp_settings(project, server.port), make_rendered(), policy=FAST)

    assert report.status == "done" and report.in_doubt == 1
    copies = [message_id for rcpt, message_id, _ in server.received if rcpt == everyone[2]]
    assert len(copies) == 2 and copies[0] == copies[1]  # the case SMTP cannot resolve: reported
    row = rows(conn)[everyone[2]]
    assert row["state"] == "sent" and row["doubted"] == 1
    problems = issue_status(conn, DAY).problems
    assert [(p.email, p.doubted) for p in problems] == [(everyone[2], 1)]
    assert problems[0].state == "sent"  # listed: delivered, after an attempt in doubt


@pytest.mark.parametrize("pipelining", [False, True])
def test_in_doubt_skip_mails_nobody_twice_and_reports_the_row(project, conn, server, pipelining):
    server.pipelining = pipelining
    everyone = add_subscribers(conn, 4)
    server.drop_after_dot.add(everyone[0])

    report = send_issue(conn, smtp_settings(project, server.port), make_rendered(), in_doubt="skip")

    assert report.status == "done" and report.in_doubt == 1
    assert server.copies() == Counter({address: 1 for address in everyone})
    assert rows(conn)[everyone[0]]["state"] == "in_doubt"
    assert [p.state for p in issue_status(conn, DAY).problems] == ["in_doubt"]


@pytest.mark.parametrize("pipelining", [False, True])
def test_a_hung_server_times_out_and_the_message_is_treated_as_a_drop(project, conn, server, pipelining):
    server.pipelining = pipelining
    everyone = add_subscribers(conn, 3)
    server.hang_after_dot.add(everyone[1])

    report = send_issue(conn, smtp_settings(project, server.port, timeout=0.3), make_rendered(),
                        in_doubt="skip")

    row = rows(conn)[everyone[1]]
    assert row["state"] == "in_doubt" and "no reply in time (timeout)" in row["last_reply"]
    assert report.written == 2
    assert server.copies() == Counter({address: 1 for address in everyone})


def test_a_connection_slow_to_be_greeted_holds_up_none_of_the_others(project, conn, server):
    everyone = add_subscribers(conn, 12)
    release, others_done, early = threading.Event(), threading.Event(), []
    server.on_received = lambda count: count == 11 and others_done.set()

    def greet_when_the_others_are_done() -> None:
        early.append(others_done.wait(5))
        release.set()

    watcher = threading.Thread(target=greet_when_the_others_are_done)
    watcher.start()
    gate = GreetingGate(server.port, release)
    try:
        settings = smtp_settings(project, gate.port, timeout=10.0).replace("delivery", concurrency=2)
        report = send_issue(conn, settings, make_rendered(), policy=FAST)
    finally:
        release.set()
        gate.listener.close()
        watcher.join()
    # the other connection carried eleven messages while the first one waited for its greeting
    assert early == [True]
    # and the first, greeted at last, sent the twelfth itself: no timeout, no second try
    assert report.status == "done" and server.copies() == Counter({address: 1 for address in everyone})
    assert server.sessions == 2 and gate.carried[0] > 0


def test_a_stop_while_a_connection_waits_for_its_greeting_gives_its_row_back_at_once(project, conn, server):
    everyone = add_subscribers(conn, 12)
    release, stop = threading.Event(), threading.Event()
    server.on_received = lambda count: count == 3 and stop.set()
    gate = GreetingGate(server.port, release)
    try:
        settings = smtp_settings(project, gate.port, timeout=10.0).replace("delivery", concurrency=2)
        first = send_issue(conn, settings, make_rendered(), policy=FAST, stop=stop)
        # ended while the first connection still waited for its greeting: its message never left
        assert first.stopped and gate.carried[0] == 0
        counts = issue_status(conn, DAY).counts
        assert counts["sent"] == first.written and counts["pending"] == 12 - first.written
        assert counts["claimed"] == counts["data_sent"] == 0
    finally:
        release.set()
        gate.listener.close()
    server.on_received = None
    resumed = send_issue(conn, smtp_settings(project, server.port), make_rendered(), policy=FAST)
    assert resumed.status == "done"
    assert server.copies() == Counter({address: 1 for address in everyone})


def test_a_server_that_never_greets_pauses_the_issue_after_timeouts(project, conn):
    add_subscribers(conn, 2)
    with socket.socket() as silent:  # accepts connections, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        settings = smtp_settings(silent.getsockname()[1] and project, silent.getsockname()[1], timeout=0.2)
        with pytest.raises(DeliveryError, match=r"no reply in time \(timeout\)"):
            send_issue(conn, settings.replace("delivery", concurrency=1), make_rendered())
    assert issue_status(conn, DAY).state == "paused"
    assert issue_status(conn, DAY).counts["failed"] == 0


def test_an_authentication_failure_pauses_the_issue_fails_nobody_and_a_later_send_resumes(
        project, conn, monkeypatch, tmp_path):
    handler = FaultyServer()
    handler.accept_login = False
    controller = _Controller(handler, hostname="127.0.0.1", port=0, authenticator=handler.authenticate,
                             auth_require_tls=False)
    controller.start()
    try:
        everyone = add_subscribers(conn, 5)
        monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "wrong")
        settings = smtp_settings(project, controller.port, username="editor")

        with pytest.raises(DeliveryError) as raised:
            send_issue(conn, settings, make_rendered())
        message = str(raised.value)
        assert message.startswith(f"127.0.0.1:{controller.port}: authentication failed for 'editor': 535")
        assert "paused" in message and "no subscriber marked failed" in message
        status = issue_status(conn, DAY)
        assert status.state == "paused"
        assert status.counts["failed"] == 0 and status.counts["claimed"] == 0 and status.counts["data_sent"] == 0
        assert all(subscriber_status(conn, a) == "active" for a in everyone)
        assert handler.copies() == Counter()

        handler.accept_login = True
        resumed = send_issue(conn, settings, make_rendered())
    finally:
        controller.stop()
    assert resumed.status == "done" and resumed.written == 5
    assert handler.copies() == Counter({address: 1 for address in everyone})


def test_a_refused_connection_is_a_clear_error_and_pauses_the_issue(project, conn, runner):
    add_subscribers(conn, 3)
    port = free_port()
    config = project / "newsletter.toml"
    text = config.read_text().replace('host = "localhost"', 'host = "127.0.0.1"').replace("port = 587", f"port = {port}")
    config.write_text(text.replace('security = "starttls"', 'security = "none"'))

    result = runner.invoke(app, ["--project", str(project), "send", "--date", day_of(project), "--transport", "smtp"])

    assert result.exit_code == 1
    assert f"Error: 127.0.0.1:{port}: connection refused" in result.output
    when = date.fromisoformat(day_of(project))
    assert issue_status(conn, when).state == "paused"
    assert issue_status(conn, when).counts["failed"] == 0


def test_a_wrong_setting_is_an_error_before_anything_is_claimed(project, conn, server, monkeypatch):
    add_subscribers(conn, 2)
    monkeypatch.delenv("NEWSLETTER_SMTP_PASSWORD", raising=False)
    settings = smtp_settings(project, server.port, username="editor")

    with pytest.raises(SettingsError, match="username 'editor' is set but NEWSLETTER_SMTP_PASSWORD is empty"):
        send_issue(conn, settings, make_rendered())
    with pytest.raises(SettingsError, match="must be 'outbox' or 'smtp'"):
        send_issue(conn, settings, make_rendered(), transport="pigeon")

    assert issue_status(conn, DAY).state == "not started"
    assert server.copies() == Counter()


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    return cert, key


def test_starttls_with_a_self_signed_certificate_trusted_by_ca_file_and_refused_without(project, conn, tmp_path):
    import ssl

    cert, key = make_certificate(tmp_path)
    shutil.copy(cert, project / "relay-ca.pem")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = FaultyServer()
    controller = _Controller(handler, hostname="127.0.0.1", port=0, tls_context=context, require_starttls=True)
    controller.start()
    try:
        everyone = add_subscribers(conn, 3)
        untrusted = smtp_settings(project, controller.port, security="starttls")
        with pytest.raises(DeliveryError, match=rf"127.0.0.1:{controller.port}: TLS error: .*CERTIFICATE_VERIFY_FAILED"):
            send_issue(conn, untrusted, make_rendered())
        assert handler.copies() == Counter()

        trusted = smtp_settings(project, controller.port, security="starttls", ca_file="relay-ca.pem")
        report = send_issue(conn, trusted, make_rendered())
    finally:
        controller.stop()
    assert report.status == "done"
    assert handler.copies() == Counter({address: 1 for address in everyone})


def test_megabyte_messages_over_starttls_arrive_whole_through_the_non_blocking_sessions(project, conn, tmp_path):
    """Bodies of a megabyte and more through TLS on non-blocking sockets: each reader gets the whole
    message once, the final "." held for the next one."""
    import ssl

    cert, key = make_certificate(tmp_path)
    shutil.copy(cert, project / "relay-ca.pem")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = FaultyServer()
    handler.pipelining = True
    controller = _Controller(handler, hostname="127.0.0.1", port=0, tls_context=context, require_starttls=True)
    controller.start()
    words = "\n".join(f"Paragraph {n}: the interceptor talks resumed at the border post." for n in range(10_000))
    try:
        everyone = add_subscribers(conn, 4)
        # the server parses each message before it answers the final ".": time for that on a busy machine
        settings = smtp_settings(project, controller.port, security="starttls", ca_file="relay-ca.pem", timeout=20.0)
        report = send_issue(conn, settings, make_rendered(words=words))
    finally:
        controller.stop()
    assert report.status == "done"
    assert handler.copies() == Counter({address: 1 for address in everyone})
    for _, _, raw in handler.received:
        assert len(raw) > 1_300_000
        text = email.message_from_bytes(raw, policy=email.policy.default).get_body(("plain",)).get_content()
        assert "Paragraph 9999: the interceptor talks resumed at the border post." in text
        assert text.count("the interceptor talks resumed") == 10_000


@pytest.mark.parametrize("pipelining", [False, True])
def test_a_stop_finishes_messages_in_flight_and_leaves_the_rest_pending(project, conn, server, pipelining):
    server.pipelining = pipelining
    everyone = add_subscribers(conn, 40)
    settings = smtp_settings(project, server.port)
    stop = threading.Event()

    first = send_issue(conn, settings, make_rendered(), stop=stop,
                       progress=lambda done, total: done and stop.set())

    assert first.stopped and 0 < first.written < 40
    counts = issue_status(conn, DAY).counts
    assert counts["sent"] == first.written and counts["pending"] == 40 - first.written
    assert counts["claimed"] == counts["data_sent"] == 0
    resumed = send_issue(conn, settings, make_rendered())
    assert resumed.status == "done"
    assert server.copies() == Counter({address: 1 for address in everyone})


def test_ctrl_c_mid_send_ends_it_at_once_and_the_next_send_mails_only_who_is_left(project, conn, server):
    """A KeyboardInterrupt on the thread that owns the database (a Ctrl-C without sending.py's handler)
    ends the send without hanging (pytest-timeout would fail it); nothing is lost, and only a message
    in doubt can go twice."""
    import signal

    server.pipelining = True
    everyone = add_subscribers(conn, 40)
    settings = smtp_settings(project, server.port)
    original = server.handle_DATA

    async def interrupting(smtp, session, envelope):
        if envelope.rcpt_tos[0] == everyone[10]:
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        return await original(smtp, session, envelope)

    server.handle_DATA = interrupting
    try:
        send_issue(conn, settings, make_rendered())
    except KeyboardInterrupt:
        assert 0 < sum(server.copies().values()) < 40
    # else Python dropped the interrupt (it lands in a finalizer now and then): the send simply ran to its end
    server.handle_DATA = original

    resumed = send_issue(conn, settings, make_rendered())
    assert resumed.status == "done"
    twice = {address for address, count in server.copies().items() if count > 1}
    doubted = {row["email"] for row in rows(conn).values() if row["doubted"]}
    assert set(server.copies()) == set(everyone) and twice <= doubted


@pytest.mark.parametrize("signed", [False, True])
def test_a_reader_whose_message_cannot_be_made_fails_alone_and_everyone_else_gets_theirs(project, conn, server,
                                                                                        signed):
    """A name the header rules refuse (a control character written into the list by hand) fails that
    row as unbuildable; signed, the messages are made ahead in other threads, and it is the same."""
    server.pipelining = True
    everyone = add_subscribers(conn, 20)
    broken = everyone[7]
    with store.write(conn):
        conn.execute("UPDATE subscribers SET name = ? WHERE email = ?", ("Eve\x07 Example", broken))
    settings = smtp_settings(project, server.port)
    if signed:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (project / "dkim.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
        settings = settings.replace("dkim", selector="news2026", domain="newsletter.example.org", key_file="dkim.pem")

    report = send_issue(conn, settings, make_rendered())

    assert report.written == 19 and report.failed == 1
    assert server.copies() == Counter({address: 1 for address in everyone if address != broken})
    assert (rows(conn)[broken]["state"], rows(conn)[broken]["reason"]) == ("failed", "unbuildable")
    assert all(b"DKIM-Signature:" in raw for _, _, raw in server.received) == signed


def test_signing_ahead_leaves_one_core_to_the_sending_loop() -> None:
    """On the 2-core machines of the benchmark a second signer slowed the signed send (the loop's
    replies and commits waited for a core); one core is always left to the loop, and one signer is
    the least."""
    from newsletter.delivery.pool import signer_threads

    assert [signer_threads(cores) for cores in (1, 2, 3, 4, 5, 16)] == [1, 1, 2, 3, 4, 4]
    assert signer_threads() >= 1


def test_retries_stop_when_the_next_days_issue_starts(project, conn, server):
    everyone = add_subscribers(conn, 3)
    server.rcpt_replies[everyone[0]] = ["451 4.7.1 Greylisted, please try again later"]
    settings = smtp_settings(project, server.port)
    send_issue(conn, settings, make_rendered())

    report = send_issue(conn, settings, make_rendered(DAY.replace(day=27)))

    assert report.expired == 1
    row = rows(conn)[everyone[0]]
    assert (row["state"], row["reason"]) == ("failed", "expired")
    assert issue_status(conn, DAY).state == "done"
    assert [rcpt for rcpt, _, _ in server.received].count(everyone[0]) == 1  # the next day's only


def test_an_older_day_sent_by_hand_after_a_newer_one_is_sent_not_expired(project, conn, server):
    everyone = add_subscribers(conn, 3)
    settings = smtp_settings(project, server.port)
    send_issue(conn, settings, make_rendered(DAY.replace(day=27)))

    report = send_issue(conn, settings, make_rendered())

    assert report.expired == 0
    assert issue_status(conn, DAY).counts["sent"] == 3
    assert sorted(rcpt for rcpt, _, _ in server.received) == sorted(everyone * 2)


def test_a_paced_send_keeps_its_rate_across_the_connections_and_ends_each_message_at_once(project, conn, server):
    """[delivery] rate spaces messages across the whole pool; with pacing, no final "." waits for the
    next message's commands (there is no next message ready to ride with)."""
    server.pipelining = True
    everyone = add_subscribers(conn, 9)
    settings = smtp_settings(project, server.port).replace("delivery", rate=40.0)
    report = send_issue(conn, settings, make_rendered())
    assert report.written == 9
    assert server.copies() == Counter({address: 1 for address in everyone})
    assert report.totals.seconds >= 8 / 40.0  # nine sends, one every 1/40 s: the first at once
    assert server.ends_with_commands == 0


def test_throttle_spaces_sends_across_the_pool_and_keeps_the_hourly_cap() -> None:
    clock = [1000.0]
    throttle = Throttle(rate=4.0, hourly_cap=0, clock=lambda: clock[0])
    assert [throttle.reserve() for _ in range(4)] == [0.0, 0.25, 0.5, 0.75]  # at once, then one every 1/rate s

    capped = Throttle(rate=0, hourly_cap=3, recent=[400.0, 500.0, 900.0], clock=lambda: clock[0])
    assert capped.reserve() == 3000.0  # the oldest of the last three sends leaves the window at 400 + 3600


def test_send_one_delivers_or_raises_naming_the_host_and_the_cause(project, server):
    settings = smtp_settings(project, server.port)
    send_one(settings, b"From: a@newsletter.example.org\r\nSubject: hi\r\n\r\n.dot line\r\nend\r\n", "x@example.org")
    assert server.copies() == Counter({"x@example.org": 1})
    assert server.received[0][2].endswith(b"\r\n.dot line\r\nend\r\n")  # the leading dot survives stuffing

    server.rcpt_replies["y@example.org"] = ["550 5.1.1 no such user"]
    with pytest.raises(DeliveryError, match=rf"127.0.0.1:{server.port}: not delivered to y@example.org: 550 5.1.1"):
        send_one(settings, b"Subject: hi\r\n\r\nbody\r\n", "y@example.org")
    closed = free_port()
    with pytest.raises(DeliveryError, match=rf"127.0.0.1:{closed}: connection refused"):
        send_one(smtp_settings(settings.root, closed), b"Subject: hi\r\n\r\nbody\r\n", "y@example.org")


# ----------------------------------------------------------------------------- the wire bytes


lines_with_dots = st.lists(st.sampled_from([".", "..", ".leading dot", "plain", "a. b", " .x", "=.", "x" * 90 + ".",
                                            "{0} {} }{ {name}"]),
                           min_size=1, max_size=6)


@pytest.fixture(scope="module")
def plain_settings(tmp_path_factory) -> Settings:
    folder = tmp_path_factory.mktemp("wire") / "project"
    assert CliRunner().invoke(app, ["init", str(folder)]).exit_code == 0
    return load_settings(folder)


@hypothesis_settings(max_examples=60, deadline=None)
@given(body=lines_with_dots, name=st.text(alphabet=st.sampled_from(list("ab. ,'éZ")), max_size=90))
def test_wire_bytes_are_the_personalized_message_dot_stuffed(plain_settings, body, name):
    settings = plain_settings
    text = "\n".join(body)
    rendered = make_rendered(words=text)
    # a personal line with braces of its own: they stay as they are around the greeting
    rendered = RenderedIssue(rendered.issue, rendered.html, f".{GREETING_PLACEHOLDER} {{}} {{0}}\n" + rendered.text)
    template = messages.MessageTemplate.build(rendered, settings, b"k" * 32, datetime(2026, 11, 26, tzinfo=timezone.utc))
    wire = WireMessages(template)
    person = Subscriber(12, "reader@example.org", "reader@example.org", name.strip(), "active", "", "")

    assert wire.data(person) == stuff(template.personalize(person))


# ----------------------------------------------------------------------------- the commands


def day_of(project: Path) -> str:
    return next((project / "articles").iterdir()).name


def configure_smtp(project: Path, port: int) -> None:
    config = project / "newsletter.toml"
    text = config.read_text().replace('transport = "outbox"', 'transport = "smtp"')
    text = text.replace('host = "localhost"', 'host = "127.0.0.1"').replace("port = 587", f"port = {port}")
    config.write_text(text.replace('security = "starttls"', 'security = "none"'))


def test_send_command_over_smtp_reports_and_status_lists_failed_and_in_doubt(project, conn, server, runner):
    everyone = add_subscribers(conn, 5)
    server.rcpt_replies[everyone[0]] = ["550 5.1.1 no such user"]
    server.drop_after_dot.add(everyone[1])
    configure_smtp(project, server.port)
    day = day_of(project)

    sent = runner.invoke(app, ["--project", str(project), "send", "--date", day, "--in-doubt", "skip"])
    text = runner.invoke(app, ["--project", str(project), "status", "--date", day])
    as_json = runner.invoke(app, ["--project", str(project), "status", "--date", day, "--format", "json"])

    assert sent.exit_code == 0, sent.output
    assert "Sent 3 messages in " in sent.output and f"to 127.0.0.1:{server.port} by SMTP" in sent.output
    assert "1 message(s) were refused by the server (1 bounced" in sent.output
    assert "1 message(s) in doubt" in sent.output
    assert f"  {everyone[0]}  failed (bounced): 550 5.1.1 no such user" in text.output
    assert f"  {everyone[1]}  in_doubt: 127.0.0.1:{server.port}: the connection dropped" in text.output
    problems = {p["email"]: p for p in json.loads(as_json.output)["problems"]}
    assert problems[everyone[0]]["reason"] == "bounced" and problems[everyone[1]]["state"] == "in_doubt"
    assert server.copies() == Counter({address: 1 for address in everyone[1:]})


def test_proof_copies_go_only_to_the_test_addresses_and_leave_the_ledger_alone(project, conn, server, runner):
    add_subscribers(conn, 3)
    configure_smtp(project, server.port)
    day = day_of(project)

    result = runner.invoke(app, ["--project", str(project), "send", "--date", day,
                                 "--test-to", "editor@example.org", "--test-to", "chief@example.org"])

    assert result.exit_code == 0, result.output
    assert f"Sent a [TEST] copy to editor@example.org through 127.0.0.1:{server.port}" in result.output
    assert sorted(server.copies()) == ["chief@example.org", "editor@example.org"]
    subjects = {email.message_from_bytes(raw, policy=email.policy.default)["Subject"] for _, _, raw in server.received}
    assert len(subjects) == 1 and subjects.pop().startswith("[TEST] ")
    ids = {message_id for _, message_id, _ in server.received}
    assert len(ids) == 2  # a Message-ID of its own each, so a mail client shows every proof
    assert issue_status(conn, date.fromisoformat(day)).state == "not started"


def test_proof_copies_with_the_outbox_transport_are_files_in_proofs(project, conn):
    settings = load_settings(project)
    report = send_proofs(settings, make_rendered(), ["editor@example.org"], transport="outbox")

    assert [p.parent for p in report.files] == [project / "outbox" / DAY.isoformat() / "proofs"]
    parsed = email.message_from_bytes(report.files[0].read_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == "[TEST] MDB November 26: Talks resume"
    assert parsed["To"].addresses[0].addr_spec == "editor@example.org"
    assert issue_status(conn, DAY).state == "not started"


def test_send_refuses_an_issue_the_check_finds_errors_in_unless_forced(tmp_path, server, runner):
    folder = tmp_path / "broken"
    (folder / "articles").mkdir(parents=True)
    shutil.copy(REPO / "newsletter.toml", folder / "newsletter.toml")
    shutil.copytree(REPO / "articles" / "2026-11-21", folder / "articles" / "2026-11-21")
    shutil.copytree(REPO / "tests" / "fixtures" / "broken" / "no-alt", folder, dirs_exist_ok=True)
    with (folder / "newsletter.toml").open("a") as f:
        f.write(f'\n[smtp]\nhost = "127.0.0.1"\nport = {server.port}\nsecurity = "none"\n')
    connection = store.connect(folder / "subscribers" / "newsletter.db")
    add_subscribers(connection, 2)
    connection.close()
    command = ["--project", str(folder), "send", "--date", "2026-11-21", "--transport", "smtp"]

    refused = runner.invoke(app, command)
    forced = runner.invoke(app, [*command, "--force"])

    assert refused.exit_code == 1
    assert "no alt attribute" in refused.output
    assert "Error: 2026-11-21: the check found 1 error(s); nothing was sent (fix them, or send anyway with --force)" \
        in refused.output
    assert forced.exit_code == 0, forced.output
    assert "Warning: 2026-11-21: sending despite 1 check error(s) because of --force" in forced.output
    assert server.copies() == Counter({"reader0@example.org": 1, "reader1@example.org": 1})
