"""Feedback: what a bounce, complaint or unsubscribe request does to the list, and the event log."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings
from hypothesis import strategies as st

from newsletter import events, feedback, importer, store, subscribers
from newsletter.feedback import Feedback, FeedbackKind, Why
from newsletter.settings import Settings

from list_helpers import write

# after every event the tests' own adds stamp with the real clock (the history is in time order),
# and the days below are counted from it, so the tests do not depend on the day they run
NOW = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=1)
DAY = NOW.date()


def day(offset: int) -> str:
    """Return the day OFFSET days from NOW's, as an issue_day."""
    return (DAY + timedelta(days=offset)).isoformat()
HARD, SOFT = FeedbackKind.HARD_BOUNCE, FeedbackKind.SOFT_BOUNCE


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(root=tmp_path).replace("sender", list_id="ssb.newsletter.example.org")


def kinds(conn, email: str) -> list[tuple[str, str]]:
    person = subscribers.get(conn, email)
    return [(e.kind, e.source) for e in events.history(conn, person.id)]


def test_a_permanent_bounce_marks_the_subscriber_bounced_with_its_status_code(conn, settings):
    subscribers.add(conn, "ada@example.com")
    outcome = feedback.apply(conn, settings, Feedback(HARD, "inbox", email="ADA@example.com", status="5.1.1",
                                                      diagnostic="550 5.1.1 no such user", issue_day="2026-11-30"), NOW)
    assert outcome.changed and (outcome.before, outcome.after) == ("active", "bounced")
    assert subscribers.get(conn, "ada@example.com").status == "bounced"
    bounce = events.history(conn, outcome.subscriber_id)[-1]
    assert (bounce.kind, bounce.status, bounce.detail, bounce.issue_day) == (
        "bounced", "5.1.1", "550 5.1.1 no such user", "2026-11-30")


def test_temporary_bounces_on_enough_different_days_mark_the_subscriber_bounced(conn, settings):
    person = subscribers.add(conn, "ada@example.com").subscriber
    soft = lambda day, key: Feedback(SOFT, "inbox", subscriber_id=person.id, issue_day=day, dedupe_key=key)  # noqa: E731
    # two bounces about the same issue count as one day
    assert feedback.apply(conn, settings, soft(day(-2), "a"), NOW).why is Why.COUNTED
    assert feedback.apply(conn, settings, soft(day(-2), "b"), NOW).why is Why.COUNTED
    assert feedback.apply(conn, settings, soft(day(-1), "c"), NOW).why is Why.COUNTED
    assert subscribers.get(conn, "ada@example.com").status == "active"
    outcome = feedback.apply(conn, settings, soft(day(0), "d"), NOW)
    assert outcome.changed and subscribers.get(conn, "ada@example.com").status == "bounced"


def test_temporary_bounces_older_than_the_window_are_forgotten(conn, tmp_path):
    settings = Settings(root=tmp_path).replace("bounces", soft_limit=2, window_days=7)
    person = subscribers.add(conn, "ada@example.com").subscriber
    first = Feedback(SOFT, "inbox", subscriber_id=person.id, issue_day=day(-11), dedupe_key="a")
    assert feedback.apply(conn, settings, first, NOW - timedelta(days=11)).why is Why.COUNTED
    later = Feedback(SOFT, "inbox", subscriber_id=person.id, issue_day=day(0), dedupe_key="b")
    assert feedback.apply(conn, settings, later, NOW).why is Why.COUNTED
    assert subscribers.get(conn, "ada@example.com").status == "active"


def test_a_complaint_unsubscribes_at_once_and_says_so_in_the_history(conn, settings):
    subscribers.add(conn, "ada@example.com")
    outcome = feedback.apply(conn, settings, Feedback(FeedbackKind.COMPLAINT, "arf", email="ada@example.com",
                                                      list_id="<ssb.newsletter.example.org>"), NOW)
    assert outcome.after == "unsubscribed"
    assert kinds(conn, "ada@example.com") == [("subscribed", "cli"), ("complaint", "arf")]


def test_a_complaint_about_another_list_changes_nothing(conn, settings):
    subscribers.add(conn, "ada@example.com")
    outcome = feedback.apply(conn, settings, Feedback(FeedbackKind.COMPLAINT, "arf", email="ada@example.com",
                                                      list_id="other.example.com"), NOW)
    assert outcome.why is Why.OTHER_LIST and "another list" in str(outcome)
    assert subscribers.get(conn, "ada@example.com").status == "active"


def test_an_unsubscribe_request_unsubscribes_with_its_source(conn, settings):
    subscribers.add(conn, "ada@example.com")
    outcome = feedback.apply(conn, settings, Feedback(FeedbackKind.UNSUBSCRIBE, "mailto", email="ada@example.com"), NOW)
    assert outcome.after == "unsubscribed"
    assert kinds(conn, "ada@example.com")[-1] == ("unsubscribed", "mailto")


