"""`send_day`, the one way an issue goes out: the check comes first whoever calls it, and any transport
that has the methods of `delivery.transport.Transport` can carry the claims."""

from __future__ import annotations

import shutil
import threading
from datetime import date
from pathlib import Path

import pytest

from factories import make_rendered, send_unchecked as send_issue
from newsletter import store, subscribers
from newsletter.delivery import issue_status, ledger
from newsletter.delivery.transport import Claims, Recovery, Totals, TransportName
from newsletter.sending import CheckFailedError, send_day, stop_on_signals
from newsletter.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
BROKEN = Path(__file__).resolve().parent / "fixtures" / "broken"
DAY = date(2026, 11, 21)


def small_project(tmp_path: Path, broken: str | None = None) -> Path:
    """The sample settings and one day of articles (with a broken case laid over), and two subscribers."""
    folder = tmp_path / "project"
    (folder / "articles").mkdir(parents=True)
    shutil.copy(REPO / "newsletter.toml", folder / "newsletter.toml")
    shutil.copytree(REPO / "articles" / DAY.isoformat(), folder / "articles" / DAY.isoformat())
    if broken:
        shutil.copytree(BROKEN / broken, folder, dirs_exist_ok=True)
    conn = store.connect(load_settings(folder).database_path)
    for n in (1, 2):
        subscribers.add(conn, f"reader{n}@example.org")
    conn.close()
    return folder


def test_a_library_caller_cannot_skip_the_check_and_nothing_is_frozen(tmp_path):
    settings = load_settings(small_project(tmp_path, "no-alt"))

    with pytest.raises(CheckFailedError) as caught:
        send_day(settings, DAY)

    assert str(caught.value) == (f"{DAY}: the check found 1 error(s); nothing was sent "
                                 "(fix them, or send anyway with --force)")
    assert caught.value.report.errors[0].where == "templates/issue.html.j2"
    conn = store.connect(settings.database_path)
    assert issue_status(conn, DAY).state == "not started"
    assert not (settings.outbox_dir / DAY.isoformat()).exists()


def test_the_delivery_refuses_an_issue_without_a_passing_check(tmp_path):
    from newsletter.check import check_rendered
    from newsletter.delivery import send_issue as deliver
    from newsletter.errors import NotCheckedError
    from newsletter.pipeline import prepare_issue

    settings = load_settings(small_project(tmp_path, "no-alt"))
    prepared = prepare_issue(settings, DAY)
    conn = store.connect(settings.database_path)
    with pytest.raises(NotCheckedError, match=f"{DAY}: the issue was not checked"):
        deliver(conn, settings, prepared.rendered)
    with pytest.raises(NotCheckedError, match="the check found 1 error"):
        deliver(conn, settings, prepared.rendered, checked=check_rendered(prepared, settings))
    assert issue_status(conn, DAY).state == "not started"
    assert not (settings.outbox_dir / DAY.isoformat()).exists()


def test_proofs_go_through_the_same_check(tmp_path):
    settings = load_settings(small_project(tmp_path, "no-alt"))

    with pytest.raises(CheckFailedError):
        send_day(settings, DAY, test_to=["editor@example.org"])

    assert not (settings.outbox_dir / DAY.isoformat() / "proofs").exists()


def test_force_sends_despite_the_check_and_says_how_many_errors_it_overrode(tmp_path):
    settings = load_settings(small_project(tmp_path, "no-alt"))

    done = send_day(settings, DAY, force=True)

    assert done.forced == 1 and done.sent is not None
    assert done.sent.written == 2 and done.sent.status == "done"
    assert len(list((settings.outbox_dir / DAY.isoformat() / "mail" / "new").iterdir())) == 2


def test_a_clean_issue_goes_out_and_its_report_is_typed(tmp_path):
    settings = load_settings(small_project(tmp_path))

    done = send_day(settings, DAY)

    assert done.forced == 0
    assert done.sent.transport is TransportName.OUTBOX and done.sent.status is ledger.IssueState.DONE
    assert done.sent.totals == Totals(written=2, nbytes=done.sent.nbytes, seconds=done.sent.seconds)


class Pigeons:
    """A third transport in a few lines: it takes the claims and says each one arrived."""

    name = "pigeon"
    failed_means = "were lost on the way"
    hint = "Pigeons need feeding"

    def __init__(self) -> None:
        self.carried: list[str] = []
        self.closed = False

    def destination(self, day: date) -> str:
        return "the loft"

    def recover(self, conn, day: date, *, now: str) -> Recovery:
        return Recovery()

    def deliver(self, claims: Claims, template) -> Totals:
        totals = Totals()
        while not claims.stop.is_set():
            claim = claims.take(1)
            if not claim.rows and not claim.skipped:
                break
            for row in claim.rows:
                self.carried.append(template.personalize(row).decode("ascii").split("\r\nTo: ")[1]
                                    .split("\r\n")[0])
            claims.record_sent([row.subscriber.id for row in claim.rows])
            totals.written += len(claim.rows)
        return totals

    def close(self) -> None:
        self.closed = True


def test_a_transport_object_carries_the_claims_and_the_ledger_records_them(tmp_path):
    settings = load_settings(small_project(tmp_path))
    conn = store.connect(settings.database_path)
    pigeons = Pigeons()

    report = send_issue(conn, settings, make_rendered(DAY), transport=pigeons)

    assert pigeons.carried == ["reader1@example.org", "reader2@example.org"] and pigeons.closed
    assert report.written == 2 and report.status == "done" and report.destination == "the loft"
    assert issue_status(conn, DAY).counts[ledger.SENT] == 2
    again = send_issue(conn, settings, make_rendered(DAY), transport=Pigeons())
    assert again.nothing_to_do


def test_a_signal_sets_the_stop_and_the_handlers_are_put_back(tmp_path):
    import os
    import signal

    before = signal.getsignal(signal.SIGTERM)
    stop = threading.Event()
    with stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
    assert signal.getsignal(signal.SIGTERM) is before

@pytest.mark.sqlite_only  # SQLite's typeof
def test_the_ledger_keeps_plain_strings(tmp_path):
    settings = load_settings(small_project(tmp_path))
    send_day(settings, DAY)
    conn = store.connect(settings.database_path)

    rows = conn.execute("SELECT DISTINCT state, typeof(state) FROM deliveries").fetchall()
    issue = conn.execute("SELECT status, typeof(status) FROM issues").fetchone()

    assert [tuple(row) for row in rows] == [("sent", "text")] and tuple(issue) == ("done", "text")
