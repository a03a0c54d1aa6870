"""A week's digest sent over SMTP to a real server (aiosmtpd), killed mid-send, then run to the end:
every weekly reader has one digest, the only exceptions being the rows the ledger reports in doubt, and
a reader who changes their preferences after the week was frozen still gets the variant frozen for them."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter import store, subscribers
from newsletter.cli import app
from newsletter.models import Frequency

from factories import LoopbackController
from paused_send import start_paused

pytestmark = pytest.mark.slow  # four daily sends, then a digest of 300 killed and resumed

WEEK = "2026-W48"
READERS = 300


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: Counter = Counter()  # (recipient, Message-ID) -> copies
        self.bodies: dict[str, bytes] = {}

    async def handle_DATA(self, server, session, envelope):
        found = re.search(rb"^Message-ID: (<[^>]+>)", envelope.content, re.M)
        with self.lock:
            self.received[(envelope.rcpt_tos[0], found[1].decode() if found else "")] += 1
            self.bodies[envelope.rcpt_tos[0]] = envelope.content
        return "250 OK"


@pytest.fixture
def server():
    recorder = Recorder()
    controller = LoopbackController(recorder, hostname="127.0.0.1", port=0)
    controller.start()
    recorder.port = controller.port
    yield recorder
    controller.stop()


def digest_command(project: Path) -> list[str]:
    return [sys.executable, "-m", "newsletter", "--project", str(project), "send", "--digest", "--week", WEEK]


def test_a_digest_killed_mid_send_resumes_and_each_weekly_reader_gets_one(sample_project, server):
    config = sample_project / "newsletter.toml"
    config.write_text(config.read_text().replace('transport = "outbox"', 'transport = "smtp"')
                      + f'\n[smtp]\nhost = "127.0.0.1"\nport = {server.port}\nsecurity = "none"\ntimeout = 5.0\n')
    conn = store.connect(sample_project / "subscribers" / "newsletter.db")
    now = store.now_iso()
    with store.write(conn):  # half read every section, half only Nuclear: two variants
        conn.executemany(
            "INSERT INTO subscribers (email, email_key, name, status, created_at, updated_at, sections, frequency)"
            " VALUES (?, ?, ?, 'active', ?, ?, ?, 'weekly')",
            [(f"reader{n}@example.org", f"reader{n}@example.org", f"Reader {n}", now, now, "Nuclear" if n % 2 else "")
             for n in range(READERS)])
    conn.close()
    for day in ("2026-11-23", "2026-11-24", "2026-11-25", "2026-11-26"):
        result = CliRunner().invoke(app, ["--project", str(sample_project), "send", "--date", day])
        assert result.exit_code == 0, result.output

    process, done = start_paused(sample_project, WEEK, 60, command=digest_command(sample_project))
    process.kill()
    process.communicate()
    with server.lock:
        before = sum(server.received.values())
        assert "reader298@example.org" not in server.bodies  # the last of variant 1 (every section)
    conn = store.connect(sample_project / "subscribers" / "newsletter.db")
    subscribers.set_preferences(conn, subscribers.get(conn, "reader298@example.org").id, sections=["Policy"],
                                frequency=Frequency.DAILY, source="test")  # after the freeze: changes nothing
    conn.close()
    final = subprocess.run(digest_command(sample_project), capture_output=True, text=True, timeout=120)

    assert final.returncode == 0, final.stderr
    assert 0 < before < READERS, before
    assert f"{WEEK}: digest sent to {READERS} of {READERS} reader(s) in 2 variant(s)" in final.stdout
    conn = store.connect(sample_project / "subscribers" / "newsletter.db")
    rows = {row["email"]: row for row in conn.execute(
        "SELECT email, state, doubted, issue_day FROM deliveries WHERE issue_day LIKE '2026-W48.%'")}
    conn.close()
    copies = Counter()
    for (address, message_id), n in server.received.items():
        assert message_id.startswith("<2026W48v")
        copies[address] += n
    in_doubt = {address for address, row in rows.items() if row["doubted"]}
    assert set(rows) == {f"reader{n}@example.org" for n in range(READERS)}
    assert {a for a, n in copies.items() if n != 1} <= in_doubt
    assert all(copies[address] >= 1 for address in rows if address not in in_doubt)
    assert len(in_doubt) <= 12  # at most the messages in flight at the kill
    nuclear_only = server.bodies["reader1@example.org"].decode("ascii", "replace")
    everything = server.bodies["reader0@example.org"].decode("ascii", "replace")
    assert "TERRORISM" in everything and "TERRORISM" not in nuclear_only
    assert "TERRORISM" in server.bodies["reader298@example.org"].decode("ascii", "replace")
