"""Nothing lost, nobody mailed twice: `newsletter send` killed mid-send, then run to the end.

Each test runs the real command in a subprocess against a project of 3,000 active subscribers
(and some unsubscribed ones), with small batches. The send stops at a point it reports itself
(the NEWSLETTER_TEST_PAUSE_AFTER hook), so every kill lands mid-send however fast the disk is.
"""

from __future__ import annotations

import email
import email.policy
import random
import re
import signal
import sqlite3
import subprocess
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from email.parser import BytesHeaderParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter import store
from newsletter.cli import app
from newsletter.delivery.outbox import file_name

from conftest import fill_postal_address
from paused_send import send_command, start_paused

pytestmark = pytest.mark.slow  # 12 and 10 real sends killed mid-way, then run to the end

ACTIVE = 3000
UNSUBSCRIBED = 150
BATCH_SIZE = 25
KILLS = 12
KILL_DAY, TERM_DAY = "2026-11-21", "2026-11-22"

ARTICLE = """\
---
title: Talks on interceptor guarantees resume on {day}
section: News
summary: Negotiators meet again.
sources: ["Interfax, November 19"]
---
Negotiators met again on {day} to discuss the guarantees (Interfax, November 19).
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project made by `newsletter init` with two days of articles and 3,150 subscribers."""
    folder = tmp_path / "p"
    result = CliRunner().invoke(app, ["init", str(folder)])
    assert result.exit_code == 0, result.output
    config = fill_postal_address(folder) / "newsletter.toml"
    config.write_text(config.read_text().replace("batch_size = 500", f"batch_size = {BATCH_SIZE}"))
    for day in (KILL_DAY, TERM_DAY):
        (folder / "articles" / day).mkdir(parents=True)
        (folder / "articles" / day / "talks.md").write_text(ARTICLE.format(day=day))
    conn = store.connect(folder / "subscribers" / "newsletter.db")
    now = store.now_iso()
    rows = []
    for n in range(ACTIVE + UNSUBSCRIBED):
        status = "unsubscribed" if n % 21 == 20 and n < 21 * UNSUBSCRIBED else "active"
        rows.append((f"reader{n}@example.org", f"reader{n}@example.org", f"Reader {n}", status, now, now))
    with store.write(conn):
        conn.executemany(
            "INSERT INTO subscribers (email, email_key, name, status, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)", rows)
    assert conn.execute("SELECT count(*) FROM subscribers WHERE status = 'active'").fetchone()[0] == ACTIVE
    conn.close()
    return folder


def ledger_rows(project: Path, day: str) -> list[sqlite3.Row]:
    conn = store.connect(project / "subscribers" / "newsletter.db")
    try:
        return conn.execute(
            "SELECT subscriber_id, state, message_id, email FROM deliveries WHERE issue_day = ?", (day,)
        ).fetchall()
    finally:
        conn.close()


def active_addresses(project: Path) -> set[str]:
    conn = store.connect(project / "subscribers" / "newsletter.db")
    try:
        return {row[0] for row in conn.execute("SELECT email FROM subscribers WHERE status = 'active'")}
    finally:
        conn.close()


def maildir(project: Path, day: str, folder: str) -> Path:
    return project / "outbox" / day / "mail" / folder


def assert_sent_rows_have_their_file(project: Path, day: str) -> Counter:
    """The exactly-once order: a row says `sent` only once its file is in new/; no file without a row."""
    rows = ledger_rows(project, day)
    folder = maildir(project, day, "new")
    in_new = set(p.name for p in folder.iterdir()) if folder.is_dir() else set()
    names = {row["subscriber_id"]: file_name(row["subscriber_id"], row["message_id"]) for row in rows}
    for row in rows:
        if row["state"] == "sent":
            assert names[row["subscriber_id"]] in in_new, f"row {row['subscriber_id']} is sent without a file"
    claimed_or_sent = {names[r["subscriber_id"]] for r in rows if r["state"] in ("claimed", "sent")}
    assert in_new <= claimed_or_sent, "a file in new/ whose row is neither claimed nor sent"
    return Counter(row["state"] for row in rows)


