"""The structured issue frozen beside the HTML: what the archive, the feed and a digest read."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter import builder, readers, store, structure
from newsletter.cli import app
from newsletter.delivery import ledger
from newsletter.errors import NewsletterError
from newsletter.settings import load_settings

DAY = date(2026, 11, 26)


def sample_structure(sample_project: Path, day: date = DAY) -> structure.IssueStructure:
    settings = load_settings(sample_project)
    content = readers.read_day(settings.articles_dir, day, settings)
    issue = builder.build_issue(content, settings, issue_days=readers.article_days(settings.articles_dir))
    return structure.from_issue(issue)


def test_the_json_reads_back_as_the_same_structure(sample_project):
    built = sample_structure(sample_project)
    assert structure.from_json(structure.to_json(built), "here") == built
    assert len(built.articles) == 8 and built.preheader and built.note_title == ""


def test_each_article_has_what_a_digest_needs(sample_project):
    data = json.loads(structure.to_json(sample_structure(sample_project)))
    lead = data["sections"][0]["articles"][0]
    assert lead["section"] == data["sections"][0]["name"] == "Nuclear"
    assert lead["headline"] == "Negotiators Agree Outline of Veska Enrichment Framework"
    assert lead["anchor"] == "a-veska-framework-outline" and lead["slug"] == "veska-framework-outline"
    assert lead["link"] == "https://ssb.newsletter.example.org/archive/2026/11/26/#a-veska-framework-outline"
    assert lead["url"].startswith("https://") and lead["summary"] and lead["sources"]
    assert {r["day"] for r in lead["cross_references"]} == {"2026-11-21", "2026-11-25"}
    assert all(a["summary"] for s in data["sections"] for a in s["articles"])


def test_an_article_without_a_summary_gets_its_first_sentence(sample_project):
    day = sample_project / "articles" / "2026-11-26"
    for path in day.glob("*.md"):
        text = path.read_text(encoding="utf-8")
        path.write_text("\n".join(line for line in text.split("\n") if not line.startswith("summary:")),
                        encoding="utf-8")
    lead = sample_structure(sample_project).articles[0]
    assert lead.summary.endswith(".") and "(" not in lead.summary  # no citation, no cross-reference
    body = readers.read_day(sample_project / "articles", DAY, load_settings(sample_project)).articles
    assert any(lead.summary.split(" ")[0] in a.body_html for a in body)


def test_send_freezes_the_structure_with_the_html(sample_project):
    result = CliRunner().invoke(app, ["--project", str(sample_project), "send", "--date", DAY.isoformat()])
    assert result.exit_code == 0, result.output
    settings = load_settings(sample_project)
    frozen = ledger.frozen_issue(store.connect(settings.database_path), DAY)
    assert frozen.structure is not None
    assert structure.from_json(frozen.structure, "ledger") == sample_structure(sample_project)


def test_issues_without_json_are_read_from_the_default_markup(sample_project):
    html = ('<html><body><div class="pre" style="display:none">Short &amp; sweet\u200c\u00a0\u200c</div>'
            '<h2 id="a-one">One <em>story</em></h2><h2>no anchor</h2><h2 id="a-two">Two</h2></body></html>')
    found = structure.from_html(html, day=DAY, number=3, subject="S")
    assert found.preheader == "Short & sweet"
    assert [(h.anchor, h.text) for h in found.headlines] == [("a-one", "One story"), ("a-two", "Two")]


@pytest.mark.parametrize("text, message", [
    ('{"version": 2}', "structured issue version 2 is not 1"),
    ("[]", "the structured issue is not valid"),
    ('{"version": 1, "day": "2026-11-26"}', "the structured issue is not valid"),
])
def test_a_structure_this_version_cannot_read_is_a_clear_error(text, message):
    with pytest.raises(NewsletterError, match="^db: issue 2026-11-26: " + message):
        structure.from_json(text, "db: issue 2026-11-26")


def test_a_rebuild_replaces_the_structure_and_a_freeze_without_one_keeps_none(conn):
    def freeze(day: date, structure_json: str | None):
        return ledger.freeze_and_snapshot(conn, day, number=1, subject="S", html="<p>h</p>", text="t",
                                          message_id=lambda sid: f"<{sid}@x>", now="2026-11-26T06:00:00+00:00",
                                          structure=structure_json)

    assert freeze(DAY, '{"first": 1}').structure == '{"first": 1}'
    rebuilt = ledger.refreeze(conn, DAY, number=1, subject="S", html="<p>new</p>", text="t",
                              now="2026-11-26T07:00:00+00:00", structure='{"second": 2}')
    assert rebuilt.structure == '{"second": 2}' and rebuilt.html == "<p>new</p>"
    assert freeze(date(2026, 11, 27), None).structure is None
    assert ledger.frozen_issue(conn, date(2026, 11, 27)).structure is None