def test_news_about_an_address_not_on_the_list_changes_nothing_and_keeps_nothing(conn, settings):
    subscribers.add(conn, "ada@example.com")
    before = conn.execute("SELECT count(*) FROM subscriber_events").fetchone()[0]
    for email in ("gone@example.com", "not an address", ""):
        outcome = feedback.apply(conn, settings, Feedback(HARD, "inbox", email=email, dedupe_key=email), NOW)
        assert outcome.why is Why.UNKNOWN and "not on the list" in str(outcome)
    assert feedback.apply(conn, settings, Feedback(HARD, "inbox", subscriber_id=999), NOW).why is Why.UNKNOWN
    assert conn.execute("SELECT count(*) FROM subscriber_events").fetchone()[0] == before


def test_the_same_report_applied_twice_changes_nothing_the_second_time(conn, settings):
    person = subscribers.add(conn, "ada@example.com").subscriber
    soft = Feedback(SOFT, "inbox", subscriber_id=person.id, issue_day="2026-11-30", dedupe_key="<r1@mx>/tag")
    assert feedback.apply(conn, settings, soft, NOW).why is Why.COUNTED
    assert feedback.apply(conn, settings, soft, NOW).why is Why.DUPLICATE
    assert len(events.history(conn, person.id)) == 2  # subscribed, one soft bounce


def test_a_bounce_does_not_turn_an_unsubscribe_into_a_bounce(conn, settings):
    subscribers.add(conn, "ada@example.com")
    subscribers.unsubscribe(conn, "ada@example.com")
    outcome = feedback.apply(conn, settings, Feedback(HARD, "inbox", email="ada@example.com"), NOW)
    assert outcome.why is Why.ALREADY and subscribers.get(conn, "ada@example.com").status == "unsubscribed"
    outcome = feedback.apply(conn, settings, Feedback(SOFT, "inbox", email="ada@example.com"), NOW)
    assert outcome.why is Why.ALREADY


def test_the_list_records_each_way_in_and_out(conn, tmp_path):
    subscribers.add(conn, "ada@example.com")
    subscribers.unsubscribe(conn, "ada@example.com")
    subscribers.resubscribe(conn, "ada@example.com")
    person = subscribers.sign_up(conn, "bob@example.com").subscriber
    subscribers.confirm_id(conn, person.id)
    subscribers.unsubscribe_id(conn, person.id)
    subscribers.unsubscribe_id(conn, person.id)  # already: no second event
    importer.import_file(conn, write(tmp_path, "email,status\ncy@example.com,active\nada@example.com,unsubscribed\n"))
    assert kinds(conn, "ada@example.com") == [
        ("subscribed", "cli"), ("unsubscribed", "cli"), ("resubscribed", "cli"), ("unsubscribed", "import")]
    assert kinds(conn, "bob@example.com") == [("subscribed", "web"), ("confirmed", "web"), ("unsubscribed", "link")]
    assert kinds(conn, "cy@example.com") == [("imported", "import")]


def test_erasing_a_subscriber_erases_their_history(conn, settings):
    person = subscribers.add(conn, "ada@example.com").subscriber
    feedback.apply(conn, settings, Feedback(SOFT, "inbox", email="ada@example.com", diagnostic="mailbox of ada"), NOW)
    subscribers.remove(conn, "ada@example.com")
    assert events.history(conn, person.id) == []
    assert conn.execute("SELECT count(*) FROM subscriber_events").fetchone()[0] == 0


def test_a_diagnostic_text_is_cut_so_a_report_cannot_grow_the_database(conn, settings):
    person = subscribers.add(conn, "ada@example.com").subscriber
    feedback.apply(conn, settings, Feedback(HARD, "inbox", subscriber_id=person.id, diagnostic="x" * 100_000), NOW)
    assert len(events.history(conn, person.id)[-1].detail) == events.MAX_DETAIL


@pytest.mark.sqlite_only  # a new database per example (the SQL it runs is the other tests' on PostgreSQL)
@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reports=st.lists(st.tuples(st.sampled_from(list(FeedbackKind)), st.sampled_from(["a", "b", "c"]),
                                  st.integers(0, 20)), max_size=12))
def test_applying_any_reports_twice_ends_where_applying_them_once_does(tmp_path_factory, reports):
    folder = tmp_path_factory.mktemp("twice")
    settings = Settings(root=folder)
    results = []
    for rounds in (1, 2):
        conn = store.connect(folder / f"{rounds}.db")
        for name in ("a", "b", "c"):
            subscribers.add(conn, f"{name}@example.com")
        for _ in range(rounds):
            for i, (kind, name, days_ago) in enumerate(reports):
                report = Feedback(kind, "inbox", email=f"{name}@example.com", issue_day=day(-days_ago),
                                  dedupe_key=f"r{i}")
                feedback.apply(conn, settings, report, NOW)
        results.append(sorted(subscribers.count_by_status(conn).items()))
        conn.close()
    assert results[0] == results[1]