def parse_whole(path: Path) -> tuple[str, str, bool]:
    """Parse a whole .eml as a mail client would: its To, its Message-ID, whether its text is there."""
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    text = message.get_body(("plain",)).get_content()
    return message["To"].addresses[0].addr_spec, message["Message-ID"], "Negotiators met again" in text


def parse_headers(path: Path) -> tuple[str, str, bool]:
    """Parse only the headers of an .eml (a third of the time of a whole parse)."""
    with path.open("rb") as f:
        message = BytesHeaderParser(policy=email.policy.default).parse(f)
    return message["To"].addresses[0].addr_spec, message["Message-ID"], True


def assert_everyone_got_exactly_one(project: Path, day: str, parse=parse_whole) -> None:
    rows = ledger_rows(project, day)
    assert len(rows) == ACTIVE
    assert Counter(row["state"] for row in rows) == {"sent": ACTIVE}
    assert list(maildir(project, day, "tmp").iterdir()) == []
    message_ids = {row["email"]: row["message_id"] for row in rows}
    recipients = Counter()
    # parsing 3,000 messages is most of this test's time: use both cores
    with ProcessPoolExecutor(2) as pool:
        for address, message_id, has_text in pool.map(parse, maildir(project, day, "new").iterdir(),
                                                      chunksize=100):
            recipients[address] += 1
            assert message_id == message_ids[address]
            assert has_text
    assert set(recipients) == active_addresses(project)
    assert [address for address, count in recipients.items() if count > 1] == []


def test_sigkill_mid_send_loses_nobody_and_mails_nobody_twice(project: Path) -> None:
    rng = random.Random(20261121)
    sent_before = 0
    for n in range(KILLS):
        # one run in five is killed after start-up and recovery, before it claims anything; the
        # others once they have written a few batches (the next batch is claimed and in tmp/)
        after = 0 if n % 5 == 4 else rng.randrange(1, 6 * BATCH_SIZE)
        process, done = start_paused(project, KILL_DAY, after)
        process.kill()
        process.communicate()
        states = assert_sent_rows_have_their_file(project, KILL_DAY)
        # exactly the batches the run reported are sent; the staged one is not, and nobody more
        assert states["sent"] == sent_before + done, (n, after, done, states)
        assert after == 0 or sent_before < states["sent"] < ACTIVE
        sent_before = states["sent"]

    final = subprocess.run(send_command(project, KILL_DAY), capture_output=True, text=True, timeout=120)

    assert final.returncode == 0, final.stderr
    assert_everyone_got_exactly_one(project, KILL_DAY)


def test_sigterm_stops_at_a_clean_point_and_the_next_send_completes(project: Path) -> None:
    process, done = start_paused(project, TERM_DAY, 4 * BATCH_SIZE)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)

    assert process.returncode == 0, err
    stopped = re.search(r"Stopped at a clean point: ([\d,]+) of 3,000 written; "
                        rf"`newsletter send --date {TERM_DAY}` resumes", out)
    assert stopped, out
    written = int(stopped[1].replace(",", ""))
    assert done <= written <= done + BATCH_SIZE  # at most the batch in flight is finished
    states = assert_sent_rows_have_their_file(project, TERM_DAY)
    # a clean point: nothing claimed and unrecorded, nothing half-written
    assert states == Counter({"sent": written, "pending": ACTIVE - written}) - Counter()
    assert list(maildir(project, TERM_DAY, "tmp").iterdir()) == []
    assert len(list(maildir(project, TERM_DAY, "new").iterdir())) == written

    resumed = subprocess.run(send_command(project, TERM_DAY), capture_output=True, text=True, timeout=120)

    assert resumed.returncode == 0, resumed.stderr
    assert f"Sent {ACTIVE - written:,} messages" in resumed.stdout
    assert_everyone_got_exactly_one(project, TERM_DAY, parse=parse_headers)
