"""Several senders on one PostgreSQL list: three `newsletter send` processes share a day, claiming rows
with SKIP LOCKED; the claims of workers killed mid-batch are taken over by the others (at once: a
killed worker's advisory lock goes with its connection; a stalled one's after its lease); every
subscriber gets one copy (in-doubt aside, as with one sender). And the scheduler, the outbox send
and the web's mail queue on several hosts."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import re
import secrets
import subprocess
import threading
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

from newsletter import store
from newsletter.delivery.lock import send_lock
from newsletter.cli_output import TEST_PAUSE_AFTER
from newsletter.errors import LockedError
from newsletter.schedule import schedule_lock
from newsletter.settings import load_settings
from paused_send import send_command
from test_smtp_kill import ACTIVE, Recorder, day_of, ledger, project, server  # noqa: F401 - fixtures
from test_web_serve import Server, configure, relay, sent  # noqa: F401 - fixtures
from sent_project import copy_project

pytestmark = pytest.mark.postgres_only


@pytest.fixture
def shared(project):  # noqa: F811 - test_smtp_kill's project (SMTP to a recorder), on this test's database
    return project


@pytest.fixture
def project_sent(sent, tmp_path, relay):  # noqa: F811 - test_web_serve's sent project, mailing to its relay
    folder = copy_project(sent, tmp_path / "web")
    configure(folder, relay.port)
    return folder


@pytest.fixture
def start_two(project_sent):
    servers: list[Server] = []

    def start_server() -> Server:
        servers.append(Server(project_sent))
        return servers[-1]

    yield start_server
    for each in servers:
        each.stop()


def start_three(project: Path, day: str, pauses: list[int]) -> list[subprocess.Popen]:
    """Start three senders at once, each pausing (the test hook) once it has done its count."""
    return [subprocess.Popen(send_command(project, day), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, TEST_PAUSE_AFTER: str(after)}) for after in pauses]


def wait_paused(process: subprocess.Popen) -> bool:
    """Read PROCESS's output until it pauses (True) or ends (False)."""
    assert process.stdout is not None
    for line in process.stdout:
        if re.fullmatch(r"test hook: paused after [\d,]+ of [\d,]+ messages\n", line):
            return True
    return False


def assert_exactly_once(project: Path, day: str, server: Recorder) -> set[str]:  # noqa: F811
    rows = ledger(project, day)
    copies = server.copies()
    assert set(rows) == {f"reader{n}@example.org" for n in range(ACTIVE)}
    in_doubt = {address for address, row in rows.items() if row["doubted"] > 0}
    missing = {address for address in rows if copies[address] == 0}
    twice = {address for address, n in copies.items() if n > 1}
    assert missing <= in_doubt and twice <= in_doubt, (missing - in_doubt, twice - in_doubt)
    assert all(row["state"] == "sent" for address, row in rows.items() if address not in in_doubt)
    return in_doubt


