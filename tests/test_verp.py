"""VERP: per-message envelope senders, signed, read back without the database; carried by each send."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter.verp import MAC_BYTES, Forged, Verp
from newsletter.weeks import IsoWeek

KEY = b"k" * 32
VERP = Verp(KEY, "ssb.newsletter.example.org", "bounces@bounces.example.org")


@given(day=st.dates(min_value=date(1000, 1, 1), max_value=date(9999, 12, 31)), subscriber_id=st.integers(0, 10**18 - 1))
def test_every_address_reads_back_as_its_day_and_subscriber_in_any_letter_case(day, subscriber_id):
    address = VERP.address(day, subscriber_id)
    local = address.split("@")[0]
    assert len(local) <= 64 and local == local.lower() and address.isascii()
    for shown in (address, address.upper(), f"<{address}>"):
        tag = VERP.read(shown)
        assert tag is not None and (tag.day, tag.subscriber_id) == (day, subscriber_id)


@given(day=st.dates(min_value=date(1000, 1, 4), max_value=date(9999, 12, 24)), variant=st.integers(1, 999),
       subscriber_id=st.integers(0, 10**18 - 1))
def test_a_digest_message_reads_back_as_its_week_and_variant_never_as_a_day(day, variant, subscriber_id):
    key = IsoWeek.of(day).key(variant)
    tag = VERP.read(VERP.address(key, subscriber_id))
    assert tag is not None and tag.issue_day == key.isoformat() and tag.subscriber_id == subscriber_id
    assert VERP.address(key, subscriber_id) != VERP.address(key.as_day(), subscriber_id)


def test_a_tag_changed_in_any_way_is_forged():
    address = VERP.address(date(2026, 11, 30), 42)
    tag = address.split("+")[1].split("@")[0]
    mac = tag.rsplit("-", 1)[1]
    assert len(mac) == 2 * MAC_BYTES
    for forged in (address.replace("-42-", "-43-"), address.replace("20261130", "20261201"),
                   address.replace(mac, mac[::-1]), address.replace(tag, "not-a-tag"),
                   Verp(b"other key" * 4, "ssb.newsletter.example.org", "bounces@bounces.example.org").address(
                       date(2026, 11, 30), 42),
                   Verp(KEY, "other.list.example.org", "bounces@bounces.example.org").address(date(2026, 11, 30), 42)):
        with pytest.raises(Forged):
            VERP.read(forged)


def test_addresses_not_under_the_bounce_address_are_not_ours():
    assert VERP.read("bounces@bounces.example.org") is None
    assert VERP.read("ada@example.com") is None
    assert VERP.read("bounces+20261130-42-00@elsewhere.example.org") is None


# ----------------------------------------------------------------------------- the sends carry it


class EnvelopeRecorder:
    """aiosmtpd handler: each message's envelope sender, by recipient."""

    def __init__(self) -> None:
        self.senders: dict[str, list[str]] = {}

    async def handle_DATA(self, server, session, envelope):
        for rcpt in envelope.rcpt_tos:
            self.senders.setdefault(rcpt, []).append(envelope.mail_from)
        return "250 2.0.0 queued"


@pytest.fixture
def recorder():
    from factories import LoopbackController

    handler = EnvelopeRecorder()
    controller = LoopbackController(handler, hostname="127.0.0.1", port=0)
    controller.start()
    handler.port = controller.port
    yield handler
    controller.stop()


def _project_settings(project, **sender):
    from newsletter.settings import load_settings

    return load_settings(project).replace("sender", **sender)


def _subscribers(conn, count: int) -> dict[str, int]:
    from newsletter import subscribers

    return {f"reader{n}@example.org": subscribers.add(conn, f"reader{n}@example.org").subscriber.id
            for n in range(count)}


def test_an_smtp_send_gives_each_message_its_own_signed_envelope_sender(project, conn, recorder):
    from factories import DAY, make_rendered
    from factories import send_unchecked as send_issue
    from newsletter.delivery.smtp import RetryPolicy
    from newsletter.settings import secret_key

    settings = _project_settings(project, bounce_address="bounces@bounces.newsletter.example.org")
    settings = settings.replace("delivery", transport="smtp", concurrency=2).replace(
        "smtp", host="127.0.0.1", port=recorder.port, security="none", timeout=5.0)
    people = _subscribers(conn, 12)
    send_issue(conn, settings, make_rendered(), policy=RetryPolicy())
    verp = Verp(secret_key(settings), settings.sender.list_id, "bounces@bounces.newsletter.example.org")
    assert sorted(recorder.senders) == sorted(people)
    for address, senders in recorder.senders.items():
        assert senders == [verp.address(DAY, people[address])]
        tag = verp.read(senders[0])
        assert tag is not None and (tag.day, tag.subscriber_id) == (DAY, people[address])


def test_without_a_bounce_address_the_envelope_sender_is_the_from_address(project, conn, recorder):
    from email.utils import parseaddr

    from factories import make_rendered
    from factories import send_unchecked as send_issue

    settings = _project_settings(project).replace("delivery", transport="smtp").replace(
        "smtp", host="127.0.0.1", port=recorder.port, security="none", timeout=5.0)
    _subscribers(conn, 3)
    send_issue(conn, settings, make_rendered())
    assert {s for senders in recorder.senders.values() for s in senders} == {
        parseaddr(settings.sender.from_address)[1]}


def test_each_outbox_file_starts_with_its_return_path(project, conn):
    import email

    from factories import DAY, make_rendered
    from factories import send_unchecked as send_issue
    from newsletter.settings import secret_key

    settings = _project_settings(project, bounce_address="bounces@bounces.newsletter.example.org")
    people = _subscribers(conn, 5)
    send_issue(conn, settings, make_rendered())
    verp = Verp(secret_key(settings), settings.sender.list_id, "bounces@bounces.newsletter.example.org")
    files = sorted((settings.outbox_dir / DAY.isoformat() / "mail" / "new").iterdir())
    assert len(files) == 5
    for file in files:
        raw = file.read_bytes()
        message = email.message_from_bytes(raw)
        subscriber_id = people[message["To"].split("<")[-1].strip(">")]
        assert raw.startswith(f"Return-Path: <{verp.address(DAY, subscriber_id)}>\r\n".encode())
