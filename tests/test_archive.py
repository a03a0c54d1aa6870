"""The static archive: `newsletter archive` writes an index, one page per sent issue, a feed."""

from __future__ import annotations

import re
import sqlite3
import xml.etree.ElementTree as ET
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from typer.testing import CliRunner

from newsletter import archive, store
from newsletter.cli import app
from newsletter.models import PLACEHOLDERS
from newsletter.settings import load_settings
from sent_project import REPO, SENT_DAYS, copy_project, make_sent_project

ATOM = "{http://www.w3.org/2005/Atom}"
BASE = "https://ssb.newsletter.example.org"
TOKEN = re.compile(r"/u/[0-9]+\.[0-9a-f]{32}")


@pytest.fixture(scope="module")
def sent(tmp_path_factory) -> Path:
    return make_sent_project(tmp_path_factory.mktemp("archive") / "project")


@pytest.fixture(scope="module")
def site(sent: Path) -> Path:
    result = CliRunner().invoke(app, ["--project", str(sent), "archive"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Archive of 3 issues in ")
    return sent / "outbox" / "site"


class Page(HTMLParser):
    """What a page holds that a reader or a screen reader relies on."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.headings: list[int] = []
        self.links: list[str] = []
        self.meta: dict[str, str] = {}
        self.ids: set[str] = set()
        self.forms: list[dict] = []
        self.inputs: list[dict] = []
        self.scripts = 0
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if re.fullmatch(r"h[1-6]", tag):
            self.headings.append(int(tag[1]))
        if tag == "a" and attrs.get("href") is not None:
            self.links.append(attrs["href"])
        if tag == "meta" and "name" in attrs:
            self.meta[attrs["name"]] = attrs.get("content", "")
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "form":
            self.forms.append(attrs)
        if tag == "input":
            self.inputs.append(attrs)
        if tag == "script":
            self.scripts += 1


def page_of(site: Path, url: str) -> Path:
    """Return the file the static host serves for URL (a path under the site, ending in / for a folder)."""
    path = urlsplit(url).path.lstrip("/")
    return site / (path + "index.html" if path.endswith("/") or not path else path)


def test_archive_has_a_page_per_sent_issue_where_cross_references_point(site):
    for day in SENT_DAYS:
        year, month, mday = day.split("-")
        page = site / "archive" / year / month / mday / "index.html"
        assert page.is_file(), page
    assert (site / "index.html").is_file() and (site / "feed.xml").is_file()
    assert (site / "unsubscribe" / "index.html").is_file()
    # 2026-11-23 was not sent: no page, so the site holds only what subscribers received
    assert not (site / "archive" / "2026" / "11" / "23").exists()


def test_cross_references_in_an_issue_page_lead_to_the_earlier_issue_pages(site):
    page_url = "https://host.example/archive/2026/11/26/"
    html = page_of(site, page_url).read_text()
    targets = [urljoin(page_url, href) for href in Page(html).links if "archive/2026/11/2" in href]
    days = {urlsplit(t).path for t in targets}
    assert {"/archive/2026/11/25/", "/archive/2026/11/24/"} <= days
    for target in targets:
        if "/11/25/" in target or "/11/24/" in target or "/11/26/" in target:
            assert page_of(site, target).is_file(), target
    # links are relative, so the site works on any host and under any path
    assert BASE not in html.split("<main", 1)[1].split("</main>")[0].replace(f"{BASE}/feed", "")


def test_archive_pages_carry_no_personal_data(site):
    for page in site.rglob("*.html"):
        html = page.read_text()
        assert not TOKEN.search(html), page
        for placeholder in PLACEHOLDERS:
            assert placeholder not in html, (page, placeholder)
        assert "Good morning, " not in html and "Åkesson" not in html, page  # no greeting by name
    issue = (site / "archive/2026/11/26/index.html").read_text()
    assert "Good morning." in issue  # the fallback greeting, nobody's name


def test_archive_pages_and_feed_leave_out_the_hidden_preheader_and_its_filler(site):
    # the filler (zero-width characters) only fills an inbox preview; a web page or a feed reader has none
    for path in [*site.rglob("*.html"), site / "feed.xml"]:
        text = path.read_text()
        assert "\u200c" not in text and "&zwnj;" not in text and 'class="pre"' not in text, path


@pytest.mark.parametrize("relative", ["index.html", "archive/2026/11/26/index.html", "unsubscribe/index.html"])
def test_pages_have_landmarks_a_skip_link_one_h1_and_headings_in_order(site, relative):
    page = Page((site / relative).read_text())
    for landmark in ("header", "main", "footer"):
        assert page.tags.count(landmark) == 1, landmark
    assert page.links[0] == "#main" and "main" in page.ids
    assert page.headings.count(1) == 1 and page.headings[0] == 1
    assert all(b <= a + 1 for a, b in zip(page.headings, page.headings[1:])), page.headings
    assert "width=device-width" in page.meta["viewport"]
    assert page.scripts == 0


def test_index_lists_each_issue_by_month_with_number_date_and_headlines(site):
    html = (site / "index.html").read_text()
    assert "<h3>November 2026</h3>" in html
    first = html.index("No.&nbsp;")
    assert html.index("Thursday, November 26, 2026") < html.index("Wednesday, November 25, 2026")  # newest first
    assert first < html.index("Negotiators Agree Outline of Veska Enrichment Framework")
    assert 'href="archive/2026/11/26/#a-veska-framework-outline"' in html
    page = Page(html)
    assert page.forms == [{"class": "subscribe", "method": "post", "action": "./subscribe"}]
    assert {"id": "email", "name": "email", "type": "email", "autocomplete": "email", "required": None,
            "maxlength": "254"} in page.inputs


def test_issue_page_links_to_its_neighbours_and_the_public_unsubscribe_page(site):
    html = (site / "archive/2026/11/25/index.html").read_text()
    links = Page(html).links
    assert "../../../../archive/2026/11/24/" in links and "../../../../archive/2026/11/26/" in links
    assert "../../../../unsubscribe/" in links
    explained = (site / "unsubscribe/index.html").read_text()
    assert "personal unsubscribe link" in explained


def test_feed_is_atom_with_the_full_content_of_each_issue(site):
    root = ET.parse(site / "feed.xml").getroot()
    assert root.tag == f"{ATOM}feed"
    assert root.find(f"{ATOM}id").text == f"{BASE}/"
    assert root.find(f"{ATOM}title").text == "The Sample Security Bulletin"
    datetime.fromisoformat(root.find(f"{ATOM}updated").text)
    assert root.find(f"{ATOM}link[@rel='self']").get("href") == f"{BASE}/feed.xml"
    assert root.find(f"{ATOM}author/{ATOM}name").text
    entries = root.findall(f"{ATOM}entry")
    assert [e.find(f"{ATOM}id").text for e in entries] == [
        f"{BASE}/archive/2026/11/26/", f"{BASE}/archive/2026/11/25/", f"{BASE}/archive/2026/11/24/"]
    newest = entries[0]
    assert newest.find(f"{ATOM}title").text.startswith("SSB Thursday, November 26, 2026: ")
    assert newest.find(f"{ATOM}link").get("href") == f"{BASE}/archive/2026/11/26/"
    datetime.fromisoformat(newest.find(f"{ATOM}updated").text)
    content = newest.find(f"{ATOM}content")
    assert content.get("type") == "html"
    assert "Negotiators Agree Outline of Veska Enrichment Framework" in content.text
    assert "Eighteen Countries Sign Pledge on Lab Safety Backup Systems" in content.text  # the last article too
    assert f'href="{BASE}/archive/2026/11/25/"' in content.text  # absolute in a feed reader
    assert not TOKEN.search(content.text)

@pytest.mark.sqlite_only  # uses the module's project, whose list is in its SQLite file
def test_building_again_rewrites_nothing_that_did_not_change(sent, site):
    result = CliRunner().invoke(app, ["--project", str(sent), "archive"])
    assert result.exit_code == 0, result.output
    assert "(0 files written, 6 unchanged)" in result.output

@pytest.mark.sqlite_only  # uses the module's project, whose list is in its SQLite file
def test_archive_out_writes_the_site_where_asked(sent, tmp_path):
    result = CliRunner().invoke(app, ["--project", str(sent), "archive", "--out", str(tmp_path / "public")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "public/archive/2026/11/24/index.html").is_file()


def test_a_project_that_sent_nothing_gets_an_empty_archive_and_a_valid_feed(project):
    result = CliRunner().invoke(app, ["--project", str(project), "archive"])
    assert result.exit_code == 0, result.output
    assert "Archive of 0 issues" in result.output
    assert "No issue has been sent yet." in (project / "outbox/site/index.html").read_text()
    root = ET.parse(project / "outbox/site/feed.xml").getroot()
    assert root.findall(f"{ATOM}entry") == [] and root.find(f"{ATOM}updated").text

@pytest.mark.sqlite_only  # uses the module's project, whose list is in its SQLite file
def test_feed_keeps_only_the_latest_issues(sent):
    settings = load_settings(sent)
    issues = archive.archived_issues(store.connect(settings.database_path), settings)
    root = ET.fromstring(archive.atom_feed(settings, issues, datetime.now().astimezone(), limit=2))
    assert len(root.findall(f"{ATOM}entry")) == 2


def test_a_template_error_in_the_archive_names_the_template(sent, tmp_path):
    project = copy_project(sent, tmp_path / "broken")
    (project / "templates" / "web").mkdir(parents=True)
    (project / "templates" / "web" / "index.html.j2").write_text("{% extends 'web/base.html.j2' %}\n{% block main %}{{ nope }}{% endblock %}\n")
    result = CliRunner().invoke(app, ["--project", str(project), "archive"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and "index.html.j2" in result.stderr and "nope" in result.stderr


# --- the structured issue: the archive does not read headlines or the preheader from markup ------

def _entries(feed: Path) -> dict[str, ET.Element]:
    return {e.find(f"{ATOM}id").text: e for e in ET.parse(feed).getroot().findall(f"{ATOM}entry")}


def _override(project: Path, relative: str, edit) -> None:
    """Write the project's own copy of a packaged template, changed by EDIT."""
    target = project / "templates" / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(edit((REPO / "templates" / relative).read_text(encoding="utf-8")), encoding="utf-8")


@pytest.fixture(scope="module")
def restyled(tmp_path_factory) -> Path:
    """The sample project sent with its own layout (another preheader markup) and article headings."""
    project = make_sent_project(tmp_path_factory.mktemp("restyled") / "project", days=())
    _override(project, "partials/layout.html.j2", lambda t: t.replace(
        '<div class="pre">{{ issue.preheader }}</div>',
        '<span data-preview="yes" style="display:none; font-size:1px; max-height:0">{{ issue.preheader }}</span>'))
    _override(project, "partials/article.html.j2", lambda t: t.replace(
        '<h2 id="{{ item.anchor }}">{{ article.title }}</h2>',
        '<h2 class="headline"><a id="{{ item.anchor }}"></a>{{ article.title }}</h2>'))
    runner = CliRunner()
    for day in ("2026-11-25", "2026-11-26"):
        result = runner.invoke(app, ["--project", str(project), "send", "--date", day])
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["--project", str(project), "archive"])
    assert result.exit_code == 0, result.output
    return project


def test_an_overridden_layout_still_gets_headlines_in_the_index_and_feed(restyled):
    site = restyled / "outbox" / "site"
    index = (site / "index.html").read_text()
    assert 'href="archive/2026/11/26/#a-veska-framework-outline"' in index
    assert "Negotiators Agree Outline of Veska Enrichment Framework" in index
    assert "Inspectors Count Centrifuge Cascades in Orlund" in index  # 2026-11-25's lead
    summary = _entries(site / "feed.xml")[f"{BASE}/archive/2026/11/26/"].find(f"{ATOM}summary").text
    assert summary.startswith("Negotiators Agree Outline of Veska Enrichment Framework; ")
    assert summary.endswith("; Eighteen Countries Sign Pledge on Lab Safety Backup Systems")


def test_an_overridden_layout_keeps_its_hidden_preheader_out_of_pages_and_feed(restyled):
    site = restyled / "outbox" / "site"
    email = (restyled / "outbox" / "2026-11-26" / "issue.html").read_text()
    assert 'data-preview="yes"' in email  # the email has it: it is the inbox preview
    page = (site / "archive/2026/11/26/index.html").read_text()
    assert 'data-preview="yes"' not in page
    assert "Negotiators Agree Outline of Veska Enrichment Framework" in page
    for entry in _entries(site / "feed.xml").values():
        assert 'data-preview="yes"' not in entry.find(f"{ATOM}content").text

@pytest.mark.sqlite_only  # builds an old SQLite schema by hand
def test_issues_frozen_before_the_structure_was_kept_get_the_same_site(sent, site, tmp_path):
    project = copy_project(sent, tmp_path / "old")
    database = load_settings(project).database_path
    old = sqlite3.connect(database)  # back to schema 4: what the previous version left behind
    old.execute("DROP TABLE issue_structures")
    old.execute("DROP TABLE outgoing_mail")  # schema 6's, made after it
    old.execute("DROP TABLE subscriber_events")  # schema 7's, made after it
    for column in ("frequency", "preferences_at"):  # schema 8's
        old.execute(f"ALTER TABLE subscribers DROP COLUMN {column}")
    old.execute("ALTER TABLE subscribers RENAME COLUMN sections TO topics")
    for table in ("feed_state", "feed_entries", "feed_warnings"):  # schema 9's (feeds)
        old.execute(f"DROP TABLE {table}")
    old.execute("DROP TABLE issue_variants")  # schema 10's
    old.execute("ALTER TABLE deliveries DROP COLUMN variant")
    old.execute("ALTER TABLE issues DROP COLUMN started")  # schema 11's
    for column in ("claimed_by", "lease_until"):  # schema 12's
        old.execute(f"ALTER TABLE deliveries DROP COLUMN {column}")
    old.execute("PRAGMA user_version = 4")
    old.close()
    result = CliRunner().invoke(app, ["--project", str(project), "archive", "--out", str(tmp_path / "site")])
    assert result.exit_code == 0, result.output
    for relative in ("index.html", "archive/2026/11/26/index.html", "archive/2026/11/24/index.html"):
        assert (tmp_path / "site" / relative).read_text() == (site / relative).read_text(), relative
    assert 'class="pre"' not in (tmp_path / "site/archive/2026/11/26/index.html").read_text()
    assert store.connect(database).execute("SELECT count(*) FROM issue_structures").fetchone()[0] == 0


def test_a_damaged_structure_is_an_error_naming_the_database_and_day(sent, tmp_path):
    project = copy_project(sent, tmp_path / "damaged")
    database = load_settings(project).database_path
    store.connect(database).execute("UPDATE issue_structures SET structure = '{\"version\": 1' WHERE day = '2026-11-25'")
    result = CliRunner().invoke(app, ["--project", str(project), "archive"])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {database}: issue 2026-11-25: the structured issue is not valid")