@pytest.mark.slow
def test_three_senders_killed_mid_batch_deliver_the_day_exactly_once(shared, server):  # noqa: F811
    day = day_of(shared)
    rng = random.Random(20261201)
    kills = 0
    for _ in range(3):
        # three workers at once, each paused at its own point mid-send; two are killed outright,
        # holding claims (and maybe messages the server accepted but the ledger has not recorded)
        workers = start_three(shared, day, [rng.randrange(20, 80) for _ in range(3)])
        for process in workers:
            assert wait_paused(process), process.communicate()[1]
        for process in workers[:2]:
            process.kill()
            kills += 1
        workers[2].terminate()  # a clean stop: its unsent claims go back to pending
        for process in workers:
            process.communicate(timeout=60)
        states = Counter(row["state"] for row in ledger(shared, day).values())
        assert states["sent"] < ACTIVE, states
    # three workers to the end: they take over the killed workers' rows once their lease is over
    finals = [subprocess.Popen(send_command(shared, day), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(3)]
    for final in finals:
        out, err = final.communicate(timeout=180)
        assert final.returncode == 0, err
    in_doubt = assert_exactly_once(shared, day, server)
    assert len(in_doubt) <= 3 * 3 * kills  # at most the messages in flight in each killed worker
    assert all(row["state"] in ("sent", "in_doubt") for row in ledger(shared, day).values())


def test_senders_on_postgresql_share_a_day_but_one_outbox_send_at_a_time(shared):
    settings = load_settings(shared)
    smtp = settings.replace("delivery", transport="smtp")
    with send_lock(smtp), send_lock(smtp):  # several SMTP senders: no lock between them
        pass
    outbox = settings.replace("delivery", transport="outbox")
    with send_lock(outbox):
        with pytest.raises(LockedError, match="another send is running"):
            with send_lock(outbox):
                pass


def test_two_schedulers_on_one_database_one_runs(shared, tmp_path):
    first = load_settings(shared)
    other = dataclasses.replace(first, root=tmp_path / "other-host")  # another host: no shared lock file
    with schedule_lock(first):
        with pytest.raises(LockedError, match="another `newsletter schedule` is running"):
            with schedule_lock(other):
                pass
    with schedule_lock(other):
        pass


def test_the_web_mail_queue_hands_each_row_to_one_server(database_backend):
    from newsletter.web import outgoing

    conn = store.connect_url(database_backend)
    now = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)
    with store.write(conn):
        conn.executemany("INSERT INTO outgoing_mail (email, requested_at, recipient, raw, next_attempt_at)"
                         " VALUES (?, ?, ?, ?, ?)",
                         [(f"r{i}@example.org", "t", f"r{i}@example.org", b"x", "2026-12-01T07:00:00+00:00")
                          for i in range(40)])
    taken: list[int] = []
    lock = threading.Lock()
    owners = [str(secrets.randbits(62)) for _ in range(3)]
    all_done = threading.Barrier(3, timeout=60)  # no server ends before the others are done

    def server(owner: str) -> None:  # a `serve` worker: its number held as long as it lives
        mine = store.connect_url(database_backend)
        with mine.advisory_lock(int(owner)):
            while (row := outgoing.claim_due(mine, now, owner)) is not None:
                with lock:
                    taken.append(row["id"])
                with store.write(mine):  # the odd rows stay claimed, as if their mail were in flight
                    mine.execute("DELETE FROM outgoing_mail WHERE id = ? AND id % 2 = 0", (row["id"],))
            all_done.wait()
        mine.close()

    threads = [threading.Thread(target=server, args=(owner,)) for owner in owners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(taken) == list(range(1, 41))  # each row to one server once
    # the odd rows are still claimed by servers that have ended: another server takes them
    survivor = str(secrets.randbits(62))
    with conn.advisory_lock(int(survivor)):
        again = outgoing.claim_due(conn, now, survivor)
        assert again is not None and again["id"] == 1
        # while their server lives, another passes over its rows
        rival = store.connect_url(database_backend)
        assert outgoing.claim_due(rival, now, str(secrets.randbits(62)))["id"] == 3
        rival.close()
    conn.close()


def test_two_web_servers_on_one_list_lose_no_update_and_mail_each_confirmation_once(project_sent, relay, start_two):
    """Unsubscribes and sign-ups through two `newsletter serve` at once, as behind a load balancer."""
    from test_web_serve import ONE_CLICK, status, unsubscribe_token

    relay.release.set()
    first, second = start_two(), start_two()
    settings = load_settings(project_sent)
    with contextlib.closing(store.connect_url(settings.database_url())) as conn:
        readers = [row[0] for row in conn.execute("SELECT email FROM subscribers WHERE status = 'active' ORDER BY id")]
    tokens = {reader: unsubscribe_token(project_sent, reader) for reader in readers}
    newcomers = [f"new{n}@example.net" for n in range(12)]
    answers: list[int] = []
    lock = threading.Lock()

    def visit(web, work) -> None:
        for kind, value in work:
            answer = (web.client.post(f"/u/{tokens[value]}", data=ONE_CLICK) if kind == "leave"
                      else web.client.post("/subscribe", data={"email": value}))
            with lock:
                answers.append(answer.status_code)

    work = [("leave", r) for r in readers] + [("join", n) for n in newcomers]
    threads = [threading.Thread(target=visit, args=(web, work[i::4]))
               for i, web in enumerate((first, second, first, second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert answers == [200] * len(work)
    assert all(status(project_sent, reader) == "unsubscribed" for reader in readers)
    mails = relay.wait_for(len(newcomers), seconds=60)
    assert sorted(m["To"] for m in mails) == sorted(newcomers)  # each confirmation once, by one server
    log = "".join(first.log + second.log)
    assert "locked" not in log and "Traceback" not in log, log
