"""Refusals that blame the sender, the relay or a policy never empty the list (issue 11).

A real aiosmtpd server on 127.0.0.1 gives each reply; every test checks what the server received
and the subscribers' status, and that a later send delivers each subscriber exactly once.
"""

from __future__ import annotations

import socket
import sqlite3
from collections import Counter
from datetime import date

import pytest

from newsletter import store
from newsletter.cli import app
from newsletter.delivery import issue_status
from factories import send_unchecked as send_issue
from newsletter.delivery.replies import SAME_REFUSAL_DOMAINS, SAME_REFUSAL_IN_A_ROW
from newsletter.errors import DeliveryError

from factories import DAY, make_rendered
from test_smtp import (FAST, FaultyServer, _Controller, _FaultySMTP, conn, configure_smtp, day_of, rows,  # noqa: F401
                       smtp_settings, subscriber_status)


class MisconfiguredServer(FaultyServer):
    """A FaultyServer that can refuse every recipient with one reply until it is fixed."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse_every_rcpt: str | None = None
        self.drop_after_354: set[str] = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse_every_rcpt:
            return self.refuse_every_rcpt
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)


class _DropAfter354(_FaultySMTP):
    async def smtp_DATA(self, arg):
        handler = self.event_handler
        if self.envelope.rcpt_tos and handler.take(handler.drop_after_354, self.envelope.rcpt_tos[0]):
            sock = self.transport.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)  # the 354 and the end leave together
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            sock.shutdown(socket.SHUT_WR)  # gone: nothing the client sends now is read as a message
            while await self._reader.read(65536):
                pass
            self.transport.close()
            return
        await super().smtp_DATA(arg)


class _Controller354(_Controller):
    def factory(self):
        return _DropAfter354(self.handler, **self.SMTP_kwargs)


@pytest.fixture
def server():
    handler = MisconfiguredServer()
    controller = _Controller354(handler, hostname="127.0.0.1", port=0)
    controller.start()
    handler.port = controller.port
    yield handler
    controller.stop()


def add_readers(conn: sqlite3.Connection, count: int, domains: int = 4) -> list[str]:
    """COUNT active subscribers spread over DOMAINS domains, in turn."""
    now = store.now_iso()
    emails = [f"reader{n}@d{n % domains}.example.org" for n in range(count)]
    with store.write(conn):
        conn.executemany(
            "INSERT INTO subscribers (email, email_key, name, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            [(e, e, f"Reader {n}", "active", now, now) for n, e in enumerate(emails)])
    return emails


def assert_list_intact(conn: sqlite3.Connection, everyone: list[str], day: date = DAY) -> None:
    status = issue_status(conn, day)
    assert status.state == "paused"
    assert status.counts["failed"] == 0 and status.counts["claimed"] == 0 and status.counts["data_sent"] == 0
    assert all(subscriber_status(conn, address) == "active" for address in everyone)


# ----------------------------------------------------------------------------- items 1 and 2


def test_a_sender_rejected_at_rcpt_pauses_the_issue_exits_nonzero_and_the_fixed_server_gets_everyone_once(
        project, conn, server, runner):
    everyone = add_readers(conn, 8)
    server.refuse_every_rcpt = "553 5.1.8 <newsletter@example.org>: Sender address rejected: Domain not found"
    configure_smtp(project, server.port)
    day = day_of(project)

    broken = runner.invoke(app, ["--project", str(project), "send", "--date", day])

    assert broken.exit_code == 1
    assert f"Error: 127.0.0.1:{server.port}: 553 5.1.8 <newsletter@example.org>: Sender address rejected" \
        in broken.output
    assert "paused" in broken.output and "no subscriber marked failed" in broken.output
    assert_list_intact(conn, everyone, date.fromisoformat(day))
    assert server.copies() == Counter()

    server.refuse_every_rcpt = None
    fixed = runner.invoke(app, ["--project", str(project), "send", "--date", day])

    assert fixed.exit_code == 0, fixed.output
    assert issue_status(conn, date.fromisoformat(day)).state == "done"
    assert server.copies() == Counter({address: 1 for address in everyone})


@pytest.mark.parametrize("reply", [
    "553 5.1.7 <newsletter@example.org>: the sender address is malformed",
    "554 5.7.1 <reader0@d0.example.org>: Relay access denied",
    "530 5.7.0 Authentication required",
    "535 5.7.8 Authentication credentials invalid",
    "554 5.3.0 Mail system configuration error",
    "550 5.4.6 Routing loop detected",
    "503 5.5.1 Error: need MAIL command",
    "550 Relaying denied",
])
def test_a_reply_that_blames_the_sender_relay_or_settings_fails_nobody_and_a_fixed_server_gets_everyone(
        project, conn, server, reply):
    everyone = add_readers(conn, 6)
    server.refuse_every_rcpt = reply
    settings = smtp_settings(project, server.port)

    with pytest.raises(DeliveryError) as raised:
        send_issue(conn, settings, make_rendered(), policy=FAST)

    assert str(raised.value).startswith(f"127.0.0.1:{server.port}: {reply}")
    assert_list_intact(conn, everyone)
    server.refuse_every_rcpt = None
    resumed = send_issue(conn, settings, make_rendered(), policy=FAST)
    assert resumed.status == "done" and resumed.failed == 0
    assert server.copies() == Counter({address: 1 for address in everyone})


@pytest.mark.parametrize("reply", ["550 5.1.1 <x>: Recipient address rejected: User unknown",
                                   "550 5.1.10 Recipient address has null MX", "553 No such user here"])
def test_only_a_reply_about_the_mailbox_itself_bounces_the_subscriber(project, conn, server, reply):
    everyone = add_readers(conn, 5)
    server.rcpt_replies[everyone[2]] = [reply]

    report = send_issue(conn, smtp_settings(project, server.port), make_rendered(), policy=FAST)

    assert report.status == "done" and report.bounced == 1
    assert subscriber_status(conn, everyone[2]) == "bounced"
    assert server.copies() == Counter({address: 1 for address in everyone if address != everyone[2]})


# ----------------------------------------------------------------------------- item 3


@pytest.mark.parametrize("reply", ["550 5.7.1 Service refused by local policy", "552 5.2.2 Mailbox quota exceeded",
                                   "554 Transaction failed: your IP is listed"])
def test_the_same_refusal_for_recipients_in_a_row_at_different_domains_trips_the_breaker(
        project, conn, server, reply):
    everyone = add_readers(conn, 12)
    server.refuse_every_rcpt = reply
    settings = smtp_settings(project, server.port)

    with pytest.raises(DeliveryError, match=r"the same refusal for \d+ recipients in a row") as raised:
        send_issue(conn, settings, make_rendered(), policy=FAST)

    assert str(raised.value).startswith(f"127.0.0.1:{server.port}: {reply}")
    assert_list_intact(conn, everyone)
    server.refuse_every_rcpt = None
    assert send_issue(conn, settings, make_rendered(), policy=FAST).status == "done"
    assert server.copies() == Counter({address: 1 for address in everyone})


def test_the_same_refusal_at_a_single_domain_fails_only_those_rows(project, conn, server):
    everyone = add_readers(conn, 12, domains=1)
    for address in everyone[:SAME_REFUSAL_IN_A_ROW + 2]:
        server.rcpt_replies[address] = ["552 5.2.2 Mailbox quota exceeded"]

    report = send_issue(conn, smtp_settings(project, server.port), make_rendered(), policy=FAST)

    assert report.status == "done" and report.failed == SAME_REFUSAL_IN_A_ROW + 2 and report.bounced == 0
    assert SAME_REFUSAL_DOMAINS > 1
    assert all(subscriber_status(conn, address) == "active" for address in everyone)


def test_a_few_dead_addresses_in_a_row_still_bounce(project, conn, server):
    everyone = add_readers(conn, 10)
    dead = everyone[3:3 + SAME_REFUSAL_IN_A_ROW - 1]
    for address in dead:
        server.rcpt_replies[address] = [f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"]

    report = send_issue(conn, smtp_settings(project, server.port).replace("delivery", concurrency=1),
                        make_rendered(), policy=FAST)

    assert report.status == "done" and report.bounced == len(dead)
    assert [subscriber_status(conn, address) for address in dead] == ["bounced"] * len(dead)


# ----------------------------------------------------------------------------- item 4


def test_retry_failed_sends_the_day_again_to_exactly_the_failed_rows(project, conn, server, runner):
    everyone = add_readers(conn, 6, domains=1)
    for address in everyone[:4]:
        server.data_replies[address] = ["554 5.7.1 content rejected by the relay's filter"]
    server.rcpt_replies[everyone[4]] = ["550 5.1.1 user unknown"]
    configure_smtp(project, server.port)
    day = day_of(project)
    base = ["--project", str(project), "send", "--date", day]

    first = runner.invoke(app, base)
    with store.write(conn):  # one of the failed left meanwhile: not mailed again
        conn.execute("UPDATE subscribers SET status = 'unsubscribed' WHERE email = ?", (everyone[3],))
    plain = runner.invoke(app, base)
    again = runner.invoke(app, base + ["--retry-failed"])
    twice = runner.invoke(app, base + ["--retry-failed"])

    assert first.exit_code == 0 and "5 message(s) were refused by the server (1 bounced" in first.output
    assert "nothing to do" in plain.output
    assert again.exit_code == 0, again.output
    assert "Sending again to 3 message(s) that failed (--retry-failed)" in again.output
    assert "no failed message to send again" in twice.output
    assert server.copies() == Counter({address: 1 for address in everyone[:3] + everyone[5:]})
    states = {address: (row["state"], row["reason"]) for address, row in rows(conn, date.fromisoformat(day)).items()}
    assert states[everyone[3]] == ("failed", "rejected") and states[everyone[4]] == ("failed", "bounced")
    assert issue_status(conn, date.fromisoformat(day)).state == "done"


def test_retry_failed_leaves_expired_rows_and_refuses_a_day_never_sent(project, conn, server):
    everyone = add_readers(conn, 3)
    server.rcpt_replies[everyone[0]] = ["451 4.7.1 Greylisted"]
    server.rcpt_replies[everyone[1]] = ["554 5.7.1 content rejected"]
    settings = smtp_settings(project, server.port)
    send_issue(conn, settings, make_rendered(), policy=FAST)
    send_issue(conn, settings, make_rendered(DAY.replace(day=27)), policy=FAST)  # expires the greylisted row

    report = send_issue(conn, settings, make_rendered(), policy=FAST, retry_failed=True)

    assert report.retried_failed == 1 and report.status == "done"
    assert rows(conn)[everyone[0]]["reason"] == "expired"
    assert server.copies() == Counter({everyone[0]: 1, everyone[1]: 2, everyone[2]: 2})
    with pytest.raises(DeliveryError, match="2026-11-28: --retry-failed: this issue has not been sent yet"):
        send_issue(conn, settings, make_rendered(DAY.replace(day=28)), retry_failed=True)


# ----------------------------------------------------------------------------- items 5 and 6


@pytest.mark.parametrize("pipelining", [False, True])
def test_a_connection_lost_after_354_before_the_final_dot_is_retried_not_in_doubt(project, conn, server, pipelining):
    server.pipelining = pipelining
    everyone = add_readers(conn, 6)
    for address in everyone[::2]:
        server.drop_after_354.add(address)

    report = send_issue(conn, smtp_settings(project, server.port), make_rendered(), policy=FAST, in_doubt="skip")

    assert report.status == "done" and report.in_doubt == 0
    assert all(row["state"] == "sent" and row["doubted"] == 0 for row in rows(conn).values())
    assert server.copies() == Counter({address: 1 for address in everyone})


@pytest.mark.parametrize("reply", ["550 Message rejected as spam", "554 5.7.1 content rejected",
                                   "550 mailbox unavailable: message rejected as spam"])
def test_a_spam_or_content_refusal_fails_the_message_and_keeps_the_subscriber(project, conn, server, reply):
    everyone = add_readers(conn, 4)
    server.rcpt_replies[everyone[1]] = [reply]
    settings = smtp_settings(project, server.port)

    report = send_issue(conn, settings, make_rendered(), policy=FAST)
    later = send_issue(conn, settings, make_rendered(DAY.replace(day=27)), policy=FAST)

    assert report.failed == 1 and report.bounced == 0
    assert (rows(conn)[everyone[1]]["state"], rows(conn)[everyone[1]]["reason"]) == ("failed", "rejected")
    assert subscriber_status(conn, everyone[1]) == "active"
    assert later.written == 4  # still on the list for the next issue


# ----------------------------------------------------------------------------- one address that reads as an outage

def test_one_address_refused_with_a_reply_that_reads_as_ours_pauses_once_then_fails_alone(project, conn, server,
                                                                                           runner):
    # Microsoft 365 answers a missing user with a 5.4.1 "Access denied": it reads as our side, but it
    # is this recipient. The first send pauses (it cannot tell yet); the next one fails that row
    # alone instead of pausing every day at the same address.
    everyone = add_readers(conn, 6)
    stuck = everyone[0]
    server.rcpt_replies[stuck] = ["550 5.4.1 Recipient address rejected: Access denied. AS(201806281)"] * 10
    configure_smtp(project, server.port)
    day = day_of(project)

    paused = runner.invoke(app, ["--project", str(project), "send", "--date", day])
    assert paused.exit_code == 1 and "5.4.1" in paused.output
    assert_list_intact(conn, everyone, date.fromisoformat(day))

    resumed = runner.invoke(app, ["--project", str(project), "send", "--date", day])
    assert resumed.exit_code == 0, resumed.output
    assert server.copies() == Counter({address: 1 for address in everyone[1:]})
    assert rows(conn, date.fromisoformat(day))[stuck]["state"] == "failed"
    assert subscriber_status(conn, stuck) == "active"  # a failed message, not a bounce


def test_a_real_outage_after_a_pause_fails_at_most_the_row_that_tripped_it(project, conn, server, runner):
    everyone = add_readers(conn, 6)
    server.refuse_every_rcpt = "553 5.1.8 <newsletter@example.org>: Sender address rejected: Domain not found"
    configure_smtp(project, server.port)
    day = day_of(project)
    for _ in range(2):  # the operator has not fixed it yet and sends again
        assert runner.invoke(app, ["--project", str(project), "send", "--date", day]).exit_code == 1
    states = Counter(row["state"] for row in rows(conn, date.fromisoformat(day)).values())
    assert states["failed"] <= 1 and all(subscriber_status(conn, a) == "active" for a in everyone)
    server.refuse_every_rcpt = None
    fixed = runner.invoke(app, ["--project", str(project), "send", "--date", day, "--retry-failed"])
    assert fixed.exit_code == 0, fixed.output
    assert server.copies() == Counter({address: 1 for address in everyone})
