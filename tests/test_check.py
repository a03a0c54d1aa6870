"""`newsletter check`: the sample issues pass; each deliberately broken issue is caught, by name."""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from newsletter.builder import MONTHS, citations
from newsletter.check import CheckReport, Finding, check_issue, check_rendered, citation_problem, format_report
from newsletter.cli import app
from newsletter.pipeline import prepare_issue
from newsletter.project import POSTAL_PLACEHOLDER
from newsletter.rules import Rule
from newsletter.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
BROKEN = Path(__file__).resolve().parent / "fixtures" / "broken"
DAY = date(2026, 11, 21)  # the first sample day: no cross-references to days a small copy lacks
SAMPLE_DAYS = [date(2026, 11, d) for d in range(21, 27)]


def small_project(tmp_path: Path, broken: str | None = None) -> Path:
    """The sample settings and one day of articles, with a broken case from fixtures/broken laid over."""
    folder = tmp_path / (broken or "project")
    (folder / "articles").mkdir(parents=True)
    shutil.copy(REPO / "newsletter.toml", folder / "newsletter.toml")
    shutil.copytree(REPO / "articles" / DAY.isoformat(), folder / "articles" / DAY.isoformat())
    if broken:
        shutil.copytree(BROKEN / broken, folder, dirs_exist_ok=True)
    return folder


def check(folder: Path, day: date = DAY) -> CheckReport:
    return check_issue(load_settings(folder), day)


def only_error(report: CheckReport) -> Finding:
    assert len(report.errors) == 1, format_report(report)
    return report.errors[0]


def write_article(folder: Path, name: str, body: str, day: date = DAY, **front: str) -> Path:
    meta = {"title": "A Test Article", "section": "Nuclear", **front}
    lines = "\n".join(f"{k}: {json.dumps(v)}" for k, v in meta.items())
    path = folder / "articles" / day.isoformat() / name
    path.write_text(f"---\n{lines}\n---\n{textwrap.dedent(body)}", encoding="utf-8")
    return path


# --- the sample issues pass ---------------------------------------------------------------------

@pytest.mark.parametrize("day", SAMPLE_DAYS, ids=str)
def test_every_sample_day_passes_with_exit_0(runner, sample_project, day):
    result = runner.invoke(app, ["--project", str(sample_project), "check", "--date", day.isoformat()])
    assert result.exit_code == 0, result.output
    assert "no problems found" in result.output


def test_sample_message_is_checked_as_a_whole(sample_project):
    report = check(sample_project, date(2026, 11, 25))
    assert report.findings == ()
    assert report.ok and report.number == 5 and report.subject.startswith("SSB Wednesday")
    assert 10_000 < report.html_bytes < 90_000


def test_check_rendered_checks_a_prepared_issue_without_building_it_again(sample_project):
    settings = load_settings(sample_project)
    prepared = prepare_issue(settings, date(2026, 11, 26))
    report = check_rendered(prepared, settings)
    assert report.ok and report.day == date(2026, 11, 26) and report.html_bytes > 0


