"""What the editor sees of what came back: the subscriber's history in `subscribers show` and the JSON
export, an issue's bounce and complaint counts in `status`, and `check`'s complaint-rate warning."""

from __future__ import annotations

import contextlib
import json
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter import feedback, reputation, store
from newsletter.cli import app
from newsletter.feedback import Feedback, FeedbackKind
from newsletter.settings import load_settings
from sent_project import copy_project, make_sent_project

ARRIVED = datetime(2026, 11, 26, 9, 30, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def sent(tmp_path_factory) -> Path:
    return make_sent_project(tmp_path_factory.mktemp("reputation") / "project", days=("2026-11-25", "2026-11-26"))


@pytest.fixture
def project(sent, tmp_path) -> Path:
    return copy_project(sent, tmp_path / "project")


def hear(project: Path, *news: Feedback, now: datetime = ARRIVED) -> None:
    """Apply NEWS as the inbox or a webhook would."""
    settings = load_settings(project)
    with contextlib.closing(store.connect(settings.database_path)) as conn:
        for item in news:
            feedback.apply(conn, settings, item, now)


def run(project: Path, *args: str):
    result = CliRunner().invoke(app, ["--project", str(project), *args])
    return result


def bounce(email: str, day: str = "2026-11-26", kind: FeedbackKind = FeedbackKind.HARD_BOUNCE,
           diagnostic: str = "smtp; 550 5.1.1 <x>... User unknown") -> Feedback:
    return Feedback(kind, "webhook:ses", email=email, issue_day=day, status="5.1.1" if kind is FeedbackKind.HARD_BOUNCE
                    else "4.2.2", diagnostic=diagnostic, dedupe_key=f"test:{email}:{day}:{kind}")


def test_subscribers_show_prints_the_history_on_one_line_each(project):
    hostile = "smtp; 550 5.1.1 gone\r\n\x1b[31mRED\x1b[0m\tfine"
    hear(project, bounce("mara.ilves@example.org", diagnostic=hostile))
    result = run(project, "subscribers", "show", "mara.ilves@example.org")
    assert result.exit_code == 0, result.output
    assert "status:   bounced" in result.output
    [line] = [line for line in result.output.splitlines() if "webhook:ses" in line]
    assert line.startswith("  2026-11-26T09:30:00+00:00  bounced")
    assert "5.1.1 smtp; 550 5.1.1 gone [31mRED [0m fine (issue 2026-11-26)" in line
    assert "\x1b" not in result.output


def test_the_json_export_carries_each_subscribers_events(project):
    hear(project, Feedback(FeedbackKind.COMPLAINT, "webhook:postmark", email="zoe.akesson@example.com",
                           issue_day="2026-11-25", dedupe_key="postmark:1"))
    result = run(project, "subscribers", "export", "--format", "json")
    assert result.exit_code == 0, result.output
    records = {r["email"]: r for r in json.loads(result.output)}
    complaint = [e for e in records["zoe.akesson@example.com"]["events"] if e["source"] == "webhook:postmark"]
    assert complaint == [{"at": "2026-11-26T09:30:00+00:00", "kind": "complaint", "source": "webhook:postmark",
                          "status": "", "detail": "", "issue_day": "2026-11-25"}]
    assert all(isinstance(r["events"], list) for r in records.values())


def test_status_shows_the_issues_bounces_and_complaints_with_rates(project):
    hear(project, bounce("mara.ilves@example.org"), bounce("zoe.akesson@example.com"),
         bounce("lukasz.wrobel@example.net", kind=FeedbackKind.SOFT_BOUNCE),
         bounce("analyst+ssb@example.org", day="2026-11-25"),  # another issue's
         Feedback(FeedbackKind.COMPLAINT, "inbox", email="analyst+ssb@example.org", issue_day="2026-11-26",
                  dedupe_key="arf:1"))
    sent = json.loads(run(project, "status", "--date", "2026-11-26", "--format", "json").output)
    delivered = sent["deliveries"]["sent"]
    assert sent["feedback"] == {"sent": delivered, "hard_bounces": 2, "soft_bounces": 1, "complaints": 1,
                                "bounce_rate": 2 / delivered, "complaint_rate": 1 / delivered}
    text = run(project, "status", "--date", "2026-11-26").output
    assert (f"Came back from the {delivered} delivered: 2 permanent bounce(s) ({2 / delivered:.2%}), 1 temporary, "
            f"1 spam complaint(s) ({1 / delivered:.2%})") in text


def test_check_warns_when_the_last_30_days_complaint_rate_passes_a_tenth_of_a_percent(project):
    clean = run(project, "check", "--date", "2026-11-26")
    assert "complaint" not in clean.output
    hear(project, Feedback(FeedbackKind.COMPLAINT, "inbox", email="mara.ilves@example.org", dedupe_key="arf:2"))
    warned = run(project, "check", "--date", "2026-11-26")
    [line] = [line for line in warned.output.splitlines() if "complaint rate" in line]
    assert "1 spam complaint for" in line and "over 0.10%" in line
    report = json.loads(run(project, "check", "--date", "2026-11-26", "--format", "json").output)
    assert [f["severity"] for f in report["findings"] if f["rule_id"] == "complaint-rate"] == ["warning"]


def test_the_complaint_rate_counts_the_window_only(project):
    settings = load_settings(project)
    hear(project, Feedback(FeedbackKind.COMPLAINT, "inbox", email="mara.ilves@example.org", dedupe_key="old"),
         now=datetime(2026, 10, 1, tzinfo=timezone.utc))
    with contextlib.closing(store.connect(settings.database_path)) as conn:
        window = reputation.complaint_rate(conn, date(2026, 11, 26))
        assert (window.first, window.complaints) == (date(2026, 10, 28), 0) and window.sent > 0
        assert reputation.complaint_rate(conn, date(2026, 10, 1), days=1).rate is None  # nothing sent that day


def test_check_on_a_project_without_a_database_creates_none(tmp_path):
    assert run(tmp_path, "init", str(tmp_path / "fresh")).exit_code == 0
    run(tmp_path / "fresh", "check")
    assert not (tmp_path / "fresh" / "subscribers" / "newsletter.db").exists()
