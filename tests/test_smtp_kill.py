"""Nothing lost, nobody mailed twice, over SMTP: `newsletter send` killed at random moments, then run to the end.

The receiving server (aiosmtpd in this process) records every message it accepted. After the last
run every active subscriber has a copy, and the only ones missing or with two copies are those
the ledger reports as in doubt (a kill between the server's acceptance and our record of it).
"""

from __future__ import annotations

import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter import store
from newsletter.cli import app

from factories import LoopbackController

ACTIVE = 800
KILLS = 10


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: Counter = Counter()  # (recipient, Message-ID) -> copies

    async def handle_DATA(self, server, session, envelope):
        found = re.search(rb"^Message-ID: (<[^>]+>)", envelope.content, re.M)
        with self.lock:
            self.received[(envelope.rcpt_tos[0], found[1].decode() if found else "")] += 1
        return "250 OK"

    def copies(self) -> Counter:
        with self.lock:
            return Counter({rcpt: n for (rcpt, _), n in self.received.items()}) + Counter()


@pytest.fixture
def server():
    recorder = Recorder()
    controller = LoopbackController(recorder, hostname="127.0.0.1", port=0)
    controller.start()
    recorder.port = controller.port
    yield recorder
    controller.stop()


@pytest.fixture
def project(tmp_path: Path, server) -> Path:
    folder = tmp_path / "p"
    assert CliRunner().invoke(app, ["init", str(folder)]).exit_code == 0
    config = folder / "newsletter.toml"
    text = config.read_text().replace('transport = "outbox"', 'transport = "smtp"').replace("concurrency = 4",
                                                                                          "concurrency = 3")
    text = text.replace('host = "localhost"', 'host = "127.0.0.1"').replace("port = 587", f"port = {server.port}")
    config.write_text(text.replace('security = "starttls"', 'security = "none"').replace("timeout = 30.0",
                                                                                          "timeout = 5.0"))
    conn = store.connect(folder / "subscribers" / "newsletter.db")
    now = store.now_iso()
    with store.write(conn):
        conn.executemany(
            "INSERT INTO subscribers (email, email_key, name, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            [(f"reader{n}@example.org", f"reader{n}@example.org", f"Reader {n}", "active", now, now)
             for n in range(ACTIVE)])
    conn.close()
    return folder


def day_of(project: Path) -> str:
    return next((project / "articles").iterdir()).name


def send_command(project: Path, day: str) -> list[str]:
    return [sys.executable, "-m", "newsletter", "--project", str(project), "send", "--date", day]


def ledger(project: Path, day: str) -> dict[str, sqlite3.Row]:
    conn = sqlite3.connect(project / "subscribers" / "newsletter.db", timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        return {row["email"]: row for row in conn.execute(
            "SELECT email, state, doubted, message_id FROM deliveries WHERE issue_day = ?", (day,))}
    finally:
        conn.close()


def assert_sent_rows_reached_the_server(project: Path, day: str, server: Recorder) -> Counter:
    """A row says `sent` only once the server accepted its message (with its Message-ID)."""
    rows = ledger(project, day)
    with server.lock:
        received = set(server.received)
    for address, row in rows.items():
        if row["state"] == "sent":
            assert (address, row["message_id"]) in received, f"{address} is sent but the server has nothing"
    return Counter(row["state"] for row in rows.values())


def test_sigkill_at_random_moments_loses_nobody_and_mails_twice_only_rows_in_doubt(project, server):
    day = day_of(project)
    # calibrate: the whole command against a run that only finds the issue done
    started = time.perf_counter()
    first = subprocess.run(send_command(project, day), capture_output=True, text=True, timeout=60)
    whole = time.perf_counter() - started
    assert first.returncode == 0, first.stderr
    send_seconds = float(re.search(r"Sent [\d,]+ messages in ([\d.]+) s", first.stdout)[1])
    start_up = max(whole - send_seconds, 0.1)
    # that was a full send; start the kill runs on a fresh issue of the same content: forget it
    conn = store.connect(project / "subscribers" / "newsletter.db")
    with store.write(conn):
        conn.execute("DELETE FROM deliveries")
        conn.execute("DELETE FROM issues")
    conn.close()
    with server.lock:
        server.received.clear()

    rng = random.Random(20261126)
    mid_send = sent_before = 0
    for _ in range(KILLS):
        process = subprocess.Popen(send_command(project, day), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(start_up * 0.9, start_up + send_seconds / 4))
        process.send_signal(signal.SIGKILL)
        process.wait()
        states = assert_sent_rows_reached_the_server(project, day, server)
        if sent_before < states["sent"] < ACTIVE:
            mid_send += 1
        sent_before = states["sent"]
    assert mid_send >= 3, (f"only {mid_send} of {KILLS} kills landed in the middle of the send "
                           f"(start-up {start_up:.2f} s, send {send_seconds:.2f} s)")

    final = subprocess.run(send_command(project, day), capture_output=True, text=True, timeout=60)

    assert final.returncode == 0, final.stderr
    rows = ledger(project, day)
    copies = server.copies()
    assert set(rows) == {f"reader{n}@example.org" for n in range(ACTIVE)}
    missing = {address for address in rows if copies[address] == 0}
    twice = {address for address, n in copies.items() if n > 1}
    in_doubt = {address for address, row in rows.items() if row["doubted"] > 0}
    assert missing <= in_doubt and twice <= in_doubt
    assert all(row["state"] in ("sent", "in_doubt") for row in rows.values())
    assert all(row["state"] == "sent" for address, row in rows.items() if address not in in_doubt)
    assert len(in_doubt) <= 3 * KILLS  # at most the messages in flight at each kill


def test_sigterm_finishes_the_messages_in_flight_exits_0_and_the_next_send_completes(project, server):
    day = day_of(project)
    process = subprocess.Popen(send_command(project, day), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == f"{day}: writing {ACTIVE} messages"
    time.sleep(random.Random(5).uniform(0.05, 0.2))
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)

    assert process.returncode == 0, err
    stopped = re.search(rf"Stopped at a clean point: ([\d,]+) of {ACTIVE} written", out)
    assert stopped, out
    states = assert_sent_rows_reached_the_server(project, day, server)
    written = int(stopped[1])
    assert states == Counter({"sent": written, "pending": ACTIVE - written}) - Counter()

    resumed = subprocess.run(send_command(project, day), capture_output=True, text=True, timeout=60)

    assert resumed.returncode == 0, resumed.stderr
    assert server.copies() == Counter({f"reader{n}@example.org": 1 for n in range(ACTIVE)})