def test_a_day_without_an_issue_says_so_and_exits_0(runner, sample_project):
    result = runner.invoke(app, ["--project", str(sample_project), "check", "--date", "2026-11-27"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("No issue to check: 2026-11-27: 0 article(s)")
    assert "empty_policy = skip" in result.output


def test_the_notice_sent_on_an_empty_day_is_checked_too(runner, tmp_path):
    folder = small_project(tmp_path)
    config = folder / "newsletter.toml"
    config.write_text(config.read_text(encoding="utf-8").replace('empty_policy = "skip"', 'empty_policy = "notice"'),
                      encoding="utf-8")
    result = runner.invoke(app, ["--project", str(folder), "check", "--date", "2026-11-22"])
    assert result.exit_code == 0, result.output
    first, second = result.output.splitlines()
    assert first.endswith("sending a short notice (empty_policy = notice)")
    assert re.fullmatch(r"The notice of 2026-11-22, [\d,]+ bytes of HTML: no problems found", second)


# --- deliberately broken issues -----------------------------------------------------------------

def test_too_many_articles_for_gmail_is_an_error_naming_the_longest(tmp_path):
    folder = small_project(tmp_path)
    paragraph = ("The delegation met again on Tuesday to review the draft text of the inspection "
                 "annex, line by line, with the secretariat's lawyers in the room (Interfax, Nov. 20). ")
    for n in range(40):
        body = "\n\n".join(paragraph * (4 if n != 7 else 6) for _ in range(5))
        write_article(folder, f"long-{n:02}.md", body, title=f"Long Article Number {n}")
    finding = only_error(check(folder))
    assert finding.rule is Rule.GMAIL_CLIP
    assert "Gmail clips" in finding.message and "102,000" in finding.message
    assert "articles/2026-11-21/long-07.md" in finding.message  # the heaviest comes first
    assert finding.where == "articles/2026-11-21"


def test_an_image_without_alt_in_a_custom_template_is_an_error_naming_it(tmp_path):
    finding = only_error(check(small_project(tmp_path, "no-alt")))
    assert finding.rule is Rule.IMAGE
    assert finding.where == "templates/issue.html.j2"
    assert "sponsor-logo.png" in finding.message and "no alt attribute" in finding.message


def test_a_javascript_link_in_a_custom_template_is_an_error_naming_it(tmp_path):
    finding = only_error(check(small_project(tmp_path, "javascript-link")))
    assert finding.rule is Rule.HTTPS_LINKS
    assert finding.where == "templates/issue.html.j2"
    assert finding.message.startswith("link 'javascript:navigator.share(")
    assert "is not https: or mailto:" in finding.message


def test_template_syntax_left_by_a_raw_block_is_an_error(tmp_path):
    finding = only_error(check(small_project(tmp_path, "leftover")))
    assert finding.where == "templates/issue.html.j2"
    assert "'{{ subscriber.first_name }}'" in finding.message and "HTML part" in finding.message


def test_a_layout_without_unsubscribe_link_is_an_error(tmp_path):
    folder = small_project(tmp_path)
    layout = (REPO / "templates" / "partials" / "layout.html.j2").read_text(encoding="utf-8")
    link = '<a href="{{ unsubscribe_url }}">{{ _("Unsubscribe") }}</a> &middot; '
    assert link in layout
    (folder / "templates" / "partials").mkdir(parents=True)
    (folder / "templates" / "partials" / "layout.html.j2").write_text(layout.replace(link, ""), encoding="utf-8")
    finding = only_error(check(folder))
    assert finding.rule is Rule.UNSUBSCRIBE_LINK
    assert finding.where == "templates/partials/layout.html.j2"
    assert finding.message.startswith("the HTML part has no unsubscribe link")


def test_a_flex_layout_in_a_custom_template_is_one_error(tmp_path):
    finding = only_error(check(small_project(tmp_path, "flex")))
    assert finding.rule is Rule.CSS_LAYOUT
    assert finding.where == "templates/issue.html.j2"
    assert "display: flex" in finding.message and "lay out with tables" in finding.message


def test_a_kept_style_rule_without_important_is_an_error(tmp_path):
    folder = small_project(tmp_path)
    media = (REPO / "templates" / "email-media.css").read_text(encoding="utf-8")
    (folder / "templates").mkdir()
    (folder / "templates" / "email-media.css").write_text(
        media + "@media (max-width: 620px) { .card { font-size: 17px; } }\n", encoding="utf-8")
    finding = only_error(check(folder))
    assert finding.rule is Rule.CSS_IMPORTANT
    assert finding.where == "templates/email-media.css"
    assert ".card { font-size: 17px }" in finding.message


def test_an_article_without_title_is_an_error_naming_the_file_not_a_traceback(runner, tmp_path):
    folder = small_project(tmp_path, "untitled-article")
    result = runner.invoke(app, ["--project", str(folder), "check", "--date", DAY.isoformat()])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "ERROR   articles/2026-11-21/untitled.md: field 'title': missing or empty" in result.output
    assert "Traceback" not in result.output


def test_a_plain_http_link_in_an_article_names_the_article(tmp_path):
    folder = small_project(tmp_path)
    write_article(folder, "linky.md", "See [the report](http://example.org/report) (Interfax, Nov. 20).\n")
    finding = only_error(check(folder))
    assert finding.rule is Rule.HTTPS_LINKS and finding.where == "articles/2026-11-21/linky.md:5"
    assert finding.message.startswith("link 'http://example.org/report' is not https:// or mailto:")


def test_a_template_error_is_a_finding_with_file_and_line(runner, tmp_path):
    folder = small_project(tmp_path)
    (folder / "templates").mkdir()
    (folder / "templates" / "issue.html.j2").write_text(
        '{% extends "partials/layout.html.j2" %}\n{% block content %}\n{{ issue.headline }}\n{% endblock %}\n',
        encoding="utf-8")
    result = runner.invoke(app, ["--project", str(folder), "check", "--date", DAY.isoformat()])
    assert result.exit_code == 1
    assert "ERROR   templates/issue.html.j2:3: " in result.output and "'headline'" in result.output


def test_dkim_on_another_domain_than_from_is_an_error_in_the_settings(tmp_path):
    folder = small_project(tmp_path)
    (folder / "dkim.pem").write_text("-----BEGIN PRIVATE KEY-----\n", encoding="utf-8")
    with (folder / "newsletter.toml").open("a", encoding="utf-8") as f:
        f.write('\n[dkim]\nselector = "s1"\ndomain = "mailer.example.net"\nkey_file = "dkim.pem"\n')
    finding = only_error(check(folder))
    assert finding.rule is Rule.DKIM and finding.where == "newsletter.toml"
    assert "'mailer.example.net' is not the From domain 'ssb.newsletter.example.org'" in finding.message


def test_a_cross_reference_to_a_day_without_issue_is_a_warning_naming_the_article(tmp_path):
    folder = small_project(tmp_path)
    write_article(folder, "earlier.md", "As reported last week (see SSB, Nov. 14), the talks resumed.\n")
    report = check(folder)
    assert report.ok
    [warning] = report.warnings
    assert warning.where == "articles/2026-11-21/earlier.md"
    assert "(see SSB, Nov. 14) points at 2026-11-14, which has no issue" in warning.message


def test_a_misspelt_citation_is_a_warning_naming_the_article(tmp_path):
    folder = small_project(tmp_path)
    write_article(folder, "cited.md", "The plant reopened (Interfax, Noc. 20).\n",
                  sources=["Radio Veska, November 31"])
    report = check(folder)
    assert report.ok
    messages = {w.message for w in report.warnings if w.where == "articles/2026-11-21/cited.md"}
    assert messages == {
        "(Interfax, Noc. 20) looks like a citation but has 'Noc', which is not a month",
        "citation 'Radio Veska, November 31' has November 31, which is not a day of the year",
    }


def test_a_data_table_in_an_article_is_not_a_layout_table(tmp_path):
    folder = small_project(tmp_path)
    write_article(folder, "table.md", """\
        Declared stocks (Interfax, Nov. 20):

        | Site | Tonnes |
        |------|--------|
        | Orlund | 12 |
        """)
    report = check(folder)
    assert report.findings == (), format_report(report)


@hsettings(max_examples=60, deadline=None)
@given(
    source=st.from_regex(r"[A-Z][a-z]{2,12}( [A-Z][a-z]{2,10}){0,2}", fullmatch=True),
    month=st.sampled_from(MONTHS),
    short=st.booleans(),
    day=st.integers(1, 28),
)
def test_every_citation_the_builder_collects_is_well_formed(source, month, short, day):
    written = f"({source}, {month[:3] + '.' if short else month} {day})"
    found = citations(f"The talks resumed {written}.", "SSB")
    assert found and all(citation_problem(c) == "" for c in found)


# --- the command line ---------------------------------------------------------------------------

def test_errors_are_listed_before_warnings_and_exit_1(runner, tmp_path):
    folder = small_project(tmp_path, "javascript-link")
    write_article(folder, "earlier.md", "As reported (see SSB, Nov. 14), the talks resumed.\n")
    result = runner.invoke(app, ["--project", str(folder), "check", "--date", DAY.isoformat()])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert re.fullmatch(r"Issue No\. 1 of 2026-11-21, [\d,]+ bytes of HTML: 1 error, 1 warning", lines[0])
    assert lines[1].startswith("  ERROR   templates/issue.html.j2: link 'javascript:")
    assert lines[2].startswith("  warning articles/2026-11-21/earlier.md: cross-reference")
    assert lines[-1] == "Fix the errors above: an issue with errors is not sent."


def test_json_format_lists_findings_and_a_summary(runner, tmp_path):
    folder = small_project(tmp_path, "no-alt")
    result = runner.invoke(app, ["--project", str(folder), "check", "--date", DAY.isoformat(), "--format", "json"])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["day"] == "2026-11-21"
    assert data["summary"]["ok"] is False and data["summary"]["errors"] == 1 and data["summary"]["number"] == 1
    assert set(data["summary"]) >= {"warnings", "skipped", "html_bytes", "subject"}
    assert data["findings"] == [{
        "severity": "error", "rule": 9, "rule_id": "image", "path": "templates/issue.html.j2", "line": None,
        "where": "templates/issue.html.j2", "message": data["findings"][0]["message"],
    }]


def test_json_names_rule_path_and_line_of_a_plain_http_link(runner, tmp_path):
    folder = small_project(tmp_path)
    write_article(folder, "linky.md", """\
        The talks resumed (Interfax, Nov. 20).

        See [the report](http://example.org/report) for the details.
        """)
    result = runner.invoke(app, ["--project", str(folder), "check", "-d", DAY.isoformat(), "-f", "json"])
    assert result.exit_code == 1
    [finding] = json.loads(result.output)["findings"]
    assert {k: finding[k] for k in ("severity", "rule", "rule_id", "path", "line", "where")} == {
        "severity": "error", "rule": 12, "rule_id": "https-links", "path": "articles/2026-11-21/linky.md",
        "line": 7, "where": "articles/2026-11-21/linky.md:7",
    }
    assert finding["message"].startswith("link 'http://example.org/report' is not https:// or mailto:")


def test_json_names_the_gmail_clip_rule_and_the_day_of_a_too_long_issue(runner, tmp_path):
    folder = small_project(tmp_path)
    paragraph = "The delegation met again on Tuesday to review the draft annex, line by line (Interfax, Nov. 20). "
    for n in range(40):
        write_article(folder, f"long-{n:02}.md", "\n\n".join(paragraph * 5 for _ in range(5)), title=f"Long {n}")
    result = runner.invoke(app, ["--project", str(folder), "check", "-d", DAY.isoformat(), "-f", "json"])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["summary"]["errors"] == 1
    [finding] = data["findings"]
    assert {k: finding[k] for k in ("severity", "rule", "rule_id", "path", "line")} == {
        "severity": "error", "rule": 6, "rule_id": "gmail-clip", "path": "articles/2026-11-21", "line": None,
    }
    assert "Gmail clips a message above 102,000 bytes" in finding["message"]


def test_json_format_of_a_clean_day_exits_0(runner, sample_project):
    result = runner.invoke(app, ["--project", str(sample_project), "check", "-d", "2026-11-22", "-f", "json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["findings"] == []
    summary = data["summary"]
    assert summary["subject"].startswith("SSB Sunday, November 22, 2026: ") and summary["html_bytes"] > 10_000
    assert {k: summary[k] for k in ("ok", "errors", "warnings", "skipped", "number")} == {
        "ok": True, "errors": 0, "warnings": 0, "skipped": False, "number": 2,
    }


def test_a_bad_date_is_an_error_line(runner, sample_project):
    result = runner.invoke(app, ["--project", str(sample_project), "check", "--date", "2026-11-31"])
    assert result.exit_code == 1
    assert "Error: --date '2026-11-31': expected a date as YYYY-MM-DD" in result.output


@pytest.mark.parametrize("postal", ["", "   ", POSTAL_PLACEHOLDER])
def test_an_empty_or_placeholder_postal_address_is_an_error(runner, tmp_path, postal):
    folder = small_project(tmp_path)
    config = folder / "newsletter.toml"
    text = re.sub(r'postal_address = ".*"', f"postal_address = {json.dumps(postal)}", config.read_text(encoding="utf-8"))
    config.write_text(text, encoding="utf-8")
    result = runner.invoke(app, ["--project", str(folder), "check", "--date", DAY.isoformat()])
    assert result.exit_code == 1, result.output
    assert "ERROR   newsletter.toml: [sender] postal_address is " in result.output
    assert "bulk mail must carry the sender's postal address" in result.output
    result = runner.invoke(app, ["--project", str(folder), "send", "--date", DAY.isoformat()])
    assert result.exit_code == 1 and "nothing was sent" in result.output
